#!/usr/bin/env python3
"""Benchmark the Maglev ring builder.

Run from the repository root after building the library:

    make -f mk/maglev.mk amphora_agent/dataplane/obj/libmaglev.so
    .venv/bin/python bench/maglev_bench.py

For M=128021 (the default ring_size: the ring of pools of up to 128
members, ring ABI 4) and N=10/100/1000 equal-weight backends it measures
the build time (median of several runs), the balance (max/mean slots per
backend) and the disruption when one backend is removed (slots that
change, as a multiple of the minimum M/N, over --removals evenly spaced
removals, default 20; --removals 100 takes every one at N=100).  The
issue's target is the worst removal at N <= 100 (judged on the worst of
the removals taken; the mean is printed beside it); N=1000 has no target
(a pool that size wants ring_size >= 1000 x N).  The pure-Python builder at
N=100 is timed in the same run as a baseline.  The last line printed is one
JSON object with every figure.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from amphora_agent.dataplane import maglev  # noqa: E402
from amphora_agent.dataplane.maglev import Backend  # noqa: E402

TARGET_BUILD_MS_N100 = 10.0
TARGET_MAX_MEAN = 1.01  # for N <= 100
TARGET_MOVED = 1.2  # slots moved per removal, in units of M/N


def members(n):
    return [Backend(f"member-{i:04d}", 1, i + 1) for i in range(n)]


def median_ms(fn, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def removals_moved(backends, ring, ring_size, removals):
    """(worst, mean) slots moved, in units of M/N, over evenly spaced
    removals of one backend."""
    n = len(backends)
    step = max(1, n // removals)
    moved = []
    for idx in range(0, n, step)[:removals]:
        after = maglev.build_ring(backends[:idx] + backends[idx + 1:],
                                  ring_size)
        changed = sum(1 for a, b in zip(ring, after) if a != b)
        moved.append(changed / (ring_size / n))
    return max(moved), statistics.mean(moved)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ring-size", type=int, default=maglev.DEFAULT_RING_SIZE)
    ap.add_argument("--runs", type=int, default=21,
                    help="builds per timing (median)")
    ap.add_argument("--removals", type=int, default=20,
                    help="backends removed one at a time per N")
    ap.add_argument("--python-runs", type=int, default=3)
    ap.add_argument("--by-pool", action="store_true",
                    help="each N at the ring size of its pool "
                         "(maglev.ring_size_for, at most --ring-size): "
                         "the top and the bottom of every tier")
    args = ap.parse_args()
    m = args.ring_size
    if args.by_pool:
        sizes = [(n, maglev.ring_size_for(n, m)) for n in
                 (2, 4, 5, 8, 9, 16, 17, 32, 33, 64, 65, 100, 128)]
    else:
        sizes = [(n, m) for n in (10, 100, 1000)]

    native = maglev.native_available()
    print(f"maglev bench: M={m}, library={maglev.library_path()} "
          f"({'loaded' if native else 'MISSING: timing pure Python'})")
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPUs")

    results = []
    for n, m in sizes:
        backends = members(n)
        build_ms = median_ms(lambda: maglev.build_ring(backends, m),
                             args.runs)
        ring = maglev.build_ring(backends, m)
        counts = maglev.ring_stats(ring)
        max_mean = max(counts.values()) / (m / n)
        moved, moved_mean = removals_moved(backends, ring, m, args.removals)
        checks = {"max_mean": max_mean <= TARGET_MAX_MEAN if n <= 100
                  else None,
                  "moved": moved <= TARGET_MOVED if n <= 128 else None,
                  "build_ms": build_ms <= TARGET_BUILD_MS_N100 if n == 100
                  else None}
        results.append({"n": n, "ring_size": m,
                        "build_ms": round(build_ms, 3),
                        "max_mean": round(max_mean, 5),
                        "moved_x_min": round(moved, 3),
                        "moved_x_min_mean": round(moved_mean, 3),
                        "removals": min(args.removals, n),
                        "targets": checks})

        def mark(ok):
            return "" if ok is None else (" ok" if ok else " MISSED")
        build_t = (f" (target <= {TARGET_BUILD_MS_N100:.0f})" if n == 100
                   else "")
        balance_t = f" (target <= {TARGET_MAX_MEAN})" if n <= 100 else ""
        print(f"N={n:5d} M={m:6d}: build {build_ms:7.3f} ms{build_t}"
              f"{mark(checks['build_ms'])}; "
              f"max/mean {max_mean:.4f}{balance_t}"
              f"{mark(checks['max_mean'])}; "
              f"moved on removal {moved:.3f} x M/N (worst of "
              f"{min(args.removals, n)}, mean {moved_mean:.3f}"
              + (f"; target <= {TARGET_MOVED})" if n <= 128 else ")")
              + f"{mark(checks['moved'])}")

    m = dict(sizes).get(100, args.ring_size)
    backends = members(100)
    py_ms = median_ms(lambda: maglev.build_ring_reference(backends, m),
                      args.python_runs)
    c_ms = next(r["build_ms"] for r in results if r["n"] == 100)
    ratio = py_ms / c_ms if c_ms else None
    print(f"pure-Python reference at N=100: {py_ms:.1f} ms "
          f"({ratio:.1f}x the build_ring time)")

    targets_met = all(ok for r in results for ok in r["targets"].values()
                      if ok is not None)
    print(f"targets met: {targets_met}")
    print(json.dumps({
        "bench": "maglev",
        "ring_size": args.ring_size,
        "by_pool": args.by_pool,
        "native": native,
        "results": results,
        "python_reference_n100_ms": round(py_ms, 3),
        "python_over_native_n100": round(ratio, 1) if ratio else None,
        "targets": {"build_ms_n100": TARGET_BUILD_MS_N100,
                    "max_mean_n_le_100": TARGET_MAX_MEAN,
                    "moved_x_min": TARGET_MOVED},
        "targets_met": targets_met,
    }, sort_keys=False))


if __name__ == "__main__":
    main()
