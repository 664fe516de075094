#!/usr/bin/env python3
"""Member decapsulation (the tc program dsr-member attaches where the
kernel has no tunnel drivers): what a tunnel packet costs, what the SE
source check adds, and what every other packet on the uplink pays.

Command: `make build && .venv/bin/python bench/decap_bench.py`
(DSR_BENCH_ROUNDS, DSR_BENCH_REPEAT, DSR_BENCH_CPU as dataplane_bench).

BPF_PROG_TEST_RUN with `repeat` on one skb; the real `decap_skb()`
(bpf/member_decap.h, what member_tc.c attaches) on a pinned Decap's maps.
A tunnel packet is timed through `bench_decap` (restore the template,
then decap_skb) against `bench_decap_floor` (the same restore, then strip
a fixed outer length with the same helper: the job with no parse, lookup
or counter), in one round right after each other, for 4in4, 6in6 and GRE
(IPv4 and IPv6 outer): decap - floor is what the member's checks cost, and
it is measured with the tunnel address open to any source and restricted
to the SE sources (the `decap_sources` lookup).  Frames the program does
not change are timed on dsr_decap itself against an empty tc program: a
plain TCP packet to the member (every other packet on the uplink) and a
tunnel packet from a source that is not an SE (dropped, `drop_source`).

Every path is verified before timing (verdict, the output frame, the
counters), and the counters are checked after each timed run.  ns are the
calling thread's CPU time / runs ("per core"); differences and ratios are
medians of the per-round ones.  Both tunnel wrappers pay the restore (a
grow and a 64-byte store, most of the floor's figure), so differences of
their figures are the result, not their ratio.  Results:
docs/benchmarks.md, "Member decapsulation".
"""

import os
import secrets
import sys
import time

import _common as C

from scapy.layers.inet import IP  # noqa: E402
from scapy.layers.inet import TCP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402

from amphora_agent.dataplane import decap  # noqa: E402
from amphora_agent.dataplane import libbpf  # noqa: E402
from amphora_agent.dataplane import pins  # noqa: E402

REPEAT = int(os.environ.get('DSR_BENCH_REPEAT', 500_000))
ROUNDS = int(os.environ.get('DSR_BENCH_ROUNDS', 7))
CPU = int(os.environ.get('DSR_BENCH_CPU', -1))
# DSR_BENCH_DECAP_OBJ: another build of the wrappers (a change judged
# against the previous build, run after run).
OBJ = os.environ.get('DSR_BENCH_DECAP_OBJ',
                     os.path.join(C.OBJ_DIR, 'bench_decap_tc.o'))
TC_ACT_OK, TC_ACT_SHOT = 0, 2
RST_HDR = 64

TUN4, TUN6 = '198.19.1.2', '2001:db8:101::2'
SE4, SE6 = '198.18.0.2', '2001:db8:ff::2'
OTHER4 = '198.18.0.99'
VIP4, VIP6 = '198.51.100.10', '2001:db8:100::10'
CLIENT4, CLIENT6 = '203.0.113.7', '2001:db8:c::7'
MAC = dict(src='02:00:00:00:00:01', dst='02:00:00:00:00:02')
# kind: (outer family, protocol, inner family, counter)
KINDS = {'4in4': (4, 4, 4, 'ipip'), '6in6': (6, 41, 6, 'ip6ip'),
         'gre4': (4, 47, 4, 'gre'), 'gre6': (6, 47, 6, 'gre')}
GRE = {4: b'\0\0\x08\x00', 6: b'\0\0\x86\xdd'}


def inner(family):
    payload = Raw(b'x' * 100)
    if family == 4:
        return bytes(IP(src=CLIENT4, dst=VIP4) / TCP(sport=40001, dport=80)
                     / payload)
    return bytes(IPv6(src=CLIENT6, dst=VIP6) / TCP(sport=40001, dport=80)
                 / payload)


