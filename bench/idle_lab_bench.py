#!/usr/bin/env python3
"""What an idle product lab costs the host, process by process.

A ProductLab (octavia-api, the driver agent, the status relay, one
controller, 2 SEs with ExaBGP, 2 members) with one TCP load balancer, its
listener, a SOURCE_IP_PORT pool, a TCP health monitor (1 s) and both
members, created with the real `openstack` CLI and waited for ACTIVE;
then nothing happens for DSR_BENCH_IDLE_S (default 30) seconds, and each
process's CPU over that time (utime + stime from /proc/<pid>/stat) is
reported as a share of one core.  Every lab of every test stage pays this
while it is up, and so does a production controller with nothing to do.

    .venv/bin/python bench/idle_lab_bench.py        (root; ~1 minute)

DSR_BENCH_PACE=tempest runs the lab at the tempest labs' reporting pace
(tools/tempest/gate.py: TEMPEST_AGENT_TIMERS, TEMPEST_STATS_INTERVAL)
instead of the labs' own (reports every second).

No targets.  Last line: one JSON object (processes: [command, share of
a core], busiest first).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from _common import finish  # noqa: E402
from _common import log  # noqa: E402
from tools import proc_cpu  # noqa: E402

IDLE_S = float(os.environ.get('DSR_BENCH_IDLE_S', 30))
PACE = os.environ.get('DSR_BENCH_PACE', 'lab')


def _lab_options():
    """ProductLab keyword arguments of the chosen pace."""
    if PACE == 'lab':
        return {}
    if PACE != 'tempest':
        raise SystemExit(f'DSR_BENCH_PACE={PACE!r}: lab or tempest')
    from tools.tempest import gate
    return {'agent_config': {'agent': gate.TEMPEST_AGENT_TIMERS},
            'controller_config': {
                'stats_interval': gate.TEMPEST_STATS_INTERVAL}}


def main():
    from tools.lab import netns
    from tools.lab import product_lab as pl

    t_start = time.monotonic()
    out = {'bench': 'idle_lab', 'idle_s': IDLE_S, 'pace': PACE,
           'targets': {}}
    options = _lab_options()
    exc = None
    try:
        with netns.Topology(n_se=2, n_members=2) as topo:
            lab = pl.ProductLab(topo, **options)
            try:
                lab.start()
                for args in (
                        ('create', '--name', 'lb1', '--vip-subnet-id',
                         pl.VIP_SUBNET, '--vip-address', netns.VIP4),
                        ('listener', 'create', '--name', 'l1', '--protocol',
                         'TCP', '--protocol-port', '80', 'lb1'),
                        ('pool', 'create', '--name', 'p1', '--listener',
                         'l1', '--protocol', 'TCP', '--lb-algorithm',
                         'SOURCE_IP_PORT'),
                        ('healthmonitor', 'create', '--name', 'hm1',
                         '--delay', '1', '--timeout', '1', '--max-retries',
                         '1', '--type', 'TCP', 'p1'),
                        *(('member', 'create', '--name', m.name,
                           '--address', m.ipv4, '--protocol-port', '80',
                           '--subnet-id', pl.MEMBER_SUBNET, 'p1')
                          for m in topo.members)):
                    lab.openstack('loadbalancer', *args, '--wait')
                before = proc_cpu.cpu_by_pid()
                t0 = time.monotonic()
                time.sleep(IDLE_S)      # the measured interval itself
                after = proc_cpu.cpu_by_pid()
                elapsed = time.monotonic() - t0
            finally:
                lab.close()
        shares = sorted(
            ((after[p][1] - before[p][1]) / elapsed, after[p][0])
            for p in after if p in before and after[p][1] > before[p][1])
        for share, cmd in shares[-12:]:
            log(f'{share * 100:6.1f} %  {cmd}')
        out['processes'] = [[cmd, round(share, 4)]
                            for share, cmd in reversed(shares[-12:])]
        out['total_cores'] = round(sum(share for share, _ in shares), 3)
        log(f'all processes: {out["total_cores"] * 100:.1f} % of a core')
    except BaseException as e:  # noqa: BLE001 - reported in the JSON line
        exc = e
    return finish(out, t_start, exc)


if __name__ == '__main__':
    sys.exit(main())
