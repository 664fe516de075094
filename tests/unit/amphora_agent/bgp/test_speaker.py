"""BgpSpeaker lifecycle and route logic against a fake ExaBGP.

The fake (fake_exabgp.py) replaces only ExaBGP itself: the speaker's real
launcher, PID record, API helper (exabgp_api.py) and socket are used, so
start / adopt / restart / stop / drain run as they do for real.  The real
ExaBGP with a real router is in tests/functional/amphora_agent/bgp.
"""

import json
import os
import shutil
import signal
import sys
import tempfile
import time

import pytest

from amphora_agent.bgp.exabgp_config import Peer
from amphora_agent.bgp.exabgp_config import SpeakerConfig
from amphora_agent.bgp import speaker as sp
from amphora_agent import processes

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                    'fake_exabgp.py')

V4, V4B, V6 = '192.0.2.10/32', '192.0.2.11/32', '2001:db8:f::10/128'


def make_config(peer_asn=65000):
    return SpeakerConfig(
        local_asn=65001, router_id='198.18.1.2',
        peers=[Peer('198.18.1.1', peer_asn), Peer('198.18.9.1', peer_asn),
               Peer('2001:db8:1:1::1', peer_asn)],
        nexthop4='198.18.1.2', nexthop6='2001:db8:1:1::2')


class Env:
    def __init__(self):
        # Short path: unix socket paths are limited to 107 bytes.
        self.root = tempfile.mkdtemp(prefix='bgp-unit-')
        self.state_dir = os.path.join(self.root, 'bgp')
        self.cmd_log = os.path.join(self.root, 'commands.log')
        os.environ['FAKE_EXABGP_LOG'] = self.cmd_log
        self.speakers = []

    def speaker(self, config=None, **kw):
        s = sp.BgpSpeaker(config or make_config(), self.state_dir,
                          exabgp_argv=[sys.executable, FAKE],
                          start_timeout=10, stop_timeout=3, **kw)
        self.speakers.append(s)
        return s

    def commands(self, kind=None):
        try:
            with open(self.cmd_log) as f:
                lines = [line.strip() for line in f]
        except FileNotFoundError:
            return []
        return [c for c in lines if kind is None or f' {kind} ' in c]

    def clear_commands(self):
        if os.path.exists(self.cmd_log):
            os.unlink(self.cmd_log)

    def our_processes(self):
        """PIDs of any process whose command line mentions our dir."""
        pids = []
        for d in os.listdir('/proc'):
            if d.isdigit() and int(d) != os.getpid():
                argv = processes.process_cmdline(int(d))
                if any(self.root in a for a in argv):
                    if processes.process_alive(int(d)):
                        pids.append(int(d))
        return pids

    def close(self):
        for s in self.speakers:
            try:
                s.stop()
            except Exception:  # noqa: BLE001
                pass
        # Safety net: nothing of ours may survive a test.
        for pid in self.our_processes():
            processes.terminate_process(
                pid, processes.process_start_time(pid), 2)
        os.environ.pop('FAKE_EXABGP_LOG', None)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def env():
    e = Env()
    try:
        yield e
    finally:
        leftovers = e.our_processes()
        e.close()
    assert not any(processes.process_alive(p) for p in leftovers)


def wait_gone(pid, timeout=5):
    deadline = time.monotonic() + timeout
    while processes.process_alive(pid):
        assert time.monotonic() < deadline, f'pid {pid} still alive'
        time.sleep(0.01)


def test_start_writes_state_and_runs_detached(env):
    s = env.speaker()
    assert s.start() == 'started'
    pid = s.pid
    assert pid and processes.process_alive(pid)
    # Detached: not our child, its own session.
    assert os.getsid(pid) == pid
    with open(f'/proc/{pid}/stat') as f:
        assert int(f.read().rsplit(') ', 1)[1].split()[1]) != os.getpid()
    st = os.stat(s.config_path)
    assert st.st_mode & 0o777 == 0o600
    rec = json.load(open(os.path.join(env.state_dir, sp.PID_FILE)))
    assert rec['pid'] == pid
    assert rec['start_time'] == processes.process_start_time(pid)
    assert all(ps.established for ps in s.status().values())
    assert s.announced() == frozenset()
    # Idempotent.
    assert s.start() == 'adopted' and s.pid == pid


