"""``systemctl restart dsr-agent`` is hitless and ``systemctl stop
dsr-agent`` drains -- the shipped unit (etc/systemd/dsr-agent.service)
played by tools/lab/systemd_unit.py (PID 1 here is not systemd: what it
plays and where it deviates is said there), around the real agent running
as the unit's user with the unit's capabilities, its ExaBGP, a BIRD router
with ECMP and TCP traffic through the VIP.  Also: the shipped logrotate
configuration rotates the real ExaBGP's log without stopping it."""

import json
import os
import pathlib
import pwd
import re
import subprocess
import sys
import threading

import pytest

from tests.functional.amphora_agent.test_agent import _route_stays
from tests.functional.amphora_agent.test_agent import basic_lb
from tools.lab import agent_lab
from tools.lab import netns
from tools.lab import systemd_unit

ROOT = pathlib.Path(__file__).resolve().parents[3]
UNIT = ROOT / 'etc' / 'systemd' / 'dsr-agent.service'
LOGROTATE = ROOT / 'etc' / 'logrotate.d' / 'octavia-dsr'
TRAFFIC = ROOT / 'tools' / 'lab' / 'traffic_loop.py'
P4 = f'{netns.VIP4}/32'
SHIPPED_PIN_DIR = '/sys/fs/bpf/octavia-dsr'
SHIPPED_CONFIG = '/etc/octavia-dsr/dsr-agent.conf'


def _ensure_user(name):
    """The account the unit runs the agent as (a package creates it)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(['useradd', '--system', '--no-create-home',
                        '--shell', '/usr/sbin/nologin', name], check=True)


class UnitLab:
    """An agent lab whose se1 agent is run by the shipped unit."""

    def __init__(self, topo):
        probe = systemd_unit.ServiceUnit(str(UNIT), bindir='/nonexistent')
        user = probe.user
        caps = sorted(c.lower().removeprefix('cap_') for c in ' '.join(
            probe.all('AmbientCapabilities')).split())
        probe.close()
        _ensure_user(user)
        # + sys_admin: the lab's SE is a namespace the agent enters.
        self.lab = agent_lab.AgentLab(topo, run_as=(user, caps +
                                                    ['sys_admin']))
        self.unit = None

    def start(self):
        lab = self.lab
        lab.start()
        run_root = os.path.join(lab.root, 'run')
        state_root = os.path.join(lab.root, 'lib')
        self.runtime_dir = os.path.join(run_root, 'octavia-dsr')
        self.bgp_dir = os.path.join(self.runtime_dir, 'bgp')
        self.conf = conf = lab.config_file('se1')
        # The shipped layout: [agent] and [bgp] state in the unit's
        # RuntimeDirectory, [auth] state in its StateDirectory.
        with open(conf, 'a') as f:
            f.write(f'\n[agent]\nstate_dir = {self.runtime_dir}\n'
                    f'[bgp]\nstate_dir = {self.bgp_dir}\n'
                    f'[auth]\nstate_dir = '
                    f'{os.path.join(state_root, "octavia-dsr")}\n')
        bindir = os.path.join(lab.root, 'bin')
        systemd_unit.install_console_script(
            bindir, 'dsr-agent', lab._agent_python(),
            'amphora_agent.service:main')
        self.unit = systemd_unit.ServiceUnit(
            str(UNIT), bindir=bindir,
            paths={SHIPPED_CONFIG: conf,
                   SHIPPED_PIN_DIR: os.path.join(lab.pin_root, 'se1')},
            runtime_root=run_root, state_root=state_root,
            extra_caps=('sys_admin',),
            # The checkout stands for the installed package.
            env={'PYTHONPATH': str(ROOT)}, visible=(str(ROOT),))

    def start_agent(self):
        proc = self.unit.start()
        proc.wait_for_line(r'^READY', 60)
        return proc

    def exabgp(self):
        """(pid, start time) of the SE's ExaBGP from its pid record."""
        with open(os.path.join(self.bgp_dir, 'exabgp.pid')) as f:
            rec = json.load(f)
        return rec['pid'], rec['start_time']

    def close(self):
        if self.unit is not None:
            self.unit.close()
        self.lab.close()


@pytest.fixture
def unit_lab(make_topology):
    ul = UnitLab(make_topology(n_se=1, n_members=2))
    try:
        ul.start()
        yield ul
    finally:
        ul.close()


