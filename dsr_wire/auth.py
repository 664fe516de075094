"""Message authentication between the controller and the agents.

Ed25519 signatures (``cryptography``) over oslo.messaging, which stays
unchanged: the broker is shared infrastructure, so it is not the trust
boundary (docs/security.md).

- Requests and casts carry their signature in the RPC context under
  ``dsr_auth``: ``{'v': 1, 'key_id', 'ts', 'nonce', 'sig'}``, signed over
  the canonical JSON of ``{'method', 'args', 'ts', 'nonce'}``.  Endpoints
  that ignore the context (older peers) still work.
- The controller's get_config answer is a signed envelope (SIGNED_FORMAT)
  whose payload is the snapshot as a JSON string: the bytes signed are the
  bytes verified, whatever the transport does to dicts.  Packed
  (PACKED_FORMAT, controller API 1.1): lines -- the document without its
  load balancers as canonical JSON on the first line, then one line per
  load balancer, its canonical JSON deflated and base64-encoded
  (pack_line()).  The agent splits the lines instead of decoding the whole
  document, finds the load balancers it parsed before by their line, and
  inflates and decodes only the others (unpack_line(), after the signature
  checked).  Deflated, the answer is 3.5 x smaller and needs no JSON
  escaping: oslo.messaging encodes a message twice (its format 2.0), and
  at 10,000 load balancers decoding the escaped 20 MB took longer than
  the change.
"""

import base64
import binascii
import hashlib
import json
import math
import os
import stat
import threading
import time
import uuid
import zlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives import serialization

CONTEXT_KEY = 'dsr_auth'
SIGNED_FORMAT = 'dsr-signed-1'
PACKED_FORMAT = 'dsr-signed-lines-z1'
# A packed load balancer inflates to at most this (16 members: 1.4 KB):
# a bound on what one line of a signed answer can make the agent allocate.
PACKED_LINE_MAX_BYTES = 64 << 20
VERSION = 1


class AuthError(Exception):
    """A message failed authentication; str() is the reason."""


class InsecureKeyFile(Exception):
    """A private key file others than its owner can read."""


def canonical(obj):
    """The bytes that are signed: JSON, sorted keys, no spaces, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(',', ':'),
                      ensure_ascii=True, allow_nan=False).encode()


def normalized(obj):
    """obj as the peer will see it after the JSON transport (tuples become
    lists, integer keys strings), so both ends sign the same bytes."""
    return json.loads(canonical(obj))


def _b64(data):
    return base64.b64encode(data).decode()


def raw_public(public_key):
    return public_key.public_bytes(serialization.Encoding.Raw,
                                   serialization.PublicFormat.Raw)


def key_id(public_key):
    return hashlib.sha256(raw_public(public_key)).hexdigest()[:16]


def public_to_text(public_key):
    """Base64 of the raw 32 bytes: what the controller's DB stores."""
    return _b64(raw_public(public_key))


def public_from_text(text):
    try:
        raw = base64.b64decode(text, validate=True)
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f'not an Ed25519 public key: {exc}') from exc


