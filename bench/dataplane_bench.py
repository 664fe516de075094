#!/usr/bin/env python3
"""ns/packet of the SE XDP program via BPF_PROG_TEST_RUN.

All figures come from one run, one process (optionally pinned to one CPU,
DSR_BENCH_CPU), inside a private network namespace where the members' next
hops resolve (static neighbour entries), so the agent's cached next hop is
what is measured; two listeners have their members' next-hop cache cleared
to measure the bpf_fib_lookup fallback too.

Paths measured: an empty XDP_PASS program (the test-run loop's floor); IPv4
in IPv4 with a conn-table hit and with a conn-table miss (a new flow every
run); IPv6 in IPv6 hit; GRE with an IPv4 and an IPv6 outer header, hit; and
the IPv4 / IPv6 hits whose next hop comes from bpf_fib_lookup.  The cost of
the listener policies: 4in4 hit and miss on a listener with a
connection_limit (never reached), with an allowed_cidrs list of
POLICY_CIDRS prefixes (the source is in it), and with both, and the 4in4
hit on a listener with a timeout_client_data (never reached); reported as
ratios to the plain 4in4 hit / miss of the same run.  The 4in4 miss with
the new-flow flood guard engaged (se_config.flood_rate 1: no insert) is
reported against the 4in4 miss and the 4in4 hit of the same run.

Targets (issue 15), each a ratio within one run: the conn-table hit of
4in4, 6in6 and GRE (IPv4 / IPv6 outer) <= 1.5 x the *encap floor* of the
same encapsulation (bench_encap_floor.c: the same restore, the SE's parse
and encapsulate, one fixed member and next hop, XDP_TX, no lookup; timed
right after the hit in every round, median of per-round ratios); a new
flow (4in4 miss + LRU insert, table full) <= 3 x the 4in4 hit; XDP_PASS
stays as a reference.  DSR_BENCH_LRU_THREADS=1 measures only new flows,
with one and with one thread per CPU inserting at once.

DSR_BENCH_ABLATE=1 (an experiment, docs/benchmarks.md "Where the hit's time
goes"; needs bench/experiments/hitpath-ablation.patch): the same SE source
built with the first N pieces of the conn-hit path removed
(bench_se_ablN_xdp.o, N = 1..8), with only the conn-table lookup removed
(ablonly2) and with a 16-byte IPv4 flow key (key16) is timed right after
the unchanged build in every round, for the 4in4 / 6in6 / GRE hits, and
reported against the unchanged build and the encap floor (median of
per-round ratios).  DSR_BENCH_ABLATE=a,b,...: the objects
obj/bench_se_a_xdp.o, ... instead (any build of bench_se_xdp.c with this
release's maps, e.g. one with a change undone, to compare the change in the
same run), timed on the new-flow paths (4in4 miss, guarded, RST) as well.

Method.  BPF_PROG_TEST_RUN(repeat=N) re-runs the program on the same,
already modified buffer, so every SE measurement uses bench_rst_se
(bench_se_xdp.c): restore the frame (strip the previous run's encap with
bpf_xdp_adjust_head, rewrite the Ethernet header, and for the miss case
write a new source port / source address from a counter) and then run the
real se_process() -- the same source as dsr_se, through se.h -- on the maps
of a Dataplane configured with dp.apply().  The same restore followed by
XDP_PASS (bench_rst_pass) is timed with the same settings and subtracted:

    net LB ns = (restore + LB) - (restore + pass) + pass

The restore of an encapsulated frame does one bpf_xdp_adjust_head that
restore + pass does not, so net LB includes it (half of adjust_head_pair_ns,
also measured): slightly pessimistic.

Two clocks: "per core" is the CPU time of the calling thread / N (time other
tasks run on the core is not charged: the figure stays meaningful on a
loaded machine; the targets are judged on it); "wall" is wall-clock time /
N.  The kernel's own (integer-ns, per run) duration is recorded as well.

Every path is checked once (repeat=1: verdict, outer Ethernet/IP/GRE
headers, inner packet) before timing, and every timed run is checked by the
SE's own counters (every run steered, conn-table hit or miss as intended,
no drops), so a benchmark cannot silently measure a drop path.
"""

import ipaddress
import json
import os
import struct
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import _floor as F  # noqa: E402

from amphora_agent.dataplane import dataplane as dpmod  # noqa: E402
from amphora_agent.dataplane import libbpf  # noqa: E402
from amphora_agent.dataplane import model  # noqa: E402
from amphora_agent.dataplane import packets  # noqa: E402
from amphora_agent.dataplane import structs  # noqa: E402

REPEAT = int(os.environ.get('DSR_BENCH_REPEAT', 1_000_000))
ROUNDS = int(os.environ.get('DSR_BENCH_ROUNDS', 7))
CPU = int(os.environ.get('DSR_BENCH_CPU', -1))  # -1: no pinning
# DSR_BENCH_LRU_THREADS=1: instead of the paths, only the cost of a new flow
# (4in4 miss, table full) with one thread and with one thread per CPU
# inserting at once into the same conn table (per-CPU vs common LRU lists).
LRU_THREADS = os.environ.get('DSR_BENCH_LRU_THREADS') == '1'
# Ablation builds measured beside the unchanged one: level -> object.
_ABL = os.environ.get('DSR_BENCH_ABLATE', '')
ABLATE = {v: os.path.join(C.OBJ_DIR, 'bench_se_%s_xdp.o' % v)
          for v in (['abl%d' % n for n in range(1, 9)] + ['ablonly2', 'key16']
                    if _ABL == '1' else [x for x in _ABL.split(',') if x])}
# What level N removes (cumulative: N removes 1..N).
ABLATE_WHAT = {
    'abl1': 'per-packet counters (listener_stats, real_stats, se_stats)',
    'abl2': 'conn-table lookup (a fixed entry from .bss)',
    'abl3': 'member slot read and its gen / in-use / idle checks',
    'abl4': 'next-hop read and copy (fixed next hop)',
    'abl5': 'se_config lookup (fixed config)',
    'abl6': 'connection-limit, tunnel-source and MTU checks',
    'abl7': 'the XDP_TX-or-redirect tail (always XDP_TX)',
    'abl8': 'encap as a compile-time constant (two specialised copies)',
    'ablonly2': 'only the conn-table lookup (not cumulative)',
    'key16': 'nothing removed: IPv4 flows looked up with a 16-byte key '
             '(a second LRU table)',
}
LIMITS = dpmod.Limits(max_listeners=16)

