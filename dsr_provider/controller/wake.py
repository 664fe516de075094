"""The leader's wake-up between controllers.

The leader's reporting round runs when something it reports on was stored
-- a driver change, an agent's news (a generation applied, statuses that
moved) -- instead of polling the database ten times a second: the
controller that stored it wakes the leader.  The leader wakes its own
loop; any other controller casts ``wake`` to every controller (fanout on
the controllers' topic).  The slow round (``loop_interval``) stays for
what nothing announces: apply_timeout, SEs going silent, SEs leaving
their group.  The leader's own threads (the Neutron port sync, the
tier-2 membership watcher) wake its loop directly.

A wake carries no data and is trusted with nothing (the leader re-reads
the database), but the broker is not the trust boundary (docs/
security.md): with authentication on, a wake must be signed by a
controller key -- the deployment's shared signing key, or its next or
previous one during a rotation -- inside the replay window, with a fresh
nonce.  A refused wake is logged and counted like a refused agent message
and wakes nothing; an SE's key (which signs its reports) does not verify.
"""

import os
import time

from oslo_log import log as logging
import oslo_messaging as messaging

from dsr_wire import agent_rpc
from dsr_wire import auth

LOG = logging.getLogger(__name__)

NAMESPACE = 'octavia_dsr_controller_peers'
VERSION = '1.0'
# Files of the controller key family ("dsr-manage rotate-controller-key"):
# the key, the one being prepared, the one just replaced.
ROTATION_SUFFIXES = ('', '.next', '.old')


class ControllerKeys:
    """key_for(key_id) over the public halves of the controller key family
    beside signing_key.  The files are looked at again at most once a
    second and re-read when they changed: a rotation needs no restart, and
    a retired key (perhaps the leaked one) stops verifying."""

    def __init__(self, signing_key, clock=time.monotonic):
        self.signing_key = signing_key
        self._clock = clock
        self._keys = {}
        self._stamps = None
        self._looked_at = None
        self._look()

    def _paths(self):
        return [self.signing_key + suffix for suffix in ROTATION_SUFFIXES]

    def _look(self):
        self._looked_at = self._clock()
        stamps = []
        for path in self._paths():
            try:
                st = os.stat(path)
            except FileNotFoundError:
                stamps.append(None)
                continue
            stamps.append((st.st_mtime_ns, st.st_ino, st.st_size))
        if stamps == self._stamps:
            return
        keys = {}
        for path, stamp in zip(self._paths(), stamps):
            if stamp is None:
                continue
            try:
                public = auth.load_private_key(path).public_key()
            except (OSError, ValueError, auth.InsecureKeyFile) as exc:
                LOG.warning('controller key %s unreadable: %s', path, exc)
                continue
            keys[auth.key_id(public)] = public
        self._keys, self._stamps = keys, stamps

    def __call__(self, kid):
        if self._clock() - self._looked_at >= 1.0:
            self._look()
        return self._keys.get(kid)


def _target(**kwargs):
    return messaging.Target(exchange=agent_rpc.EXCHANGE,
                            topic=agent_rpc.CONTROLLER_TOPIC,
                            namespace=NAMESPACE, version=VERSION, **kwargs)


class Waker:
    """wake(reason): the leader's next round starts now."""

    def __init__(self, transport, controller_id, leading, wake_local,
                 signer=None):
        """leading() -> whether this controller leads; wake_local(): wakes
        this controller's own loop; signer: auth.Signer of the controller
        key (None: authentication off, wakes unsigned)."""
        self.controller_id = controller_id
        self._leading = leading
        self._wake_local = wake_local
        self._signer = signer
        # One try: a broker that is away must not hold the thread that
        # stored the news (the leader's slow round finds it instead).
        self._client = messaging.get_rpc_client(
            transport, _target(fanout=True), retry=0)

    def __call__(self, reason):
        if self._leading():
            self._wake_local()
            return
        args = {'origin': self.controller_id, 'reason': reason}
        ctxt = self._signer.context('wake', args) if self._signer else {}
        try:
            self._client.cast(ctxt, 'wake', **args)
        except messaging.MessagingException as exc:
            # The leader's slow round finds it.
            LOG.warning('could not wake the leader (%s): %s', reason, exc)


class WakeEndpoint:
    """The controllers' ``wake`` cast (on the agents' RPC server: every
    controller's server consumes its topic's fanout)."""

    target = messaging.Target(namespace=NAMESPACE, version=VERSION)

    def __init__(self, controller_id, on_wake, key_for=None, window=60.0):
        """on_wake(): wakes this controller's loop (a no-op unless it
        leads); key_for: ControllerKeys (None: authentication off)."""
        self.controller_id = controller_id
        self.on_wake = on_wake
        self.key_for = key_for
        self.window = window
        self.nonces = auth.NonceCache(window)
        self.refusals = auth.Counter()

    def wake(self, ctxt, origin, reason):
        if origin == self.controller_id:
            return      # our own fanout: the sender woke itself if leading
        if self.key_for is not None:
            try:
                auth.verify_context(ctxt, 'wake',
                                    {'origin': origin, 'reason': reason},
                                    self.key_for, self.window, self.nonces)
            except auth.AuthError as exc:
                total = self.refusals.add('wake')
                LOG.warning('auth: refused wake from origin=%s: %s '
                            '[refusals: %d]', auth.shown(origin),
                            auth.shown(str(exc), 500), total)
                return
        LOG.debug('woken by %s: %s', origin, reason)
        self.on_wake()
