#!/usr/bin/env python3
"""Benchmark the L7 SE's apply of a group's document when one load balancer
of many changed: what a tier-2 API change costs the L7 SEs of its group.

A real Engine (amphora_agent/l7/engine.py) with real HAProxy processes,
in a private network namespace (``dsrb<4 hex>-l7apply``, removed on exit,
also on failure or SIGTERM), VIPs on its loopback (the engine's host side,
eBPF decap and VIPs on lo, is stood in for: it is not what varies here).
LOAD_BALANCERS load balancers of one HTTP listener, one pool of two
members and an L7 policy each.

Figures (medians over ROUNDS):
- scratch: the first apply of the whole document (every HAProxy
  rendered, checked and started) -- the same run's baseline;
- one_changed: the document again with one load balancer's member weight
  changed (that HAProxy rendered, checked and reloaded; the others as
  they were);
- none_changed: the same document under a new generation.
Ratios: one_changed / scratch, none_changed / scratch.

    .venv/bin/python bench/l7_apply_bench.py      (root; about 30 s)

DSR_BENCH_L7_APPLY_LBS (16), DSR_BENCH_L7_APPLY_ROUNDS (5).  Last line:
one JSON object.
"""

import os
import secrets
import shutil
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
from _common import run_in_netns  # noqa: E402
from _common import sh  # noqa: E402
from amphora_agent.l7 import engine as engine_mod  # noqa: E402
from tools.lab import l7_docs as docs  # noqa: E402
from tools.lab.l7_loopback import LoopbackHost  # noqa: E402

LOAD_BALANCERS = int(os.environ.get('DSR_BENCH_L7_APPLY_LBS', 16))
ROUNDS = int(os.environ.get('DSR_BENCH_L7_APPLY_ROUNDS', 5))
VIP = '127.0.0.1'


def document(generation, weights):
    lbs = []
    for i, weight in enumerate(weights):
        lbs.append(docs.load_balancer(
            [docs.listener(f'li{i}', f'p{i}', port=8000 + i,
                           policies=[docs.policy(f'pol{i}', f'api{i}',
                                                 '/api')])],
            [docs.pool(f'p{i}', [docs.member(f'm{i}a', '198.51.100.11',
                                             weight=weight),
                                 docs.member(f'm{i}b', '198.51.100.12')]),
             docs.pool(f'api{i}', [docs.member(f'm{i}c',
                                               '198.51.100.13')])],
            id_=f'lb{i}', vips=(VIP,)))
    return docs.document(*lbs, generation=generation)


def timed(func):
    t0 = time.perf_counter()
    func()
    return time.perf_counter() - t0


def measure(state_dir):
    sh('ip', 'link', 'set', 'lo', 'up')
    scratch, one, none = [], [], []
    generation = 0
    for _ in range(ROUNDS):
        shutil.rmtree(state_dir, ignore_errors=True)
        engine = engine_mod.Engine(
            state_dir, LoopbackHost(), None, binary=shutil.which('haproxy'),
            log_socket=os.path.join(state_dir, 'log'))
        try:
            weights = [1] * LOAD_BALANCERS
            generation += 1
            scratch.append(timed(lambda: engine.apply(
                document(generation, weights))))
            weights[LOAD_BALANCERS // 2] = 2
            generation += 1
            one.append(timed(lambda: engine.apply(
                document(generation, weights))))
            generation += 1
            none.append(timed(lambda: engine.apply(
                document(generation, weights))))
            assert all(r['status'] == 'ACTIVE'
                       for r in engine.result.values()), engine.result
        finally:
            engine.stop()
    m = {k: statistics.median(v) for k, v in
         (('scratch', scratch), ('one', one), ('none', none))}
    return {'bench': 'l7_apply', 'load_balancers': LOAD_BALANCERS,
            'rounds': ROUNDS,
            'scratch_ms': round(m['scratch'] * 1e3, 1),
            'one_changed_ms': round(m['one'] * 1e3, 1),
            'none_changed_ms': round(m['none'] * 1e3, 1),
            'one_changed_ratio': round(m['one'] / m['scratch'], 3),
            'none_changed_ratio': round(m['none'] / m['scratch'], 3),
            'targets': {}}


def main():
    exit_on_sigterm()
    t0 = time.monotonic()
    ns = f'dsrb{secrets.token_hex(2)}-l7apply'
    state_dir = tempfile.mkdtemp(prefix='dsr-l7apply-')
    out, exc = {'bench': 'l7_apply', 'targets': {}}, None
    sh('ip', 'netns', 'add', ns)
    try:
        out = run_in_netns(ns, measure, state_dir)
        log(f'{LOAD_BALANCERS} load balancers: scratch '
            f'{out["scratch_ms"]:.0f} ms, one changed '
            f'{out["one_changed_ms"]:.0f} ms '
            f'({out["one_changed_ratio"]:.3f} x), none changed '
            f'{out["none_changed_ms"]:.0f} ms '
            f'({out["none_changed_ratio"]:.3f} x)')
    except Exception as e:  # noqa: BLE001 -- reported in the JSON line
        exc = e
    finally:
        sh('ip', 'netns', 'del', ns, check=False)
        shutil.rmtree(state_dir, ignore_errors=True)
    return finish(out, t0, exc)


if __name__ == '__main__':
    sys.exit(main())
