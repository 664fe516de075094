"""The SE's BGP sessions as ExaBGP sees them, for report_state and metrics.

ExaBGP is asked ("show neighbor json", speaker.status()) at most once per
``max_age`` seconds whoever asks -- the agent's periodic check, a
Prometheus scrape -- so neither a scrape storm nor the worker's loop keeps
its API busy.

    sessions = BgpSessions(lambda: agent.bgp, max_age=5)
    sessions.peers()      # {'198.18.0.1': 'established', ...}, cached
    sessions.changed()    # differs from what report() last returned
    sessions.report()     # {'peers': {...}} for report_state
"""

import threading
import time

from oslo_log import log as logging

LOG = logging.getLogger(__name__)


class BgpSessions:
    def __init__(self, speaker_of, max_age=5.0, clock=time.monotonic):
        """speaker_of() -> the BgpSpeaker now (a reload replaces it), or
        None: BGP disabled, no peers."""
        self.speaker_of = speaker_of
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._peers = None
        self._read_at = None
        self._reported = None

    def peers(self):
        """{peer address: session state}, lower case ExaBGP FSM names
        ('established', 'active', ...; 'not-running' without ExaBGP)."""
        speaker = self.speaker_of()
        if speaker is None:
            return {}
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self.max_age:
                self._peers = self._read(speaker)
                self._read_at = now
            return dict(self._peers)

    def _read(self, speaker):
        try:
            return {address: status.state for address, status in
                    speaker.status().items()}
        except Exception as exc:  # noqa: BLE001 -- a report must not fail
            LOG.warning('BGP: cannot read the session states: %s', exc)
            return {address: 'unknown' for address in (self._peers or {})}

    def report(self):
        """The sessions for report_state; remembered for changed()."""
        self._reported = self.peers()
        return {'peers': self._reported}

    def changed(self):
        """True when the sessions differ from the last report()."""
        return self.speaker_of() is not None and \
            self.peers() != self._reported
