"""Which controller reports to Octavia: the holder of one tooz lock.

tooz's own watch_elected_as_leader never tells a leader that it lost the
lock: a Redis restarted empty (or a network cut longer than the lock
timeout) frees the lock, another controller takes it, and the first one
goes on reporting -- two leaders.  So the leader proves it still holds the
lock on every round (heartbeat, which fails once the lock's key is gone)
and steps down the moment it cannot.  No backend reachable, no leader:
statuses wait, they are never reported twice.
"""

from oslo_log import log as logging

LOG = logging.getLogger(__name__)


class LeaderElection:
    def __init__(self, coordinator, name, member_id):
        self._coordinator = coordinator
        self._name = b'octavia-dsr-leader.' + name
        self._lock = None   # the backend hands out locks once started
        self._member_id = member_id
        self._leading = False

    @property
    def leading(self):
        return self._leading

    def check(self):
        """One round: keep, lose or win the leadership; True if leading."""
        if self._leading and not self._still_held():
            LOG.warning('controller %s lost the leadership (lock gone or '
                        'backend unreachable); stepping down',
                        self._member_id)
            self._leading = False
            self._forget()
        if not self._leading:
            try:
                if self._lock is None:
                    self._lock = self._coordinator.get_lock(self._name)
                self._leading = bool(self._lock.acquire(blocking=False))
            except Exception as exc:  # noqa: BLE001 -- backend down
                LOG.debug('leader election: %s', exc)
            if self._leading:
                LOG.info('controller %s is the leader', self._member_id)
        return self._leading

    def _still_held(self):
        heartbeat = getattr(self._lock, 'heartbeat', None)
        if heartbeat is None:       # backend without lock heartbeats
            return True
        try:
            return heartbeat() is not False
        except Exception:  # noqa: BLE001 -- lost, or unreachable
            return False

    def _forget(self):
        """Drop the local claim (the backend's may be gone already)."""
        try:
            self._lock.release()
        except Exception:  # noqa: BLE001 -- nothing to release
            pass

    def resign(self):
        if self._leading:
            self._leading = False
            self._forget()
