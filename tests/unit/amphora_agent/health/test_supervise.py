"""HealthChecker.supervise(): a probing loop or notifier thread that died
of an exception is restarted with back-off; statuses survive."""

import threading

from amphora_agent.health import monitor as hm
from amphora_agent.health.monitor import ERROR
from amphora_agent.health.monitor import ONLINE
from tests.unit.amphora_agent.health.test_checker import (  # noqa: F401
    make_checker)
from tests.unit.amphora_agent.health.test_checker import fake  # noqa: F401
from tests.unit.amphora_agent.health.test_checker import mon
from tests.unit.amphora_agent.health.test_checker import wait_until


def _inject(checker, exc):
    def boom():
        raise exc
    checker._loop.call_soon_threadsafe(boom)


def test_dead_probing_loop_is_restarted_and_probes_go_on(
        make_checker, fake):  # noqa: F811
    c, events = make_checker(prober=fake)
    c.set_targets({'m': hm.Target('192.0.2.1', 80, mon(rise=1, fall=1))})
    c.start()
    events.wait('m', None, ONLINE, 5)
    assert c.supervise(now=0.0) is False
    old = c._thread
    _inject(c, SystemExit('injected'))
    old.join(5)
    assert not old.is_alive()
    assert c.supervise(now=100.0) is True
    report = c.report()
    assert report['state'] == 'running' and report['restarts'] == 1
    assert report['last_error'] == (
        'health probing loop thread died: SystemExit: injected')
    # Probing resumed: a failure is seen and notified by the new loop.
    fake.healthy[('192.0.2.1', 80)] = False
    events.wait('m', ONLINE, ERROR, 5)
    assert c.status('m') == ERROR


def test_repeated_deaths_back_off(make_checker, fake):  # noqa: F811
    c, _ = make_checker(prober=fake)
    c.set_backoff(max_delay=8.0, reset_after=60.0)
    c.start()
    now = 100.0
    restarts_at = []
    for _ in range(3):
        thread = c._thread
        _inject(c, KeyboardInterrupt())
        thread.join(5)
        while not c.supervise(now=now):
            assert c.report()['state'] == 'restarting'
            now += 0.5
        restarts_at.append(now)
    assert [t - restarts_at[0] for t in restarts_at] == [0.0, 1.0, 3.0]
    assert c.report()['restarts'] == 3


def test_dead_notifier_is_restarted(make_checker, fake):  # noqa: F811
    died = threading.Event()

    class Fatal(BaseException):
        pass

    calls = []

    def on_change(key, old, new):
        calls.append((key, old, new))
        if len(calls) == 1:
            died.set()
            raise Fatal('callback bug')

    c = hm.HealthChecker(on_change=on_change, prober=fake)
    try:
        c.set_targets({'a': hm.Target('192.0.2.1', 80, mon())})
        c.start()
        assert died.wait(5)
        c._notifier.join(5)
        assert c.supervise(now=100.0) is True
        assert 'notifier thread died: Fatal: callback bug' in \
            c.report()['last_error']
        c.set_targets({'a': hm.Target('192.0.2.1', 80, mon()),
                       'b': hm.Target('192.0.2.2', 80, mon())})
        wait_until(lambda: ('b', None, ONLINE) in calls, 5,
                   'notification by the new notifier')
    finally:
        c.stop()


def test_stopped_checker_is_not_restarted(make_checker, fake):  # noqa: F811
    c, _ = make_checker(prober=fake)
    c.start()
    c.stop()
    assert c.supervise(now=100.0) is False
    assert c.report()['state'] == 'running'
