"""dsr-agent as an unprivileged user with exactly the capabilities the
shipped systemd unit grants (etc/systemd/dsr-agent.service): it applies a
snapshot, forwards through the VIP and announces it by BGP; the agent
suite passes that way; entering another namespace ([agent] netns) is what
would need CAP_SYS_ADMIN.

The lab starts such agents inside their SE's namespace (nsenter as root,
then setpriv), as on an SE that is a host of its own: no setns."""

import os
import pwd
import re
import subprocess
import sys

import pytest

from tests.functional.amphora_agent.test_agent import basic_lb
from tests.functional.amphora_agent.test_agent import member_of
from tools.lab import agent_lab
from tools.lab import netns

USER = 'dsrtest'
# What the shipped unit grants (AmbientCapabilities=), measured in
# docs/security.md.
UNIT_CAPS = agent_lab.UNIT_CAPS
CAP_BITS = agent_lab.CAP_BITS
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..',
                                    '..'))
# The agent suite run as USER with UNIT_CAPS (test_agent_suite_...): tests
# that exercise what privileges could break -- BPF load/attach/pin and map
# writes, netlink, TCP health probes, BGP withdraw, ExaBGP restarted by the
# agent, tooz membership -- and that bound no reaction time tighter than a
# loaded CI host keeps (kill -9 restarts and ExaBGP back-in-ECMP bound
# theirs to 12 s and 5 s).  About 4-5 minutes.  The whole of test_agent.py
# and bgp/test_agent_supervision.py (12 tests) passed unprivileged too
# (docs/security.md): DSR_AGENT_USER=dsrtest pytest <those files>.
SUITE = tuple(
    f'tests/functional/amphora_agent/{name}' for name in (
        'test_agent.py::test_member_failure_and_recovery',
        'test_agent.py::'
        'test_bad_objects_are_rejected_alone_and_the_rest_is_programmed',
        'test_agent.py::test_last_member_down_withdraws_the_vip',
        'test_agent.py::test_agents_join_their_group_and_leave_it',
        'bgp/test_agent_supervision.py::'
        'test_api_helper_deaths_make_exabgp_exit_and_it_is_restarted'))


def _unit_caps(key):
    path = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'etc',
                        'systemd', 'dsr-agent.service')
    with open(path) as f:
        for line in f:
            if line.startswith(key + '='):
                return {c.lower().removeprefix('cap_')
                        for c in line.split('=', 1)[1].split()}
    raise AssertionError(f'no {key}= in {path}')


_status = agent_lab.process_status


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
    agent_lab.ensure_user(USER)
    lab = agent_lab.AgentLab(make_topology(n_se=2, n_members=2),
                             run_as=(USER, UNIT_CAPS))
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
    expected = sum(1 << CAP_BITS[c] for c in UNIT_CAPS)
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


def test_entering_another_namespace_needs_cap_sys_admin(unprivileged_lab):
    """The measurement behind "CAP_SYS_ADMIN only with [agent] netns": with
    the unit's capabilities an agent told to enter its SE's namespace
    (setns) stops at once, naming it; the same agent started inside the
    namespace runs (the test above)."""
    lab = unprivileged_lab
    lab.in_se_netns = False          # [agent] netns = <the SE's namespace>
    with pytest.raises(RuntimeError, match='exited') as exited:
        lab.start_agent('se1')
    with open(os.path.join(lab.root, 'se1.log')) as f:
        text = f.read() + str(exited.value)
    assert re.search(r'failed to open netns|PermissionError', text), \
        text[-2000:]


@pytest.mark.timeout(1500)
def test_agent_suite_passes_as_unprivileged_user_with_unit_capabilities():
    """The agent suite (SUITE) with its agents as USER holding exactly the
    unit's capabilities (DSR_AGENT_USER: tools/lab/agent_lab.py checks
    each agent's uid and capability sets once it is up)."""
    env = dict(os.environ, **{agent_lab.USER_ENV: USER,
                              agent_lab.CAPS_ENV: ','.join(UNIT_CAPS)})
    out = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '--tb=short',
         '-W', 'ignore::DeprecationWarning', *SUITE], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=1450)
    # What failed and why, not the warnings summary.
    tail = '\n'.join(line for line in out.stdout.splitlines()
                     if line.startswith(('E ', 'FAILED', 'ERROR', '___'))
                     )[-6000:] + out.stdout[-1500:] + out.stderr[-1500:]
    assert out.returncode == 0, tail
    assert re.search(rf'\b{len(SUITE)} passed\b', out.stdout), tail
    assert not re.search(r'\b(skipped|deselected|failed|error)',
                         out.stdout.splitlines()[-1]), tail
