"""What an SE's maps hold, as this process last wrote them.

Dataplane.apply works from a Written instead of re-reading every map: at
10,000 listeners x 16 members a re-read (160,000 member slots, every
listener, VIP address, next hop and allow list) cost most of a one-member
change.  A Written is built from the maps (read_from) when there is none
-- after open, after an apply raised, on a full reconcile -- and apply
keeps it up to date with every write it makes.  differences() names what
another writer (dsrctl, a second agent) changed behind this one's back.

Member slots are kept as one bytearray image of the reals map (40 bytes a
slot) rather than an object per slot: the parsed form is built only for
the listeners a change touches.
"""

import heapq
import zlib

from amphora_agent.dataplane import rings as rings_mod
from amphora_agent.dataplane import structs

_REAL_SIZE = structs.ctypes.sizeof(structs.Real)
_REAL_FLAGS_OFFSET = structs.Real.flags.offset
_LISTENER_ID_WORD = structs.Real.listener_id.offset // 4
_FAMILY_OFFSET = structs.Real.family.offset
_GEN_OFFSET = structs.Real.gen.offset
# bytes.translate table: a flags byte -> 1 if REAL_F_IN_USE else 0.
_IN_USE = bytes(int(bool(b & structs.REAL_F_IN_USE)) for b in range(256))


def in_use(values, size=_REAL_SIZE):
    """One byte per member slot of the packed reals values: 1 in use, 0
    free -- sorted in C (a 160,000-slot walk in Python cost seconds)."""
    return bytes(values[_REAL_FLAGS_OFFSET::size]).translate(_IN_USE)


