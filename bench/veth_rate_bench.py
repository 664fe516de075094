#!/usr/bin/env python3
"""Wire rate through veth: generator -> SE namespace -> sink, in one run.

    [gen ns] g0 ==veth== s0 [se ns] s1 ==veth== k0 [sink ns]
             ^ live-frames            ^ XDP under test   ^ bench_sink
               generator (XDP_TX)       (native mode)      (count + XDP_DROP)

Generator: bench_gen run with BPF_PROG_TEST_RUN + BPF_F_TEST_XDP_LIVE_FRAMES
on g0; it rewrites the headers of every frame (the kernel recycles the pages
without resetting them), varies the TCP source port and returns XDP_TX, which
the kernel turns into a transmit on g0, i.e. a receive on s0.

On s0, in native XDP mode:
  baseline  bench_fwd: rewrite the MACs, redirect to s1 (no encap, no lookup)
  floor     bench_floor_wire4in4 (bench_encap_floor.c): the SE's own parse
            and IPIP encapsulation to one fixed member through its cached
            next hop, redirect to s1 -- the job without any lookup
  se        the real SE program (dsr_se, loaded and pinned by
            Dataplane.open, configured with dp.apply(), attached with
            dp.attach(mode='native')): IPIP-encapsulates to a member whose
            cached next hop is k0 (static neighbour), redirect to s1
            (the generator cycles over 1,024 flows: conn-table hits)
  se_miss   the same, the generator making every frame a new flow
            (conn-table miss: listener lookup, Maglev ring, LRU insert;
            the 262,144-entry conn table fills up in the first sample,
            so mostly insert + evict)
  se_miss_guarded  se_miss with the new-flow flood guard engaged
            (se_config.flood_rate 1: every frame over the rate, steered
            by the ring without an LRU insert)

bench_sink on k0 counts what arrives (and whether it is encapsulated); the
SE's own counters confirm every frame was steered, none dropped, and the
conn-table hits / misses were the ones intended.

Everything downstream of the generator runs inline in its thread (the
softirq raised by the veth transmit runs when the test run re-enables
bottom halves), so one core does gen + SE + sink: SE/baseline compares the
whole per-packet pipeline cost.  Figures:
  delivered_mpps      packets counted at the sink / wall-clock seconds
  per_core_mpps       packets counted at the sink / CPU seconds of the
                      generator thread (which is charged for the inline
                      softirq work: no IRQ time accounting on this kernel);
                      immune to other tasks time-slicing the core
The targets (SE/baseline >= 0.85 with conn-table hits, >= 0.6 with a new
flow per frame) are judged on per_core_mpps; wall ratios and SE/floor are
printed beside them.
"""

import errno
import ipaddress
import json
import os
import socket
import struct
import sys
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

DURATION = float(os.environ.get('DSR_BENCH_DURATION', 1.0))  # s per sample
SAMPLES = int(os.environ.get('DSR_BENCH_SAMPLES', 7))  # alternations
CALL_REPEAT = 200_000          # frames per BPF_PROG_TEST_RUN call
CPU = int(os.environ.get('DSR_BENCH_CPU', -1))  # -1: no pinning
# Flows the generator cycles over (hit case).
FLOWS = int(os.environ.get('DSR_BENCH_FLOWS', 1024))
TARGET_RATIO = 0.85       # SE (conn-table hits) / baseline, per core
TARGET_MISS_RATIO = 0.6   # SE with a new flow per frame / baseline
TARGET_NAME = 'SE/baseline packets/s >= %.2f' % TARGET_RATIO
TARGET_MISS_NAME = ('SE new flow per frame/baseline >= %.2f'
                    % TARGET_MISS_RATIO)

VIP = '198.51.100.10'
LISTENER = VIP + ':80/tcp'
MEMBERS = ['198.19.1.2', '198.19.2.2']
TUN4 = ipaddress.ip_address('198.18.0.2')
CLIENT = '10.1.0.1'
GEN_FRAME = 64
GEN_CFG = struct.Struct('<64sIIHHHH')
SINK_TOTAL, SINK_ENCAP, SINK_PLAIN = 0, 1, 2
FWD_CFG = struct.Struct('<I6s6s')
MODES = ('baseline', 'floor', 'se', 'se_miss', 'se_miss_guarded')
MISS_MODES = ('se_miss', 'se_miss_guarded')
LIMITS = dpmod.Limits(max_listeners=4)


