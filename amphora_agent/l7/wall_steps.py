"""Steps of the L7 SE's wall clock, seen against its steady clock.

What the agent seals and reports is signed at wall-clock times
(dsr_wire/capability_seal.py), and the leader holds each run of seals to
the least lag it saw them with (dsr_provider/controller/tier2.SealClock):
when the clock goes back (NTP correcting a clock that ran ahead), the
seals look late -- as a recording shown late would -- until a signed
report_state, as late, is stored after them.  So the agent reports at
once instead of at the next stats_interval; and, after a step back, again
once its clock has passed the last report's time (the controller drops a
report signed before the last one it stored: Store.record_agent).
"""

import time

# Seconds the wall clock may move against the steady one between two
# looks before it counts as a step: NTP's slew moves it by at most 0.5 ms
# a second; a step the leader forgives anyway (its SEAL_STALE_AFTER, 5 s)
# needs no report.
STEP = 1.0


class WallSteps:
    def __init__(self, wall=time.time, steady=time.monotonic, step=STEP):
        self._wall, self._steady, self.step = wall, steady, step
        self._offset = None

    def moved(self):
        """Seconds the wall clock moved against the steady one since the
        last call (negative: back), when more than `step`; else 0."""
        offset = self._wall() - self._steady()
        last, self._offset = self._offset, offset
        if last is None or abs(offset - last) <= self.step:
            return 0.0
        return offset - last
