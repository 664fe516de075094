"""The encapsulation floor's fixed member (bench_encap_floor.c), shared by
the dataplane benchmarks (not a benchmark itself: the runner skips
bench/_*.py).

The floor programs read one global, ``struct floor_cfg fixed`` (.bss): an
IPv4 and an IPv6 member slot, their next hops and the SE's config.  They
are filled from a configured Dataplane's own maps, so the floor
encapsulates exactly as the SE would for that member.
"""

import ctypes
import ipaddress
import os

from amphora_agent.dataplane import dataplane as dpmod
from amphora_agent.dataplane import libbpf
from amphora_agent.dataplane import structs

import _common as C

FLOOR_OBJ = os.path.join(C.OBJ_DIR, 'bench_encap_floor.o')
FLOW_LABEL = 0x12345  # the IPv6 outer flow label of every floor frame


def open_on_se_maps(path, pin_dir, limits, autoload=None):
    """Open a bench object whose SE maps will reuse the pinned ones (libbpf
    creates every map of an object: not a second 262,144-entry conn
    table).  autoload: the only programs to load (default all)."""
    obj = libbpf.BpfObject.open(path)
    if autoload is not None:
        for name in obj.program_names():
            if name not in autoload:
                obj.set_autoload(name, False)
    sizes = limits.map_sizes()
    # An older build (DSR_BENCH_ABLATE=base) may lack a map added since.
    handles = {handle.name: handle for handle in obj.maps()}
    for name in dpmod.MAP_NAMES:
        handle = handles.get(name)
        if handle is None:
            continue
        handle.set_pin_path(os.path.join(pin_dir, name))
        if name in sizes:
            handle.set_max_entries(sizes[name])
    return obj


def real_of(dp, member):
    """The raw reals entry (in use) of this member address."""
    want = ipaddress.ip_address(member)
    for _key, raw in dp.maps['reals'].items():
        real = structs.Real.from_bytes(raw)
        if real.flags & structs.REAL_F_IN_USE and structs.unpack_addr(
                real.addr, real.family) == want:
            return raw
    raise RuntimeError('no member slot of %s' % member)


def configure(obj, dp, member4, member6=None):
    """Write the floor's fixed members (member6 None: the IPv4 one in both
    places) with their cached next hops and the SE's config."""
    size = ctypes.sizeof(structs.Real)
    reals = [real_of(dp, m)[:size] for m in (member4, member6 or member4)]
    fixed = b''.join(reals)
    for raw in reals:
        real = structs.Real.from_bytes(raw)
        nh = dp.maps['nexthops'].lookup(C.u32(real.nh))
        if not real.nh or nh is None:
            raise RuntimeError('floor: member without a cached next hop')
        fixed += nh
    fixed += dp.maps['se_config'].lookup(C.u32(0))
    fixed += C.u32(FLOW_LABEL)
    bss = obj.find_map('.bss').map()
    if bss.value_size != len(fixed):
        raise RuntimeError('floor .bss is %d bytes, struct floor_cfg packed '
                           'here %d' % (bss.value_size, len(fixed)))
    bss.update(C.u32(0), fixed)
