"""The controller's VIP-clash check at scale (docs/refusals.md, "VIP
clashes"): a listener change against an SE group of N load balancers with
one listener each, the check as built against it replaced by a no-op,
alternating, on a real Store (SQLite in a temporary folder).

    .venv/bin/python bench/vip_clash_bench.py

DSR_BENCH_LBS (10000), DSR_BENCH_CHANGES (20 per round), DSR_BENCH_ROUNDS
(2).  Prints the medians and, last, one JSON object.
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
from dsr_provider.controller import models  # noqa: E402
from dsr_provider.controller import store as store_mod  # noqa: E402

LBS = int(os.environ.get('DSR_BENCH_LBS', 10000))
CHANGES = int(os.environ.get('DSR_BENCH_CHANGES', 20))
ROUNDS = int(os.environ.get('DSR_BENCH_ROUNDS', 2))


def populated(folder):
    """A Store whose group g1 holds LBS load balancers, one listener each
    (rows written directly: the check reads them, nothing else does)."""
    url = f'sqlite:///{folder}/controller.db'
    db_mod.upgrade(url)
    store = store_mod.Store(db_mod.Database(url), 'g1')
    with store.db.session() as s:
        s.add(models.SEGroup(name='g1', generation=0,
                             published_generation=0))
        for i in range(LBS):
            lb_id, lid = f'lb{i:05d}', f'l{i:05d}'
            s.add(models.LoadBalancer(id=lb_id, se_group='g1', doc={
                'loadbalancer_id': lb_id, 'admin_state_up': True,
                'vip_address': f'198.18.{i // 250}.{i % 250 + 1}'}))
            s.add(models.Listener(id=lid, loadbalancer_id=lb_id, doc={
                'listener_id': lid, 'loadbalancer_id': lb_id,
                'protocol': 'TCP', 'protocol_port': 80,
                'admin_state_up': True}))
    return store


def median_ms(store, first):
    times = []
    for k in range(first, first + CHANGES):
        started = time.perf_counter()
        store.put_listener({'listener_id': f'x{k}',
                            'loadbalancer_id': 'lb00007', 'protocol': 'TCP',
                            'protocol_port': 1000 + k,
                            'admin_state_up': True})
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main(out):
    checked, unchecked = [], []
    real = store_mod.Store.__dict__['_vip_clash']     # the staticmethod
    with tempfile.TemporaryDirectory() as folder:
        store = populated(folder)
        try:
            for r in range(ROUNDS):
                store_mod.Store._vip_clash = real
                checked.append(round(median_ms(store, 2 * r * CHANGES), 2))
                store_mod.Store._vip_clash = staticmethod(
                    lambda *args, **kwargs: None)
                unchecked.append(round(median_ms(
                    store, (2 * r + 1) * CHANGES), 2))
        finally:
            store_mod.Store._vip_clash = real
            store.db.engine.dispose()
    cost = statistics.median(c - u for c, u in zip(checked, unchecked))
    log(f'{LBS} load balancers, {CHANGES} listener changes x {ROUNDS} '
        f'rounds: with the check {checked} ms, without {unchecked} ms '
        f'(medians); the check costs {cost:.1f} ms a change')
    out.update(load_balancers=LBS, with_check_ms=checked,
               without_check_ms=unchecked, check_ms=round(cost, 2))


if __name__ == '__main__':
    t0 = time.monotonic()
    result = {'bench': 'vip_clash_bench', 'targets': {}}
    try:
        main(result)
        error = None
    except BaseException as exc:  # noqa: BLE001 -- recorded by finish()
        error = exc
    sys.exit(finish(result, t0, error))
