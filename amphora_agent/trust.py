"""What an agent accepts from the control plane (docs/security.md).

A snapshot is applied only when signed by a trusted controller key, for
this SE's group, with a generation not older than the newest one this SE
applied -- kept on disk, so a restarted agent does not take an older one
either.  config_changed must be signed too: a forged one with a huge
generation would otherwise hide the real announcements.
"""

import os

from oslo_log import log as logging

from dsr_wire import auth

LOG = logging.getLogger(__name__)


class ControllerTrust:
    def __init__(self, se_group, keys_dir, state_dir, window=60.0):
        self.se_group = se_group
        self.keys = auth.TrustedKeys(keys_dir)
        self.window = window
        self.nonces = auth.NonceCache(window)
        self.refusals = auth.Counter()
        self._path = os.path.join(state_dir,
                                  f'applied-generation.{se_group}')
        os.makedirs(state_dir, mode=0o750, exist_ok=True)
        self.floor = self._read_floor()

    def _read_floor(self):
        try:
            with open(self._path) as f:
                return int(f.read().strip())
        except FileNotFoundError:
            return -1
        except ValueError as exc:
            # A corrupt file must not open the door to a rollback.
            raise ValueError(f'{self._path}: not a generation ({exc}); '
                             f'remove it only if the controller database '
                             f'was reset') from exc

    def applied(self, generation):
        """Persist generation as the oldest acceptable from now on."""
        if generation is None or generation <= self.floor:
            return
        tmp = self._path + '.tmp'
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, 'w') as f:
            f.write(f'{generation}\n')
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)
        self.floor = generation

    def refuse(self, what, claimed, exc):
        total = self.refusals.add(what)
        LOG.warning('auth: refused %s (claimed: %s): %s [refusals: %d]',
                    what, auth.shown(claimed, 200), auth.shown(str(exc), 500),
                    total)

    def check_notification(self, ctxt, method, args):
        """True when a cast from the controller is authentic."""
        try:
            auth.verify_context(ctxt, method, args, self.keys, self.window,
                                self.nonces)
        except auth.AuthError as exc:
            error = exc
        else:
            return True
        claimed = ((ctxt or {}).get(auth.CONTEXT_KEY) or {}) \
            if isinstance(ctxt, dict) else {}
        key = claimed.get('key_id') if isinstance(claimed, dict) else None
        # Outside the handler: oslo.log would append the exception.
        self.refuse(method, f'controller key {key}, args {args}', error)
        return False

    def open_snapshot(self, envelope):
        """The snapshot document inside a get_config answer, or AuthError.
        None (the controller has nothing for the group yet) stays None."""
        document = auth.open_envelope(envelope, self.keys)
        if document is None:
            return None
        if not isinstance(document, dict):
            raise auth.AuthError('signed snapshot is not an object')
        group = document.get('se_group')
        if group != self.se_group:
            raise auth.AuthError(f'signed snapshot for group {group!r}, '
                                 f'not {self.se_group!r}')
        generation = document.get('generation')
        if isinstance(generation, int) and not isinstance(generation, bool) \
                and generation < self.floor:
            raise auth.AuthError(
                f'generation {generation} is older than generation '
                f'{self.floor} this SE applied (replay or rollback)')
        return document