def topology(sb):
    gen, se, sink = sb.ns('gen'), sb.ns('se'), sb.ns('sink')
    for ns in (gen, se, sink):
        # No IPv6 ND/MLD chatter reaching the sink: it counts every frame.
        sb.sysctl(ns, 'net.ipv6.conf.all.disable_ipv6=1',
                  'net.ipv6.conf.default.disable_ipv6=1')
    C.veth('g0', gen, 's0', se)
    C.veth('s1', se, 'k0', sink)
    C.sh('ip', '-n', se, 'addr', 'add', '198.18.0.2/24', 'dev', 's0')
    C.sh('ip', '-n', se, 'addr', 'add', '198.19.0.2/24', 'dev', 's1')
    _, k0_mac = C.link_info(sink, 'k0')
    C.sh('ip', '-n', se, 'neigh', 'add', '198.19.0.1', 'lladdr', k0_mac,
         'nud', 'permanent', 'dev', 's1')
    C.sh('ip', '-n', se, 'route', 'add', '198.19.0.0/16', 'via', '198.19.0.1',
         'dev', 's1')
    sb.sysctl(se, 'net.ipv4.ip_forward=1')
    return gen, se, sink


def gen_frame(dst_mac, src_mac):
    frame = packets.flow_packet(CLIENT, 1024, VIP, 80, 'tcp')
    frame = dst_mac + src_mac + frame[12:]
    return frame.ljust(GEN_FRAME, b'\0')


# ------------------------------------------------------------- in the SE ns
def se_setup(pin_dir):
    dp = dpmod.Dataplane.open(pin_dir, limits=LIMITS, create=True)
    state = model.DesiredState(tunnel_source4=TUN4)
    key = model.ListenerKey.parse(LISTENER)
    spec = model.ListenerSpec(key, encap=structs.Encap.IPIP)
    for m in MEMBERS:
        spec.members[ipaddress.ip_address(m)] = model.Member(
            ipaddress.ip_address(m), 1)
    state.listeners[key] = spec
    dp.apply(state)
    # Every member must have a cached next hop (the fast path measured).
    cached = [structs.Real.from_bytes(v).nh
              for _, v in dp.maps['reals'].items()
              if structs.Real.from_bytes(v).flags & structs.REAL_F_IN_USE]
    dp.close()
    if len(cached) != len(MEMBERS) or not all(cached):
        raise RuntimeError('members without a cached next hop: %s' % cached)
    return len(cached)


def attach(pin_dir, what, fd):
    ifindex = socket.if_nametoindex('s0')
    if what != 'se':
        libbpf.xdp_attach(ifindex, fd, libbpf.XDP_FLAGS_DRV_MODE)
    else:
        dp = dpmod.Dataplane.open(pin_dir, create=False)
        mode = dp.attach('s0', mode='native')
        dp.close()
        if mode != 'native':
            raise RuntimeError('SE attached in %s mode' % mode)
    q = libbpf.xdp_query(ifindex)
    if q.attach_mode != libbpf.XDP_ATTACHED_DRV:
        raise RuntimeError('s0: XDP attach mode %d, not native'
                           % q.attach_mode)
    return q.prog_id


def attach_sink(fd):
    libbpf.xdp_attach(socket.if_nametoindex('k0'), fd,
                      libbpf.XDP_FLAGS_DRV_MODE)


