"""Controller.stop's order: the leadership is released as soon as the
reporter stopped -- another controller takes over while this one's
consumers are still stopping (an idle oslo.messaging listener notices a
stop only at its next poll, seconds later) -- and the consumers and the
coordination backend stop at once, not in turn.  And what a controller
imports to start."""

import subprocess
import sys
import threading
import time
import types

from oslo_config import cfg
import oslo_messaging as messaging

from dsr_provider.controller import service


class Election:
    def __init__(self):
        self.resigned = threading.Event()

    def resign(self):
        self.resigned.set()


class SlowServer:
    """An oslo.messaging server whose wait() returns when released (an
    idle listener's poll running out); it notes whether the leadership was
    already released when its stop began."""

    def __init__(self, election):
        self.election = election
        self.stopping = threading.Event()
        self.release = threading.Event()
        self.resigned_before_stop = None

    def stop(self):
        self.resigned_before_stop = self.election.resigned.is_set()
        self.stopping.set()

    def wait(self):
        assert self.release.wait(10), 'never released'


class Coordinator:
    def __init__(self):
        self.calls = []
        self.stopped = threading.Event()

    def leave_group(self, group):
        self.calls.append(('leave_group', group))
        return self

    def get(self):
        return None

    def stop(self):
        self.calls.append(('stop',))
        self.stopped.set()


def _controller():
    ctl = service.Controller.__new__(service.Controller)
    ctl.controller_id = 'ctl-test'
    ctl._stop = threading.Event()
    ctl._wake = threading.Event()
    ctl._thread = ctl._stats_thread = None
    ctl._tier2 = ctl._neutron = None
    ctl.election = Election()
    ctl._server = SlowServer(ctl.election)
    ctl._listener = SlowServer(ctl.election)
    ctl.coordinator = Coordinator()
    ctl.leader_group = b'controllers'
    return ctl


def test_leadership_goes_first_and_the_rest_stops_at_once():
    ctl = _controller()
    stopping = threading.Thread(target=ctl.stop)
    stopping.start()
    try:
        # Both consumers are stopping and neither has finished, yet the
        # leadership is free and the coordinator is stopping too.
        for server in (ctl._server, ctl._listener):
            assert server.stopping.wait(5)
        assert ctl.election.resigned.is_set()
        assert ctl._server.resigned_before_stop
        assert ctl._listener.resigned_before_stop
        assert ctl.coordinator.stopped.wait(5), \
            'the coordinator waited for the consumers'
        assert ctl.coordinator.calls == [('leave_group', b'controllers'),
                                         ('stop',)]
        assert stopping.is_alive()      # still waiting for the consumers
    finally:
        ctl._server.release.set()
        ctl._listener.release.set()
        stopping.join(10)
    assert not stopping.is_alive()


def test_the_controller_imports_openstacksdk_only_for_neutron():
    # openstacksdk is about a second of every controller's start; only
    # the Neutron integration (neutron_sync.port_sync_from_conf) uses it.
    code = ('import sys\n'
            'import dsr_provider.controller.service\n'
            'print(sorted({m.split(".")[0] for m in sys.modules}'
            ' & {"openstack", "keystoneauth1"}))\n')
    out = subprocess.run([sys.executable, '-W', 'ignore', '-c', code],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]', out.stdout


# ------------------------------------------------ the leader's wake-up
class LoopElection:
    def __init__(self, leading):
        self.leading = leading
        self.checks = 0

    def check(self):
        self.checks += 1
        return self.leading


class RoundRecorder:
    """Stands in for reporter.Reporter: counts rounds; a round answers
    the next of `agains` (what run_statuses returns: retry soon), then
    False."""

    def __init__(self):
        self.rounds = threading.Semaphore(0)
        self.agains = []

    def __call__(self, *args, **kwargs):
        return self

    def run_statuses(self):
        again = self.agains.pop(0) if self.agains else False
        self.rounds.release()
        return again


def _looping(monkeypatch, leading, loop_interval=30.0, driver_lib=None):
    ctl = service.Controller.__new__(service.Controller)
    ctl.conf = types.SimpleNamespace(dsr_controller=types.SimpleNamespace(
        loop_interval=loop_interval, agent_ttl=30.0, apply_timeout=30.0,
        report_workers=1, tombstone_ttl=60.0))
    ctl._stop = threading.Event()
    ctl._wake = threading.Event()
    ctl._reload = threading.Event()
    ctl.election = LoopElection(leading)
    ctl.coordinator = types.SimpleNamespace(run_watchers=lambda: None)
    ctl.store = types.SimpleNamespace(agent_ttl=30.0)
    ctl.transport = ctl.signer = None
    ctl.driver_lib = object()
    if driver_lib is not None:
        ctl._driver_lib = driver_lib
    ctl.live_agents = lambda group: set()
    recorder = RoundRecorder()
    monkeypatch.setattr(service.reporter_mod, 'Reporter', recorder)
    monkeypatch.setattr(service.agent_rpc, 'AgentNotifier',
                        lambda *a, **kw: None)
    thread = threading.Thread(target=ctl._run, daemon=True)
    thread.start()
    return ctl, recorder, thread