class Written:
    """The maps' contents as apply needs them (see the module docstring).

    fresh: read from the maps and not yet applied to; the per-spec
    bookkeeping (specs, members, acl_wanted, sources) is then unknown and
    the next apply compares every listener with the maps.
    """

    __slots__ = ('listeners', 'reals', 'slots', 'free_ids', 'free_reals',
                 'acls', 'nexthops', 'vips', 'space', 'specs', 'by_spec',
                 'members', 'acl_wanted', 'sources', 'fresh', 'rings')

    def __init__(self, listeners, reals, acls, nexthops, vips, limits,
                 rings=None):
        self.listeners = listeners      # ListenerKey -> structs.Listener
        # Listener id -> ring_digest() of the slots its ring holds: a
        # digest, not the rings (4 bytes a slot, 640 MB at 10,000
        # listeners x 16 members).
        self.rings = dict(rings or {})
        self.reals = reals              # bytearray: the reals map's values
        self.acls = acls                # (family, tag) -> set of networks
        self.nexthops = nexthops        # ResolvedNexthop -> index
        self.vips = vips                # VIP address -> listeners on it
        self.slots = {}                 # listener id -> in-use slots
        slot_in_use = in_use(reals)
        lids = memoryview(reals).cast('I')[
            _LISTENER_ID_WORD::_REAL_SIZE // 4]
        # Slot 0 is "no member"; heaps hand out the lowest free one first.
        self.free_reals = []
        for index in range(1, len(slot_in_use)):
            if slot_in_use[index]:
                self.slots.setdefault(lids[index], []).append(index)
            else:
                self.free_reals.append(index)
        self.slots = {lid: tuple(s) for lid, s in self.slots.items()}
        used = {v.id for v in listeners.values()}
        self.free_ids = [i for i in range(limits.max_listeners)
                         if i not in used]
        self.space = rings_mod.RingSpace(
            limits.total_ring_slots,
            [(v.ring_off, v.ring_size) for v in listeners.values()])
        # The spec objects the last apply wrote, by key and by id(): a
        # planner that hands back the same object for an unchanged
        # listener lets apply skip it without hashing its key.
        self.specs = {}
        self.by_spec = {}
        self.members = 0                # members of every spec
        self.acl_wanted = {4: 0, 6: 0}  # prefixes of every spec's list
        self.sources = None             # tunnel source families checked
        self.fresh = True

    # ------------------------------------------------------- member slots
    def real(self, index):
        start = index * _REAL_SIZE
        return structs.Real.from_bytes(
            bytes(self.reals[start:start + _REAL_SIZE]))

    def put_real(self, index, raw):
        start = index * _REAL_SIZE
        self.reals[start:start + _REAL_SIZE] = raw

    def members_of(self, lid):
        """{address: (slot, structs.Real)} of listener lid's members."""
        result = {}
        for index in self.slots.get(lid, ()):
            real = self.real(index)
            result[structs.unpack_addr(real.addr, real.family)] = (index,
                                                                   real)
        return result

    def member_words(self, lid):
        """[(slot, generation, packed address)] of listener lid's members,
        straight from the image (no parsed object kept)."""
        reals, out = self.reals, []
        for index in self.slots.get(lid, ()):
            start = index * _REAL_SIZE
            size = 4 if reals[start + _FAMILY_OFFSET] == structs.FAMILY_V4 \
                else 16
            gen = int.from_bytes(
                reals[start + _GEN_OFFSET:start + _GEN_OFFSET + 4], 'little')
            out.append((index, gen, bytes(reals[start:start + size])))
        return out

    def take_real(self):
        return heapq.heappop(self.free_reals)

    def release_real(self, index):
        heapq.heappush(self.free_reals, index)

    # ------------------------------------------------------ listener specs
    def unchanged(self, key, spec):
        """True if the last apply wrote this very spec object for key."""
        seen = self.by_spec.get(id(spec))
        return seen is not None and seen[1] is spec and (
            seen[0] is key or seen[0] == key)

    def remember(self, key, spec):
        old = self.specs.get(key)
        if old is not None and self.by_spec.get(id(old), (None,))[0] == key:
            del self.by_spec[id(old)]
        if spec is None:
            self.specs.pop(key, None)
            return
        self.specs[key] = spec
        self.by_spec[id(spec)] = (key, spec)

    # ----------------------------------------------------------- capacity
    def held(self):
        """What the maps hold, under the capacity.Limits keys it counts
        against: dataplane listeners, member slots in use, the most
        members of one listener, ring slots allocated, the allow-list
        prefixes of the fuller family (each family's trie has the
        limit).  Members are those the agent programs: enabled, healthy,
        backups only while they serve."""
        per_family = {4: 0, 6: 0}
        for (family, _tag), nets in self.acls.items():
            per_family[family] += len(nets)
        return {'max_listeners': len(self.listeners),
                'max_members': sum(map(len, self.slots.values())),
                'ring_size': max(map(len, self.slots.values()), default=0),
                'ring_slots': sum(v.ring_size
                                  for v in self.listeners.values()),
                'max_cidrs': max(per_family.values())}

    # ---------------------------------------------------------- reconcile
    def differences(self, live):
        """What differs between this and `live` (read from the maps), in
        words, for the log; [] if nothing does."""
        found = []
        mine = {k: bytes(v) for k, v in self.listeners.items()}
        theirs = {k: bytes(v) for k, v in live.listeners.items()}
        for key in sorted(mine.keys() | theirs.keys(), key=str):
            if mine.get(key) != theirs.get(key):
                found.append(f'listener {key}: '
                             f'{_what(mine.get(key), theirs.get(key))}')
        if self.reals != live.reals:
            for index in range(1, len(self.reals) // _REAL_SIZE):
                start = index * _REAL_SIZE
                a = self.reals[start:start + _REAL_SIZE]
                b = live.reals[start:start + _REAL_SIZE]
                if a != b:
                    found.append(f'member slot {index}: '
                                 f'{_slot(self.real(index))} -> '
                                 f'{_slot(live.real(index))}')
        for name in ('acls', 'nexthops', 'vips'):
            mine, theirs = getattr(self, name), getattr(live, name)
            if mine != theirs:
                found.append(f'{name}: {_dict_diff(mine, theirs)}')
        if self.rings != live.rings:
            keys = {v.id: k for k, v in live.listeners.items()}
            keys.update((v.id, k) for k, v in self.listeners.items())
            for lid in sorted(self.rings.keys() | live.rings.keys()):
                if self.rings.get(lid) != live.rings.get(lid):
                    found.append(f'ring of listener {keys.get(lid, lid)}: '
                                 'not the one this agent wrote')
        return found


def ring_digest(data):
    """What Written keeps of a ring: a CRC-32 of its slots' bytes."""
    return zlib.crc32(data)


def _what(mine, theirs):
    if mine is None:
        return 'added'
    if theirs is None:
        return 'removed'
    a, b = structs.Listener.from_bytes(mine), structs.Listener.from_bytes(
        theirs)
    # check follows the other fields: named only when it alone differs
    # (an entry another writer wrote without it).
    return ', '.join(f'{name} {getattr(a, name)} -> {getattr(b, name)}'
                     for name, _ in structs.Listener._fields_
                     if name != 'check'
                     and getattr(a, name) != getattr(b, name)) or \
        f'check {a.check} -> {b.check}'


def _slot(real):
    if not real.flags & structs.REAL_F_IN_USE:
        return 'free'
    return (f'{structs.unpack_addr(real.addr, real.family)} of listener '
            f'{real.listener_id} weight {real.weight} flags {real.flags:#x} '
            f'next hop {real.nh}')


def _dict_diff(mine, theirs):
    parts = [f'{k} {mine.get(k)} -> {theirs.get(k)}'
             for k in sorted(mine.keys() | theirs.keys(), key=str)
             if mine.get(k) != theirs.get(k)]
    return '; '.join(parts[:5]) + (f' (and {len(parts) - 5} more)'
                                   if len(parts) > 5 else '')


def vip_counts(vip_map):
    """{VIP address: listeners on it} of the vip_addrs map."""
    present = {}
    for raw_key, raw_val in vip_map.items():
        k = structs.VipAddrKey.from_bytes(raw_key)
        present[structs.unpack_addr(k.addr, k.family)] = (
            structs.VipAddr.from_bytes(raw_val).listeners)
    return present
