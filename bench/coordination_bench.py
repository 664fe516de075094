#!/usr/bin/env python3
"""What a tooz call and a coordinator's stop cost, by executor.

The controller's leader asks Redis for each SE group's members every
round, and every agent and controller stops a coordinator when it exits.
tooz's default executor ('threaded') hands each call to a worker thread
and back, and its stop() waits for that worker's idle poll (futurist, up
to 1 s); dsr_wire.membership.coordinator() asks for 'synchronous' (the
call runs in the caller's thread).  Per executor, alternating, on the
local Redis (its own key namespace): CPU and wall time of get_members in
a group of one member, and the time of leave_group + stop.

    .venv/bin/python bench/coordination_bench.py      (~10 s; Redis on
                                                        127.0.0.1:6379)

Ratio: synchronous ÷ threaded, per measure, median of DSR_BENCH_ROUNDS
(default 3).  No targets.  Last line: one JSON object.
"""

import os
import statistics
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from _common import finish  # noqa: E402
from _common import log  # noqa: E402

ROUNDS = int(os.environ.get('DSR_BENCH_ROUNDS', 3))
CALLS = int(os.environ.get('DSR_BENCH_CALLS', 2000))
REDIS = os.environ.get('DSR_BENCH_REDIS', 'redis://127.0.0.1:6379')


def one(executor):
    from tooz import coordination
    url = (f'{REDIS}?namespace=dsr-bench-{uuid.uuid4().hex[:8]}'
           f'&executor={executor}')
    coord = coordination.get_coordinator(url, b'bench-member')
    coord.start(start_heart=True)
    group = b'bench-group'
    coord.create_group(group).get()
    coord.join_group(group).get()
    wall, cpu = time.monotonic(), time.process_time()
    for _ in range(CALLS):
        coord.get_members(group).get()
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    t0 = time.monotonic()
    coord.leave_group(group).get()
    coord.delete_group(group).get()
    coord.stop()
    return cpu / CALLS * 1e6, wall / CALLS * 1e6, time.monotonic() - t0


def main():
    t_start = time.monotonic()
    out = {'bench': 'coordination', 'rounds': ROUNDS, 'calls': CALLS,
           'targets': {}}
    exc = None
    try:
        runs = {'threaded': [], 'synchronous': []}
        for _ in range(ROUNDS):
            for executor in runs:
                runs[executor].append(one(executor))
        for executor, rows in runs.items():
            out[executor] = {
                key: round(statistics.median(r[i] for r in rows), 3)
                for i, key in enumerate(('get_members_cpu_us',
                                         'get_members_wall_us', 'stop_s'))}
            log(f'{executor:12s} get_members '
                f'{out[executor]["get_members_cpu_us"]:.0f} us CPU, '
                f'{out[executor]["get_members_wall_us"]:.0f} us wall; '
                f'leave + stop {out[executor]["stop_s"]:.3f} s')
        out['sync_vs_threaded_cpu'] = round(
            out['synchronous']['get_members_cpu_us']
            / out['threaded']['get_members_cpu_us'], 3)
    except BaseException as e:  # noqa: BLE001 - reported in the JSON line
        exc = e
    return finish(out, t_start, exc)


if __name__ == '__main__':
    sys.exit(main())
