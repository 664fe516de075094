"""SE group membership through tooz (Redis by default, file:// on one host).

Each agent joins the group of its SE group with its SE id; its capabilities
carry the tunnel addresses and role so the controller knows which SEs exist
and where tunnels come from.  Membership expires when heartbeats stop.
"""

import json
import threading
import time
from urllib import parse

from oslo_log import log as logging
import tooz
from tooz import coordination
from tooz import utils as tooz_utils

from dsr_wire import capability_seal

LOG = logging.getLogger(__name__)

# How often a member checks that the backend still lists it (seconds).
REJOIN_CHECK_INTERVAL = 1.0


def coordinator(backend_url, member_id):
    """A tooz coordinator for backend_url whose calls run in the caller's
    thread (`executor=synchronous`) unless the URL names an executor.

    tooz's default hands every call to one worker thread and back: about
    15 % more CPU per call, and stop() waits up to a second for that
    worker's idle poll (futurist), on every agent and controller stop.
    Our callers wait for each result anyway, and the drivers' clients are
    thread-safe (tooz's heartbeat already calls them from its own thread).
    """
    if isinstance(member_id, str):
        member_id = member_id.encode()
    parts = parse.urlsplit(backend_url)
    options = parse.parse_qsl(parts.query, keep_blank_values=True)
    if not any(key == 'executor' for key, _ in options):
        options.append(('executor', 'synchronous'))
        backend_url = parse.urlunsplit(
            parts._replace(query=parse.urlencode(options)))
    return coordination.get_coordinator(backend_url, member_id)


def group_id(se_group):
    return f'octavia-dsr.{se_group}'.encode()


def join(coordinator, group, capabilities=b''):
    """Create the group if needed and join it (again).

    A member that is already listed (a restart after kill -9 under the same
    id) updates its capabilities instead.
    """
    try:
        coordinator.create_group(group).get()
    except coordination.GroupAlreadyExist:
        pass
    try:
        coordinator.join_group(group, capabilities).get()
    except coordination.MemberAlreadyExist:
        coordinator.update_capabilities(group, capabilities).get()


def ensure_joined(coordinator, member_id, group, capabilities=b''):
    """Join again when the backend lost us: tooz's heartbeat only refreshes
    the member's liveness key, so a backend restarted empty (Redis without
    persistence, a failover, a flush) no longer lists the group or its
    members until they join again.  True when it re-joined."""
    try:
        members = coordinator.get_members(group).get()
    except coordination.GroupNotCreated:
        members = set()
    if member_id in members:
        return False
    LOG.warning('the coordination backend lost our membership of %s; '
                'joining again', group.decode())
    join(coordinator, group, capabilities)
    return True


def members(coordinator, group):
    """{se_id: capabilities (decoded JSON)} of the live members of group
    (bytes, group_id()); {} when the group does not exist."""
    result = {}
    try:
        ids = coordinator.get_members(group).get()
    except coordination.GroupNotCreated:
        return result
    for member in ids:
        try:
            caps = coordinator.get_member_capabilities(group, member).get()
            result[member.decode()] = json.loads(caps)
        except (coordination.MemberNotJoined, ValueError,
                tooz_utils.SerializationError):
            # One member's entry is not readable (anybody who reaches the
            # backend can write it): that member, not the group.
            continue
    return result


class Membership:
    def __init__(self, backend_url, se_id, se_group, capabilities,
                 sealer=None):
        """sealer: a dsr_wire.capability_seal.Sealer; when given, every
        write is sealed and the seal renewed every RESEAL_INTERVAL, so that
        the controller can tell a live SE's entry from a copy of a dead
        one's."""
        self.se_group = se_group
        self._group = group_id(se_group)
        self._member_id = se_id.encode()
        self._coordinator = coordinator(backend_url, self._member_id)
        self._sealer = sealer
        self._seal_renewable = sealer is not None
        self._write_lock = threading.Lock()
        self._caps = capabilities
        self._capabilities = self._encoded(capabilities)
        self._stop = threading.Event()
        self._watchdog = None

    @property
    def seal_boot(self):
        """The run id its seals carry (None: not sealed)."""
        return self._sealer.boot if self._sealer is not None else None

    def _encoded(self, capabilities):
        if self._sealer is not None:
            capabilities = self._sealer.seal(capabilities)
            self._sealed_at = time.monotonic()
        return json.dumps(capabilities).encode()

    def start(self):
        self._coordinator.start(start_heart=True)
        join(self._coordinator, self._group, self._capabilities)
        # Its own thread: a backend that hangs must not stall the caller's
        # loop (the agent's reconciler).
        self._watchdog = threading.Thread(target=self._keep_joined,
                                          name='membership', daemon=True)
        self._watchdog.start()

    def _keep_joined(self):
        failing = False
        while not self._stop.wait(REJOIN_CHECK_INTERVAL):
            try:
                if self._seal_renewable and time.monotonic() - \
                        self._sealed_at >= capability_seal.RESEAL_INTERVAL:
                    with self._write_lock:
                        self._write(self._caps, renewal=True)
                # Under the lock: a join with the bytes read before an
                # update() would publish the older capabilities again.
                with self._write_lock:
                    ensure_joined(self._coordinator, self._member_id,
                                  self._group, self._capabilities)
                if failing:
                    LOG.info('coordination backend answers again')
                failing = False
            except Exception as exc:  # noqa: BLE001 -- redis errors too
                # tooz passes some backend errors through unwrapped (redis
                # ConnectionError from get_members): keep checking.
                if not failing:
                    LOG.warning('coordination backend unavailable: %s', exc)
                failing = True

    def members(self):
        """{se_id: capabilities} of the live members of the group."""
        return members(self._coordinator, self._group)

    def update(self, capabilities):
        """Publish new capabilities (an L7 SE becoming ready, draining);
        a later re-join uses them too.  Before start(): the ones it joins
        with."""
        with self._write_lock:
            self._caps = capabilities
            if self._watchdog is None:
                self._capabilities = self._encoded(capabilities)
                return
            self._write(capabilities)

    def _write(self, capabilities, renewal=False):
        """Publish capabilities (sealed afresh), in place; renewal: the
        same ones again, for their seal.  Under the write lock."""
        self._capabilities = self._encoded(capabilities)
        try:
            self._coordinator.update_capabilities(
                self._group, self._capabilities).get()
        except tooz.NotImplemented:
            if renewal:
                # Leaving and joining every second would flap the
                # membership (tooz's file:// driver): the seal goes stale.
                LOG.warning('the coordination backend cannot update '
                            'capabilities in place: their seal is not '
                            'renewed, and a controller with '
                            'authentication on leaves this SE out of the '
                            'L4 pools (use redis://; docs/security.md)')
                self._seal_renewable = False
                return
            # tooz's file:// driver (one host, tests): leave and join.
            self._coordinator.leave_group(self._group).get()
            join(self._coordinator, self._group, self._capabilities)
        except coordination.MemberNotJoined:
            join(self._coordinator, self._group, self._capabilities)

    def stop(self):
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=10)
        try:
            self._coordinator.leave_group(self._group).get()
        except (coordination.MemberNotJoined, coordination.GroupNotCreated):
            pass
        except coordination.ToozError as exc:
            LOG.warning('leaving %s failed: %s', self._group, exc)
        self._coordinator.stop()
