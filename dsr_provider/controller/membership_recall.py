"""SE group memberships across a coordination backend that lost its state.

A Redis restarted without persistence (or flushed) forgets every tooz
group at once.  Each agent notices within REJOIN_CHECK_INTERVAL
(dsr_wire/membership.py) and joins again, but until then the controller
would read its groups empty or short: a change "applied by every live SE"
with none live went ACTIVE before any SE had applied it, and the tier-2
watcher took every L7 SE out of the L4 rings (an outage of the group's
tier-2 load balancers until they rejoined).

A short read alone cannot tell a backend reset from SEs that left or
expired, which must count at once (a dead L7 SE is out of the rings within
2 s).  So the controller keeps a sentinel: its own membership of its
leader group.  Only when a read lost members is the sentinel looked at;
when it is gone too, the backend lost its state: the controller joins
again, and for RESET_GRACE seconds every read returns the members known
before the reset together with those read (the ones back and any new
one).  After the grace, reads are what the backend says.
"""

import threading
import time

from oslo_log import log as logging
from tooz import coordination

from dsr_wire import membership

LOG = logging.getLogger(__name__)

# Seconds the members known before a backend reset are kept: every agent
# checks its membership each REJOIN_CHECK_INTERVAL and joins again; five
# checks leave room for a busy host and the backend's own start.
RESET_GRACE = 5 * membership.REJOIN_CHECK_INTERVAL
# Seconds between two looks at the sentinel when no read came back short:
# a reset that every SE rejoined from before the controller read a group
# would otherwise leave the sentinel gone, and the next SE that really
# leaves would be taken for a reset (kept for the grace).
SENTINEL_CHECK = 5.0


def _str(member):
    return member.decode() if isinstance(member, bytes) else str(member)


class MembershipRecall:
    def __init__(self, coordinator, sentinel_group, member_id,
                 grace=RESET_GRACE, clock=time.monotonic):
        """sentinel_group, member_id: a group this controller has joined
        (its leader group) and its member id there."""
        self.coordinator = coordinator
        self.sentinel_group = sentinel_group
        self.member_id = member_id if isinstance(member_id, bytes) \
            else member_id.encode()
        self.grace = grace
        self._clock = clock
        self._lock = threading.Lock()
        # (what is read, group) -> {member id (str): value} last returned:
        # one per reader, since readers keep different values (the SEs a
        # change waits for, the L7 SEs' capabilities) of the same group.
        self._known = {}
        self._reset_at = None
        self._sentinel_seen = clock()

    def read(self, group, read, what='members'):
        """read(group) -> {member: value} from the backend (a group the
        backend does not have: GroupNotCreated, read as empty); what it
        returned, member ids as str, with the members known before a reset
        while the grace lasts.  what: names the reader (its own memory of
        the group).  Backend errors are the caller's, as from read()."""
        try:
            current = {_str(m): v for m, v in read(group).items()}
        except coordination.GroupNotCreated:
            current = {}
        with self._lock:
            key = (what, group)
            before = self._known.get(key, {})
            missing = before.keys() - current.keys()
            if not self._in_grace() and (
                    missing or self._clock() - self._sentinel_seen >=
                    SENTINEL_CHECK):
                self._check_sentinel(group, missing)
            if self._in_grace():
                current = {**before, **current}
            self._known[key] = current
            return dict(current)

    def _in_grace(self):
        return self._reset_at is not None and \
            self._clock() - self._reset_at < self.grace

    def _check_sentinel(self, group, missing):
        """Whether the backend lost its state (the sentinel gone); if so,
        join again and, when members of group went missing, start the
        grace.  A failed join is retried at the next look."""
        try:
            present = self.member_id in self.coordinator.get_members(
                self.sentinel_group).get()
        except coordination.GroupNotCreated:
            present = False
        if present:
            self._sentinel_seen = self._clock()
            return
        if missing:
            self._reset_at = self._clock()
            LOG.warning('coordination backend lost its group memberships '
                        '(restarted empty?): %s of %s and this '
                        'controller\'s own membership of %s are gone; '
                        'members known before are kept for %.0f s while '
                        'they join again', ', '.join(sorted(missing)),
                        group, self.sentinel_group.decode(), self.grace)
        else:
            LOG.warning('coordination backend lost its group memberships '
                        '(restarted empty?): this controller\'s own '
                        'membership of %s is gone; joining again',
                        self.sentinel_group.decode())
        try:
            membership.join(self.coordinator, self.sentinel_group)
            self._sentinel_seen = self._clock()
        except coordination.ToozError as exc:
            LOG.warning('joining %s again failed (%s); retried at the next '
                        'look', self.sentinel_group.decode(), exc)