def tunnel_frame(kind, source=None):
    """(frame, expected output frame, outer length) of a tunnel packet."""
    outer_family, proto, inner_family, _ = KINDS[kind]
    body = inner(inner_family)
    payload = (GRE[inner_family] if proto == 47 else b'') + body
    if outer_family == 4:
        outer = IP(src=source or SE4, dst=TUN4, proto=proto)
        eth = Ether(type=0x0800, **MAC)
    else:
        outer = IPv6(src=source or SE6, dst=TUN6, nh=proto)
        eth = Ether(type=0x86DD, **MAC)
    frame = bytes(eth / outer / Raw(payload))
    expected = bytes(Ether(type=0x0800 if inner_family == 4 else 0x86DD,
                           **MAC)) + body
    return frame, expected, len(frame) - 14 - len(body)


def plain_frame():
    return bytes(Ether(type=0x0800, **MAC)
                 / IP(src=CLIENT4, dst=TUN4) / TCP(sport=40002, dport=22)
                 / Raw(b'x' * 100))


class Bench:
    def __init__(self, pin_dir):
        self.pin_dir = pin_dir

    def load(self):
        self.member = decap.Decap.open(self.pin_dir)
        self.member.set_addresses([TUN4, TUN6], restricted=False)
        obj = libbpf.BpfObject.open(OBJ)
        for name in decap.MAP_NAMES:
            obj.find_map(name).set_pin_path(
                os.path.join(self.pin_dir, name))
        obj.load()
        for name in decap.MAP_NAMES:
            if not obj.find_map(name).is_pinned:
                raise RuntimeError(f'bench map {name} does not reuse the '
                                   'pinned Decap map')
        self.obj = obj
        self.rst = obj.find_map('decap_rst').map()
        self.progs = {n: obj.find_program(n).fd for n in (
            'bench_decap', 'bench_decap_floor', 'bench_tc_pass')}
        self.real = pins.open_program(self.pin_dir, decap.PROGRAM)
        self.progs['dsr_decap'] = self.real.fd

    def close(self):
        self.real.close()
        self.obj.close()
        self.member.close()

    def template(self, kind):
        frame, expected, outer_len = tunnel_frame(kind)
        inner_v6 = KINDS[kind][2] == 6
        head = frame[:RST_HDR].ljust(RST_HDR, b'\0')
        self.rst.update(C.u32(0), C.u32(len(frame)) + C.u32(outer_len)
                        + C.u32(int(inner_v6)) + head)
        return frame, expected

    def run(self, prog, frame, repeat):
        t0 = time.thread_time_ns()
        res = libbpf.prog_test_run(self.progs[prog], frame, repeat=repeat)
        return res, time.thread_time_ns() - t0

    def counted(self, prog, frame, repeat, verdict, counter):
        """Run; check the verdict and that `counter` moved by `repeat`
        (None: that no counter moved).  -> thread CPU ns per run."""
        before = self.member.stats()
        res, ns = self.run(prog, frame, repeat)
        after = self.member.stats()
        moved = {k: after[k] - before[k] for k in after
                 if after[k] != before[k]}
        want = {counter: repeat} if counter else {}
        if res.retval != verdict or moved != want:
            raise RuntimeError(f'{prog}: verdict {res.retval} (want '
                               f'{verdict}), counters {moved} (want {want})')
        return res, ns / repeat

    def verify(self):
        for kind, (_, _, _, counter) in KINDS.items():
            frame, expected = self.template(kind)
            for prog in ('bench_decap', 'bench_decap_floor'):
                for repeat in (1, 3):
                    res, _ = self.counted(
                        prog, frame, repeat, TC_ACT_OK,
                        counter if prog == 'bench_decap' else None)
                    if res.data_out != expected:
                        raise RuntimeError(f'{prog} {kind} x{repeat}: the '
                                           'output is not the inner packet')
        res, _ = self.counted('dsr_decap', plain_frame(), 3, TC_ACT_OK, None)
        if res.data_out != plain_frame():
            raise RuntimeError('a plain packet was changed')

    def restricted(self, on):
        if on:
            self.member.set_sources([SE4, SE6])
        else:
            self.member.set_sources([])

    def measure(self):
        samples = []
        refused, _, _ = tunnel_frame('4in4', source=OTHER4)
        for _ in range(ROUNDS):
            row = {}
            for kind, (_, _, _, counter) in KINDS.items():
                frame, _ = self.template(kind)
                row[f'{kind}/floor'] = self.counted(
                    'bench_decap_floor', frame, REPEAT, TC_ACT_OK, None)[1]
                self.restricted(False)
                row[f'{kind}/open'] = self.counted(
                    'bench_decap', frame, REPEAT, TC_ACT_OK, counter)[1]
                self.restricted(True)
                row[f'{kind}/restricted'] = self.counted(
                    'bench_decap', frame, REPEAT, TC_ACT_OK, counter)[1]
            row['pass'] = self.counted('bench_tc_pass', plain_frame(),
                                       REPEAT, TC_ACT_OK, None)[1]
            row['plain'] = self.counted('dsr_decap', plain_frame(), REPEAT,
                                        TC_ACT_OK, None)[1]
            row['refused'] = self.counted('dsr_decap', refused, REPEAT,
                                          TC_ACT_SHOT, 'drop_source')[1]
            self.restricted(False)
            samples.append(row)
        return samples


