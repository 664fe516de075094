"""Steps of the L7 SE's wall clock, seen against its steady clock.

What the agent seals and reports is signed at wall-clock times
(dsr_wire/capability_seal.py), and the leader holds each run of seals to
the least lag it saw them with (dsr_provider/controller/tier2.SealClock):
when the clock goes back (NTP stepping a clock that ran ahead), the seals
look late -- as a recording shown late would -- until a signed
report_state, as late, is stored after them.  So the agent reports at
once instead of at the next stats_interval, and again a little later
(again_after): the first report may be stored before the leader read the
seals from before the step, and, after a step back, dropped -- the
controller drops a report signed before the last one it stored
(Store.record_agent) until the clock has passed that time.

Linux slews CLOCK_MONOTONIC with the wall clock, so a slew is not seen
here: the heartbeat (stats_interval) carries it, while the slew moves the
clock by less than the leader's margin between two heartbeats (chrony
slews by at most about 83 ms a second: 0.8 s in 10 s).
"""

import time

# Seconds the wall clock may move against the steady one between two
# looks before it counts as a step.  Only a step is seen (above); the
# leader forgives one under its SEAL_STALE_AFTER (5 s) anyway.
STEP = 1.0
# Seconds after a step when the state is reported again at the latest.
AGAIN_AFTER = 2.0


class WallSteps:
    def __init__(self, wall=time.time, steady=time.monotonic, step=STEP):
        self._wall, self._steady, self.step = wall, steady, step
        self._offset = self._now_offset()

    def _now_offset(self):
        return self._wall() - self._steady()

    def moved(self):
        """Seconds the wall clock moved against the steady one since the
        last call (since it was made, at the first), when more than
        `step` (negative: back); else 0."""
        offset = self._now_offset()
        last, self._offset = self._offset, offset
        if abs(offset - last) <= self.step:
            return 0.0
        return offset - last


def again_after(moved):
    """Seconds after a step of `moved` s (WallSteps.moved) when the state
    is to be reported again: once the clock has passed, by STEP, the time
    of the report signed before a step back; AGAIN_AFTER at least."""
    return max(AGAIN_AFTER, -moved + STEP)
