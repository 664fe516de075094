"""Maglev consistent-hash rings for the listener lookup tables.

Each listener has a ring of ``ring_size`` u32 slots in BPF; a new flow's hash
picks a slot, and the slot holds the index of a member in the ``reals`` array
(0 means "no member").  The ring is built here, in userspace, from Maglev's
per-backend slot permutations (Eisenbud et al., NSDI'16) with a bounded-load
fill, so that member changes move few flows:

* a backend's visit to a slot that is already taken is lost instead of
  searching ahead (the paper's fill), so a slot belongs to the first backend
  whose permutation reaches it and a removal moves little more than the
  removed backend's own slots (1.17 x M/N at N = 100 and M = 65537
  instead of 1.58; 1.08, worst 1.11, in the 128021-slot ring a pool of 100
  members gets by ring_size_for);
* each backend stops at a cap, its share plus max(1 %, 6.5 slots), which
  keeps max/mean within 1.01 while shares are >= 655 slots; below that the
  6.5-slot headroom keeps removals cheap (N = 1000 at M = 65537: 1.12 x M/N
  on average) and balance loosens (max/mean 1.10).

Weights follow Katran: in each round a backend makes ``weight`` visits, so a
weight-2 member gets about twice the slots of a weight-1 member and a
weight-0 member (drained) gets none.

The ring depends only on the set of backends and the ring size: backends are
sorted by key and the permutation parameters come from a fixed hash of the
key.  Every agent therefore computes the same ring for the same members,
which keeps flows on the same member across a fail-over.  (Agents of
different releases must agree too: the fill is versioned by the library's
ABI version, and changing it changes every ring.)

The heavy lifting is done by ``obj/libmaglev.so`` (``maglev.c``, built by
``mk/maglev.mk``).  ``build_ring_reference`` is a pure-Python twin of the C
code used by the tests and as a fallback when the library cannot be loaded.
"""

import array
import collections
import ctypes
import logging
import os
import struct
import threading
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

from dsr_wire import rings as wire_rings

LOG = logging.getLogger(__name__)

DEFAULT_RING_SIZE = wire_rings.DEFAULT_RING_SIZE

MAX_WEIGHT = 0xFFFF
MAX_VALUE = 0xFFFFFFFF
# Upper bound so that the ring and the slot indexes fit in a u32.
MAX_RING_SIZE = 0xFFFFFFFF

OBJ_DIR_ENV = "OCTAVIA_DSR_OBJ_DIR"
LIBRARY_NAME = "libmaglev.so"
# Must match MAGLEV_ABI_VERSION in maglev.c.  Public: agents report it
# (report_state, metrics) so that a group running two ABIs is flagged.
# 3: rings are sized by their pool (ring_size_for), not one size for all;
# 4: pool tiers of >= 1000 slots per member (cheaper removals).
ABI_VERSION = _ABI_VERSION = 4
# A backend's cap is floor(s + max(s * CAP_SLACK - s, CAP_HEADROOM)) for its
# share s = M * weight / total weight (why: compute_caps() in maglev.c); as
# fractions, which must match CAP_SLACK_* and CAP_HEADROOM_* there.
CAP_SLACK = (101, 100)
CAP_HEADROOM = (13, 2)

_u32p = ctypes.POINTER(ctypes.c_uint32)

# Rings are array('I') handed to C as uint32_t *.
if array.array("I").itemsize != 4:
    raise ImportError("array('I') is not 32 bits on this platform")


class Backend(NamedTuple):
    key: str  # stable id (member id or address); decides the permutation
    weight: int  # 0..65535; 0 takes no slots
    value: int  # written into the slots: u32 index into `reals`, never 0


class MaglevError(RuntimeError):
    """The C library refused its input or ran out of memory."""


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    # Miller-Rabin with bases 2, 7, 61 is exact below 4,759,123,141, which
    # covers every u32.
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in (2, 7, 61):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


# Ring sizes by pool size: one definition, shared with the controller's
# capacity count (dsr_wire.rings).
RING_TIERS = wire_rings.RING_TIERS
RING_TIER_MIN_MEMBERS = wire_rings.RING_TIER_MIN_MEMBERS
ring_size_for = wire_rings.ring_size_for


def _check_ring_size(ring_size) -> int:
    if (not isinstance(ring_size, int) or isinstance(ring_size, bool)
            or not 3 <= ring_size <= MAX_RING_SIZE
            or not _is_prime(ring_size)):
        raise ValueError(
            f"ring_size {ring_size!r} is not a prime between 3 and "
            f"{MAX_RING_SIZE}")
    return ring_size


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _permutation(key: str, ring_size: int) -> Tuple[int, int]:
    """(offset, skip) of a key's slot preference list.

    A fixed hash (never hash(), which is salted per process) so that every
    agent builds the same ring.  skip is in 1..M-1, hence coprime with the
    prime M, so the preference list visits every slot exactly once.
    """
    # Imported here: hashlib loads OpenSSL (~35 ms), which read-only
    # dsrctl calls, importing this module, never need.
    import hashlib
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()
    h1, h2 = struct.unpack("<QQ", digest)
    return h1 % ring_size, h2 % (ring_size - 1) + 1


