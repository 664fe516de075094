"""amphora_agent/control.py: the control thread that makes the agents'
calls to the controller from the namespace they started in."""

import os
import threading

import oslo_messaging as messaging
import pytest

from amphora_agent import control
from tools.lab.netns import wait_for


def raised_within(call, timeout=30):
    """What ``call()`` raised, if it did within ``timeout`` s; None if it
    returned or is still waiting (it runs in a daemon thread, so a call
    that never returns cannot hang the test)."""
    outcome = []

    def run():
        try:
            call()
        except Exception as exc:  # noqa: BLE001 -- the caller's to judge
            outcome.append(exc)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else None


def test_a_report_the_broker_refused_is_sent_again_unless_replaced(
        monkeypatch):
    monkeypatch.setattr(control.ControlThread, 'CAST_RETRY_MAX_DELAY', 0.1)
    thread = control.ControlThread()
    sent, failures = [], [3]
    gate = threading.Event()

    def report(state):
        gate.wait()
        if failures[0]:
            failures[0] -= 1
            raise messaging.MessageDeliveryFailure('broker away')
        sent.append(state)
    try:
        thread.cast('report_state', report, 'old')
        thread.cast('report_member_status', report, 'statuses')
        thread.cast('report_state', report, 'new')     # replaces 'old'
        gate.set()
        wait_for(lambda: len(sent) == 2, 30, 'both kinds sent')
        assert sorted(sent) == ['new', 'statuses']
        # A refused report is sent again...
        failures[0] = 2
        thread.cast('report_state', report, 'again')
        wait_for(lambda: sent[-1:] == ['again'], 30, 'sent after failures')
        assert failures[0] == 0
    finally:
        thread.stop()


def test_a_missing_namespace_is_named_and_never_created():
    before = os.stat('/proc/thread-self/ns/net').st_ino
    with pytest.raises(RuntimeError, match="cannot enter network namespace "
                       "'dsr-test-no-such-ns'"):
        control.enter_netns('dsr-test-no-such-ns')
    assert not os.path.exists('/var/run/netns/dsr-test-no-such-ns')
    assert os.stat('/proc/thread-self/ns/net').st_ino == before
