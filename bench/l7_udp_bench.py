#!/usr/bin/env python3
"""Benchmark the L7 SE's UDP listeners: how long one load balancer's
nftables table takes to (re)install -- what a health change costs, since
it re-installs the table (amphora_agent/l7/udp.py: render, ``nft -c -f``,
``nft -f``).

Runs in a private network namespace (``dsru<4 hex>-udp``, removed on
exit, also on failure or SIGTERM).  Sizes: 1 listener x 2 members, 10 x
50, 10 x 500 (IPv4 and IPv6 VIPs, one pool).  Baseline of the same run:
``nft -f`` of an empty table (one nft process and transaction), so the
figures are also given as a ratio to it.  The last line printed is one
JSON object with every figure.
"""

import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from amphora_agent.l7 import udp  # noqa: E402
from tools.lab.still_checker import StillChecker  # noqa: E402

SIZES = ((1, 2), (10, 50), (10, 500))
ROUNDS = 7


def load_balancer(n_listeners, n_members):
    members = [{'id': f'm{i}', 'protocol_port': 5353, 'weight': 1,
                'address': f'198.51.{100 + i // 250}.{i % 250 + 1}'}
               for i in range(n_members)]
    return {'id': 'lb-bench', 'vips': [{'address': '192.0.2.10'},
                                       {'address': '2001:db8::10'}],
            'listeners': [{'id': f'li{j}', 'protocol': 'UDP',
                           'protocol_port': 1000 + j,
                           'default_pool_id': 'p'}
                          for j in range(n_listeners)],
            'pools': [{'id': 'p', 'protocol': 'UDP',
                       'lb_algorithm': 'ROUND_ROBIN', 'members': members}]}


def timed(func, rounds=ROUNDS):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), max(times)


def measure():
    nft = udp.Nft()
    empty = 'table inet dsr_udp_base {\n}\ndelete table inet dsr_udp_base\n'
    base, _ = timed(lambda: nft.install(empty))
    out = {'bench': 'l7_udp',
           'baseline_empty_table_ms': round(base * 1e3, 1)}
    for n_listeners, n_members in SIZES:
        service = udp.UdpService(nft, snat={4: '198.18.1.2'},
                                 checker=StillChecker(), adopt_tables=False)
        doc = load_balancer(n_listeners, n_members)
        median, worst = timed(lambda: service.apply([doc]))
        service.stop()
        key = f'{n_listeners}x{n_members}'
        out[f'apply_{key}_ms'] = round(median * 1e3, 1)
        out[f'apply_{key}_max_ms'] = round(worst * 1e3, 1)
        out[f'apply_{key}_ratio'] = round(median / base, 1)
        print(f'{n_listeners} listener(s) x {n_members} members: apply '
              f'median {median * 1e3:.0f} ms (max {worst * 1e3:.0f} ms), '
              f'{median / base:.1f} x an empty table', flush=True)
    return out


def main():
    if os.environ.get('L7_UDP_BENCH_CHILD'):
        print(json.dumps(measure()))
        return 0

    def on_sigterm(signum, frame):
        raise SystemExit(128 + signum)    # the namespace is still removed
    signal.signal(signal.SIGTERM, on_sigterm)
    ns = f'dsru{secrets.token_hex(2)}-udp'
    subprocess.run(['ip', 'netns', 'add', ns], check=True)
    try:
        proc = subprocess.run(
            ['ip', 'netns', 'exec', ns, sys.executable,
             os.path.abspath(__file__)],
            env=dict(os.environ, L7_UDP_BENCH_CHILD='1'), timeout=600)
        return proc.returncode
    finally:
        subprocess.run(['ip', 'netns', 'del', ns])


if __name__ == '__main__':
    sys.exit(main())