def _prepare(backends: Iterable[Backend], ring_size: int
             ) -> Tuple[int, List[Backend]]:
    """Validate, and sort by key so that the input order does not matter."""
    ring_size = _check_ring_size(ring_size)
    checked = []
    seen = set()
    for b in backends:
        key, weight, value = b
        if not isinstance(key, str) or not key:
            raise ValueError(f"backend key {key!r} is not a non-empty str")
        if key in seen:
            raise ValueError(f"duplicate backend key {key!r}")
        seen.add(key)
        if not _is_int(weight) or not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(
                f"backend {key!r}: weight {weight!r} is not an int in "
                f"0..{MAX_WEIGHT}")
        if not _is_int(value) or not 1 <= value <= MAX_VALUE:
            raise ValueError(
                f"backend {key!r}: value {value!r} is not an int in "
                f"1..{MAX_VALUE}")
        checked.append(Backend(key, weight, value))
    checked.sort(key=lambda b: b.key)
    return ring_size, checked


def _caps(m: int, weights: List[int]) -> List[int]:
    """Mirror of compute_caps() in maglev.c."""
    num, den = CAP_SLACK
    h_num, h_den = CAP_HEADROOM
    total = sum(weights)
    caps = [min(m, max(num * m * w // (den * total),
                       (h_den * m * w + h_num * total) // (h_den * total)))
            if w else 0 for w in weights]
    short = m - sum(caps)
    while short > 0:
        for i, w in enumerate(weights):
            if short and w and caps[i] < m:
                caps[i] += 1
                short -= 1
    return caps


def build_ring_reference(backends: Iterable[Backend],
                         ring_size: int = DEFAULT_RING_SIZE
                         ) -> "array.array[int]":
    """Pure-Python build_ring; same result, much slower."""
    m, order = _prepare(backends, ring_size)
    ring = array.array("I", bytes(4 * m))
    if not any(b.weight for b in order):
        return ring
    # Mirror of maglev_fill(): keep the two in step.
    caps = _caps(m, [b.weight for b in order])
    params = [_permutation(b.key, m) for b in order]
    pos = [offset for offset, _skip in params]
    skips = [skip for _offset, skip in params]
    load = [0] * len(order)
    active = [i for i, cap in enumerate(caps) if cap]
    filled = 0
    while filled < m:
        kept = []
        for k in active:
            if filled == m:
                break
            p, skip, value = pos[k], skips[k], order[k].value
            for _ in range(order[k].weight):
                if not ring[p]:
                    ring[p] = value
                    filled += 1
                    load[k] += 1
                    if load[k] == caps[k]:
                        p = (p + skip) % m
                        break
                p = (p + skip) % m
            pos[k] = p
            if load[k] < caps[k]:
                kept.append(k)
        active = kept
    return ring


_lib_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_lib_loaded = False  # a load was attempted (successfully or not)


def library_path() -> str:
    obj_dir = os.environ.get(OBJ_DIR_ENV) or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "obj")
    return os.path.join(obj_dir, LIBRARY_NAME)


def _load_library() -> Optional[ctypes.CDLL]:
    """Load and cache the C library; None (warned once) if unusable."""
    global _lib, _lib_loaded
    with _lib_lock:
        if _lib_loaded:
            return _lib
        _lib_loaded = True
        path = library_path()
        try:
            lib = ctypes.CDLL(path)
            lib.maglev_abi_version.restype = ctypes.c_uint32
            lib.maglev_abi_version.argtypes = []
            abi = lib.maglev_abi_version()
            if abi != _ABI_VERSION:
                raise OSError(f"ABI version {abi}, expected {_ABI_VERSION}"
                              " (stale build?)")
            lib.maglev_fill.restype = ctypes.c_int
            lib.maglev_fill.argtypes = [ctypes.c_uint32, ctypes.c_uint32,
                                        _u32p, _u32p, _u32p, _u32p, _u32p]
        except (OSError, AttributeError) as e:
            LOG.warning("Maglev library %s unusable (%s); falling back to "
                        "the slow pure-Python ring builder", path, e)
            return None
        _lib = lib
        return _lib


def _reset_library() -> None:
    """Forget the loaded library (tests switch OCTAVIA_DSR_OBJ_DIR)."""
    global _lib, _lib_loaded
    with _lib_lock:
        _lib = None
        _lib_loaded = False


def native_available() -> bool:
    return _load_library() is not None


def _u32_ptr(arr: "array.array[int]"):
    if not arr:
        return None  # maglev_fill() accepts NULL arrays when n == 0
    # An array instance passes for a pointer; ctypes.cast() would make a
    # reference cycle that keeps the buffer exported (ring not resizable)
    # until the next garbage collection.
    return (ctypes.c_uint32 * len(arr)).from_buffer(arr)


def build_ring(backends: Iterable[Backend],
               ring_size: int = DEFAULT_RING_SIZE) -> "array.array[int]":
    """Maglev lookup table: ring[slot] = value of the backend owning it.

    All slots are 0 when no backend has a non-zero weight.  Raises
    ValueError on a bad ring size or backend.
    """
    lib = _load_library()
    if lib is None:
        return build_ring_reference(backends, ring_size)
    m, order = _prepare(backends, ring_size)
    n = len(order)
    params = [_permutation(b.key, m) for b in order]
    # The buffers are handed to C without copying.
    offset = array.array("I", [p[0] for p in params])
    skip = array.array("I", [p[1] for p in params])
    weight = array.array("I", [b.weight for b in order])
    value = array.array("I", [b.value for b in order])
    ring = array.array("I", bytes(4 * m))
    rc = lib.maglev_fill(m, n, _u32_ptr(offset), _u32_ptr(skip),
                         _u32_ptr(weight), _u32_ptr(value), _u32_ptr(ring))
    if rc != 0:
        raise MaglevError(f"maglev_fill failed: {os.strerror(-rc)} ({rc})")
    return ring


def ring_stats(ring: Iterable[int]) -> Dict[int, int]:
    """Number of slots per value (0 included if present)."""
    return dict(collections.Counter(ring))