def _serve(ul):
    lab = ul.lab
    ul.start_agent()
    lab.wait_applied(lab.publish(basic_lb(lab)), ['se1'], timeout=30)
    lab.wait_route(P4, ['se1'], timeout=30)


def _start_traffic(lab):
    return lab.topo.spawn('client', [*netns.SCRIPT_PYTHON, str(TRAFFIC),
                                     netns.VIP4, '80'],
                          ready=r'^STARTED', ready_timeout=15)


def _stop_traffic(proc):
    os.killpg(proc.pid, 15)
    rc, out = proc.wait_output(60)
    netns.kill_proc(proc)
    assert rc == 0, out[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def _mounts(pid):
    """{mount point: (filesystem type, options)} a process sees."""
    out = {}
    with open(f'/proc/{pid}/mountinfo') as f:
        for line in f:
            fields = line.split()
            fs = fields[fields.index('-') + 1]
            out[fields[4]] = (fs, set(fields[5].split(',')))
    return out


def _umask(pid):
    with open(f'/proc/{pid}/status') as f:
        return next(line.split()[1] for line in f
                    if line.startswith('Umask:'))


def _assert_sandboxed(pid):
    """The unit's PrivateTmp=, ProtectHome=, ProtectSystem=full and
    UMask= hold for pid."""
    mounts = _mounts(pid)
    assert mounts['/tmp'][0] == 'tmpfs', mounts.get('/tmp')
    for path in ('/usr', '/etc'):
        assert 'ro' in mounts[path][1], (path, mounts[path])
    assert mounts['/root'] == ('tmpfs', mounts['/root'][1]) and \
        'ro' in mounts['/root'][1], mounts['/root']
    # UMask=0027 or stricter (the agent sets its own, 0137: files 0640).
    assert int(_umask(pid), 8) & 0o027 == 0o027, _umask(pid)
    # Not the host's: a root shell of the test sees its own /tmp.
    assert _mounts(os.getpid()).get('/tmp') != mounts['/tmp']


def test_systemctl_restart_is_hitless(unit_lab):
    ul, lab = unit_lab, unit_lab.lab
    _serve(ul)
    exabgp = ul.exabgp()
    # It served from the unit's sandbox, and ExaBGP (its child) shares it.
    _assert_sandboxed(ul.unit.main.pid)
    _assert_sandboxed(exabgp[0])
    old_main = ul.unit.main.pid
    traffic = _start_traffic(lab)
    stop = threading.Event()
    deviations, poller = _route_stays(lab, P4, ['se1'], stop)
    try:
        ul.unit.restart()
        ul.unit.main.wait_for_line(r'^READY', 60)
        # The new agent serves: it applies a new generation (with traffic
        # still flowing through its dataplane).
        lab.wait_applied(lab.publish(basic_lb(lab)), ['se1'], timeout=30)
    finally:
        result = _stop_traffic(traffic)
        stop.set()
        poller.join()
    assert ul.unit.main.pid != old_main, 'the agent was not restarted'
    assert ul.exabgp() == exabgp, 'ExaBGP was not adopted'
    assert result['new']['failed'] == 0, result['new']
    assert result['new']['ok'] > 20, result['new']
    assert result['established']['ok'], result['established']
    assert deviations == [], deviations[:5]
    log = ' '.join(what for _, what in ul.unit.log)
    assert '--stop-hook dsr-agent.service' in log, log


def test_systemctl_stop_drains_then_exits(unit_lab):
    ul, lab = unit_lab, unit_lab.lab
    _serve(ul)
    exabgp_pid, exabgp_start = ul.exabgp()
    main = ul.unit.main
    # The shipped logrotate configuration, pointed at this SE's ExaBGP
    # log (and run as root: the lab's agent user is not dsr-agent's
    # default path owner), rotates it while ExaBGP runs.
    log = _rotate_exabgp_log(ul)
    result = {}
    stopper = threading.Thread(
        target=lambda: result.setdefault('rc', ul.unit.stop()))
    stopper.start()
    try:
        lab.wait_route(P4, [], timeout=15)
        assert main.poll() is None, 'the agent exited before the route went'
        # ExaBGP logged the withdrawal into the truncated file, from its
        # start (O_APPEND: no hole of NULs where the old content was).
        with open(log, 'rb') as f:
            after = f.read()
    finally:
        stopper.join(120)
    assert after and not after.startswith(b'\0'), after[:200]
    assert result.get('rc') == 0, (result, main.output_tail())
    assert not _alive(exabgp_pid, exabgp_start), \
        'ExaBGP still runs after a stop'
    assert not os.path.exists(ul.runtime_dir), \
        'RuntimeDirectory left behind by a stop'
    assert _agent_log_says(lab, 'draining')


def test_systemctl_reload_reconfigures_bgp(unit_lab):
    """ExecReload= (SIGHUP): a changed [bgp] option reaches ExaBGP in the
    same agent process; the route comes back through the new session."""
    ul, lab = unit_lab, unit_lab.lab
    _serve(ul)
    before = ul.exabgp()
    main = ul.unit.main.pid
    with open(ul.conf, 'a') as f:
        f.write('\n[bgp]\nhold_time = 6\n')
    ul.unit.reload()

    def new_exabgp():
        try:
            return ul.exabgp() != before
        except (OSError, ValueError):
            return False    # between the old record and the new one
    netns.wait_for(new_exabgp, 60, 'ExaBGP restarted with the new options')
    with open(os.path.join(ul.bgp_dir, 'exabgp.conf')) as f:
        assert 'hold-time 6' in f.read()
    lab.wait_route(P4, ['se1'], timeout=30)
    assert ul.unit.main.pid == main and ul.unit.main.poll() is None
    assert _agent_log_says(lab, 'BGP configuration changed')


def _alive(pid, start_time):
    from amphora_agent import processes
    return processes.process_alive(pid, start_time)


def _agent_log_says(lab, text):
    with open(os.path.join(lab.root, 'se1.log')) as f:
        return text in f.read()


def _rotate_exabgp_log(ul):
    log = os.path.join(ul.bgp_dir, 'exabgp.log')
    with open(log, 'rb') as f:
        before = f.read()
    assert before, 'ExaBGP wrote nothing to its log'
    conf = LOGROTATE.read_text()
    assert '/run/octavia-dsr/bgp/exabgp.log' in conf
    conf = conf.replace('/run/octavia-dsr/bgp/exabgp.log', log)
    conf = conf.replace('su dsr-agent dsr-agent', 'su root root')
    path = os.path.join(ul.lab.root, 'logrotate.conf')
    with open(path, 'w') as f:
        f.write(conf)
    state = os.path.join(ul.lab.root, 'logrotate.state')
    out = subprocess.run(['logrotate', '-f', '-s', state, path],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rotated = [n for n in os.listdir(ul.bgp_dir)
               if n.startswith('exabgp.log') and n != 'exabgp.log']
    assert rotated, os.listdir(ul.bgp_dir)
    assert os.path.getsize(log) < len(before), 'not truncated'
    assert ul.exabgp()  # still recorded
    pid, start_time = ul.exabgp()
    assert _alive(pid, start_time), 'logrotate stopped ExaBGP'
    return log


def test_unit_file_verifies_with_systemd(tmp_path):
    """The shipped units, installed as docs/operations.md says, pass
    systemd-analyze verify without a warning."""
    bindir = os.path.dirname(sys.executable)
    for name in ('dsr-agent.service', 'dsr-controller.service'):
        text = (ROOT / 'etc' / 'systemd' / name).read_text()
        service = systemd_unit.parse(text)['Service']
        commands = [line for key, lines in service.items()
                    if key.startswith('Exec') for line in lines]
        assert not [c for c in commands if '/usr/local/bin' in c]
        assert '/bin/kill -HUP $MAINPID' in service['ExecReload']
        assert service['RuntimeDirectory'] and service['StateDirectory']
        installed = tmp_path / name
        installed.write_text(text.replace('@BINDIR@', bindir))
        out = subprocess.run(['systemd-analyze', 'verify', str(installed)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), \
            out.stdout + out.stderr
        # Sandboxing: the exposure systemd computes for the unit
        # (docs/security.md).  The agent's stays MEDIUM for what it needs
        # (BPF, CAP_NET_ADMIN, raw sockets, the host's network).
        out = subprocess.run(['systemd-analyze', 'security', '--offline=yes',
                              str(installed)], capture_output=True,
                             text=True, timeout=120)
        exposure = float(re.search(r'Overall exposure level for \S+: '
                                   r'([\d.]+)', out.stdout).group(1))
        assert exposure <= {'dsr-agent.service': 5.2,
                            'dsr-controller.service': 3.3}[name], \
            (name, exposure)
