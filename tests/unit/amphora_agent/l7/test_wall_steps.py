"""amphora_agent.l7.wall_steps: a step of the wall clock against the
steady one, on fake clocks."""

import pytest

from amphora_agent.l7 import wall_steps
from tests.unit.dsr_provider import fakes


def test_steps_beyond_the_bound_are_seen_once_with_their_sign():
    wall, steady = fakes.Clock(1_000.0), fakes.Clock(5.0)
    steps = wall_steps.WallSteps(wall=wall, steady=steady)
    wall.now -= 3.0                         # before the first look: seen
    assert steps.moved() == -3.0
    for _ in range(3):                      # both clocks run
        wall.now += 1
        steady.now += 1
        assert steps.moved() == 0.0
    wall.now += 0.9                         # within the bound
    assert steps.moved() == 0.0
    wall.now += 1 - 10.0                    # stepped back 10 s
    steady.now += 1
    assert steps.moved() == -10.0
    assert steps.moved() == 0.0             # seen once
    wall.now += 4.0
    assert steps.moved() == 4.0


@pytest.mark.parametrize('moved, again', [
    (4.0, wall_steps.AGAIN_AFTER),          # forward: soon
    (-0.5, wall_steps.AGAIN_AFTER),
    (-10.0, 10.0 + wall_steps.STEP),        # back: past the last report
])
def test_the_state_is_reported_again_past_a_step_back(moved, again):
    assert wall_steps.again_after(moved) == again
