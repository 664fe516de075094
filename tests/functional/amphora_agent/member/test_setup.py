"""Members prepared only by `dsr-member setup` serve through the SE in
every encapsulation and family; setup is idempotent; teardown leaves the
namespace as it found it; the VIPs draw no ARP/ND answers."""

import json
import os
import re

import pytest

from tests.functional.amphora_agent.dataplane.conftest import listener
from tests.functional.amphora_agent.dataplane.test_dsr_path import MATRIX
from tests.functional.amphora_agent.dataplane.test_dsr_path import member_of
from tests.functional.amphora_agent.dataplane.test_dsr_path import vip
from tests.functional.amphora_agent.member import conftest
from tools.lab import netns

FLOWS = 12


def test_auto_picks_ebpf_and_says_why(lab):
    # This kernel has no tunnel modules (see FIELD-NOTES): auto falls back.
    for out in lab.setup_outputs.values():
        first = out.splitlines()[0]
        assert first.startswith('decap: ebpf (the kernel has no '), first
        assert 'neither loaded nor installed' in first


@pytest.mark.parametrize('vip_family,member_family,encap,decap_counter',
                         MATRIX)
def test_serves_through_the_se(lab, vip_family, member_family, encap,
                               decap_counter):
    topo = lab.topo
    address = vip(vip_family)
    lab.apply(listener(address, members=lab.member_addrs(member_family),
                       encap=encap))
    before = {m.name: lab.decap_stats(m.name)[decap_counter]
              for m in topo.members}
    served = {}
    for port in range(43000, 43000 + FLOWS):
        name = member_of(topo.http_get(address, source_port=port))
        served[name] = served.get(name, 0) + 1
    assert set(served) == {m.name for m in topo.members}, served
    response, sha = topo.http_upload(address, nbytes=1 << 20)
    assert f'sha256={sha}' in response
    for m in topo.members:
        assert lab.decap_stats(m.name)[decap_counter] > before[m.name]


def test_setup_again_changes_nothing(lab):
    path = lab.state_file('m1')
    with open(path) as f:
        recorded = json.load(f)
    out = lab.setup_member('m1').stdout
    assert 'setup done: 0 change(s)' in out, out
    assert not [line for line in out.splitlines() if line[:1] in '+-']
    with open(path) as f:
        assert json.load(f) == recorded


def _on_link_answer(topo, member, address, timeout=1):
    """Whether ``member`` answers ARP/ND for ``address`` on its link: the
    router pings it bound to the member's link (no route there, so the
    kernel takes the address as on-link and asks for it)."""
    h = topo.host(member)
    family = ['-6'] if ':' in address else ['-4']
    topo.run('router', ['ip', *family, 'neigh', 'flush', 'dev',
                        h.router_ifname], check=False)
    proc = topo.run('router', ['ping', *family, '-c', '1', '-W',
                               str(timeout), '-I', h.router_ifname, address],
                    check=False)
    return proc.returncode == 0


def test_vips_draw_no_arp_or_nd_answer(lab):
    topo = lab.topo
    for address in (netns.VIP4, netns.VIP6):
        assert not _on_link_answer(topo, 'm1', address), address
    # The control: without arp_ignore the same ARP request is answered,
    # and check names it.
    keys = ('net.ipv4.conf.all.arp_ignore', 'net.ipv4.conf.eth0.arp_ignore')
    topo.sysctls('m1', {k: 0 for k in keys})
    try:
        assert netns.wait_for(
            lambda: _on_link_answer(topo, 'm1', netns.VIP4), 10,
            'm1 to answer ARP for the VIP with arp_ignore 0')
        out = lab.member('m1', 'check', check=False)
        assert any('would answer ARP' in p for p in conftest.problems(out))
    finally:
        topo.sysctls('m1', {k: 1 for k in keys})


def _snapshot(topo, name):
    """What setup may touch in a namespace."""
    run = lambda *cmd: topo.run(name, list(cmd)).stdout  # noqa: E731
    sysctls = run('sh', '-c', 'grep -H . /proc/sys/net/ipv4/conf/*/arp_* '
                  '/proc/sys/net/ipv4/conf/*/rp_filter '
                  '/proc/sys/net/ipv6/conf/lo/disable_ipv6')
    return {'addresses': run('ip', '-o', 'addr', 'show'),
            'links': re.sub(r'\s+', ' ', run('ip', '-o', 'link', 'show')),
            'tc': run('tc', 'filter', 'show', 'dev', 'eth0', 'ingress'),
            'qdisc': run('tc', 'qdisc', 'show', 'dev', 'eth0'),
            'sysctls': sysctls}


def test_teardown_leaves_the_namespace_as_before(make_member_lab):
    member_lab = make_member_lab(n_se=1, n_members=1)
    topo = member_lab.topo
    # A strict host: setup has to relax rp_filter, teardown to restore it.
    topo.sysctls('m1', {'net.ipv4.conf.all.rp_filter': 1,
                        'net.ipv4.conf.eth0.rp_filter': 1})
    before = _snapshot(topo, 'm1')
    out = member_lab.setup_member('m1').stdout
    assert '+ sysctl net.ipv4.conf.eth0.rp_filter 1 -> 2' in out, out
    assert _snapshot(topo, 'm1') != before
    out = member_lab.member('m1', 'teardown').stdout
    assert 'teardown done' in out
    after = _snapshot(topo, 'm1')
    # clsact stays (removing it could drop another program's hook).
    after['qdisc'] = before['qdisc']
    assert after == before
    assert not os.path.exists(member_lab.state_file('m1'))
    assert not os.path.exists(member_lab.pin_dir('m1-decap'))
    out = member_lab.member('m1', 'teardown').stdout
    assert out.startswith('nothing to undo'), out


def test_persist_files_and_teardown_removes_them(make_member_lab, tmp_path):
    member_lab = make_member_lab(n_se=1, n_members=1)
    root = str(tmp_path)
    out = member_lab.setup_member('m1', '--persist', '--root', root,
                                  '--command', '/usr/bin/dsr-member').stdout
    sysctl_d = tmp_path / 'etc/sysctl.d/90-octavia-dsr-member.conf'
    unit = tmp_path / 'etc/systemd/system/octavia-dsr-member.service'
    wants = (tmp_path / 'etc/systemd/system/multi-user.target.wants'
             / 'octavia-dsr-member.service')
    network = tmp_path / 'etc/systemd/network/90-octavia-dsr-lo.network'
    for path in (sysctl_d, unit, network):
        assert f'+ wrote {path}' in out
    assert 'net.ipv4.conf.eth0.arp_ignore = 1' in sysctl_d.read_text()
    assert 'Address=2001:db8:f::10/128' in network.read_text()
    exec_start = [line for line in unit.read_text().splitlines()
                  if line.startswith('ExecStart=')][0]
    assert exec_start.startswith('ExecStart=/usr/bin/dsr-member setup '
                                 '--vip 192.0.2.10 --vip 2001:db8:f::10')
    assert '--decap ebpf' in exec_start
    assert os.readlink(wants) == '/etc/systemd/system/' \
        'octavia-dsr-member.service'
    member_lab.member('m1', 'teardown')
    assert not any(p.is_file() or p.is_symlink() for p in tmp_path.rglob('*'))
