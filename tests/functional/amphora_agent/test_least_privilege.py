"""dsr-agent as an unprivileged user with only the capabilities the shipped
systemd unit grants (etc/systemd/dsr-agent.service): it applies a snapshot,
forwards through the VIP and announces it by BGP."""

import os
import pwd
import subprocess

import pytest

from tools.lab import netns
from tools.lab import agent_lab
from tests.functional.amphora_agent.test_agent import basic_lb, member_of

USER = 'dsrtest'
# What the shipped unit grants (AmbientCapabilities=), measured in
# docs/security.md, plus sys_admin: the lab's SEs are network namespaces
# the agent enters with setns ([agent] netns), which needs CAP_SYS_ADMIN;
# the unit, for an SE that is the host itself, does not grant it.
UNIT_CAPS = ('bpf', 'net_admin', 'net_raw', 'perfmon')
CAPS = UNIT_CAPS + ('sys_admin',)
CAP_BITS = {'net_admin': 12, 'net_raw': 13, 'sys_admin': 21,
            'perfmon': 38, 'bpf': 39}


def _unit_caps(key):
    path = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'etc',
                        'systemd', 'dsr-agent.service')
    with open(path) as f:
        for line in f:
            if line.startswith(key + '='):
                return {c.lower().removeprefix('cap_')
                        for c in line.split('=', 1)[1].split()}
    raise AssertionError(f'no {key}= in {path}')


def _status(pid):
    with open(f'/proc/{pid}/status') as f:
        return dict(line.rstrip('\n').split(':\t', 1) for line in f
                    if ':\t' in line)


def _exabgp_pids(lab):
    return [int(p) for p in os.listdir('/proc') if p.isdigit()
            and _cmdline(p).find(lab.root) >= 0
            and 'exabgp' in _cmdline(p)]


def _cmdline(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read().decode(errors='replace')
    except OSError:
        return ''


@pytest.fixture
def unprivileged_lab(make_topology):
    try:
        pwd.getpwnam(USER)
    except KeyError:
        # The unprivileged account the agent runs as (tests run as root).
        subprocess.run(['useradd', '--system', '--no-create-home',
                        '--shell', '/usr/sbin/nologin', USER], check=True)
    lab = agent_lab.AgentLab(make_topology(n_se=2, n_members=2),
                             run_as=(USER, CAPS))
    try:
        lab.start()
        yield lab
    finally:
        lab.close()


def test_unit_grants_the_measured_capabilities():
    assert _unit_caps('AmbientCapabilities') == set(UNIT_CAPS)
    assert _unit_caps('CapabilityBoundingSet') == set(UNIT_CAPS)


def _dsrctl_in_se(lab, se, caps, *args):
    """dsrctl as the agent user with ``caps``, started inside the SE's
    namespace (nsenter as root, then setpriv), as an agent on a host
    without [agent] netns runs: no setns, so no CAP_SYS_ADMIN."""
    host = lab.topo.host(se)
    lab.run_as = (USER, caps)
    cmd = ['nsenter', f'--net=/run/netns/{host.ns}'] + lab._agent_command(
        [None, '-m', 'amphora_agent.cmd.dsrctl',
         '--pin-dir', os.path.join(lab.pin_root, se)] + list(args))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_unit_capabilities_load_and_attach_the_dataplane(unprivileged_lab):
    """Without CAP_SYS_ADMIN: the unit's set loads, pins and attaches the
    SE program and writes its maps; one capability less does not."""
    lab = unprivileged_lab
    host = lab.topo.host('se1')
    out = _dsrctl_in_se(lab, 'se1', UNIT_CAPS, 'attach', host.ifname,
                        '--mode', 'generic')
    assert out.returncode == 0, out.stdout + out.stderr
    out = _dsrctl_in_se(lab, 'se1', UNIT_CAPS, 'tunnel-source', 'set',
                        '--ipv4', host.ipv4)
    assert out.returncode == 0, out.stdout + out.stderr
    shown = _dsrctl_in_se(lab, 'se1', UNIT_CAPS, 'show', '--json')
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert host.ipv4 in shown.stdout
    out = _dsrctl_in_se(lab, 'se1', UNIT_CAPS, 'detach', host.ifname)
    assert out.returncode == 0, out.stdout + out.stderr
    subprocess.run(['rm', '-rf', os.path.join(lab.pin_root, 'se1')],
                   check=True)
    for missing in ('bpf', 'perfmon', 'net_admin'):
        caps = tuple(c for c in UNIT_CAPS if c != missing)
        out = _dsrctl_in_se(lab, 'se1', caps, 'attach', host.ifname,
                            '--mode', 'generic')
        assert out.returncode != 0, f'attach worked without {missing}'
        subprocess.run(['rm', '-rf', os.path.join(lab.pin_root, 'se1')],
                       check=True)


def test_agent_runs_unprivileged_with_only_its_capabilities(
        unprivileged_lab):
    lab = unprivileged_lab
    lab.start_agents()
    uid = pwd.getpwnam(USER).pw_uid
    expected = sum(1 << CAP_BITS[c] for c in CAPS)
    for proc in lab.agents.values():
        status = _status(proc.pid)
        assert status['Uid'].split() == [str(uid)] * 4, status['Uid']
        assert int(status['CapEff'], 16) == expected, status['CapEff']
        assert int(status['CapBnd'], 16) == expected, status['CapBnd']

    gen = lab.publish(basic_lb(lab))
    lab.wait_applied(gen)
    ses = [s.name for s in lab.topo.ses]
    lab.wait_route(f'{netns.VIP4}/32', ses)
    lab.wait_route(f'{netns.VIP6}/128', ses)
    served = {member_of(lab.topo.http_get(netns.VIP4, source_port=p))
              for p in range(40000, 40016)}
    assert served == {'m1', 'm2'}
    assert {member_of(lab.topo.http_get(netns.VIP6, source_port=p))
            for p in range(40100, 40108)} == {'m1', 'm2'}
    # Health checks (TCP probes) work unprivileged: members come ONLINE.
    netns.wait_for(lambda: all(
        'ONLINE' in set(lab.statuses(se).values()) for se in ses), 10,
        'members ONLINE')
    # ExaBGP, the agent's child, holds no more than the agent.
    speakers = _exabgp_pids(lab)
    assert speakers
    for pid in speakers:
        status = _status(pid)
        assert status['Uid'].split()[0] == str(uid)
        assert int(status['CapEff'], 16) & ~expected == 0
