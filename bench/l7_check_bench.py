"""The store's check of a tier-2 change against the L7 schema
(Store._l7_rejections, docs/tier2.md): changes of one tier-2 load balancer
of LISTENERS listeners x MEMBERS members, with the check as built and
replaced by a no-op, alternating, on a real Store (SQLite in a temporary
folder).  A member is checked alone; a pool change checks the load
balancer's document.

    .venv/bin/python bench/l7_check_bench.py

DSR_BENCH_LISTENERS (300), DSR_BENCH_MEMBERS (16), DSR_BENCH_CHANGES (10
per round), DSR_BENCH_ROUNDS (2).  Prints the medians and, last, one JSON
object.
"""

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from _common import finish  # noqa: E402
from _common import log  # noqa: E402
from dsr_provider.controller import db as db_mod  # noqa: E402
from dsr_provider.controller import store as store_mod  # noqa: E402

LISTENERS = int(os.environ.get('DSR_BENCH_LISTENERS', 300))
MEMBERS = int(os.environ.get('DSR_BENCH_MEMBERS', 16))
CHANGES = int(os.environ.get('DSR_BENCH_CHANGES', 10))
ROUNDS = int(os.environ.get('DSR_BENCH_ROUNDS', 2))


def pool(i, persistence_timeout=None):
    return {'pool_id': f'p{i}', 'loadbalancer_id': 'lb', 'listener_id':
            f'l{i}', 'lb_algorithm': 'ROUND_ROBIN', 'protocol': 'HTTP',
            'admin_state_up': True, 'session_persistence': {
                'type': 'SOURCE_IP',
                'persistence_timeout': persistence_timeout}}


def graph():
    """A tier-2 load balancer: LISTENERS HTTP listeners, each with its own
    pool of MEMBERS members."""
    pools = [dict(pool(i), members=[
        {'member_id': f'm{i}-{j}', 'pool_id': f'p{i}',
         'address': f'198.19.{i % 250}.{j + 2}', 'protocol_port': 8080,
         'weight': 1, 'admin_state_up': True, 'backup': False}
        for j in range(MEMBERS)]) for i in range(LISTENERS)]
    return {'loadbalancer_id': 'lb', 'vip_address': '192.0.2.20',
            'admin_state_up': True,
            'dsr': {'se_group': 'edge', 'tier': 2, 'encapsulation': 'gre',
                    'l7_se_group': 'edge-l7'},
            'listeners': [{'listener_id': f'l{i}', 'loadbalancer_id': 'lb',
                           'protocol': 'HTTP', 'protocol_port': 1000 + i,
                           'default_pool_id': f'p{i}',
                           'admin_state_up': True, 'l7policies': []}
                          for i in range(LISTENERS)],
            'pools': pools}


def median_ms(changes):
    times = []
    for change in changes:
        started = time.perf_counter()
        change()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def changes(store, first):
    """CHANGES member creates and CHANGES pool updates, ids from first."""
    members = [lambda k=k: store.put_member({
        'member_id': f'new{k}', 'pool_id': 'p0',
        'address': f'198.18.{k // 250}.{k % 250 + 2}',
        'protocol_port': 8080, 'weight': 1, 'admin_state_up': True,
        'backup': False}) for k in range(first, first + CHANGES)]
    pools = [lambda k=k: store.put_pool(pool(1, 60 + k), update=True)
             for k in range(first, first + CHANGES)]
    return members, pools


def main(out):
    real = store_mod.Store._l7_rejections
    figures = {'member': ([], []), 'pool': ([], [])}
    with tempfile.TemporaryDirectory() as folder:
        url = f'sqlite:///{folder}/controller.db'
        db_mod.upgrade(url)
        store = store_mod.Store(db_mod.Database(url), 'edge')
        try:
            store.create_loadbalancer(graph())
            for r in range(ROUNDS):
                for checked in (True, False):
                    store_mod.Store._l7_rejections = real if checked else (
                        lambda *args, **kwargs: None)
                    members, pools = changes(
                        store, (2 * r + (not checked)) * CHANGES)
                    index = 0 if checked else 1
                    figures['member'][index].append(
                        round(median_ms(members), 2))
                    figures['pool'][index].append(round(median_ms(pools), 2))
        finally:
            store_mod.Store._l7_rejections = real
            store.db.engine.dispose()
    for what, (checked, unchecked) in figures.items():
        ratio = statistics.median(c / u for c, u in zip(checked, unchecked))
        log(f'{LISTENERS} listeners x {MEMBERS} members, a {what} change: '
            f'with the check {checked} ms, without {unchecked} ms '
            f'(medians of {CHANGES}); x {ratio:.2f}')
        out[what] = {'with_check_ms': checked, 'without_check_ms': unchecked,
                     'ratio': round(ratio, 2)}
    out.update(listeners=LISTENERS, members=MEMBERS)


if __name__ == '__main__':
    t0 = time.monotonic()
    result = {'bench': 'l7_check_bench', 'targets': {}}
    try:
        main(result)
        error = None
    except BaseException as exc:  # noqa: BLE001 -- recorded by finish()
        error = exc
    sys.exit(finish(result, t0, error))
