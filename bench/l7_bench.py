"""Tier 2: requests/s and latency through L4+L7 against HAProxy alone, in
one run, with the same client, servers, HAProxy build and configuration.

    client -- router -- se1   L4 SE: XDP (native), Maglev, IPIP to m1
                   |---- m1    L7 SE: eBPF decap, VIPs on lo, HAProxy
                   |           (dsr-l7, Octavia's templater), SNAT
                   |---- m2, m3  plain HTTP servers on :8080

One load balancer with two VIPs, so one HAProxy and one frontend serve
both paths:

1. HAProxy alone: 192.0.2.20, routed by the router straight to m1;
2. L4+L7: 192.0.2.10, routed to se1, which tunnels each flow to m1.

Both answer from m1 straight to the client.  The servers are HAProxy
answering every request itself (tools/lab/tier2_path.py
start_haproxy_server): the Python test server costs more CPU per request
than the L7 SE and would be what this measures.  The load generator is
ApacheBench (`ab`, Debian apache2-utils): one new TCP connection per
request unless -k (the keep-alive-less load the issue asks for, which
puts the L4 SE's new-flow path and the decap in every request), epoll in
C, and its percentiles (-e) are of the whole request, connect included,
in microseconds.  `wrk` reuses connections and times from the request
write, leaving the connection set-up out.

ROUNDS rounds, each running ab on both paths (order alternating); the
figures are medians over the rounds and the ratios medians of the
per-round ratios (the machine is shared; a same-run baseline).  Each
path is checked to be the one it claims: the L4 SE sees the tier-2 VIP's
requests and none of the direct VIP's, and no reply of either passes
through it.

    .venv/bin/python bench/l7_bench.py          (root; about 1-2 minutes)

DSR_BENCH_L7_ROUNDS (5), DSR_BENCH_L7_REQUESTS (4000 per path and round),
DSR_BENCH_L7_CONCURRENCY (16).  Last line: one JSON object.
"""

import os
import re
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from _common import exit_on_sigterm  # noqa: E402
from _common import finish  # noqa: E402
from _common import log  # noqa: E402
from tools.lab import l7_docs as d  # noqa: E402
from tools.lab import netns  # noqa: E402
from tools.lab import tier2_path  # noqa: E402

ROUNDS = int(os.environ.get('DSR_BENCH_L7_ROUNDS', 5))
REQUESTS = int(os.environ.get('DSR_BENCH_L7_REQUESTS', 4000))
CONCURRENCY = int(os.environ.get('DSR_BENCH_L7_CONCURRENCY', 16))
VIP_TIER2 = '192.0.2.10'
VIP_DIRECT = '192.0.2.20'
L7SE, SERVERS, SERVER_PORT = 'm1', ('m2', 'm3'), 8080
PATHS = ('direct', 'tier2')


def ab(topo, vip, requests, concurrency):
    """ApacheBench from the client, no keep-alive; {rps, p50_ms, p99_ms,
    complete, failed, non_2xx}."""
    with tempfile.NamedTemporaryFile('r', suffix='.csv') as csv:
        out = topo.run('client', [
            'ab', '-q', '-r', '-s', '10', '-n', str(requests), '-c',
            str(concurrency), '-e', csv.name, f'http://{vip}/'],
            timeout=300).stdout
        percent = dict(line.split(',') for line in csv.read().splitlines()
                       if line and line[0].isdigit())

    def field(name, default=None):
        m = re.search(rf'^{name}:\s+([\d.]+)', out, re.M)
        if m is None and default is None:
            raise RuntimeError(f'ab printed no "{name}":\n{out}')
        return float(m.group(1)) if m else default
    return {'rps': field('Requests per second'),
            'p50_ms': float(percent['50']), 'p99_ms': float(percent['99']),
            'complete': int(field('Complete requests')),
            'failed': int(field('Failed requests')),
            'non_2xx': int(field('Non-2xx responses', 0))}


def document(topo):
    """One load balancer, both VIPs, one HTTP listener, one pool."""
    members = [d.member(s, topo.host(s).ipv4, SERVER_PORT)
               for s in SERVERS]
    return d.document(d.load_balancer(
        [d.listener('li-http', 'p-web', port=80)],
        [d.pool('p-web', members)], vips=(VIP_TIER2, VIP_DIRECT)))


def main():
    exit_on_sigterm()
    if os.geteuid() != 0:
        print('{"bench": "l7", "error": "needs root"}')
        return 1

    out = {'bench': 'l7', 'rounds': ROUNDS, 'requests': REQUESTS,
           'concurrency': CONCURRENCY, 'loadgen': 'ab (no keep-alive)',
           'targets': {'no_failed_requests': None,
                       'tier2_via_l4_se_direct_not': None,
                       'no_reply_through_l4_se': None},
           'loadavg_at_start': os.getloadavg()[0]}
    t_start = time.monotonic()
    netns.sweep_stale()
    try:
        with netns.Topology(n_se=1, n_members=3) as topo:
            path = tier2_path.Tier2Path(topo, [L7SE])
            try:
                run(topo, path, out)
            finally:
                path.close()
    except BaseException as exc:  # noqa: BLE001 -- reported in the JSON
        return finish(out, t_start, exc)
    out['loadavg_at_end'] = os.getloadavg()[0]
    return finish(out, t_start)


