"""Listener statistics as Octavia shows them: totals that never go down.

Each SE reports, per listener, counters cumulative since its dataplane was
loaded, and each report replaces its last one (agent_states.stats).
Octavia keeps what a provider sends as the listener's absolute totals
(octavia-driver-agent replaces one listener_statistics row per listener;
only its own amphorae send deltas it adds up).  The sum of the SEs' last
reports went down when a dataplane restarted (reboot, dsrctl reset: its
counters start again from 0) or an SE left (revoke-se deletes its row),
and a stopped SE's last active_connections counted forever.

So the leader does what Octavia does for its amphorae (one row per
amphora and listener, the listener's statistics their sum, the active
connections of ALLOCATED amphorae only): each (SE, listener) keeps what it
contributed.  When an SE's counters of a listener go below the last ones
seen, its dataplane started again: the last ones are carried and the new
ones added to them.  An SE that goes silent or leaves keeps its
contribution (its traffic happened); only its active connections stop
counting, which come from the SEs heard from only.

Kept in the controller process's memory, per Store (of(store)): a
Reporter rebuilt by a SIGHUP reload or a new term of the same process goes
on from them.  A controller that becomes leader without them starts from
the SEs' current counters (docs/operations.md, "Listener statistics").
"""

import threading
import weakref

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

# The counters Octavia shows as totals (cumulative on the SEs).
CUMULATIVE = ('bytes_in', 'bytes_out', 'request_errors', 'total_connections')

_BY_STORE = weakref.WeakKeyDictionary()
_BY_STORE_LOCK = threading.Lock()


def of(store):
    """The process's ListenerTotals of a store (created on first use)."""
    with _BY_STORE_LOCK:
        totals = _BY_STORE.get(store)
        if totals is None:
            totals = _BY_STORE[store] = ListenerTotals()
        return totals


def _counters(report):
    return {c: max(0, int(report.get(c) or 0)) for c in CUMULATIVE}


class ListenerTotals:
    def __init__(self):
        self._lock = threading.Lock()
        # (se_id, listener id) -> [last counters seen, counters carried
        # from the SE's earlier dataplane runs]
        self._seen = {}

    def update(self, reports, listeners):
        """Totals of the listeners: {listener id: {counter: value}} with
        CUMULATIVE and active_connections.

        reports: [(se_id, listener id, counters, heard)] of the SEs
        counting each listener now (their last report), heard: the SE is
        live and not silent (its active connections count).  listeners:
        the listener ids that exist; what was kept for others is dropped.
        """
        with self._lock:
            active = {}
            for se_id, lid, report, heard in reports:
                current = _counters(report)
                seen = self._seen.get((se_id, lid))
                if seen is None:
                    self._seen[(se_id, lid)] = [
                        current, dict.fromkeys(CUMULATIVE, 0)]
                else:
                    last, carried = seen
                    if any(current[c] < last[c] for c in CUMULATIVE):
                        LOG.info('SE %s: counters of listener %s started '
                                 'again (its dataplane was reloaded): '
                                 'the earlier ones are carried',
                                 se_id, lid)
                        for c in CUMULATIVE:
                            carried[c] += last[c]
                    seen[0] = current
                if heard:
                    active[lid] = active.get(lid, 0) + max(
                        0, int(report.get('active_connections') or 0))
            totals = {}
            for (se_id, lid), (last, carried) in list(self._seen.items()):
                if lid not in listeners:
                    del self._seen[(se_id, lid)]
                    continue
                total = totals.setdefault(lid, dict.fromkeys(CUMULATIVE, 0))
                for c in CUMULATIVE:
                    total[c] += carried[c] + last[c]
            for lid, total in totals.items():
                total['active_connections'] = active.get(lid, 0)
            return totals