# ------------------------------------------------------------ in the gen ns
def live_frames_refused(gen_fd, frame):
    """None if the kernel runs the generator in live-frames mode (one
    frame, sent to an SE interface that runs nothing yet), else why not.
    Some kernels refuse the mode outright (EPERM for root; seen on
    6.18.44-fc, which ran it in earlier sessions): there is then nothing
    to generate the wire's traffic with."""
    ctx = C.xdp_md(socket.if_nametoindex('g0'), len(frame))
    try:
        libbpf.prog_test_run(gen_fd, frame, repeat=1, ctx_in=ctx,
                             data_size_out=0, ctx_size_out=0,
                             flags=libbpf.BPF_F_TEST_XDP_LIVE_FRAMES)
    except libbpf.BpfError as exc:
        # Only a refusal of the mode; anything else is the bench's fault.
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP):
            raise
        return ('this kernel (%s) refuses BPF_F_TEST_XDP_LIVE_FRAMES: %s'
                % (os.uname().release, exc))
    return None


def generate(gen_fd, frame, duration, max_frames=None):
    """Run the live-frames generator for `duration` s (or max_frames)."""
    cpu = C.pin_cpu(CPU) if CPU >= 0 else None
    ctx = C.xdp_md(socket.if_nametoindex('g0'), len(frame))
    sent = 0
    t_cpu, t_wall = time.thread_time_ns(), time.perf_counter_ns()
    deadline = time.monotonic() + duration
    while True:
        n = CALL_REPEAT if max_frames is None else min(
            CALL_REPEAT, max_frames - sent)
        libbpf.prog_test_run(gen_fd, frame, repeat=n, ctx_in=ctx,
                             data_size_out=0, ctx_size_out=0,
                             flags=libbpf.BPF_F_TEST_XDP_LIVE_FRAMES)
        sent += n
        if max_frames is not None and sent >= max_frames:
            break
        if max_frames is None and time.monotonic() >= deadline:
            break
    return {'sent': sent, 'cpu_ns': time.thread_time_ns() - t_cpu,
            'wall_ns': time.perf_counter_ns() - t_wall, 'cpu': cpu}