def run(topo, path, out):
    for name in SERVERS:
        tier2_path.start_haproxy_server(topo, name, SERVER_PORT)
    path.start_l4(VIP_TIER2, ports=[80])
    result = path.apply_l7(document(topo))[L7SE]
    if result['load_balancers']['lb1']['status'] != 'ACTIVE':
        raise RuntimeError(f'dsr-l7 apply: {result}')
    topo.route_vip(VIP_DIRECT, via=L7SE)
    # Thousands of short connections per second from one address.
    topo.sysctls('client', {'net.ipv4.ip_local_port_range': '1024 65000',
                            'net.ipv4.tcp_tw_reuse': 1})
    vips = {'direct': VIP_DIRECT, 'tier2': VIP_TIER2}
    for name, vip in vips.items():
        body = topo.http_get(vip)
        if not re.search(r'member=m[23]', body):
            raise RuntimeError(f'{name} path answered {body!r}')
        ab(topo, vip, min(REQUESTS, 500), CONCURRENCY)  # warm-up
    direct_at_l4 = topo.nft_counter('se1', daddr=VIP_DIRECT)
    steered_before = path.l4_packets()
    replies_at_l4 = [topo.nft_counter('se1', saddr=vip)
                     for vip in vips.values()]
    log(f'{ROUNDS} rounds x {REQUESTS} requests per path, ab -c '
        f'{CONCURRENCY}, no keep-alive')
    rounds = []
    for i in range(ROUNDS):
        order = PATHS if i % 2 == 0 else PATHS[::-1]
        r = {p: ab(topo, vips[p], REQUESTS, CONCURRENCY) for p in order}
        rounds.append(r)
        log(f'   round {i + 1}: ' + '; '.join(
            f'{p} {r[p]["rps"]:.0f} req/s p50 {r[p]["p50_ms"]:.2f} ms p99 '
            f'{r[p]["p99_ms"]:.2f} ms' for p in PATHS))
    out['round_results'] = rounds
    for p in PATHS:
        out[p] = {k: statistics.median(r[p][k] for r in rounds)
                  for k in ('rps', 'p50_ms', 'p99_ms')}
    out['ratio_tier2_vs_direct'] = {
        k: round(statistics.median(r['tier2'][k] / r['direct'][k]
                                   for r in rounds), 3)
        for k in ('rps', 'p50_ms', 'p99_ms')}
    bad = sum(r[p]['failed'] + r[p]['non_2xx'] + REQUESTS - r[p]['complete']
              for r in rounds for p in PATHS)
    out['failed_or_non_2xx'] = bad
    out['l4_se_packets_steered'] = path.l4_packets() - steered_before
    out['l4_se_packets_to_direct_vip'] = direct_at_l4.packets()
    out['l4_se_reply_packets'] = sum(c.packets() for c in replies_at_l4)
    out['targets']['no_failed_requests'] = bad == 0
    out['targets']['tier2_via_l4_se_direct_not'] = (
        # SYN, request, ACK, FIN at least: four per request.
        out['l4_se_packets_steered'] >= 4 * ROUNDS * REQUESTS and
        out['l4_se_packets_to_direct_vip'] == 0)
    out['targets']['no_reply_through_l4_se'] = \
        out['l4_se_reply_packets'] == 0
    ratio = out['ratio_tier2_vs_direct']
    log(f'HAProxy alone: {out["direct"]["rps"]:.0f} req/s, p50 '
        f'{out["direct"]["p50_ms"]:.2f} ms, p99 '
        f'{out["direct"]["p99_ms"]:.2f} ms')
    log(f'L4 + L7:       {out["tier2"]["rps"]:.0f} req/s, p50 '
        f'{out["tier2"]["p50_ms"]:.2f} ms, p99 '
        f'{out["tier2"]["p99_ms"]:.2f} ms')
    log(f'ratio L4+L7 / HAProxy alone: req/s {ratio["rps"]}, p50 '
        f'{ratio["p50_ms"]}, p99 {ratio["p99_ms"]}; failed {bad}; '
        f'L4 SE: {out["l4_se_packets_steered"]} packets steered, '
        f'{out["l4_se_packets_to_direct_vip"]} packets to the direct VIP, '
        f'{out["l4_se_reply_packets"]} replies')


if __name__ == '__main__':
    sys.exit(main())
