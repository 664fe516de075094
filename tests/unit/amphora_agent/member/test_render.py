"""Golden-file tests of what dsr-member prints or writes: the Windows
script, the cloud-init user-data and the --persist files.

Regenerate after an intended change with DSR_MEMBER_GOLDEN_UPDATE=1 and
review the diff.
"""

import os
import pathlib
import re
import subprocess

import pytest
import yaml

from amphora_agent.member import cli
from amphora_agent.member import render
from amphora_agent.member import spec as spec_mod
from amphora_agent.member import state
from amphora_agent.member import windows

GOLDEN = pathlib.Path(__file__).parent / 'golden'
VIPS = ['192.0.2.10', '2001:db8:f::10']


def assert_golden(name, text):
    path = GOLDEN / name
    if os.environ.get('DSR_MEMBER_GOLDEN_UPDATE'):
        path.write_text(text)
    assert text == path.read_text(), f'{name} differs from the golden file'


def _spec(**kwargs):
    kwargs.setdefault('vips', VIPS)
    return spec_mod.MemberSpec(**kwargs)


def test_windows_script(capsys):
    cli.main(['windows', '--vip', VIPS[0], '--vip', VIPS[1], '--port', '80',
              '--port', '443', '--port', '53/udp', '--interface-alias',
              'Ethernet 2'])
    assert_golden('windows.ps1', capsys.readouterr().out)


# Microsoft's documented cmdlets (NetAdapter, NetTCPIP, NetSecurity
# modules) and PowerShell core ones: nothing else may appear.
CMDLETS = {
    'Get-NetAdapter', 'Rename-NetAdapter', 'Set-NetIPInterface',
    'Get-NetIPAddress', 'New-NetIPAddress', 'Get-NetFirewallRule',
    'Remove-NetFirewallRule', 'New-NetFirewallRule', 'Get-Command',
    'Write-Warning', 'Write-Output', 'Where-Object', 'Select-Object',
    'Out-Null'}


def test_windows_script_uses_only_documented_commands():
    text = windows.script(_spec(ports=['80']))
    code = '\n'.join(line for line in text.splitlines()
                     if not line.lstrip().startswith('#'))
    assert set(re.findall(r'\b[A-Z][a-z]+-[A-Z][A-Za-z]+\b', code)) \
        == CMDLETS
    for setting in ('-WeakHostReceive Enabled', '-WeakHostSend Enabled',
                    '-SkipAsSource $true', '-PrefixLength 32',
                    '-PrefixLength 128', "'*MSLOOP'", 'netloop.inf'):
        assert setting in code, setting
    # The uplink only receives weakly; the loopback also sends weakly.
    assert re.search(r'-InterfaceAlias \$Uplink .*-WeakHostReceive Enabled'
                     r'$', code, re.M)
    assert 'cannot decapsulate' in text


def test_windows_ipv4_only_has_no_ipv6_settings():
    text = windows.script(_spec(vips=['192.0.2.10']))
    assert 'IPv6' not in text.replace('IPIP', '')


def test_cloud_init(capsys):
    cli.main(['cloud-init', '--vip', VIPS[0], '--vip', VIPS[1], '--encap',
              'ipip', '--encap', 'gre', '--port', '80'])
    text = capsys.readouterr().out
    assert_golden('cloud-init.yaml', text)
    assert text.startswith('#cloud-config\n')
    doc = yaml.safe_load(text)
    paths = [f['path'] for f in doc['write_files']]
    assert paths == [render.SCRIPT,
                     '/etc/systemd/system/octavia-dsr-member.service',
                     '/etc/sysctl.d/90-octavia-dsr-member.conf']
    assert doc['runcmd'][-1] == ['systemctl', 'enable', '--now',
                                 'octavia-dsr-member.service']


def test_cloud_init_boot_script_is_valid_sh(tmp_path):
    script = tmp_path / 'setup.sh'
    script.write_text(render.boot_script(
        _spec(encaps=('ipip', 'gre')), render.setup_argv(_spec(), 'auto')))
    subprocess.run(['sh', '-n', str(script)], check=True)


@pytest.mark.parametrize('mode', ['kernel', 'ebpf'])
def test_persist_files(tmp_path, mode):
    spec = _spec(encaps=('ipip', 'gre'), interface='eth0',
                 addresses=['198.51.100.2', '2001:db8:2::2'], ports=['80'])
    argv = render.setup_argv(spec, mode, command='/usr/bin/dsr-member')
    journal = state.Journal(str(tmp_path / 'state.json'))
    root = tmp_path / 'root'
    render.write(str(root), render.persist_files(spec, mode, argv), journal)
    written = sorted(p for p in root.rglob('*') if p.is_file()
                     or p.is_symlink())
    combined = ''
    for path in written:
        rel = path.relative_to(root)
        body = f'-> {os.readlink(path)}\n' if path.is_symlink() \
            else path.read_text()
        combined += f'==> {rel}\n{body}'
    assert_golden(f'persist-{mode}.txt', combined)
    assert set(journal.data['files']) == {str(p) for p in written}
    lines = render.remove(journal)
    assert len(lines) == len(written)
    assert not [p for p in root.rglob('*') if p.is_file() or p.is_symlink()]


def test_a_persisted_file_changed_since_is_left(tmp_path):
    spec = _spec(interface='eth0', addresses=['198.51.100.2'])
    journal = state.Journal(str(tmp_path / 'state.json'))
    root = tmp_path / 'root'
    render.write(str(root), render.persist_files(
        spec, 'ebpf', render.setup_argv(spec, 'ebpf')), journal)
    conf = root / render.SYSCTL_FILE
    conf.write_text(conf.read_text() + 'net.ipv4.ip_forward = 1\n')
    assert f'! {conf} changed since setup wrote it: left' \
        in render.remove(journal)
    assert conf.exists()