TARGET_V4_X_PASS = 5.0   # 4in4 conn-hit <= 5 x XDP_PASS
TARGET_V6_X_V4 = 2.0     # 6in6 <= 2 x 4in4
TARGET_X_FLOOR = 1.5     # conn-hit <= 1.5 x the encap floor (4in4, 6in6, GRE)
TARGET_MISS_X_HIT = 3.0  # new flow (miss + insert) <= 3 x the conn-hit path

# SE hit scenario -> the encap-floor program doing the same encapsulation
# (bench_encap_floor.c: parse, one fixed encap, fixed next hop, XDP_TX).
FLOORS = {'4in4_hit': 'bench_floor_4in4', '6in6_hit': 'bench_floor_6in6',
          'gre4in4_hit': 'bench_floor_gre4in4',
          'gre6in6_hit': 'bench_floor_gre6in6'}

# Where the DSR_BENCH_ABLATE builds are timed, right after the unchanged
# build: the hit paths (beside their floors) and, for builds named in the
# variable (a change compared in the same run), the new-flow paths too.
NEW_FLOWS = ('4in4_miss', '4in4_miss_guarded', '4in4_miss_rst')
ABLATE_SCENARIOS = tuple(FLOORS) + (() if _ABL == '1' else NEW_FLOWS)

GW_MAC = '02:00:00:00:18:01'
TUN4 = ipaddress.ip_address('198.18.0.2')
TUN6 = ipaddress.ip_address('2001:db8:18::2')
CLIENT4 = ipaddress.ip_address('10.1.0.1')
CLIENT6 = ipaddress.ip_address('2001:db8:c1::1')

# name -> (listener, encap, members, next hop cached?)
LISTENERS = {
    'v4': ('198.51.100.10:80/tcp', 'IPIP', ['198.19.1.2', '198.19.2.2'], True),
    'gre4': ('198.51.100.11:80/tcp', 'GRE', ['198.19.1.2', '198.19.2.2'],
             True),
    'fib4': ('198.51.100.12:80/tcp', 'IPIP', ['198.19.3.2'], False),
    'v6': ('[2001:db8:100::10]:80/tcp', 'IPIP',
           ['2001:db8:19:1::2', '2001:db8:19:2::2'], True),
    'gre6': ('[2001:db8:100::11]:80/tcp', 'GRE',
             ['2001:db8:19:1::2', '2001:db8:19:2::2'], True),
    'fib6': ('[2001:db8:100::12]:80/tcp', 'IPIP', ['2001:db8:19:3::2'], False),
    'lim4': ('198.51.100.13:80/tcp', 'IPIP', ['198.19.1.2', '198.19.2.2'],
             True),
    'acl4': ('198.51.100.14:80/tcp', 'IPIP', ['198.19.1.2', '198.19.2.2'],
             True),
    'both4': ('198.51.100.15:80/tcp', 'IPIP', ['198.19.1.2', '198.19.2.2'],
              True),
    'idle4': ('198.51.100.16:80/tcp', 'IPIP', ['198.19.1.2', '198.19.2.2'],
              True),
}
# Listener policies (docs/dataplane.md): a limit no run reaches, and an
# allow list of POLICY_CIDRS prefixes whose /8 holds every bench source
# (10.1.x.y: the miss case varies the third and fourth byte).
POLICY_LIMIT = 2 ** 32 - 1
POLICY_CIDRS = 256
POLICIES = {'lim4': (POLICY_LIMIT, False), 'acl4': (0, True),
            'both4': (POLICY_LIMIT, True)}
# timeout_client_data no run reaches (Octavia's longest, 24 days): a hit
# reads the coarse clock and refreshes the entry's last-use time.
POLICY_IDLE_MS = 24 * 86400 * 1000
IDLE = {'idle4'}

# scenario -> (listener, flow mode, description)
#   hit: one flow, always in the conn table; miss: a new flow every run.
SCENARIOS = {
    '4in4_hit': ('v4', 'hit', 'IPv4 in IPv4 (IPIP), conn-table hit'),
    '4in4_miss': ('v4', 'miss', 'IPv4 in IPv4, conn-table MISS: a new flow '
                  'every run (listener lookup, Maglev ring, LRU insert; the '
                  '%d-entry conn table fills up in the first round, so '
                  'mostly insert + evict)' % LIMITS.conn_table_size),
    '6in6_hit': ('v6', 'hit', 'IPv6 in IPv6 (proto 41), conn-table hit'),
    'gre4in4_hit': ('gre4', 'hit', 'IPv4 in GRE in IPv4, conn-table hit'),
    'gre6in6_hit': ('gre6', 'hit', 'IPv6 in GRE in IPv6 (v6 outer), '
                    'conn-table hit'),
    '4in4_hit_fib': ('fib4', 'hit', 'IPv4 in IPv4, conn-table hit, next hop '
                     'by bpf_fib_lookup (no cached next hop)'),
    '6in6_hit_fib': ('fib6', 'hit', 'IPv6 in IPv6, conn-table hit, next hop '
                     'by bpf_fib_lookup'),
    '4in4_hit_limit': ('lim4', 'hit', '4in4 hit, listener with a '
                       'connection_limit'),
    '4in4_miss_limit': ('lim4', 'miss', '4in4 miss, listener with a '
                        'connection_limit (admission: counts of every CPU)'),
    '4in4_hit_acl': ('acl4', 'hit', '4in4 hit, listener with allowed_cidrs '
                     '(%d prefixes)' % POLICY_CIDRS),
    '4in4_miss_acl': ('acl4', 'miss', '4in4 miss, listener with '
                      'allowed_cidrs (LPM lookup)'),
    '4in4_hit_limit_acl': ('both4', 'hit', '4in4 hit, connection_limit and '
                           'allowed_cidrs'),
    '4in4_miss_limit_acl': ('both4', 'miss', '4in4 miss, connection_limit '
                            'and allowed_cidrs'),
    '4in4_hit_idle': ('idle4', 'hit', '4in4 hit, listener with '
                      'timeout_client_data (idle check, last-use refresh)'),
    '4in4_miss_guarded': ('v4', 'miss', '4in4 miss with the new-flow flood '
                          'guard engaged (flood_rate 1: steered by the ring, '
                          'no LRU insert)'),
    '4in4_miss_rst': ('v4', 'miss', '4in4 miss, a TCP RST (a RST flood: '
                      'steered by the ring, never remembered)'),
}
# Scenarios whose frames carry these TCP flags instead of the template's
# SYN.  A RST without an entry must make none (checked).
TCP_RST = 0x04
TCP_FLAGS = {'4in4_miss_rst': TCP_RST}
NO_INSERT = {s for s, flags in TCP_FLAGS.items() if flags & TCP_RST}
# Scenarios run with se_config.flood_rate = 1, so that (after the first
# new flow of each second) every run is over the rate.
GUARDED = {'4in4_miss_guarded'}
# policy scenario -> the plain scenario it is compared with
POLICY_BASE = {s: ('4in4_hit' if '_hit_' in s else '4in4_miss')
               for s in SCENARIOS if s.endswith(('_limit', '_acl', '_idle',
                                                 '_guarded', '_rst'))}
