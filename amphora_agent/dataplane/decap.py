"""Member-side decapsulation: the tc (clsact ingress) program and its maps.

For members whose kernel lacks ipip/ip6tnl/gre: the program strips the
outer header of tunnel packets addressed to one of the member's tunnel
addresses and hands the inner packet (for the VIP on lo) to the stack.
"""

import errno
import ipaddress
import os
import socket

from amphora_agent.dataplane import libbpf
from amphora_agent.dataplane import pins
from amphora_agent.dataplane import structs
from amphora_agent import locks

DEFAULT_PIN_DIR = '/sys/fs/bpf/octavia-dsr/decap'
OBJECT = 'member_tc.o'
PROGRAM = 'dsr_decap'
MAP_NAMES = ('decap_addrs', 'decap_sources', 'decap_stats')
# decap_addrs values (bpf/structs.h): the program reads the low byte's
# flags.  The bits above count the dsr-member setups that give the address
# (8-19) and those of them that give it open to any source (20-31): a
# shared address is restricted only while none of its setups asked for
# any source (never drop a setup's packets for another setup's list), and
# goes with the last setup that gives it.  A value with no count (dsrctl,
# an earlier release) is one setup, open unless F_SOURCES.
F_ACTIVE = 1
F_SOURCES = 2
_GIVERS, _OPEN, _COUNT_MAX = 8, 20, 0xfff
TC_HANDLE = 0xd5
TC_PRIORITY = 1


class DecapError(RuntimeError):
    pass


class NotPinned(DecapError):
    """Decap.open(create=False) found no pins (never loaded, or removed
    meanwhile by a teardown)."""


def locked(pin_dir, lock_dir=None):
    """Hold the pin folder's lock: dsr-member setups and teardowns and
    dsrctl read, then write, its maps (address flags, source counts), so
    two of them at once must take turns."""
    return locks.held('decap', pin_dir, lock_dir)


def _key(address):
    address = ipaddress.ip_address(address)
    return bytes(structs.DecapKey(addr=structs.pack_addr(address),
                                  family=structs.family_of(address)))


