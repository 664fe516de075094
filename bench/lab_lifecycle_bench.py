#!/usr/bin/env python3
"""How long a product lab takes to come up and to go away.

Every functional and end-to-end test file pays a lab's start and its
teardown, and most of both is waiting (imports, graceful exits), not
work.  Per run: a Topology (2 SEs, 2 members), a ProductLab started on it
(octavia-api, the driver agent, a controller, 2 SEs with ExaBGP), one TCP
load balancer with a listener created with the real `openstack` CLI, then
ProductLab.close() and the Topology's exit, each timed.  Median of
DSR_BENCH_RUNS (default 2).

    .venv/bin/python bench/lab_lifecycle_bench.py      (root; ~1 minute)

No targets.  Last line: one JSON object (start_s, close_s,
topology_exit_s).
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from _common import finish  # noqa: E402
from _common import log  # noqa: E402

RUNS = int(os.environ.get('DSR_BENCH_RUNS', 2))


def one_run():
    from tools.lab import netns
    from tools.lab import product_lab as pl

    with netns.Topology(n_se=2, n_members=2) as topo:
        lab = pl.ProductLab(topo)
        t0 = time.monotonic()
        try:
            lab.start()
            start_s = time.monotonic() - t0
            lab.openstack('loadbalancer', 'create', '--name', 'lb1',
                          '--vip-subnet-id', pl.VIP_SUBNET, '--vip-address',
                          netns.VIP4, '--wait')
            lab.openstack('loadbalancer', 'listener', 'create', '--name',
                          'l1', '--protocol', 'TCP', '--protocol-port', '80',
                          'lb1', '--wait')
        finally:
            t0 = time.monotonic()
            lab.close()
            close_s = time.monotonic() - t0
        t0 = time.monotonic()      # the with block's exit is what is timed
    return start_s, close_s, time.monotonic() - t0


def main():
    t_start = time.monotonic()
    out = {'bench': 'lab_lifecycle', 'runs': RUNS, 'targets': {}}
    exc = None
    try:
        runs = [one_run() for _ in range(RUNS)]
        for i, key in enumerate(('start_s', 'close_s', 'topology_exit_s')):
            out[key] = round(statistics.median(r[i] for r in runs), 2)
        log(f'product lab: start {out["start_s"]} s, close '
            f'{out["close_s"]} s, namespaces\' exit '
            f'{out["topology_exit_s"]} s (median of {RUNS})')
    except BaseException as e:  # noqa: BLE001 - reported in the JSON line
        exc = e
    return finish(out, t_start, exc)


if __name__ == '__main__':
    sys.exit(main())
