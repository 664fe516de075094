"""HelperRecord: when a dead helper is tried again, and what is reported."""

import pytest

from amphora_agent import supervision


def test_first_restart_is_immediate_then_doubles_up_to_the_cap():
    rec = supervision.HelperRecord('bgp', max_delay=8.0, reset_after=60.0)
    rec.started(0.0, restart=False)
    rec.died('killed', 100.0)
    assert rec.state == 'restarting'
    assert rec.due(100.0)                   # healthy for 100 s: at once
    waits = []
    now = 100.0
    for _ in range(6):
        rec.failed('cannot start', now)
        waits.append(rec.next_try - now)
        assert not rec.due(now)
        now = rec.next_try
        assert rec.due(now)
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    rec.started(now)
    assert rec.report() == {'state': 'running', 'restarts': 1,
                            'last_error': 'cannot start'}


def test_dying_soon_after_a_restart_backs_off():
    rec = supervision.HelperRecord('bgp', max_delay=30.0, reset_after=10.0)
    rec.started(0.0, restart=False)
    now, waits = 50.0, []
    for _ in range(4):
        rec.died('crash', now)
        waits.append(rec.next_try - now)
        now = rec.next_try
        rec.started(now)
        now += 1.0                      # runs 1 s, less than reset_after
    assert waits == [0.0, 1.0, 2.0, 4.0]
    assert rec.restarts == 4


def test_a_healthy_period_resets_the_back_off():
    rec = supervision.HelperRecord('health', max_delay=30.0, reset_after=10.0)
    rec.started(0.0, restart=False)
    rec.died('a', 20.0)
    rec.started(20.0)
    rec.died('b', 21.0)
    assert rec.next_try == 22.0          # 1 s: died within reset_after
    rec.started(22.0)
    rec.died('c', 40.0)                  # ran 18 s >= 10 s
    assert rec.next_try == 40.0
    assert rec.report() == {'state': 'restarting', 'restarts': 2,
                            'last_error': 'c'}


def test_disabled_and_bad_arguments():
    rec = supervision.HelperRecord('bgp')
    rec.disable()
    assert rec.report()['state'] == 'disabled'
    assert not rec.due(0.0)
    with pytest.raises(ValueError, match='max_delay'):
        supervision.HelperRecord('bgp', max_delay=-1)