class Decap:
    def __init__(self, pin_dir, maps):
        self.pin_dir = pin_dir
        self.maps = maps

    @classmethod
    def open(cls, pin_dir=DEFAULT_PIN_DIR, obj_dir=None, reload=False,
             create=True):
        """The pinned decap's maps, loaded and pinned first if needed (or
        reload).  create=False: a reader that holds no lock, so it must
        not load: NotPinned when the pins are missing, also when a
        teardown removes them while they open."""
        libbpf.ensure_bpffs()
        if reload or not pinned(pin_dir):
            if not create and not reload:
                raise NotPinned(
                    f'no decap is pinned in {pin_dir}; "dsr-member setup" '
                    'or "dsrctl decap attach IFACE --address ADDR" loads '
                    'it (or check --decap-pin-dir)')
            _drop_stale_stats(pin_dir)
            try:
                pins.load(os.path.join(obj_dir or pins.object_dir(), OBJECT),
                          pin_dir, MAP_NAMES, PROGRAM)
            except FileNotFoundError as exc:
                raise DecapError(str(exc))
        try:
            return cls(pin_dir, pins.open_maps(pin_dir, MAP_NAMES))
        except libbpf.BpfError as exc:
            if create or exc.errno != errno.ENOENT:
                raise
            raise NotPinned(f'the decap pins under {pin_dir} went away '
                            f'while they opened: {exc}') from None

    def close(self):
        for m in self.maps.values():
            m.close()
        self.maps = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def attach(self, ifname):
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError:
            raise DecapError(f'interface {ifname!r} does not exist in this '
                             'network namespace')
        with pins.open_program(self.pin_dir, PROGRAM) as prog:
            libbpf.tc_hook_create(ifindex, libbpf.BPF_TC_INGRESS)
            libbpf.tc_attach(ifindex, prog.fd, libbpf.BPF_TC_INGRESS,
                             handle=TC_HANDLE, priority=TC_PRIORITY,
                             replace=True)

    @staticmethod
    def detach(ifname):
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError:
            raise DecapError(f'interface {ifname!r} does not exist')
        try:
            libbpf.tc_detach(ifindex, libbpf.BPF_TC_INGRESS,
                             handle=TC_HANDLE, priority=TC_PRIORITY)
        except libbpf.BpfError:
            return False
        return True

    def _values(self):
        return {k: int.from_bytes(v[:4], 'little')
                for k, v in self.maps['decap_addrs'].items()}

    def _write(self, key, value):
        self.maps['decap_addrs'].update(key, value.to_bytes(4, 'little'))

    def _set_flag(self, keys, restricted):
        """The restriction of these present keys, counts kept (dsrctl's
        override: a setup run again recomputes it from the counts)."""
        values = self._values()
        for key in sorted(set(keys) & set(values)):
            value = values[key] & ~0xff
            self._write(key, value | F_ACTIVE
                        | (F_SOURCES if restricted else 0))

    def set_addresses(self, addresses, restricted=None):
        """Make exactly these the tunnel addresses to decapsulate for
        (dsrctl; setups use give_addresses).  The new ones are restricted
        to the SE sources when `restricted` (None: when any source is
        set), from their first packet on."""
        if restricted is None:
            restricted = bool(self.sources())
        wanted = {_key(a) for a in addresses}
        present = set(self._values())
        for key in sorted(wanted - present):
            self._write(key, F_ACTIVE | (F_SOURCES if restricted else 0))
        for key in present - wanted:
            self.maps['decap_addrs'].delete(key)

    def give_addresses(self, addresses, restricted):
        """One more setup gives each of these tunnel addresses, restricted
        to the SE sources or open.  Returns those that were not there."""
        values = self._values()
        new = []
        for key in sorted({_key(a) for a in addresses}):
            givers, open_ = _counts(values.get(key))
            if key not in values:
                new.append(key)
            self._write(key, _value(givers + 1, open_ + (not restricted)))
        return _addresses(None, new)

    def take_addresses(self, addresses, restricted):
        """A setup no longer gives these (as it gave them: `restricted` or
        open).  Returns those removed: no setup gives them any more."""
        values = self._values()
        gone = []
        for key in sorted({_key(a) for a in addresses} & set(values)):
            givers, open_ = _counts(values[key])
            if givers <= 1:
                self.maps['decap_addrs'].delete(key)
                gone.append(key)
            else:
                self._write(key, _value(givers - 1,
                                        max(open_ - (not restricted), 0)))
        return _addresses(None, gone)

    def settle(self, addresses):
        """The restriction of these present addresses as their counts say
        (after a dsrctl override, a setup run again puts it back)."""
        values = self._values()
        for key in sorted({_key(a) for a in addresses} & set(values)):
            self._write(key, _value(*_counts(values[key])))

    def regive_addresses(self, addresses, restricted):
        """A setup that gave these open gives them restricted now, or the
        other way round (counts of setups unchanged)."""
        values = self._values()
        for key in sorted({_key(a) for a in addresses} & set(values)):
            givers, open_ = _counts(values[key])
            open_ = max(open_ - 1, 0) if restricted else open_ + 1
            self._write(key, _value(givers, open_))

    def _source_values(self):
        table = self.maps['decap_sources']
        return {k: int.from_bytes(v[:4], 'little') for k, v in table.items()}

    def give_sources(self, sources):
        """One more setup gives each of these sources: its count goes up
        (a source is decapsulated from while any count is on it)."""
        counts = self._source_values()
        for key in sorted({_key(a) for a in sources}):
            self.maps['decap_sources'].update(
                key, (counts.get(key, 0) + 1).to_bytes(4, 'little'))

    def take_sources(self, sources):
        """A setup no longer gives these: each count goes down, and the
        source goes when no setup gives it any more."""
        counts = self._source_values()
        for key in sorted({_key(a) for a in sources}):
            if key not in counts:
                continue
            if counts[key] <= 1:
                self.maps['decap_sources'].delete(key)
            else:
                self.maps['decap_sources'].update(
                    key, (counts[key] - 1).to_bytes(4, 'little'))

    def add_sources(self, sources):
        """These sources, each at least once (counts kept)."""
        counts = self._source_values()
        for key in sorted({_key(a) for a in sources} - set(counts)):
            self.maps['decap_sources'].update(key, (1).to_bytes(4, 'little'))

    def remove_sources(self, sources):
        """These sources gone, whoever gave them."""
        for key in {_key(a) for a in sources}:
            self.maps['decap_sources'].delete(key)

    def source_counts(self):
        """{source: how many setups give it}, from one read of the map."""
        counts = self._source_values()
        return {str(a): counts[key] for a, key in _decoded(counts)}

    def set_sources(self, sources):
        """Decapsulate, for every tunnel address, only what comes from
        these outer sources (the SEs' tunnel sources); none: from any
        source.  Never a moment with fewer accepted than both before and
        after: added sources go in before the addresses are restricted,
        removed ones leave after."""
        old = set(self.sources())
        self.add_sources(sources)
        self._set_flag(self._values(), bool(sources))
        self.remove_sources(old - {str(ipaddress.ip_address(a))
                                   for a in sources})

    def sources(self):
        """The outer sources decapsulated for ([]: any)."""
        return _addresses(self.maps['decap_sources'])

    def addresses(self):
        return _addresses(self.maps['decap_addrs'])

    def restricted(self):
        """The tunnel addresses decapsulated for the SE sources only."""
        return _addresses(None, [k for k, v in self._values().items()
                                 if v & F_SOURCES])

    def address_counts(self):
        """{tunnel address: (setups giving it, those giving it open,
        restricted to the SE sources)}, from one read of the map; an
        address dsrctl set counts as one setup."""
        values = self._values()
        return {str(a): (*_counts(values[key]),
                         bool(values[key] & F_SOURCES))
                for a, key in _decoded(values)}

    def given_open(self):
        """The tunnel addresses some setup (or dsrctl) gave open to any
        source: why a shared address is not restricted."""
        return _addresses(None, [k for k, v in self._values().items()
                                 if _counts(v)[1]])

    def stats(self):
        return {name: sum(int.from_bytes(v[:8], 'little') for v in
                          self.maps['decap_stats'].lookup_percpu(
                              index.to_bytes(4, 'little')))
                for index, name in enumerate(structs.DECAP_STATS)}

    def destroy(self):
        self.close()
        remove_pins(self.pin_dir)


