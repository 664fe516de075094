"""Signed tooz capabilities ("seals") of the L7 SEs.

The coordination backend (tooz, Redis) is not authenticated: whoever
reaches it can rewrite an L7 SE's capabilities (ready, draining, its L7
contract) or copy a dead SE's entry back to keep it in the L4 pools.  So
with authentication on, an L7 agent signs what it publishes with its
enrolled key, and signs it again every RESEAL_INTERVAL:

    {...capabilities..., "dsr_seal": {"v": 1, "key_id", "boot", "seq",
                                      "ts", "sig"}}

``sig`` is the Ed25519 signature of the canonical JSON of the
capabilities (without ``dsr_seal``), the SE id, the group, ``boot`` (a
random id per agent process), ``seq`` (counts the seals of that process)
and ``ts`` (the signing time).  Altering any field, moving the entry to
another SE or group, breaks it.  A copy is not fresh: the controller
believes an SE's entry only while its seal moves on (a higher ``seq`` of
the same ``boot``, or a later boot), measured on the controller's own
clock (dsr_provider/controller/tier2.SealClock), so an SE's clock skew
does not matter there; ``ts`` bounds how old a seal a new leader accepts
(the authentication window, as for RPC messages).
"""

import collections
import math
import re
import threading
import time
import uuid

from dsr_wire import auth

SEAL_KEY = 'dsr_seal'
VERSION = 1
# Seconds between two seals of unchanged capabilities: the controller
# leaves an L7 SE out of the pools when its seal has not moved on for
# tier2.SEAL_STALE_AFTER (5 of these).
RESEAL_INTERVAL = 1.0


# A boot id: uuid4().hex.
_BOOT = re.compile('[0-9a-f]{32}')


def boot_id(value):
    """value when it is a boot id (Sealer.boot), else None."""
    return value if isinstance(value, str) and _BOOT.fullmatch(value) \
        else None


def _signed_bytes(capabilities, se_id, group, boot, seq, ts):
    return auth.canonical({'capabilities': auth.normalized(capabilities),
                           'se_id': se_id, 'group': group, 'boot': boot,
                           'seq': seq, 'ts': ts})


def unsealed(capabilities):
    """The capabilities without their seal."""
    return {k: v for k, v in capabilities.items() if k != SEAL_KEY}


class Sealer:
    """seal(capabilities) for one agent process: se_id in group, signed
    with signer (auth.Signer, the key its enrolment holds)."""

    def __init__(self, signer, se_id, group, clock=time.time):
        self.signer = signer
        self.se_id = se_id
        self.group = group
        self.boot = uuid.uuid4().hex
        self._clock = clock
        self._seq = 0
        self._lock = threading.Lock()

    def seal(self, capabilities):
        capabilities = unsealed(capabilities)
        with self._lock:
            self._seq += 1
            seq = self._seq
        ts = self._clock()
        kid, sig = self.signer.sign(_signed_bytes(
            capabilities, self.se_id, self.group, self.boot, seq, ts))
        return dict(capabilities, **{SEAL_KEY: {
            'v': VERSION, 'key_id': kid, 'boot': self.boot, 'seq': seq,
            'ts': ts, 'sig': sig}})


# What a verified seal says (see the module).
Seal = collections.namedtuple('Seal', 'boot seq ts')


def is_sealed(capabilities):
    return isinstance(capabilities, dict) and SEAL_KEY in capabilities


def open_seal(capabilities, se_id, group, public_key, window,
              clock=time.time):
    """(capabilities without the seal, Seal) of a sealed entry of se_id in
    group, checked against the SE's enrolled public_key and signed within
    `window` seconds of now.  Raises auth.AuthError with the reason."""
    block = capabilities.get(SEAL_KEY) if isinstance(capabilities, dict) \
        else None
    if not isinstance(block, dict):
        raise auth.AuthError('capabilities not sealed')
    try:
        boot, seq, ts, sig = (block['boot'], block['seq'], block['ts'],
                              block['sig'])
    except KeyError:
        raise auth.AuthError('malformed seal') from None
    if block.get('v') != VERSION or boot_id(boot) is None or \
            isinstance(seq, bool) or not isinstance(seq, int) or \
            not isinstance(ts, float) or not math.isfinite(ts):
        raise auth.AuthError('malformed seal')
    seal = Seal(boot, seq, ts)
    check_window(seal, window, clock)
    plain = unsealed(capabilities)
    try:
        signed = _signed_bytes(plain, se_id, group, boot, seq, ts)
    except (TypeError, ValueError, OverflowError):
        # What canonical JSON refuses (a NaN written into a field): not
        # anything an agent signed.
        raise auth.AuthError('malformed capabilities') from None
    auth.verify_signature(public_key, sig, signed)
    return plain, seal


def check_window(seal, window, clock=time.time):
    """Raises auth.AuthError unless seal was signed within `window`
    seconds of now (a seal verified earlier is checked again by this)."""
    if abs(clock() - seal.ts) > window:
        raise auth.AuthError(f'seal signed at {seal.ts:.0f}, outside the '
                             f'{window:g} s window (a copy, or clock skew)')