def _stop(ctl, thread):
    ctl._stop.set()
    ctl._wake.set()
    thread.join(5)
    assert not thread.is_alive()


def test_the_leader_sleeps_until_woken_or_asked_to_retry(monkeypatch):
    ctl, recorder, thread = _looping(monkeypatch, leading=True)
    try:
        assert recorder.rounds.acquire(timeout=5), 'no first round'
        # loop_interval is 30 s: nothing runs until something wakes it.
        assert not recorder.rounds.acquire(timeout=0.5)
        ctl._wake.set()
        assert recorder.rounds.acquire(timeout=5), 'a wake ran no round'
        assert not recorder.rounds.acquire(timeout=0.5)
        # A round that left work (a load balancer waits a round) is
        # followed by another within STANDBY_INTERVAL, unwoken.
        recorder.agains = [True]
        ctl._wake.set()
        assert recorder.rounds.acquire(timeout=5)
        assert recorder.rounds.acquire(timeout=5), 'the retry never ran'
        assert not recorder.rounds.acquire(timeout=0.5)
    finally:
        _stop(ctl, thread)


def test_a_standby_tries_the_lock_every_standby_interval(monkeypatch):
    ctl, recorder, thread = _looping(monkeypatch, leading=False)
    try:
        # With loop_interval at 30 s, ten tries still come within 5 s.
        deadline = time.monotonic() + 5
        while ctl.election.checks < 10 and time.monotonic() < deadline:
            ctl._stop.wait(0.05)
        assert ctl.election.checks >= 10, ctl.election.checks
        assert not recorder.rounds.acquire(timeout=0)    # it never led
    finally:
        _stop(ctl, thread)


def test_the_leader_looks_for_the_driver_agent_every_standby_interval(
        monkeypatch):
    # octavia-driver-agent's sockets appear after the tenth look: the
    # first round follows within a second although loop_interval is 30 s.
    looks = []

    def driver_lib():
        looks.append(1)
        return object() if len(looks) > 10 else None
    ctl, recorder, thread = _looping(monkeypatch, leading=True,
                                     driver_lib=driver_lib)
    try:
        assert recorder.rounds.acquire(timeout=5), 'no round'
        assert len(looks) > 10
    finally:
        _stop(ctl, thread)


def test_a_change_queue_that_is_not_durable_is_warned_about(caplog):
    """A RabbitMQ restart loses the changes of a queue that is not
    durable: the controller says so at start (docs/operations.md)."""
    import logging as std_logging
    conf = cfg.ConfigOpts()
    conf([], project='octavia-dsr-test')
    transport = messaging.get_notification_transport(
        conf, url='rabbit://guest:guest@127.0.0.1:5672/')
    try:
        with caplog.at_level(std_logging.WARNING):
            service._warn_if_queue_not_durable(conf)
        assert 'a RabbitMQ restart loses' in caplog.text
        caplog.clear()
        conf.set_override('rabbit_quorum_queue', True,
                          'oslo_messaging_rabbit')
        with caplog.at_level(std_logging.WARNING):
            service._warn_if_queue_not_durable(conf)
        assert 'RabbitMQ restart' not in caplog.text
    finally:
        transport.cleanup()


def test_flap_damping_thresholds_are_checked_before_anything_starts():
    """A reuse threshold not below the suppress one is refused by name
    in the constructor, before the database, the broker or the leader
    group are touched."""
    from dsr_provider import opts
    conf = cfg.ConfigOpts()
    opts.register_controller_opts(conf)
    conf([], project='dsr-test')
    conf.set_override('l7_flap_suppress', 2.0, 'dsr_controller')
    conf.set_override('l7_flap_reuse', 2.0, 'dsr_controller')
    try:
        service.Controller(conf)
    except ValueError as exc:
        assert str(exc) == ('[dsr_controller] l7_flap_reuse (2.0) must be '
                            'below l7_flap_suppress (2.0)')
    else:
        raise AssertionError('accepted')