def pinned(pin_dir):
    """This release's pins, all of them."""
    return pins.pinned(pin_dir, MAP_NAMES, PROGRAM)


def present(pin_dir):
    """Whether anything of the decap (this release's or an earlier one's)
    is pinned under ``pin_dir``."""
    return any(os.path.exists(os.path.join(pin_dir, name)) for name in
               MAP_NAMES + (pins.prog_pin_name(PROGRAM),))


def remove_pins(pin_dir):
    """Every pin of the decap, whichever release left them (no load)."""
    pins.remove(pin_dir, MAP_NAMES, PROGRAM)


def _counts(value):
    """(setups giving the address, those giving it open) of a decap_addrs
    value; None: (0, 0)."""
    if value is None:
        return 0, 0
    givers = (value >> _GIVERS) & _COUNT_MAX
    if not givers:
        return 1, 0 if value & F_SOURCES else 1
    return givers, min((value >> _OPEN) & _COUNT_MAX, givers)


def _value(givers, open_):
    if givers > _COUNT_MAX:
        raise DecapError(f'more than {_COUNT_MAX} setups give one tunnel '
                         'address')
    # Never more setups open than setups: a count that drifted (a setup
    # taken back in the other mode) must not keep the address open.
    open_ = min(max(open_, 0), givers)
    return (F_ACTIVE | (0 if open_ else F_SOURCES) | givers << _GIVERS
            | open_ << _OPEN)


def _decoded(keys):
    """(address, key) of these decap keys, IPv4 first, each family in
    address order: the order every listing of the maps uses."""
    found = []
    for raw in keys:
        k = structs.DecapKey.from_bytes(raw)
        found.append((structs.unpack_addr(k.addr, k.family), raw))
    return sorted(found, key=lambda pair: (pair[0].version, pair[0]))


def _addresses(table, keys=None):
    if keys is None:
        keys = [k for k, _ in table.items()]
    return [str(a) for a, _ in _decoded(keys)]


def _drop_stale_stats(pin_dir):
    """A counter map pinned by an earlier release, with fewer counters,
    cannot be reused by this program (libbpf refuses the pin): it goes,
    and its counts with it.  The addresses map is the same and is kept;
    the program is loaded and pinned again (and attached again by
    whoever attaches it: member/ebpf.ensure, dsrctl decap attach)."""
    path = os.path.join(pin_dir, 'decap_stats')
    if not os.path.exists(path):
        return
    with libbpf.Map.from_pin(path) as stats:
        stale = stats.max_entries != len(structs.DECAP_STATS)
    if stale:
        os.unlink(path)