class Rig:
    def __init__(self, sb):
        self.sb = sb
        self.gen, self.se, self.sink = topology(sb)
        # The SE first: the real dsr_se of se_xdp.o, loaded and pinned by
        # Dataplane.open and configured by dp.apply() in the SE namespace.
        C.run_in_netns(self.se, se_setup, sb.pin_dir)
        self.dp = dpmod.Dataplane.open(sb.pin_dir, create=False)

        self.lid = C.u32(self.dp._live_listeners()[
            model.ListenerKey.parse(LISTENER)].id)

        obj = F.open_on_se_maps(C.BENCH_OBJ, sb.pin_dir, LIMITS, autoload=(
            'bench_gen', 'bench_fwd', 'bench_sink'))
        obj.load()
        self.obj = obj
        # The encap floor: the SE's parse and IPIP encapsulation to its
        # first member's cached next hop (s1), redirect; no lookup.
        floor = F.open_on_se_maps(F.FLOOR_OBJ, sb.pin_dir, LIMITS,
                                  autoload=('bench_floor_wire4in4',))
        floor.load()
        F.configure(floor, self.dp, MEMBERS[0])
        self.floor_obj = floor
        self.fds = {'gen': obj.find_program('bench_gen').fd,
                    'baseline': obj.find_program('bench_fwd').fd,
                    'floor': floor.find_program('bench_floor_wire4in4').fd}
        self.gen_fd = self.fds['gen']
        self.sink_map = obj.find_map('sink_count').map()
        self.gen_cfg = obj.find_map('gen_cfg').map()
        C.run_in_netns(self.sink, attach_sink,
                       obj.find_program('bench_sink').fd)

        s0_idx, s0_mac = C.link_info(self.se, 's0')
        s1_idx, s1_mac = C.link_info(self.se, 's1')
        _, g0_mac = C.link_info(self.gen, 'g0')
        _, k0_mac = C.link_info(self.sink, 'k0')
        self.frame = gen_frame(C.mac_bytes(s0_mac), C.mac_bytes(g0_mac))
        self.fwd_cfg = obj.find_map('fwd_cfg').map()
        self.fwd_cfg.update(C.u32(0), FWD_CFG.pack(
            s1_idx, C.mac_bytes(k0_mac), C.mac_bytes(s1_mac)))
        self.counter = 0

    def set_gen(self, flows):
        self.gen_cfg.update(C.u32(0), GEN_CFG.pack(
            self.frame, self.counter, flows, 14 + 20, 1024, 14 + 12 + 2, 0))

    def sink_counts(self):
        return [C.percpu_sum(self.sink_map, C.u32(i))
                for i in (SINK_TOTAL, SINK_ENCAP, SINK_PLAIN)]

    def se_stats(self):
        """SE-wide counters + the listener's conn-table hits / misses
        (not dp.stats(): it walks the whole conn table)."""
        st = self.dp.se_counters()
        lm = self.dp.maps['listener_stats']
        st['conn_hits'] = C.percpu_sum(lm, self.lid, 24)
        st['conn_misses'] = C.percpu_sum(lm, self.lid, 32)
        return st

    def run(self, mode, duration=None, frames=None):
        what = 'se' if mode in ('se',) + MISS_MODES else mode
        C.run_in_netns(self.se, attach, self.sb.pin_dir, what,
                       self.fds.get(what))
        self.dp.set_flood_guard_rate(1 if mode == 'se_miss_guarded' else 0)
        self.set_gen(0 if mode in MISS_MODES else FLOWS)
        s0, st0 = self.sink_counts(), self.se_stats()
        g = C.run_in_netns(self.gen, generate, self.gen_fd, self.frame,
                           duration or 0, frames)
        s1, st1 = self.sink_counts(), self.se_stats()
        self.counter = struct.unpack_from('<I', self.gen_cfg.lookup(
            C.u32(0)), GEN_FRAME)[0]
        d = [b - a for a, b in zip(s0, s1)]
        dst = {k: st1[k] - st0[k] for k in st1}
        return g, d, dst

    def verify(self):
        """Small runs first: every frame arrives, in the expected shape.
        The 'se' run also warms the conn table with the FLOWS flows."""
        n = 10_000
        for mode in MODES:
            g, d, dst = self.run(mode, frames=n)
            encap_ok = (d[SINK_ENCAP] == n) if mode != 'baseline' else (
                d[SINK_PLAIN] == n)
            if d[SINK_TOTAL] != n or not encap_ok:
                raise RuntimeError(
                    '%s: sent %d, sink got %d (encapsulated %d, plain %d)'
                    % (mode, n, d[SINK_TOTAL], d[SINK_ENCAP], d[SINK_PLAIN]))
            check_se(mode, dst, sent=n)
            C.log('  %-9s %d frames sent, %d at the sink (%s), OK'
                  % (mode, n, d[SINK_TOTAL], 'plain' if mode == 'baseline'
                     else 'IPIP-encapsulated; SE: %d steered, %d conn-table '
                     'hits, %d misses' % (dst['steered'], dst['conn_hits'],
                                          dst['conn_misses'])))


def check_se(mode, dst, sent=None):
    """Raise unless the SE steered every frame it got (all `sent`, if
    given) on the intended path, dropping none: 'se' conn-table hits (at
    most FLOWS misses: re-learning flows a se_miss run evicted), 'se_miss'
    a conn-table miss for every frame."""
    if mode in ('baseline', 'floor'):
        return
    drops = {k: v for k, v in dst.items() if k.startswith('drop_') and v}
    ok = not drops and dst['steered'] > 0 and (
        sent is None or dst['steered'] == sent) and (
        dst['conn_hits'] + dst['conn_misses'] == dst['steered'])
    if mode == 'se':
        ok = ok and dst['conn_misses'] <= FLOWS
    else:
        ok = ok and dst['conn_hits'] == 0
    if not ok:
        raise RuntimeError(
            '%s: %s frames sent, SE steered %d (conn-table hits %d, misses '
            '%d), drops %s: not the path meant to be measured' % (
                mode, 'unknown' if sent is None else sent, dst['steered'],
                dst['conn_hits'],
                dst['conn_misses'], drops))


