"""amphora_agent.l7.wall_steps: a step of the wall clock against the
steady one, on fake clocks."""

from amphora_agent.l7 import wall_steps
from tests.unit.dsr_provider import fakes


def test_steps_beyond_the_bound_are_seen_once_with_their_sign():
    wall, steady = fakes.Clock(1_000.0), fakes.Clock(5.0)
    steps = wall_steps.WallSteps(wall=wall, steady=steady)
    assert steps.moved() == 0.0             # a first look: nothing before
    for _ in range(3):                      # both clocks run
        wall.now += 1
        steady.now += 1
        assert steps.moved() == 0.0
    wall.now += 0.9                         # slewed, not stepped
    assert steps.moved() == 0.0
    wall.now += 1 - 10.0                    # stepped back 10 s
    steady.now += 1
    assert steps.moved() == -10.0
    assert steps.moved() == 0.0             # seen once
    wall.now += 4.0
    assert steps.moved() == 4.0
