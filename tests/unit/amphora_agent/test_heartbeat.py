"""BusyHeartbeat: the last state again while the worker is inside one long
step, never between steps, never past the limit.  When a heartbeat is due
is decided on a clock the tests turn by hand; one thread test each shows
that a due heartbeat is sent and that stop ends the thread."""

import threading

from amphora_agent import heartbeat
from tools.lab.netns import wait_for


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def beat(interval=10.0, limit=60.0):
    clock = Clock()
    return clock, heartbeat.BusyHeartbeat(lambda busy_for: None,
                                          lambda: interval, lambda: limit,
                                          clock=clock)


def busy(hb):
    """busy() entered without the thread (only the decision is tested)."""
    hb._busy_since = hb._clock()


def test_a_heartbeat_is_due_an_interval_after_the_last_report():
    clock, hb = beat()
    busy(hb)
    clock.now += 4
    assert hb._due() == (None, 6.0)
    clock.now += 6
    assert hb._due() == (10.0, None)


def test_a_report_of_the_worker_puts_the_next_heartbeat_off():
    clock, hb = beat()
    busy(hb)
    clock.now += 9
    hb.sent()
    clock.now += 9
    assert hb._due() == (None, 1.0)


def test_none_between_steps():
    clock, hb = beat()
    clock.now += 100
    assert hb._due() == (None, None)


def test_a_step_past_the_limit_goes_silent():
    """A worker stuck that long is taken for stuck: the controller must
    see the SE silent."""
    clock, hb = beat(limit=60.0)
    busy(hb)
    clock.now += 60
    assert hb._due() == (60.0, None)
    clock.now += 0.1
    assert hb._due() == (None, None)


def test_a_limit_of_zero_sends_nothing():
    clock, hb = beat(limit=0.0)
    busy(hb)
    clock.now += 11
    assert hb._due() == (None, None)


class Sent(list):
    def __call__(self, busy_for):
        self.append(busy_for)


def test_a_long_step_sends_heartbeats_with_how_long_it_took():
    sent = Sent()
    hb = heartbeat.BusyHeartbeat(sent, lambda: 0.05, lambda: 60)
    try:
        with hb.busy():
            wait_for(lambda: len(sent) >= 3, 10, 'three heartbeats')
        assert sent == sorted(sent) and sent[0] > 0
    finally:
        hb.stop()


def test_stop_ends_the_thread_even_while_busy():
    sent = Sent()
    hb = heartbeat.BusyHeartbeat(sent, lambda: 0.05, lambda: 60)
    release = threading.Event()

    def step():
        with hb.busy():
            release.wait(10)
    worker = threading.Thread(target=step)
    worker.start()
    wait_for(lambda: sent, 10, 'a heartbeat')
    hb.stop()
    assert not hb._thread.is_alive()
    release.set()
    worker.join(10)