def test_set_announced_is_idempotent(env):
    s = env.speaker()
    s.start()
    added, removed = s.set_announced({'192.0.2.10', V6})
    assert added == {V4, V6} and removed == set()
    # Two v4 peers + one v6 peer.
    assert len(env.commands('announce')) == 3
    assert s.rib() == {
        '198.18.1.1': {V4: '198.18.1.2'}, '198.18.9.1': {V4: '198.18.1.2'},
        '2001:db8:1:1::1': {V6: '2001:db8:1:1::2'}}
    env.clear_commands()
    assert s.set_announced({V4, V6}) == (set(), set())
    assert env.commands('announce') == env.commands('withdraw') == []
    added, removed = s.set_announced({V4B, V6})
    assert added == {V4B} and removed == {V4}
    assert len(env.commands('announce')) == 2
    assert len(env.commands('withdraw')) == 2
    assert s.announced() == {V4B, V6} == s.desired()


def test_announce_withdraw_persist_intent(env):
    s = env.speaker()
    s.start()
    s.announce('192.0.2.10')
    s.announce(V6)
    assert s.announced() == {V4, V6}
    s.withdraw('192.0.2.10')
    s.withdraw('192.0.2.77')          # not announced: harmless
    assert s.announced() == {V6}
    with open(os.path.join(env.state_dir, sp.INTENT_FILE)) as f:
        assert json.load(f) == {'prefixes': [V6]}
    with pytest.raises(ValueError):
        s.announce('192.0.2.0/24')


def test_restarted_agent_adopts_without_touching_routes(env):
    s = env.speaker()
    s.start()
    s.set_announced({V4, V6})
    pid = s.pid
    del s                              # the agent "dies" without stopping
    env.clear_commands()
    s2 = env.speaker()
    assert s2.start() == 'adopted'
    assert s2.pid == pid
    assert s2.announced() == {V4, V6}
    assert env.commands('announce') == env.commands('withdraw') == []
    assert s2.set_announced({V4, V6}) == (set(), set())


def test_adopt_reconciles_to_the_persisted_intent(env):
    s = env.speaker()
    s.start()
    s.set_announced({V4})
    # The agent died after persisting a new intent but before sending it.
    s._save_intent({V4B})
    s2 = env.speaker()
    assert s2.start() == 'adopted'
    assert s2.announced() == {V4B}


def test_adopt_without_intent_file_keeps_what_exabgp_announces(env):
    s = env.speaker()
    s.start()
    s.set_announced({V4, V6})
    os.unlink(os.path.join(env.state_dir, sp.INTENT_FILE))
    s2 = env.speaker()
    assert s2.start() == 'adopted'
    assert s2.announced() == {V4, V6} == s2.desired()


def test_config_change_restarts_and_reannounces(env):
    s = env.speaker()
    s.start()
    s.set_announced({V4, V6})
    old = s.pid
    env.clear_commands()
    s2 = env.speaker(config=make_config(peer_asn=65002),
                     restart_drain_time=0)
    assert s2.start() == 'restarted'
    wait_gone(old)
    assert s2.pid != old
    # The old one was drained first, the new one announces the intent.
    assert env.commands()[0] == 'show neighbor json'
    assert 'clear adj-rib out' in env.commands()
    assert s2.announced() == {V4, V6}
    assert 'peer-as 65002;' in open(s2.config_path).read()


def test_stop_kills_without_withdraw_and_start_reannounces(env):
    s = env.speaker()
    s.start()
    s.set_announced({V4})
    pid = s.pid
    helper = processes.process_children(pid)
    assert helper
    env.clear_commands()
    s.stop()
    assert not processes.process_alive(pid)
    for h in helper:
        wait_gone(h)
    assert env.commands() == []        # no withdraw of any kind
    assert not os.path.exists(s.socket_path)
    assert not s.running() and s.pid is None
    assert all(ps.state == 'not-running' for ps in s.status().values())
    s.stop()                           # idempotent
    assert s.desired() == {V4}
    assert s.start() == 'started'
    assert s.announced() == {V4}


def test_drain_withdraws_then_stops(env):
    s = env.speaker()
    s.start()
    s.set_announced({V4, V6})
    pid = s.pid
    env.clear_commands()
    t0 = time.monotonic()
    s.drain(wait=0.2)
    assert time.monotonic() - t0 >= 0.2
    assert env.commands() == ['clear adj-rib out', 'show adj-rib out']
    assert not processes.process_alive(pid)
    assert s.desired() == frozenset()
    s.drain(wait=0)                    # idempotent when not running


