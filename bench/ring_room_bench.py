#!/usr/bin/env python3
"""Rings moved to make room (rings.RingSpace.make_room), at issue 15's
size: 10,000 listeners of 16 members (16001-slot rings) fill a rings map
whose every 7th ring was removed (1,429 free runs of one ring, none of
two), and one pool grows past 16 members: its 32003-slot ring fits in no
free run, so the apply must move rings out of one window.

Measured (median of --rounds): planning the moves (make_room), against
the same run's baseline of building the allocator from the live extents
(RingSpace(total, used), what every apply after a restart does), and the
slots moved.  And the grace period the dataplane waits after each moved
ring's switch (grace.wait: membarrier(MEMBARRIER_CMD_GLOBAL)), median of
--rounds.  No root, no BPF: the copy of each moved ring (64 KB) comes on
top in the dataplane.

    .venv/bin/python bench/ring_room_bench.py

Last line: one JSON object.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from _common import finish  # noqa: E402
from _common import log  # noqa: E402
from amphora_agent.dataplane import grace  # noqa: E402
from amphora_agent.dataplane import rings  # noqa: E402


def layout(listeners, size, every):
    used = [(i * size, size) for i in range(listeners) if i % every]
    return listeners * size, used


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--listeners', type=int, default=10000)
    ap.add_argument('--rounds', type=int, default=5)
    args = ap.parse_args()
    t_start = time.monotonic()
    out = {'bench': 'ring_room', 'listeners': args.listeners,
           'targets': {}}
    try:
        total, used = layout(args.listeners, 16001, 7)
        movable = dict(enumerate(used))
        builds, plans, moved = [], [], None
        for _ in range(args.rounds):
            t = time.perf_counter()
            space = rings.RingSpace(total, used)
            builds.append(time.perf_counter() - t)
            t = time.perf_counter()
            moves = space.make_room(32003, movable)
            plans.append(time.perf_counter() - t)
            space.allocate(32003)
            moved = sum(movable[key][1] for key, _, _ in moves)
        waits = []
        if grace.available():
            for _ in range(args.rounds):
                t = time.perf_counter()
                grace.wait()
                waits.append(time.perf_counter() - t)
        out.update(
            free_runs=len(rings.RingSpace(total, used).gaps()),
            build_ms=round(statistics.median(builds) * 1000, 1),
            plan_ms=round(statistics.median(plans) * 1000, 1),
            plan_per_build=round(statistics.median(plans)
                                 / statistics.median(builds), 2),
            rings_moved=len(moves), slots_moved=moved,
            grace_ms=round(statistics.median(waits) * 1000, 1)
            if waits else None)
        log(f"{args.listeners} rings, {out['free_runs']} free runs: "
            f"allocator built in {out['build_ms']} ms; room for a 32003-slot"
            f" ring planned in {out['plan_ms']} ms "
            f"({out['plan_per_build']} x the build), "
            f"{len(moves)} rings ({moved} slots) moved; a grace period "
            f"{out['grace_ms']} ms")
    except BaseException as exc:  # noqa: BLE001 -- recorded in the JSON
        return finish(out, t_start, exc)
    return finish(out, t_start)


if __name__ == '__main__':
    sys.exit(main())
