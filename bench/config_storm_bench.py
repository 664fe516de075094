#!/usr/bin/env python3
"""A get_config storm: every SE of a large group asks at once, as after
every change of the group.

    .venv/bin/python bench/config_storm_bench.py

One L4 SE group of N load balancers x 1 TCP listener x 1 pool x MEMBERS
members (bench/controller_bench.py's) on the controller's real Store, on
MariaDB (127.0.0.1:3306, root, a database of its own, dropped at the end;
DSR_BENCH_DB_URL for another, e.g. sqlite:////tmp/c.db), and the
controller's AgentEndpoint with a real Signer.  K threads (DSR_BENCH_ASKS,
default 8 and 32), released together by a barrier, each call get_config
(packed, as L4 agents ask): with the asks sharing builds
(config_flight.SingleFlight, "on") and with a build per ask (the answer
before it, "off"), alternated, DSR_BENCH_ROUNDS times each.  Reported per
K and mode (medians over the rounds): snapshot builds, wall time from the
release to the last answer, p50 and max answer time; and on / off ratios.

Environment: DSR_BENCH_LBS (default 2000), DSR_BENCH_MEMBERS (16),
DSR_BENCH_ASKS (8,32), DSR_BENCH_ROUNDS (1).  No targets.  Last line: one
JSON object.
"""

import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import finish  # noqa: E402
from _common import log  # noqa: E402
from controller_bench import group_store  # noqa: E402 -- the same group
from controller_bench import LBS  # noqa: E402
from controller_bench import MEMBERS  # noqa: E402

ASKS = [int(k) for k in os.environ.get('DSR_BENCH_ASKS', '8,32').split(',')]
ROUNDS = int(os.environ.get('DSR_BENCH_ROUNDS', 1))
GROUP = 'g1'    # controller_bench.group_store's


class PerAsk:
    """get_config's answer before config_flight: a build per ask."""

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def answer(self, se_group, packed):
        return self.endpoint._envelope(
            self.endpoint.store.snapshot(se_group), packed)


def storm(endpoint, asks):
    """asks get_config calls released together: (wall s, [answer s],
    errors)."""
    barrier = threading.Barrier(asks + 1)
    times, errors, ends = [None] * asks, [], [None] * asks

    def ask(i):
        barrier.wait()
        t0 = time.perf_counter()
        try:
            endpoint.get_config({}, GROUP, f'se{i}', True)
        except Exception as exc:  # noqa: BLE001 -- counted, shown
            errors.append(f'{type(exc).__name__}: {exc}')
        ends[i] = time.perf_counter()
        times[i] = ends[i] - t0
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(asks)]
    for thread in threads:
        thread.start()
    barrier.wait()
    released = time.perf_counter()
    for thread in threads:
        thread.join()
    return max(ends) - released, times, errors


def measure(endpoint, store, asks):
    """{'on'|'off': figures} of ROUNDS storms each, alternated."""
    real = store.snapshot
    builds = [0]

    def counted(se_group):
        builds[0] += 1
        return real(se_group)
    store.snapshot = counted
    shared = endpoint._answers
    runs = {'on': [], 'off': []}
    try:
        for _ in range(ROUNDS):
            for mode in ('off', 'on'):
                endpoint._answers = shared if mode == 'on' else \
                    PerAsk(endpoint)
                builds[0] = 0
                wall, times, errors = storm(endpoint, asks)
                runs[mode].append({
                    'builds': builds[0], 'wall_s': wall,
                    'p50_s': statistics.median(times), 'max_s': max(times),
                    'errors': len(errors)})
                if errors:
                    log(f'{mode}, {asks} asks: {len(errors)} failed, '
                        f'first: {errors[0]}')
    finally:
        store.snapshot = real
        endpoint._answers = shared
    figures = {mode: {key: round(statistics.median(run[key] for run in got),
                                 3)
                      for key in got[0]}
               for mode, got in runs.items()}
    figures['ratio'] = {
        key: round(figures['on'][key] / figures['off'][key], 3)
        for key in ('builds', 'wall_s', 'p50_s', 'max_s')}
    return figures


def main():
    from dsr_provider.controller import endpoints
    from dsr_wire import auth

    t_start = time.monotonic()
    out = {'bench': 'config_storm_bench', 'load_balancers': LBS,
           'members': MEMBERS, 'rounds': ROUNDS, 'targets': {}}
    exc = None
    try:
        with group_store(out) as store, \
                tempfile.TemporaryDirectory() as keys:
            auth.generate_key(os.path.join(keys, 'controller.key'))
            endpoint = endpoints.AgentEndpoint(
                store, signer=auth.Signer(os.path.join(keys,
                                                       'controller.key')))
            # The signer's packed lines and the database's pages warm, as
            # in a controller that has answered before.
            t0 = time.perf_counter()
            endpoint.get_config({}, GROUP, 'se0', True)
            out['one_ask_s'] = round(time.perf_counter() - t0, 3)
            for asks in ASKS:
                got = out[f'asks_{asks}'] = measure(endpoint, store, asks)
                log(f'{asks} asks at once, {LBS} load balancers x {MEMBERS} '
                    f'members ({out["database"]}), medians of {ROUNDS}: ' +
                    '; '.join(
                        f'{mode}: {got[mode]["builds"]} builds, last answer '
                        f'{got[mode]["wall_s"]} s, p50 {got[mode]["p50_s"]}'
                        f' s, max {got[mode]["max_s"]} s'
                        for mode in ('off', 'on')) +
                    f'; on / off {got["ratio"]}')
    except BaseException as e:  # noqa: BLE001 - reported in the JSON line
        exc = e
    return finish(out, t_start, exc)


if __name__ == '__main__':
    sys.exit(main())