# Measure each policy scenario right after its base, so that their ratio
# (per round) compares samples taken moments apart on a noisy machine.
SCENARIOS = dict(sorted(SCENARIOS.items(), key=lambda kv: (
    list(SCENARIOS).index(POLICY_BASE.get(kv[0], kv[0])),
    kv[0] in POLICY_BASE)))

RST_CFG = struct.Struct('<IIIIHH14s2x')
SE_STAT = {name: i for i, name in enumerate(structs.SE_STATS)}


def topology(sb):
    ns = sb.ns('se')
    C.sh('ip', '-n', ns, 'link', 'add', 'se0', 'type', 'veth', 'peer',
         'name', 'rt0')
    for dev in ('se0', 'rt0'):
        C.sh('ip', '-n', ns, 'link', 'set', dev, 'mtu', 1600)
        C.sh('ip', '-n', ns, 'link', 'set', dev, 'up')
    C.sh('ip', '-n', ns, 'addr', 'add', '198.18.0.2/24', 'dev', 'se0')
    C.sh('ip', '-n', ns, '-6', 'addr', 'add', '2001:db8:18::2/64', 'dev',
         'se0', 'nodad')
    C.sh('ip', '-n', ns, 'neigh', 'add', '198.18.0.1', 'lladdr', GW_MAC,
         'nud', 'permanent', 'dev', 'se0')
    C.sh('ip', '-n', ns, '-6', 'neigh', 'add', '2001:db8:18::1', 'lladdr',
         GW_MAC, 'nud', 'permanent', 'dev', 'se0')
    C.sh('ip', '-n', ns, 'route', 'add', '198.19.0.0/16', 'via',
         '198.18.0.1', 'dev', 'se0')
    C.sh('ip', '-n', ns, '-6', 'route', 'add', '2001:db8:19::/48', 'via',
         '2001:db8:18::1', 'dev', 'se0')
    sb.sysctl(ns, 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1')
    return ns


def policy_cidrs():
    """POLICY_CIDRS prefixes: 10.0.0.0/8 and /24s elsewhere."""
    nets = ['10.0.0.0/8'] + ['172.%d.%d.0/24' % (16 + i // 256, i % 256)
                             for i in range(POLICY_CIDRS - 1)]
    return model.parse_cidrs(nets)


def desired_state():
    state = model.DesiredState(tunnel_source4=TUN4, tunnel_source6=TUN6)
    for name, (text, encap, members, _) in LISTENERS.items():
        key = model.ListenerKey.parse(text)
        limit, acl = POLICIES.get(name, (0, False))
        spec = model.ListenerSpec(key, encap=structs.Encap[encap],
                                  conn_limit=limit,
                                  allowed_cidrs=policy_cidrs() if acl
                                  else None,
                                  idle_timeout_ms=POLICY_IDLE_MS
                                  if name in IDLE else 0)
        for m in members:
            addr = ipaddress.ip_address(m)
            spec.members[addr] = model.Member(addr, 1)
        state.listeners[key] = spec
    return state


def drop_nexthop_cache(dp, member_addrs):
    """Clear the cached next hop of these members: bpf_fib_lookup path."""
    wanted = {ipaddress.ip_address(a) for a in member_addrs}
    changed = 0
    for raw_key, raw in dp.maps['reals'].items():
        real = structs.Real.from_bytes(raw)
        if not real.flags & structs.REAL_F_IN_USE:
            continue
        if structs.unpack_addr(real.addr, real.family) in wanted:
            real.nh = 0
            dp.maps['reals'].update(raw_key, bytes(real))
            changed += 1
    if changed != len(wanted):
        raise RuntimeError('cleared %d next hops, wanted %d'
                           % (changed, len(wanted)))


def template(listener):
    key = model.ListenerKey.parse(listener)
    src = CLIENT4 if key.vip.version == 4 else CLIENT6
    return packets.flow_packet(src, 40000, key.vip, key.port, key.protocol)


def scenario_frame(scen, lname):
    """The template of scen's listener, with scen's TCP flags if any."""
    frame = template(LISTENERS[lname][0])
    flags = TCP_FLAGS.get(scen)
    if flags is None:
        return frame
    at = flow_offsets(frame)[0] + 13  # the TCP header's flags byte
    return frame[:at] + bytes([flags]) + frame[at + 1:]


def flow_offsets(frame):
    """(source port offset, offset of a 16-bit word of the source address)."""
    if frame[12:14] == b'\x08\x00':
        return 14 + 20, 14 + 12 + 2
    return 14 + 40, 14 + 8 + 14


def ipv4_csum_ok(hdr):
    total = sum(struct.unpack('!10H', hdr))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return total == 0xffff


def check_output(frame_in, out, listener_name, se_mac, vary):
    """Raise if `out` is not frame_in encapsulated towards a member."""
    text, encap, members, _ = LISTENERS[listener_name]
    members = {ipaddress.ip_address(m) for m in members}
    inner_v4 = frame_in[12:14] == b'\x08\x00'
    problems = []
    if out[0:6] != C.mac_bytes(GW_MAC):
        problems.append('eth dst %s is not the gateway' % out[0:6].hex(':'))
    if out[6:12] != C.mac_bytes(se_mac):
        problems.append('eth src %s is not se0' % out[6:12].hex(':'))
    eth_type = out[12:14]
    member_v4 = next(iter(members)).version == 4
    gre = encap == 'GRE'
    if member_v4:
        if eth_type != b'\x08\x00':
            problems.append('outer ethertype %s' % eth_type.hex())
        ip = out[14:34]
        hdr = 20
        proto, src, dst = ip[9], ipaddress.ip_address(ip[12:16]), \
            ipaddress.ip_address(ip[16:20])
        if ip[0] != 0x45 or not ipv4_csum_ok(ip):
            problems.append('outer IPv4 header bad (ver/ihl/csum)')
        if struct.unpack('!H', ip[2:4])[0] != len(frame_in) - 14 + hdr + (
                4 if gre else 0):
            problems.append('outer tot_len wrong')
        tun = TUN4
    else:
        if eth_type != b'\x86\xdd':
            problems.append('outer ethertype %s' % eth_type.hex())
        ip = out[14:54]
        hdr = 40
        proto, src, dst = ip[6], ipaddress.ip_address(ip[8:24]), \
            ipaddress.ip_address(ip[24:40])
        if ip[0] >> 4 != 6:
            problems.append('outer IPv6 version')
        if struct.unpack('!H', ip[4:6])[0] != len(frame_in) - 14 + (
                4 if gre else 0):
            problems.append('outer payload_len wrong')
        tun = TUN6
    want_proto = 47 if gre else (4 if inner_v4 else 41)
    if proto != want_proto:
        problems.append('outer protocol %d, want %d' % (proto, want_proto))
    if src != tun:
        problems.append('outer source %s, want %s' % (src, tun))
    if dst not in members:
        problems.append('outer destination %s is no member' % dst)
    off = 14 + hdr
    if gre:
        want = b'\x00\x00' + (b'\x08\x00' if inner_v4 else b'\x86\xdd')
        if out[off:off + 4] != want:
            problems.append('GRE header %s' % out[off:off + 4].hex())
        off += 4
    inner = out[off:]
    if len(inner) != len(frame_in) - 14:
        problems.append('inner length %d, want %d'
                        % (len(inner), len(frame_in) - 14))
    elif not vary and inner != frame_in[14:]:
        problems.append('inner packet changed')
    if problems:
        raise RuntimeError('%s: %s' % (listener_name, '; '.join(problems)))
    return dst


class Bench:
    def __init__(self, sb, ns):
        self.sb = sb
        self.ns = ns

    # Everything below runs in the SE namespace (forked child).
    def run(self):
        cpu = C.pin_cpu(CPU) if CPU >= 0 else 'any (not pinned)'
        dp = dpmod.Dataplane.open(self.sb.pin_dir, limits=LIMITS,
                                  create=True)
        dp.apply(desired_state())
        for name, (_, _, members, cached) in LISTENERS.items():
            if not cached:
                drop_nexthop_cache(dp, members)
        self.dp = dp
        self.ifindex, self.se_mac = C.link_info(self.ns, 'se0')
        live = dp._live_listeners()
        self.ids = {n: live[model.ListenerKey.parse(text)].id
                    for n, (text, *_rest) in LISTENERS.items()}

        # The bench object's SE maps are the configured Dataplane's pinned
        # maps, so se_process() in it sees exactly what dp.apply() wrote.
        obj = F.open_on_se_maps(C.BENCH_OBJ, self.sb.pin_dir, LIMITS)
        obj.load()
        self.obj = obj
        for name in dpmod.MAP_NAMES:
            if not obj.find_map(name).is_pinned:
                raise RuntimeError('bench map %s does not reuse the SE map'
                                   % name)
        self.rst_cfg = obj.find_map('rst_cfg').map()
        self.progs = {n: obj.find_program(n) for n in (
            'bench_pass', 'bench_rst_pass', 'bench_rst_se', 'bench_se',
            'bench_adjust_pair')}
        self.load_floor()
        self.load_ablations()
        self.counter = 0

        C.log('SE netns %s, pins %s, CPU %s, repeat %d x %d rounds'
              % (self.ns, self.sb.pin_dir, cpu, REPEAT, ROUNDS))
        C.log('maps of the bench object reuse the configured Dataplane\'s '
              'pinned maps (%d listeners applied)' % len(LISTENERS))
        self.verify_all()
        if LRU_THREADS:
            return self.measure_concurrent_inserts()
        return self.measure()

    # ------------------------------------------------------------- setup
    def load_floor(self):
        """Load bench_encap_floor.o on the same maps (the SE's pins, the SE
        bench object's rst_cfg) and give it one fixed member per family --
        the first member of listener v4 / v6, with its cached next hop and
        the SE's tunnel sources, exactly what the SE would use."""
        rst_pin = os.path.join(self.sb.pin_dir, 'bench_rst_cfg')
        self.rst_cfg.pin(rst_pin)
        obj = F.open_on_se_maps(F.FLOOR_OBJ, self.sb.pin_dir, LIMITS)
        obj.find_map('rst_cfg').set_pin_path(rst_pin)
        obj.load()
        if not obj.find_map('rst_cfg').is_pinned:
            raise RuntimeError('floor object does not reuse rst_cfg')
        self.floor_obj = obj
        for prog in FLOORS.values():
            self.progs[prog] = obj.find_program(prog)
        F.configure(obj, self.dp, LISTENERS['v4'][2][0],
                    LISTENERS['v6'][2][0])

    def load_ablations(self):
        """The ablation builds on the same maps and rst_cfg, their fixed
        entries (`abl`, .bss) filled from the configured Dataplane: entry
        i = (IPv6 VIP) << 1 | (last VIP byte & 1), one member of that
        listener, its next hop, the SE's config."""
        rst_pin = os.path.join(self.sb.pin_dir, 'bench_rst_cfg')
        self.abl_objs = []
        fixed = self.ablation_entries()
        for variant, path in ABLATE.items():
            obj = F.open_on_se_maps(path, self.sb.pin_dir, LIMITS,
                                    autoload=('bench_rst_se', 'bench_se'))
            obj.find_map('rst_cfg').set_pin_path(rst_pin)
            obj.load()
            present = {m.name for m in obj.maps()}
            for name in dpmod.MAP_NAMES + ('rst_cfg',):
                if name in present and not obj.find_map(name).is_pinned:
                    raise RuntimeError('%s map %s does not reuse the SE map'
                                       % (variant, name))
            # A build without the ablation patch's `abl` has no .bss.
            if any(m.name.endswith('.bss') for m in obj.maps()):
                bss = obj.find_map('.bss').map()
                if bss.value_size != len(fixed):
                    raise RuntimeError('%s .bss is %d bytes, abl packed %d'
                                       % (variant, bss.value_size,
                                          len(fixed)))
                bss.update(C.u32(0), fixed)
            self.abl_objs.append(obj)
            for prog in ('bench_rst_se', 'bench_se'):
                self.progs['%s_%s' % (prog, variant)] = obj.find_program(
                    prog)

    def ablation_entries(self):
        conns, reals, nhs = b'', b'', b''
        for lname in ('v4', 'gre4', 'v6', 'gre6'):
            for key, raw in self.dp.maps['reals'].items():
                real = structs.Real.from_bytes(raw)
                if (real.flags & structs.REAL_F_IN_USE
                        and real.listener_id == self.ids[lname]):
                    break
            else:
                raise RuntimeError('ablation: no member of %s' % lname)
            conns += bytes(structs.Conn(real=struct.unpack('<I', key)[0],
                                        gen=real.gen, hash=F.FLOW_LABEL))
            reals += bytes(real)
            nhs += self.dp.maps['nexthops'].lookup(C.u32(real.nh))
        return conns + reals + nhs + self.dp.maps['se_config'].lookup(
            C.u32(0))

    def verify_ablation(self, scen, frame, lname):
        """Each ablation build still encapsulates the frame to a member of
        the listener (its counters are not checked: level 1 removes them)."""
        for v in ABLATE:
            before = self.se_counters(lname)
            res, _, _ = self.test_run('bench_se_' + v, frame, 1)
            if res.retval != libbpf.XDP_TX:
                after = self.se_counters(lname)
                raise RuntimeError('%s/%s: verdict %d, not XDP_TX (%s)'
                                   % (scen, v, res.retval, {
                                       k: after[k] - before[k] for k in after
                                       if after[k] != before[k]}))
            check_output(frame, res.data_out, lname, self.se_mac, False)
            self.set_cfg(frame, 'hit')
            res, _, _ = self.test_run('bench_rst_se_' + v, frame, 3)
            self.save_counter()
            if res.retval != libbpf.XDP_TX:
                raise RuntimeError('%s/%s: verdict %d, not XDP_TX'
                                   % (scen, v, res.retval))
            check_output(frame, res.data_out, lname, self.se_mac, False)
        if ABLATE:
            C.log('  %-13s ablation builds %s: XDP_TX, headers OK'
                  % ('', ', '.join(ABLATE)))

    def set_cfg(self, frame, mode):
        sport_off, saddr_off = flow_offsets(frame)
        # vary=1, flows=0: a new flow on every run (the miss case).
        self.rst_cfg.update(C.u32(0), RST_CFG.pack(
            len(frame), int(mode == 'miss'), 0, self.counter, sport_off,
            saddr_off, frame[:14]))

    def save_counter(self):
        raw = self.rst_cfg.lookup(C.u32(0))
        self.counter = RST_CFG.unpack(raw)[3]

    def test_run(self, prog, frame, repeat):
        """-> (result, thread CPU ns, wall ns) of one BPF_PROG_TEST_RUN."""
        ctx = C.xdp_md(self.ifindex, len(frame))
        t0 = time.thread_time_ns()
        w0 = time.perf_counter_ns()
        res = libbpf.prog_test_run(self.progs[prog].fd, frame, repeat=repeat,
                                   ctx_in=ctx)
        wall = time.perf_counter_ns() - w0
        return res, time.thread_time_ns() - t0, wall

    def se_counters(self, lname):
        stats = self.dp.maps['se_stats']
        se = {n: C.percpu_sum(stats, C.u32(i)) for n, i in SE_STAT.items()}
        ls = C.percpu_sum  # ListenerStats: packets bytes new hits misses drops
        lm = self.dp.maps['listener_stats']
        key = C.u32(self.ids[lname])
        se['l_hits'] = ls(lm, key, 24)
        se['l_misses'] = ls(lm, key, 32)
        se['l_drops'] = ls(lm, key, 40)
        se['l_guarded'] = ls(lm, key,
                             structs.ListenerStats.flood_guarded.offset)
        se['l_new_flows'] = ls(lm, key,
                               structs.ListenerStats.new_flows.offset)
        return se

    # ------------------------------------------------------ verification
    def verify_all(self):
        C.log('verifying every measured path (repeat=1) before timing:')
        for scen, (lname, mode, _) in SCENARIOS.items():
            frame = scenario_frame(scen, lname)
            # The real entry on the pristine template.
            res, _, _ = self.test_run('bench_se', frame, 1)
            if res.retval != libbpf.XDP_TX:
                raise RuntimeError('%s: bench_se verdict %d, not XDP_TX'
                                   % (scen, res.retval))
            member = check_output(frame, res.data_out, lname, self.se_mac,
                                  False)
            # The wrapper, 3 runs: restore works on an encapsulated frame.
            self.set_cfg(frame, mode)
            res, _, _ = self.test_run('bench_rst_se', frame, 3)
            self.save_counter()
            if res.retval != libbpf.XDP_TX:
                raise RuntimeError('%s: bench_rst_se verdict %d, not XDP_TX'
                                   % (scen, res.retval))
            check_output(frame, res.data_out, lname, self.se_mac,
                         mode == 'miss')
            res, _, _ = self.test_run('bench_rst_pass', frame, 3)
            self.save_counter()
            if res.retval != libbpf.XDP_PASS:
                raise RuntimeError('%s: bench_rst_pass verdict %d'
                                   % (scen, res.retval))
            C.log('  %-13s XDP_TX -> member %s, outer headers + inner packet '
                  'OK' % (scen, member))
            if scen in ABLATE_SCENARIOS:
                self.verify_ablation(scen, frame, lname)
            if scen in FLOORS:
                self.set_cfg(frame, 'hit')
                res, _, _ = self.test_run(FLOORS[scen], frame, 3)
                if res.retval != libbpf.XDP_TX:
                    raise RuntimeError('%s: %s verdict %d, not XDP_TX'
                                       % (scen, FLOORS[scen], res.retval))
                member = check_output(frame, res.data_out, lname,
                                      self.se_mac, False)
                C.log('  %-13s floor %s: XDP_TX -> member %s, same headers'
                      % ('', FLOORS[scen], member))

    # -------------------------------------------------------- measuring
    def timed(self, prog, frame, scen=None, mode='hit', lname=None):
        """-> {'cpu', 'wall', 'kernel'} ns per run of REPEAT runs of prog."""
        if scen is not None:
            self.set_cfg(frame, mode)
            if prog == 'bench_rst_se' and mode == 'hit':
                # (Re)insert the flow: the miss bench's new flows may have
                # evicted it from the LRU conn table.
                self.test_run(prog, frame, 1)
                self.set_cfg(frame, mode)
        before = self.se_counters(lname) if prog == 'bench_rst_se' else None
        guarded = scen in GUARDED
        if guarded:
            self.dp.set_flood_guard_rate(1)
        try:
            res, cpu_ns, wall_ns = self.test_run(prog, frame, REPEAT)
        finally:
            if guarded:
                self.dp.set_flood_guard_rate(0)
        if scen is not None:
            self.save_counter()
        want = (libbpf.XDP_TX if prog.startswith('bench_rst_se')
                or prog in FLOORS.values() else libbpf.XDP_PASS)
        if res.retval != want:
            raise RuntimeError('%s/%s: verdict %d, want %d'
                               % (scen, prog, res.retval, want))
        if before is not None:
            after = self.se_counters(lname)
            d = {k: after[k] - before[k] for k in after}
            drops = sum(v for k, v in d.items() if k.startswith('drop_')
                        or k == 'l_drops')
            steered = d['steered']
            key = 'l_misses' if mode == 'miss' else 'l_hits'
            # Guarded: one insert per second per CPU at most gets through.
            unguarded = REPEAT - d['l_guarded'] if guarded else 0
            inserted = d['l_new_flows'] if scen in NO_INSERT else 0
            if (steered != REPEAT or drops or d[key] != REPEAT
                    or unguarded > 100 or inserted):
                raise RuntimeError(
                    '%s: of %d runs %d steered, %d dropped, %s=%d: not the '
                    'path meant to be measured (%s)'
                    % (scen, REPEAT, steered, drops, key, d[key], d))
        return {'cpu': cpu_ns / REPEAT, 'wall': wall_ns / REPEAT,
                'kernel': res.duration_ns}

    def measure_concurrent_inserts(self):
        """ns per new flow (thread CPU time / runs) with 1 inserting thread
        and with one per CPU of the affinity set, alternating ROUNDS times;
        the table is full first.  The threads share rst_cfg's flow counter
        (racy: some runs may hit a flow the other thread just made)."""
        frame = template(LISTENERS['v4'][0])
        self.set_cfg(frame, 'miss')
        self.test_run('bench_rst_se', frame, LIMITS.conn_table_size + 1)
        cpus = sorted(os.sched_getaffinity(0))
        fd = self.progs['bench_rst_se'].fd
        ctx = C.xdp_md(self.ifindex, len(frame))

        def worker(cpu, res):
            os.sched_setaffinity(0, {cpu})
            t0 = time.thread_time_ns()
            libbpf.prog_test_run(fd, frame, repeat=REPEAT, ctx_in=ctx)
            res[cpu] = (time.thread_time_ns() - t0) / REPEAT
        out = {'flags': self.dp.maps['conn_table'].map_flags, 'cpus': cpus,
               '1': [], str(len(cpus)): []}
        for _ in range(ROUNDS):
            for n in (1, len(cpus)):
                self.set_cfg(frame, 'miss')
                res = {}
                threads = [threading.Thread(target=worker, args=(c, res))
                           for c in cpus[:n]]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                self.save_counter()
                out[str(n)].append(C.median(res.values()))
        return out

    def measure(self):
        """Alternate every program ROUNDS times: samples[name] = [sample]."""
        frame4 = template(LISTENERS['v4'][0])
        samples = {'pass': [], 'adjust_pair': []}
        for scen in SCENARIOS:
            samples[scen] = {'rst_se': [], 'rst_pass': [], 'floor': []}
            for v in ABLATE:
                samples[scen][v] = []
        # Fill the conn table first, so that every miss scenario measures
        # the same regime (insert + LRU evict), whatever its turn.
        fill = template(LISTENERS['v4'][0])
        self.set_cfg(fill, 'miss')
        self.test_run('bench_rst_se', fill, LIMITS.conn_table_size + 1)
        self.save_counter()
        t_start = time.monotonic()
        for rnd in range(ROUNDS):
            samples['pass'].append(self.timed('bench_pass', frame4))
            samples['adjust_pair'].append(
                self.timed('bench_adjust_pair', frame4))
            for scen, (lname, mode, _) in SCENARIOS.items():
                frame = scenario_frame(scen, lname)
                samples[scen]['rst_se'].append(
                    self.timed('bench_rst_se', frame, scen, mode, lname))
                samples[scen]['rst_pass'].append(
                    self.timed('bench_rst_pass', frame, scen, mode, lname))
                if scen in FLOORS:
                    samples[scen]['floor'].append(
                        self.timed(FLOORS[scen], frame, scen, mode, lname))
                if scen in ABLATE_SCENARIOS:
                    for v in ABLATE:
                        samples[scen][v].append(self.timed(
                            'bench_rst_se_' + v, frame, scen, mode, lname))
            C.log('  round %d/%d done (%.1f s)'
                  % (rnd + 1, ROUNDS, time.monotonic() - t_start))
        return samples


CLOCKS = ('cpu', 'wall')  # per core (thread CPU time), wall clock


def med(samples, clock):
    return C.median([s[clock] for s in samples])


def report(samples):
    pass_ns = {c: med(samples['pass'], c) for c in CLOCKS}
    adjust_ns = {c: med(samples['adjust_pair'], c) - pass_ns[c]
                 for c in CLOCKS}
    out = {'bench': 'dataplane_bench', 'unit': 'ns/packet',
           'method': 'BPF_PROG_TEST_RUN repeat=%d, median of %d alternating '
                     'rounds; per_core = CPU time of the calling thread / '
                     'repeat (time other tasks run on the core excluded), '
                     'wall = wall-clock time / repeat; net LB = '
                     '(restore+LB) - (restore+pass) + pass; targets judged '
                     'per core' % (REPEAT, ROUNDS),
           'xdp_pass_ns': round(pass_ns['cpu'], 2),
           'xdp_pass_ns_wall': round(pass_ns['wall'], 2),
           'xdp_pass_kernel_duration_ns': med(samples['pass'], 'kernel'),
           'adjust_head_pair_ns': round(adjust_ns['cpu'], 2),
           'scenarios': {}}
    C.log('')
    C.log('XDP_PASS (empty program, the test-run loop floor): %.1f ns/pkt '
          'per core, %.1f ns wall' % (pass_ns['cpu'], pass_ns['wall']))
    C.log('two bpf_xdp_adjust_head calls: %.1f ns per core (net LB includes '
          'one, done by the restore: ~%.1f ns pessimistic)'
          % (adjust_ns['cpu'], adjust_ns['cpu'] / 2))
    C.log('')
    C.log('ns/packet         ------- per core -------   ------ wall -----')
    C.log('%-14s %9s %9s %7s %9s %7s  %s' % (
        'path', 'rst+LB', 'net LB', 'xPASS', 'net LB', 'xPASS', 'what'))
    for scen, (_, _, desc) in SCENARIOS.items():
        r = {}
        for c in CLOCKS:
            se = med(samples[scen]['rst_se'], c)
            rp = med(samples[scen]['rst_pass'], c)
            r[c] = (se, rp, se - rp + pass_ns[c])
        net, net_w = r['cpu'][2], r['wall'][2]
        out['scenarios'][scen] = {
            'description': desc,
            'net_lb_ns': round(net, 2),
            'x_pass': round(net / pass_ns['cpu'], 2),
            'net_lb_ns_wall': round(net_w, 2),
            'x_pass_wall': round(net_w / pass_ns['wall'], 2),
            'restore_plus_lb_ns': round(r['cpu'][0], 2),
            'restore_plus_pass_ns': round(r['cpu'][1], 2),
            'restore_plus_lb_spread_ns': round(
                max(s['cpu'] for s in samples[scen]['rst_se'])
                - min(s['cpu'] for s in samples[scen]['rst_se']), 2),
            'restore_plus_lb_kernel_duration_ns': med(
                samples[scen]['rst_se'], 'kernel'),
        }
        C.log('%-14s %9.1f %9.1f %7.2f %9.1f %7.2f  %s' % (
            scen, r['cpu'][0], net, net / pass_ns['cpu'], net_w,
            net_w / pass_ns['wall'], desc))

    sc = out['scenarios']
    v4, v6 = sc['4in4_hit']['net_lb_ns'], sc['6in6_hit']['net_lb_ns']
    t1 = {'name': '4in4 conn-hit <= %g x XDP_PASS' % TARGET_V4_X_PASS,
          'value': v4, 'limit': round(TARGET_V4_X_PASS * pass_ns['cpu'], 2),
          'ratio': round(v4 / pass_ns['cpu'], 2),
          'ratio_wall': sc['4in4_hit']['x_pass_wall'],
          'met': v4 <= TARGET_V4_X_PASS * pass_ns['cpu']}
    t2 = {'name': '6in6 conn-hit <= %g x 4in4 conn-hit' % TARGET_V6_X_V4,
          'value': v6, 'limit': round(TARGET_V6_X_V4 * v4, 2),
          'ratio': round(v6 / v4, 2),
          'ratio_wall': round(sc['6in6_hit']['net_lb_ns_wall']
                              / sc['4in4_hit']['net_lb_ns_wall'], 2),
          'met': v6 <= TARGET_V6_X_V4 * v4}
    out['targets'] = {'v4_hit_vs_pass': t1, 'v6_vs_v4': t2}
    # Listener policies: ratio to the plain path of the same run.
    out['policy_cost'] = {}
    C.log('')
    C.log('listener policies vs the plain 4in4 path (per core):')

    def net(scen, i):
        return round_net(samples, scen, 'rst_se', i)
    for scen, base in POLICY_BASE.items():
        # Median of the per-round ratios (policy vs base, same round).
        ratios = [net(scen, i) / net(base, i) for i in range(ROUNDS)]
        extras = [net(scen, i) - net(base, i) for i in range(ROUNDS)]
        ratio, extra = C.median(ratios), C.median(extras)
        out['policy_cost'][scen] = {
            'vs': base, 'extra_ns': round(extra, 2),
            'ratio': round(ratio, 3),
            'ratio_range': [round(min(ratios), 3), round(max(ratios), 3)]}
        C.log('  %-20s %+7.1f ns  x %.3f (rounds %.3f..%.3f; vs %s)' % (
            scen, extra, ratio, min(ratios), max(ratios), base))
    floor_targets = report_floor(samples, out)
    # A new flow against a hit, per round (4in4: the miss runs right
    # before its policy variants, the hit a few programs earlier).
    ratios = per_round_vs_hit(samples, '4in4_miss')
    t3 = {'name': '4in4 new flow <= %g x 4in4 conn-hit' % TARGET_MISS_X_HIT,
          'value': sc['4in4_miss']['net_lb_ns'],
          'ratio': round(C.median(ratios), 2),
          'ratio_range': [round(min(ratios), 2), round(max(ratios), 2)],
          'met': C.median(ratios) <= TARGET_MISS_X_HIT}
    out['targets']['miss_vs_hit'] = t3
    # The flood guard engaged: a new flow steered without its insert.
    g_ratios = per_round_vs_hit(samples, '4in4_miss_guarded')
    out['flood_guard'] = {
        'guarded_new_flow_ns': sc['4in4_miss_guarded']['net_lb_ns'],
        'guarded_x_hit': round(C.median(g_ratios), 2),
        'guarded_x_hit_range': [round(min(g_ratios), 2),
                                round(max(g_ratios), 2)],
        'new_flow_x_hit': t3['ratio']}
    C.log('flood guard engaged: 4in4 new flow without insert x %.2f of the '
          '4in4 conn-hit (rounds %.2f..%.2f; with the insert x %.2f)' % (
              C.median(g_ratios), min(g_ratios), max(g_ratios), t3['ratio']))
    # A RST without an entry: steered, never remembered (se.h).
    r_ratios = per_round_vs_hit(samples, '4in4_miss_rst')
    out['rst_without_entry'] = {
        'ns': sc['4in4_miss_rst']['net_lb_ns'],
        'x_hit': round(C.median(r_ratios), 2),
        'x_hit_range': [round(min(r_ratios), 2), round(max(r_ratios), 2)],
        'x_new_flow': out['policy_cost']['4in4_miss_rst']['ratio']}
    C.log('a TCP RST without an entry (never remembered): x %.2f of the 4in4 '
          'conn-hit (rounds %.2f..%.2f), x %.3f of a new flow with its '
          'insert' % (C.median(r_ratios), min(r_ratios), max(r_ratios),
                      out['rst_without_entry']['x_new_flow']))
    C.log('')
    C.log('target %s: x %.2f (rounds %.2f..%.2f): %s' % (
        t3['name'], t3['ratio'], min(ratios), max(ratios),
        'MET' if t3['met'] else 'MISSED'))
    out['all_targets_met'] = t1['met'] and t2['met'] and t3['met'] and all(
        t['met'] for t in floor_targets)
    if ABLATE:
        report_ablation(samples, out)
    C.log('')
    for t in (t1, t2):
        C.log('target %-36s %6.1f ns vs limit %6.1f ns per core (ratio %.2f; '
              'wall ratio %.2f): %s' % (
                  t['name'], t['value'], t['limit'], t['ratio'],
                  t['ratio_wall'], 'MET' if t['met'] else 'MISSED'))
    return out


def per_round_vs_hit(samples, scen):
    """scen's net ns over the 4in4 hit's, one ratio per round."""
    return [round_net(samples, scen, 'rst_se', i)
            / round_net(samples, '4in4_hit', 'rst_se', i)
            for i in range(ROUNDS)]


def round_net(samples, scen, prog, i, clock='cpu'):
    """Net ns of one round: (restore + prog) - (restore + pass) + pass."""
    return (samples[scen][prog][i][clock]
            - samples[scen]['rst_pass'][i][clock]
            + samples['pass'][i][clock])


def report_floor(samples, out):
    """The SE's conn-table hit against the encap floor of the same round."""
    out['encap_floor'] = {}
    targets = []
    C.log('')
    C.log('conn-table hit vs the encap floor (parse, one fixed encap, fixed '
          'next hop, XDP_TX; per core, median of per-round ratios):')
    for scen, prog in FLOORS.items():
        floor = [round_net(samples, scen, 'floor', i) for i in range(ROUNDS)]
        ratios = [round_net(samples, scen, 'rst_se', i) / floor[i]
                  for i in range(ROUNDS)]
        ratios_w = [round_net(samples, scen, 'rst_se', i, 'wall')
                    / round_net(samples, scen, 'floor', i, 'wall')
                    for i in range(ROUNDS)]
        ratio = C.median(ratios)
        out['encap_floor'][scen] = {
            'program': prog, 'floor_ns': round(C.median(floor), 2),
            'floor_x_pass': round(C.median(floor)
                                  / out['xdp_pass_ns'], 2),
            'hit_ns': out['scenarios'][scen]['net_lb_ns'],
            'hit_x_floor': round(ratio, 3),
            'hit_x_floor_range': [round(min(ratios), 3),
                                  round(max(ratios), 3)],
            'hit_x_floor_wall': round(C.median(ratios_w), 3)}
        targets.append({
            'name': '%s <= %g x encap floor' % (scen, TARGET_X_FLOOR),
            'ratio': round(ratio, 3), 'met': ratio <= TARGET_X_FLOOR})
        C.log('  %-12s floor %6.1f ns (%.2f x XDP_PASS)  hit %6.1f ns  '
              'x %.3f floor (rounds %.3f..%.3f; wall x %.3f): %s' % (
                  scen, C.median(floor), C.median(floor)
                  / out['xdp_pass_ns'], out['scenarios'][scen]['net_lb_ns'],
                  ratio, min(ratios), max(ratios), C.median(ratios_w),
                  'MET' if ratio <= TARGET_X_FLOOR else 'MISSED'))
    out['targets']['hit_vs_floor'] = targets
    return targets


def report_ablation(samples, out):
    """Each ablation level against the unchanged build and the floor of
    the same round (medians of per-round figures)."""
    out['ablation'] = {}
    C.log('')
    C.log('hit-path ablation (cumulative; per core, medians of per-round '
          'figures; ns saved = unchanged - level, same round):')
    for scen in ABLATE_SCENARIOS:
        res = {}
        for v in ABLATE:
            net = [round_net(samples, scen, v, i) for i in range(ROUNDS)]
            base = [round_net(samples, scen, 'rst_se', i)
                    for i in range(ROUNDS)]
            r = {'removed': ABLATE_WHAT.get(v, v),
                 'net_lb_ns': round(C.median(net), 2),
                 'saved_ns': round(C.median(
                     [b - n for b, n in zip(base, net)]), 2),
                 'x_unchanged': round(C.median(
                     [n / b for b, n in zip(base, net)]), 3),
                 'x_unchanged_range': [
                     round(min(n / b for b, n in zip(base, net)), 3),
                     round(max(n / b for b, n in zip(base, net)), 3)]}
            floor = ''
            if scen in FLOORS:
                floors = [round_net(samples, scen, 'floor', i)
                          for i in range(ROUNDS)]
                r['x_floor'] = round(C.median(
                    [n / f for f, n in zip(floors, net)]), 3)
                floor = '  x %.3f floor' % r['x_floor']
            res[v] = r
            C.log('  %-17s %-7s %6.1f ns  saved %+6.1f ns  x %.3f unchanged'
                  ' (rounds %.3f..%.3f)%s  (%s)' % (
                      scen, v, r['net_lb_ns'], r['saved_ns'],
                      r['x_unchanged'], *r['x_unchanged_range'], floor,
                      r['removed']))
        out['ablation'][scen] = res


def report_lru(samples):
    common = not samples['flags'] & 2  # BPF_F_NO_COMMON_LRU
    out = {'bench': 'dataplane_bench', 'mode': 'lru_threads',
           'lru_lists': 'common' if common else 'per-CPU',
           'unit': 'ns per new flow per thread (thread CPU time)',
           'rounds': {k: [round(v, 1) for v in samples[k]]
                      for k in samples if k not in ('flags', 'cpus')}}
    for k, v in out['rounds'].items():
        C.log('%s inserting thread(s), %s LRU lists: median %.1f ns per new '
              'flow (rounds %s)' % (k, out['lru_lists'], C.median(v), v))
    return out


def main():
    t0 = time.monotonic()
    sb = C.Sandbox()
    try:
        with sb:
            ns = topology(sb)
            samples = C.run_in_netns(ns, Bench(sb, ns).run)
        out = report_lru(samples) if LRU_THREADS else report(samples)
        out['elapsed_s'] = round(time.monotonic() - t0, 1)
    except Exception as exc:  # noqa: BLE001 - reported as the JSON line
        traceback.print_exc()
        C.log('FAILED: %s' % exc)
        out = {'bench': 'dataplane_bench', 'error': C.error_summary(exc),
               'detail': str(exc)[-4000:]}
        C.log(json.dumps(out))
        return 1
    C.log(json.dumps(out))
    return 0


if __name__ == '__main__':
    C.exit_on_sigterm()
    sys.exit(main())