def main():
    t0 = time.monotonic()
    sb = C.Sandbox()
    try:
        with sb:
            rig = Rig(sb)
            C.log('namespaces %s-{gen,se,sink}, pins %s; %d-byte frames, '
                  '%d flows (hit) / a new flow per frame (miss)'
                  % (sb.tag, sb.pin_dir, GEN_FRAME, FLOWS))
            refused = C.run_in_netns(rig.gen, live_frames_refused,
                                     rig.gen_fd, rig.frame)
            if refused:
                C.log('NOT MEASURED: %s' % refused)
                out = not_measured(refused)
                out['elapsed_s'] = round(time.monotonic() - t0, 1)
                rig.dp.close()
                C.log(json.dumps(out))
                return 0
            C.log('verifying the paths (LIVE_FRAMES generator -> s0 -> k0):')
            rig.verify()
            results = {m: [] for m in MODES}
            C.log('measuring %d x %.1f s per mode, alternating'
                  % (SAMPLES, DURATION))
            for i in range(SAMPLES):
                for mode in MODES:
                    g, d, dst = rig.run(mode, duration=DURATION)
                    check_se(mode, dst)
                    r = {'sent': g['sent'], 'delivered': d[SINK_TOTAL],
                         'wall_s': g['wall_ns'] / 1e9,
                         'cpu_s': g['cpu_ns'] / 1e9,
                         'conn_misses': dst.get('conn_misses', 0)}
                    r['delivered_mpps'] = r['delivered'] / r['wall_s'] / 1e6
                    r['per_core_mpps'] = r['delivered'] / r['cpu_s'] / 1e6
                    results[mode].append(r)
                    C.log('  %-9s sent %9d delivered %9d in %.2f s wall / '
                          '%.2f s CPU: %.2f Mpps wall, %.2f Mpps per core'
                          % (mode, r['sent'], r['delivered'], r['wall_s'],
                             r['cpu_s'], r['delivered_mpps'],
                             r['per_core_mpps']))
            out = report(results)
            out['elapsed_s'] = round(time.monotonic() - t0, 1)
            rig.dp.close()
    except Exception as exc:  # noqa: BLE001 - reported as the JSON line
        traceback.print_exc()
        C.log('FAILED: %s' % exc)
        out = {'bench': 'veth_rate_bench',
               'error': C.error_summary(exc),
               'detail': str(exc)[-4000:]}
        C.log(json.dumps(out))
        return 1
    C.log(json.dumps(out))
    return 0


def not_measured(reason):
    """The JSON line of a run that could not generate traffic: both
    targets unjudged (null), with the reason."""
    return {'bench': 'veth_rate_bench', 'not_measured': reason,
            'target': {'name': TARGET_NAME, 'met': None},
            'target_new_flows': {'name': TARGET_MISS_NAME, 'met': None},
            'all_targets_met': None}


