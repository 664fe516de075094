"""The rise/fall state machine (max_retries / max_retries_down)."""

import pytest

from amphora_agent.health import monitor as hm
from amphora_agent.health.monitor import ERROR
from amphora_agent.health.monitor import ONLINE


def feed(state, results):
    """Feed results; return the list of (index, old, new) transitions."""
    out = []
    for i, ok in enumerate(results):
        change = state.record(ok)
        if change:
            out.append((i,) + change)
    return out


def test_default_init_up_first_failure_decides():
    s = hm.HealthState(max_retries=3, max_retries_down=3)
    assert s.status == ONLINE
    assert feed(s, [False]) == [(0, ONLINE, ERROR)]


def test_default_init_up_first_success_settles():
    s = hm.HealthState(max_retries=3, max_retries_down=3)
    # once settled, it takes max_retries_down consecutive failures
    assert feed(s, [True, False, False]) == []
    assert feed(s, [False]) == [(0, ONLINE, ERROR)]


def test_fully_up_needs_max_retries_down_failures():
    s = hm.HealthState(max_retries=2, max_retries_down=3,
                       init_state='fully-up')
    assert s.status == ONLINE
    assert feed(s, [False, False, False]) == [(2, ONLINE, ERROR)]


def test_down_and_fully_down():
    s = hm.HealthState(max_retries=3, max_retries_down=2, init_state='down')
    assert s.status == ERROR
    assert feed(s, [True]) == [(0, ERROR, ONLINE)]
    s = hm.HealthState(max_retries=3, max_retries_down=2,
                       init_state='fully-down')
    assert feed(s, [True, True, True]) == [(2, ERROR, ONLINE)]


@pytest.mark.parametrize('rise, fall', [(1, 1), (1, 3), (3, 1), (2, 5),
                                        (10, 10)])
def test_thresholds(rise, fall):
    s = hm.HealthState(rise, fall, init_state='fully-up')
    # fall - 1 failures, then a success: the failure count resets
    assert feed(s, [False] * (fall - 1) + [True]) == []
    assert feed(s, [False] * fall) == [(fall - 1, ONLINE, ERROR)]
    # rise - 1 successes, then a failure: the success count resets
    assert feed(s, [True] * (rise - 1) + [False]) == []
    assert feed(s, [True] * rise) == [(rise - 1, ERROR, ONLINE)]
    # further results in the same direction change nothing
    assert feed(s, [True] * 5) == []


def test_flapping_never_changes_with_thresholds_above_one():
    s = hm.HealthState(2, 2, init_state='fully-up')
    assert feed(s, [False, True] * 20) == []
    assert s.status == ONLINE


def test_record_keeps_last_result_and_reason():
    s = hm.HealthState(1, 1)
    s.record(False, 'connection refused')
    assert (s.results, s.last_ok, s.last_reason) == (
        1, False, 'connection refused')


def test_carried_status_is_settled():
    s = hm.HealthState(2, 2, status=ONLINE)
    assert feed(s, [False]) == []  # not the 'up' first-probe rule
    assert feed(s, [False]) == [(0, ONLINE, ERROR)]
    s = hm.HealthState(2, 2, status=ERROR)
    assert feed(s, [True, True]) == [(1, ERROR, ONLINE)]


def test_bad_init_state():
    with pytest.raises(hm.InvalidMonitor) as exc:
        hm.HealthState(1, 1, init_state='maybe')
    assert 'init_state' in str(exc.value) and 'fully-up' in str(exc.value)