def _write(path, data, mode):
    """Create path with mode from the start (never briefly wider)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f'{path}.tmp-{uuid.uuid4().hex[:8]}'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def generate_key(private_path, public_path=None):
    """A new key pair: private key PEM 0600, public key PEM 0644 (public
    keys are not secret).  Returns the key id."""
    key = ed25519.Ed25519PrivateKey.generate()
    _write(private_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), 0o600)
    if public_path:
        write_public_key(public_path, key.public_key())
    return key_id(key.public_key())


def write_public_key(path, public_key):
    _write(path, public_key.public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)


def load_private_key(path):
    """The Ed25519 private key in path; refuses a file its group or others
    can read (or write), naming the path and mode."""
    st = os.stat(path)
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise InsecureKeyFile(
            f'private key {path} has mode {stat.S_IMODE(st.st_mode):04o}; '
            f'it must not be readable by group or others (chmod 600)')
    with open(path, 'rb') as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f'private key {path}: not an Ed25519 key')
    return key


def load_public_key(path):
    with open(path, 'rb') as f:
        data = f.read()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        key = public_from_text(data.decode().strip())
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError(f'public key {path}: not an Ed25519 key')
    return key


class Signer:
    """Signs with the private key in path; re-reads it when the file
    changes (controller key rotation switches keys without a restart)."""

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()
        self._mtime = None
        self._key = None
        self.key_id = None
        self._lines = {}
        self._last_ts = 0.0
        self._load()

    def _load(self):
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        if stamp == self._mtime:
            return
        key = load_private_key(self.path)
        with self._lock:
            self._key, self._mtime = key, stamp
            self.key_id = key_id(key.public_key())

    def _refresh(self):
        try:
            self._load()
        except OSError:
            pass    # keep signing with the key we have

    def current_key_id(self):
        """The id of the key sign() uses now (re-read if the file changed):
        what a cached signature must still be made with."""
        self._refresh()
        return self.key_id

    def sign(self, data):
        self._refresh()
        with self._lock:
            return self.key_id, _b64(self._key.sign(data))

    # -------------------------------------------------- RPC context
    def context(self, method, args):
        """The RPC context carrying the signature of (method, args).

        The controller orders an SE's reports by its time (a cast that
        overtook an older one is not overwritten by it; Store.record_agent),
        so two messages never carry the same time and a small step back of
        the clock (up to HOLD_FORWARD) is held over; a larger one is
        taken: held, every message would be refused by its peers' window
        until the clock caught up (the controller takes such a step for
        what it is)."""
        with self._lock:
            now, last = time.time(), self._last_ts
            ts = self._last_ts = last + 1e-6 \
                if last - HOLD_FORWARD < now <= last else now
        nonce = uuid.uuid4().hex
        kid, sig = self.sign(canonical({'method': method,
                                        'args': normalized(args),
                                        'ts': ts, 'nonce': nonce}))
        return {CONTEXT_KEY: {'v': VERSION, 'key_id': kid, 'ts': ts,
                              'nonce': nonce, 'sig': sig}}

    def envelope(self, document, packed=False):
        """A document (the snapshot) as a signed envelope; packed: as
        lines, one deflated load balancer per line (pack())."""
        if packed:
            # Per SE group: the lines of its last answer.  Answers of one
            # group may race; a lost update only costs deflating again.
            fmt, payload = PACKED_FORMAT, pack(
                document, self._lines.setdefault(document.get('se_group'),
                                                 {}))
        else:
            fmt, payload = SIGNED_FORMAT, canonical(document).decode()
        kid, sig = self.sign(payload.encode())
        return {'format': fmt, 'key_id': kid, 'payload': payload,
                'sig': sig}


def verify_signature(public_key, sig, data):
    """Raises AuthError unless sig (base64) signs data with public_key."""
    try:
        public_key.verify(base64.b64decode(sig, validate=True), data)
    except (InvalidSignature, ValueError, binascii.Error, TypeError):
        raise AuthError('bad signature') from None


def verify_context(ctxt, method, args, key_for, window, nonces):
    """Check the dsr_auth signature of an RPC message.

    key_for(key_id) -> public key or None; window: seconds a message is
    valid either side of now; nonces: NonceCache against replay inside
    the window (None: the caller's business).  Raises AuthError with the
    reason."""
    auth = (ctxt or {}).get(CONTEXT_KEY) if isinstance(ctxt, dict) else None
    if not isinstance(auth, dict):
        raise AuthError('unsigned message')
    try:
        ts = float(auth['ts'])
        nonce = str(auth['nonce'])
        kid = str(auth.get('key_id'))
        sig = auth['sig']
    except (KeyError, TypeError, ValueError):
        raise AuthError('malformed signature block') from None
    if not math.isfinite(ts) or abs(time.time() - ts) > window:
        raise AuthError(f'timestamp {ts:.0f} outside the {window:g} s '
                        f'window (replayed or clock skew)')
    public_key = key_for(kid)
    if public_key is None:
        raise AuthError(f'unknown key {kid}')
    verify_signature(public_key, sig, canonical({
        'method': method, 'args': normalized(args), 'ts': auth['ts'],
        'nonce': nonce}))
    # None: the caller keeps the nonces (a change notification, which may
    # wait in its queue longer than any in-memory window).
    if nonces is not None and not nonces.add(kid + ':' + nonce, ts):
        raise AuthError(f'replayed message (nonce {nonce} seen)')


# Seconds a step back of the clock is held over by Signer.context.
HOLD_FORWARD = 1.0


def signed_at(ctxt):
    """The signing time of a context verify_context accepted (None for an
    unsigned one)."""
    auth = (ctxt or {}).get(CONTEXT_KEY) if isinstance(ctxt, dict) else None
    try:
        return float(auth['ts'])
    except (KeyError, TypeError, ValueError):
        return None


def pack_line(text):
    """A load balancer's line from its canonical JSON (bytes): deflated
    (level 1), base64-encoded."""
    return base64.b64encode(zlib.compress(text, 1)).decode()


def unpack_line(line):
    """The value of a line of pack() (the line's signature checked);
    ValueError if it is not one."""
    try:
        deflated = base64.b64decode(line, validate=True)
        inflater = zlib.decompressobj()
        text = inflater.decompress(deflated, PACKED_LINE_MAX_BYTES)
    except (binascii.Error, zlib.error) as exc:
        raise ValueError(f'packed line: {exc}') from None
    if inflater.unconsumed_tail:
        raise ValueError(f'packed line inflates to more than '
                         f'{PACKED_LINE_MAX_BYTES} bytes')
    if not inflater.eof:
        raise ValueError('packed line: truncated')
    return json.loads(text)


def pack(document, known=None):
    """A document with a load_balancers list as lines: the rest of the
    document as canonical JSON, then each load balancer's pack_line().
    known: {canonical JSON: line} of an earlier answer, whose lines are
    reused instead of deflated again; it is left holding this answer's."""
    head = {k: v for k, v in document.items() if k != 'load_balancers'}
    reuse = known or {}
    fresh, out = {}, [canonical(head).decode()]
    for lb in document['load_balancers']:
        text = canonical(lb)
        line = fresh[text] = reuse.get(text) or pack_line(text)
        out.append(line)
    if known is not None:
        known.clear()
        known.update(fresh)
    return '\n'.join(out)


def unpack(payload):
    """The document of pack()'s lines, its load balancers left as their
    lines (snapshot.Parser unpacks those it has not parsed before).
    ValueError when the first line is not a JSON object without
    load_balancers."""
    head, *lbs = payload.split('\n')
    document = json.loads(head)
    if not isinstance(document, dict) or 'load_balancers' in document:
        raise ValueError('the first line is not the document\'s head')
    document['load_balancers'] = lbs
    return document


def open_envelope(envelope, key_for):
    """The document inside a signed envelope, once its signature checks
    (a packed one's load balancers left as their lines, unpack()).  Raises
    AuthError."""
    fmt = envelope.get('format') if isinstance(envelope, dict) else None
    if fmt not in (SIGNED_FORMAT, PACKED_FORMAT):
        raise AuthError('not a signed document')
    payload = envelope.get('payload')
    if not isinstance(payload, str):
        raise AuthError('signed document without a payload')
    public_key = key_for(str(envelope.get('key_id')))
    if public_key is None:
        raise AuthError(f'signed by unknown key {envelope.get("key_id")}')
    verify_signature(public_key, envelope.get('sig'), payload.encode())
    try:
        return unpack(payload) if fmt == PACKED_FORMAT \
            else json.loads(payload)
    except ValueError as exc:
        raise AuthError(f'signed payload is not JSON: {exc}') from None


class NonceCache:
    """Nonces seen inside the replay window (bounded by it)."""

    def __init__(self, window):
        self.window = window
        self._seen = {}
        self._lock = threading.Lock()
        self._next_purge = 0.0

    def add(self, nonce, ts):
        """False when nonce was seen already."""
        now = time.time()
        with self._lock:
            if now >= self._next_purge:
                limit = now - 2 * self.window
                self._seen = {k: v for k, v in self._seen.items()
                              if v >= limit}
                self._next_purge = now + self.window
            if nonce in self._seen:
                return False
            self._seen[nonce] = ts
            return True


class TrustedKeys:
    """Public keys in a directory (*.pub), keyed by id; re-read when an
    unknown id is asked for, at most once a second (a key added during a
    rotation is picked up without a restart)."""

    def __init__(self, directory, whose='controller', required=True):
        """required: a directory without a key (or none at all) is a
        ValueError; else no key verifies until one is put there."""
        self.directory = directory
        self._keys = {}
        self._lock = threading.Lock()
        self._last_read = 0.0
        try:
            self.reload()
        except FileNotFoundError:
            if required:
                raise
        if not self._keys and required:
            raise ValueError(f'no {whose} public key (*.pub) in '
                             f'{directory}')

    def reload(self):
        keys = {}
        for name in sorted(os.listdir(self.directory)):
            if name.endswith('.pub'):
                key = load_public_key(os.path.join(self.directory, name))
                keys[key_id(key)] = key
        with self._lock:
            self._keys = keys
            self._last_read = time.monotonic()

    def ids(self):
        return sorted(self._keys)

    def __call__(self, kid):
        key = self._keys.get(kid)
        if key is None and time.monotonic() - self._last_read >= 1.0:
            try:
                self.reload()
            except (OSError, ValueError):
                return None
            key = self._keys.get(kid)
        return key


def shown(value, limit=80):
    """What a peer claimed (an id, a refusal's reason naming it), fit for
    one log line: control characters escaped, at most `limit` characters.
    A refusal is logged before anything is trusted: a forged se_id must
    not forge log lines or flood the log."""
    text = value if isinstance(value, str) else repr(value)
    if not text.isprintable():
        text = text.encode('unicode_escape').decode('ascii')
    return text if len(text) <= limit else text[:limit] + '...'


class Counter:
    """Rejections by reason, thread-safe; total() for tests and logs."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = {}

    def add(self, reason):
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1
            return sum(self._counts.values())

    def total(self):
        with self._lock:
            return sum(self._counts.values())

    def by_reason(self):
        with self._lock:
            return dict(self._counts)