def report(samples):
    def med(key):
        return round(C.median([s[key] for s in samples]), 1)

    def ratio(a, b):
        return round(C.median([s[a] / s[b] for s in samples]), 2)

    def diff(a, b):
        return round(C.median([s[a] - s[b] for s in samples]), 1)

    out = {'bench': 'decap_bench', 'rounds': ROUNDS, 'repeat': REPEAT,
           'ns_per_packet': {k: med(k) for k in samples[0]},
           'checks_ns': {}, 'source_check_ns': {},
           'plain_vs_pass': ratio('plain', 'pass'),
           'plain_extra_ns': diff('plain', 'pass'),
           'refused_vs_pass': ratio('refused', 'pass'),
           'targets': {}}
    for kind in KINDS:
        out['checks_ns'][kind] = diff(f'{kind}/open', f'{kind}/floor')
        out['source_check_ns'][kind] = diff(f'{kind}/restricted',
                                            f'{kind}/open')
    for key in sorted(out['ns_per_packet']):
        C.log(f'{key:18s} {out["ns_per_packet"][key]:8.1f} ns')
    C.log('checks over the floor (open), ns: ' + ', '.join(
        f'{k} {v}' for k, v in out['checks_ns'].items()))
    C.log('the SE source check, ns: ' + ', '.join(
        f'{k} {v}' for k, v in out['source_check_ns'].items()))
    C.log(f'a plain packet: {out["plain_vs_pass"]} x an empty tc program '
          f'(+{out["plain_extra_ns"]} ns)')
    return out


def main():
    t0 = time.monotonic()
    pin_dir = f'/sys/fs/bpf/octavia-dsr-bench-decap-{secrets.token_hex(2)}'
    out = {'bench': 'decap_bench', 'targets': {}}
    bench = Bench(pin_dir)
    try:
        cpu = C.pin_cpu(CPU) if CPU >= 0 else 'any (not pinned)'
        C.log(f'pins {pin_dir}, CPU {cpu}, repeat {REPEAT} x {ROUNDS} '
              'rounds')
        bench.load()
        try:
            bench.verify()
            out = report(bench.measure())
            out['pin_dir'] = pin_dir
        finally:
            bench.close()
    except Exception as exc:  # noqa: BLE001 - reported as the JSON line
        return C.finish(out, t0, exc)
    finally:
        decap.remove_pins(pin_dir)
    return C.finish(out, t0)


if __name__ == '__main__':
    C.exit_on_sigterm()
    sys.exit(main())
