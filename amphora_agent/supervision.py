"""Restart bookkeeping of the agent's helpers (ExaBGP, the health checker).

    record = HelperRecord('bgp', max_delay=30.0, reset_after=60.0)
    record.died('exit: ...', now)        # death seen: state 'restarting'
    record.due(now)                      # True when the next try may run
    record.started(now)                  # running again
    record.failed('cannot start: ...', now)   # the try failed: back off more
    record.report()   # {'state': ..., 'restarts': n, 'last_error': ...}

Back-off: the first restart after a period of health runs at once (the SE
must be back in ECMP within seconds); every further death or failed start
before the helper has run ``reset_after`` seconds waits longer, doubling
from 1 s up to ``max_delay`` (tenacity's exponential wait), so a helper
that cannot run does not make the agent spin.  No clock is read here: the
caller passes ``now`` (time.monotonic()), which keeps this testable.
"""

import types

import tenacity

RUNNING = 'running'
RESTARTING = 'restarting'
DISABLED = 'disabled'


class HelperRecord:
    def __init__(self, name, max_delay=30.0, reset_after=60.0):
        if max_delay < 0 or reset_after < 0:
            raise ValueError('max_delay and reset_after must be >= 0')
        self.name = name
        self.reset_after = reset_after
        self._wait = tenacity.wait_exponential(multiplier=1, min=0,
                                               max=max_delay, exp_base=2)
        self.state = RUNNING
        self.restarts = 0
        self.last_error = None
        # Deaths and failed starts since the helper last ran reset_after s.
        self.consecutive = 0
        self.started_at = None
        self.next_try = None

    def delay(self, consecutive):
        """Seconds to wait before try number ``consecutive`` (1 = the
        first try after the helper was healthy: no wait)."""
        if consecutive <= 1:
            return 0.0
        return float(self._wait(types.SimpleNamespace(
            attempt_number=consecutive - 1)))

    def _back_off(self, error, now):
        if (self.started_at is not None and
                now - self.started_at >= self.reset_after):
            self.consecutive = 0
        self.consecutive += 1
        self.state = RESTARTING
        self.last_error = error
        self.started_at = None
        self.next_try = now + self.delay(self.consecutive)

    def died(self, error, now):
        """The helper was seen dead (``error``: why, for the report)."""
        self._back_off(error, now)

    def failed(self, error, now):
        """A restart attempt failed; the next one waits longer."""
        self._back_off(error, now)
        # A failed start never ran: it must not count as healthy time.
        self.started_at = None

    def due(self, now):
        return self.state == RESTARTING and (self.next_try is None or
                                             now >= self.next_try)

    def started(self, now, restart=True):
        """The helper runs (``restart``: after a death, so it counts)."""
        if restart:
            self.restarts += 1
        self.state = RUNNING
        self.started_at = now
        self.next_try = None

    def disable(self):
        self.state = DISABLED

    def report(self):
        return {'state': self.state, 'restarts': self.restarts,
                'last_error': self.last_error}