def test_not_running_raises_but_keeps_intent(env):
    s = env.speaker()
    with pytest.raises(sp.BgpNotRunning):
        s.announce(V4)
    with pytest.raises(sp.BgpNotRunning):
        s.set_announced({V4, V6})
    assert s.desired() == {V4, V6}
    assert s.start() == 'started'
    assert s.announced() == {V4, V6}


def test_error_answer_raises(env):
    s = env.speaker()
    s.start()
    with pytest.raises(sp.BgpError, match='error'):
        s.command('bogus command')
    # The channel is still in sync afterwards.
    s.announce(V4)
    assert s.announced() == {V4}


def test_crashed_exabgp_is_restarted(env):
    s = env.speaker()
    s.start()
    s.set_announced({V4})
    pid = s.pid
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    assert not s.running()
    with pytest.raises(sp.BgpNotRunning):
        s.announced()
    assert s.start() == 'started'
    assert s.announced() == {V4}


def test_reused_pid_is_not_adopted(env):
    s = env.speaker()
    s.start()
    path = os.path.join(env.state_dir, sp.PID_FILE)
    rec = json.load(open(path))
    real = rec['pid']
    # Point the record at a live process that is not ExaBGP (us).
    rec['pid'] = os.getpid()
    with open(path, 'w') as f:
        json.dump(rec, f)
    assert not s.running()
    # The record is not trusted, and the real (stray) ExaBGP running our
    # config is stopped before a new one starts: never two speakers.
    assert s.start() == 'started'
    wait_gone(real)
    assert s.pid != real and processes.process_alive(os.getpid())


def test_lost_pid_file_stops_the_stray(env):
    s = env.speaker()
    s.start()
    old = s.pid
    os.unlink(os.path.join(env.state_dir, sp.PID_FILE))
    assert s.start() == 'started'
    wait_gone(old)
    ours = [p for p in env.our_processes()
            if s.config_path in processes.process_cmdline(p)]
    assert ours == [s.pid]


def test_failed_start_reports_and_leaves_nothing(env):
    s = sp.BgpSpeaker(make_config(), env.state_dir,
                      exabgp_argv=[sys.executable, '-c',
                                   'import sys; print("boom"); sys.exit(3)'],
                      start_timeout=5)
    with pytest.raises(sp.BgpError, match='boom'):
        s.start()
    assert not s.running()
    assert not os.path.exists(os.path.join(env.state_dir, sp.PID_FILE))


def test_from_options(env):
    class Opts:
        local_asn = 65001
        router_id = None
        peers = ['198.18.1.1 65000']
        md5_password = None
        hold_time = 9
        nexthop_ipv4 = nexthop_ipv6 = None
        state_dir = env.state_dir
        exabgp_command = f'{sys.executable} {FAKE}'
        exabgp_log_level = 'warning'
        start_timeout = 7.0
        command_timeout = None
        restart_drain_time = 0.0
    s = sp.BgpSpeaker.from_options(Opts, nexthop4='198.18.1.2')
    env.speakers.append(s)
    assert s.exabgp_argv == [sys.executable, FAKE]
    assert s.log_level == 'WARNING' and s.start_timeout == 7.0
    assert s.command_timeout == 10.0 and s.restart_drain_time == 0.0
    assert s.start() == 'started'
    s.announce('192.0.2.10')
    assert s.announced() == {V4}
    with pytest.raises(ValueError):
        sp.BgpSpeaker(make_config(), env.state_dir, log_level='LOUD')


def test_restart_with_a_different_peer_list(env):
    s = env.speaker()
    s.start()
    s.set_announced({V4, V6})
    old = s.pid
    fewer = SpeakerConfig(local_asn=65001, router_id='198.18.1.2',
                          peers=[Peer('198.18.7.1', 65000)],
                          nexthop4='198.18.1.2')
    s2 = env.speaker(config=fewer, restart_drain_time=0)
    assert s2.start() == 'restarted'
    wait_gone(old)
    # v6 has no peer any more: kept in the intent, announced nowhere.
    assert s2.rib() == {'198.18.7.1': {V4: '198.18.1.2'}}
    assert s2.desired() == {V4, V6}
    assert list(s2.status()) == ['198.18.7.1']
