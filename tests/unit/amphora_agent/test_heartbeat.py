"""BusyHeartbeat: the last state again while the worker is inside one long
step, never between steps, never past the limit."""

import threading
import time

from amphora_agent import heartbeat
from tools.lab.netns import wait_for


class Sent(list):
    def __call__(self, busy_for):
        self.append(busy_for)


def test_a_long_step_sends_heartbeats_with_how_long_it_took():
    sent = Sent()
    beat = heartbeat.BusyHeartbeat(sent, lambda: 0.05, lambda: 60)
    try:
        with beat.busy():
            wait_for(lambda: len(sent) >= 3, 10, 'three heartbeats')
        assert sent == sorted(sent) and sent[0] > 0
    finally:
        beat.stop()


def test_no_heartbeat_between_steps_or_right_after_a_report():
    """Between steps the worker reports itself; a step shorter than the
    interval since its last report sends nothing."""
    sent = Sent()
    beat = heartbeat.BusyHeartbeat(sent, lambda: 0.3, lambda: 60)
    try:
        with beat.busy():
            beat.sent()
        time.sleep(0.5)     # a window in which a heartbeat must not come
        assert sent == []
        beat.sent()
        with beat.busy():
            time.sleep(0.1)
        time.sleep(0.4)
        assert sent == []
    finally:
        beat.stop()


def test_a_step_past_the_limit_goes_silent():
    """A worker stuck that long is taken for stuck: the controller must
    see the SE silent."""
    sent = Sent()
    beat = heartbeat.BusyHeartbeat(sent, lambda: 0.05, lambda: 0.3)
    try:
        with beat.busy():
            wait_for(lambda: len(sent) >= 2, 10, 'heartbeats')
            time.sleep(0.4)             # past the limit
            count = len(sent)
            time.sleep(0.3)
            assert len(sent) == count
        assert max(sent) <= 0.3 + 0.05
    finally:
        beat.stop()


def test_a_limit_of_zero_sends_nothing():
    sent = Sent()
    beat = heartbeat.BusyHeartbeat(sent, lambda: 0.01, lambda: 0)
    try:
        with beat.busy():
            time.sleep(0.2)
        assert sent == []
    finally:
        beat.stop()


def test_stop_ends_the_thread_even_while_busy():
    sent = Sent()
    beat = heartbeat.BusyHeartbeat(sent, lambda: 0.05, lambda: 60)
    release = threading.Event()

    def step():
        with beat.busy():
            release.wait(10)
    worker = threading.Thread(target=step)
    worker.start()
    wait_for(lambda: sent, 10, 'a heartbeat')
    beat.stop()
    assert not beat._thread.is_alive()
    release.set()
    worker.join(10)