def report(results):
    med = C.median
    out = {'bench': 'veth_rate_bench', 'frame_bytes': GEN_FRAME,
           'flows_hit_case': FLOWS,
           'method': 'LIVE_FRAMES generator (XDP_TX on g0) -> native XDP on '
                     's0 -> redirect -> k0 XDP count+drop; all inline on the '
                     'generator\'s core; %d alternations of %.1f s per '
                     'mode; ratio = median over alternations of mode / '
                     'baseline measured back to back (the machine\'s load '
                     'drifts between alternations, not within a pair); '
                     'per_core = delivered / generator thread CPU time, '
                     'wall = delivered / wall-clock time; target judged per '
                     'core' % (SAMPLES, DURATION),
           'modes': {}}
    for mode, rs in results.items():
        sent = sum(r['sent'] for r in rs)
        per_core = med([r['per_core_mpps'] for r in rs])
        out['modes'][mode] = {
            'per_core_mpps': round(per_core, 3),
            'delivered_mpps': round(med([r['delivered_mpps'] for r in rs]), 3),
            'ns_per_packet_pipeline': round(1e3 / per_core, 1),
            'frames_sent': sent,
            'frames_lost': sent - sum(r['delivered'] for r in rs),
        }
        if mode != 'baseline':
            out['modes'][mode]['conn_misses'] = sum(
                r['conn_misses'] for r in rs)
    b, f, s, m, _ = (out['modes'][k] for k in MODES)
    ratio = {k: {c: round(med([x[c] / base[c] for x, base in
                               zip(results[k], results['baseline'])]), 3)
                 for c in ('per_core_mpps', 'delivered_mpps')}
             for k in ('floor', 'se') + MISS_MODES}
    out['ratio_se_miss_guarded_vs_baseline_per_core'] = \
        ratio['se_miss_guarded']['per_core_mpps']
    out['ratio_se_miss_guarded_vs_baseline_wall'] = \
        ratio['se_miss_guarded']['delivered_mpps']
    # The SE against the encap floor: both sides of each ratio measured
    # back to back (floor, then se), like the baseline ratios.
    out['ratio_se_vs_floor_per_core'] = round(med([
        x['per_core_mpps'] / fl['per_core_mpps']
        for x, fl in zip(results['se'], results['floor'])]), 3)
    out['ratio_floor_vs_baseline_per_core'] = \
        ratio['floor']['per_core_mpps']
    out['floor_cost_over_baseline_ns'] = round(
        f['ns_per_packet_pipeline'] - b['ns_per_packet_pipeline'], 1)
    out['ratio_se_vs_baseline_per_core'] = ratio['se']['per_core_mpps']
    out['ratio_se_vs_baseline_wall'] = ratio['se']['delivered_mpps']
    out['ratio_se_miss_vs_baseline_per_core'] = \
        ratio['se_miss']['per_core_mpps']
    out['ratio_se_miss_vs_baseline_wall'] = ratio['se_miss']['delivered_mpps']
    out['se_cost_over_baseline_ns'] = round(
        s['ns_per_packet_pipeline'] - b['ns_per_packet_pipeline'], 1)
    out['se_miss_cost_over_baseline_ns'] = round(
        m['ns_per_packet_pipeline'] - b['ns_per_packet_pipeline'], 1)
    r = ratio['se']['per_core_mpps']
    rm = ratio['se_miss']['per_core_mpps']
    out['target'] = {'name': TARGET_NAME,
                     'value': r, 'value_wall': ratio['se']['delivered_mpps'],
                     'met': r >= TARGET_RATIO}
    out['target_new_flows'] = {
        'name': TARGET_MISS_NAME,
        'value': rm, 'value_wall': ratio['se_miss']['delivered_mpps'],
        'met': rm >= TARGET_MISS_RATIO}
    out['all_targets_met'] = (out['target']['met']
                              and out['target_new_flows']['met'])
    C.log('')
    C.log('%-15s %10s %12s %12s %9s %9s' % (
        'mode', 'Mpps/core', 'ns/pkt/core', 'Mpps (wall)', 'lost',
        'conn miss'))
    for mode in MODES:
        x = out['modes'][mode]
        C.log('%-15s %10.3f %12.1f %12.3f %9d %9s' % (
            mode, x['per_core_mpps'], x['ns_per_packet_pipeline'],
            x['delivered_mpps'], x['frames_lost'], x.get('conn_misses', '-')))
    C.log('SE / baseline: %.3f per core (%.3f wall), +%.1f ns/pkt; SE with a '
          'new flow per packet / baseline: %.3f per core (%.3f wall), '
          '+%.1f ns/pkt' % (
              ratio['se']['per_core_mpps'], ratio['se']['delivered_mpps'],
              out['se_cost_over_baseline_ns'],
              ratio['se_miss']['per_core_mpps'],
              ratio['se_miss']['delivered_mpps'],
              out['se_miss_cost_over_baseline_ns']))
    C.log('SE with a new flow per packet, flood guard engaged (no insert) '
          '/ baseline: %.3f per core (%.3f wall)' % (
              ratio['se_miss_guarded']['per_core_mpps'],
              ratio['se_miss_guarded']['delivered_mpps']))
    C.log('encap floor / baseline: %.3f per core, +%.1f ns/pkt; SE / '
          'floor: %.3f per core' % (
              ratio['floor']['per_core_mpps'],
              out['floor_cost_over_baseline_ns'],
              out['ratio_se_vs_floor_per_core']))
    for t in (out['target'], out['target_new_flows']):
        C.log('target %s: %.3f per core -> %s' % (
            t['name'], t['value'], 'MET' if t['met'] else 'MISSED'))
    return out


if __name__ == '__main__':
    C.exit_on_sigterm()
    sys.exit(main())
