#!/usr/bin/env python3
"""What a lab's Octavia costs the host: forked from the zygote against
started as commands, in the same run.

Every product lab starts octavia-api and octavia-driver-agent; each
imports Octavia for ~3 CPU-seconds, and every status the controller sends
is handled by a child the driver agent forks.  Per mode, alternating
(DSR_LAB_OCTAVIA_ZYGOTE=0: both as commands, the baseline; 1: both forked
from tools/lab/localstack/octavia_zygote.py, started once before the
timing, as a test process does for its first lab): an OctaviaStack (noop
provider) started until the API answers a database-backed request and the
driver agent a `get`, then UPDATES load balancer status updates through
the driver agent's status socket, then stop.  Host CPU-seconds (all
processes, /proc/stat: run it on a quiet host) of the start and of the
updates, and the start's wall time; medians of DSR_BENCH_RUNS (default 3)
per mode.

    .venv/bin/python bench/octavia_stack_bench.py      (~1-2 minutes)

No targets.  Last line: one JSON object (per mode: start_cpu_s,
start_wall_s, update_cpu_ms; the zygote's one start; ratios zygote /
commands).
"""

import os
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from _common import finish  # noqa: E402
from _common import log  # noqa: E402

RUNS = int(os.environ.get('DSR_BENCH_RUNS', 3))
UPDATES = int(os.environ.get('DSR_BENCH_UPDATES', 20))
TICK = os.sysconf('SC_CLK_TCK')
NOOP = {'noop_driver': 'The No-Op driver.'}


def host_cpu():
    """CPU-seconds the host has spent busy (every process, every core)."""
    with open('/proc/stat') as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICK


def one_run(workdir, zygote):
    from tools.lab.localstack.octavia import OctaviaStack
    os.environ['DSR_LAB_OCTAVIA_ZYGOTE'] = '1' if zygote else '0'
    stack = OctaviaStack(workdir, provider_drivers=NOOP,
                         default_provider='noop_driver')
    c0, t0 = host_cpu(), time.monotonic()
    try:
        stack.start()
        start_wall, start_cpu = time.monotonic() - t0, host_cpu() - c0
        lib = stack.driver_library()
        c0 = host_cpu()
        for _ in range(UPDATES):
            lib.update_loadbalancer_status({'loadbalancers': [
                {'id': str(uuid.uuid4()), 'provisioning_status': 'ACTIVE'}]})
        update_cpu_ms = 1000 * (host_cpu() - c0) / UPDATES
    finally:
        stack.stop()
    return start_cpu, start_wall, update_cpu_ms


def main():
    t_start = time.monotonic()
    out = {'bench': 'octavia_stack', 'runs': RUNS, 'updates': UPDATES,
           'targets': {}}
    exc = None
    try:
        from tools.lab.localstack import octavia_zygote
        c0, t0 = host_cpu(), time.monotonic()
        octavia_zygote.shared(sys.executable)
        out['zygote_start'] = {'cpu_s': round(host_cpu() - c0, 2),
                               'wall_s': round(time.monotonic() - t0, 2)}
        results = {'commands': [], 'zygote': []}
        with tempfile.TemporaryDirectory(prefix='dsr-bench-') as tmp:
            for i in range(RUNS):
                for mode in ('commands', 'zygote'):
                    results[mode].append(one_run(
                        os.path.join(tmp, f'{mode}{i}'), mode == 'zygote'))
        for mode, runs in results.items():
            out[mode] = {key: round(statistics.median(r[i] for r in runs), 2)
                         for i, key in enumerate(('start_cpu_s',
                                                  'start_wall_s',
                                                  'update_cpu_ms'))}
        out['ratios'] = {key: round(out['zygote'][key]
                                    / out['commands'][key], 2)
                         for key in out['zygote']}
        log(f'Octavia of a lab, commands -> zygote: start '
            f'{out["commands"]["start_cpu_s"]} -> '
            f'{out["zygote"]["start_cpu_s"]} CPU-s, '
            f'{out["commands"]["start_wall_s"]} -> '
            f'{out["zygote"]["start_wall_s"]} s; a status update '
            f'{out["commands"]["update_cpu_ms"]} -> '
            f'{out["zygote"]["update_cpu_ms"]} CPU-ms; the zygote once '
            f'{out["zygote_start"]["cpu_s"]} CPU-s')
    except BaseException as e:  # noqa: BLE001 - reported in the JSON line
        exc = e
    return finish(out, t_start, exc)


if __name__ == '__main__':
    sys.exit(main())
