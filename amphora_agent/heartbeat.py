"""The SE's heartbeat while its worker is inside one long step.

The worker reports its state every [agent] stats_interval between steps.
A step that takes longer than the controller's [dsr_controller] agent_ttl
(a first apply of thousands of listeners on a slow host) used to make the
SE look silent: its operating statuses stopped voting, and a group whose
SEs were all applying the same large change went ERROR in Octavia while
they were working.  So while the worker is busy, this thread sends the
last state again every interval, with how long the step has taken
(``busy_for``): what it says is still true -- the generation applied is
the one before the step, and the step is in progress.

Bounded: what changes during the step (a member's health, a BGP session,
the uplink) is reported only when it ends, so the repeated state may lag
that long; past [agent] busy_heartbeat_max seconds (60) in one step the
worker is taken for stuck and the heartbeat stops, so the controller sees
the silence it should.
"""

import contextlib
import threading
import time


class BusyHeartbeat:
    def __init__(self, resend, interval, limit, clock=time.monotonic):
        """resend(busy_for): send the last state again; interval() and
        limit(): seconds, read at each use (reloadable options)."""
        self._resend = resend
        self._interval = interval
        self._limit = limit
        self._clock = clock
        self._cond = threading.Condition()
        self._busy_since = None
        self._last_sent = clock()
        self._stopping = False
        self._thread = None

    def sent(self):
        """A state report went out (the worker's own): the next heartbeat
        is due an interval from now."""
        with self._cond:
            self._last_sent = self._clock()

    @contextlib.contextmanager
    def busy(self):
        """Around one worker step."""
        with self._cond:
            self._busy_since = self._clock()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name='busy-heartbeat', daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._busy_since = None

    def _due(self):
        """Seconds the step has taken when a heartbeat is due now, else
        (None, seconds to wait)."""
        now = self._clock()
        if self._busy_since is None:
            return None, None
        busy_for = now - self._busy_since
        if busy_for > self._limit():
            return None, None           # stuck: silence is the truth
        wait = self._last_sent + self._interval() - now
        if wait > 0:
            return None, wait
        return busy_for, None

    def _loop(self):
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    busy_for, wait = self._due()
                    if busy_for is not None:
                        self._last_sent = self._clock()
                        break
                    self._cond.wait(wait)
            self._resend(busy_for)

    def stop(self):
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
