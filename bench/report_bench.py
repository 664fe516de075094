#!/usr/bin/env python3
"""What one agent report costs the controller.

    .venv/bin/python bench/report_bench.py

Every SE sends report_state (its heartbeat) and report_stats every
[agent] stats_interval (10 s by default, 1 s in the labs), plus
report_member_status when a health check moves: a controller's steady
load grows with SEs / stats_interval. This times the controller's real
AgentEndpoint on the real Store, on MariaDB (127.0.0.1:3306, root, a
database of its own, dropped at the end), for one enrolled SE of a group
of DSR_BENCH_LBS (default 20) load balancers x 1 listener x 1 pool x
DSR_BENCH_MEMBERS (16) members (controller_bench.py's): each message
signed by the SE's real key (signing not timed) and handled with
authentication on (AgentGuard: enrolment, replay nonce, ownership of
every object named), and the same message with authentication off (the
store write alone, the baseline of the same run). Per message kind:
median CPU ms of the handling thread, median wall ms, database
transactions. DSR_BENCH_RUNS (default 200) messages of each kind, the
two modes alternating. Also the memory of the guard's map of known
objects when full (tracemalloc, 100,000 UUIDs).

No targets.  Last line: one JSON object.
"""

import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from _common import finish  # noqa: E402
from _common import log  # noqa: E402
from controller_bench import lb_doc  # noqa: E402 -- the same group shape
from controller_bench import MEMBERS  # noqa: E402

LBS = int(os.environ.get('DSR_BENCH_LBS', 20))
RUNS = int(os.environ.get('DSR_BENCH_RUNS', 200))


def messages(generation):
    """(method, args) of what an SE of the group sends."""
    state = {'applied_generation': generation, 'rejected_generation': None,
             'error': None, 'rejected_objects': {}, 'serviceable': True,
             'limits': {'max_listeners': 4096, 'max_members': 65536},
             'ring_abi': 4, 'helpers': {'bgp': 'running'},
             'bgp': {'sessions': {'198.18.0.254': 'established'},
                     'routes': ['198.18.0.1/32']}}
    counters = {'bytes_in': 1000, 'bytes_out': 0, 'packets': 10,
                'total_connections': 2, 'active_connections': 1}
    stats = {'listeners': {f'l{i}': dict(counters) for i in range(LBS)},
             'members': {f'p{i}-m{j}': dict(counters)
                         for i in range(LBS) for j in range(MEMBERS)}}
    statuses = {f'p{i}-m{j}': 'ONLINE'
                for i in range(LBS) for j in range(MEMBERS)}
    base = {'se_id': 'se1', 'se_group': 'g1'}
    return {
        'report_state': dict(base, state=state),
        'report_stats': dict(base, stats=stats),
        'report_member_status': dict(base, generation=generation,
                                     statuses=statuses),
    }


KNOWN = 100_000     # AgentGuard's default known_objects


def known_objects_mb(guard):
    """Memory of the guard's map of known objects, full (KNOWN member
    UUIDs of one group, entered as its reads enter them)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        guard._groups.update(
            (('members', str(uuid.uuid4())), guard._interned({'g1'}))
            for _ in range(KNOWN))
        return round((tracemalloc.get_traced_memory()[0] - before) / 1e6,
                     1)
    finally:
        tracemalloc.stop()


def main():
    import sqlalchemy as sa

    from dsr_provider.controller import db as db_mod
    from dsr_provider.controller import endpoints
    from dsr_provider.controller import enrolment
    from dsr_provider.controller import guard as guard_mod
    from dsr_provider.controller import store as store_mod
    from dsr_wire import auth
    from tools.lab.localstack import services
    from tools.lab.product_lab import mysql

    t_start = time.monotonic()
    out = {'bench': 'report', 'load_balancers': LBS, 'members': MEMBERS,
           'runs': RUNS, 'targets': {}}
    db_name = f'dsrbench_{uuid.uuid4().hex[:8]}'
    exc = None
    try:
        services.ensure('mariadb')
        mysql(f'CREATE DATABASE {db_name}')
        url = f'mysql+pymysql://root@127.0.0.1:3306/{db_name}'
        db_mod.upgrade(url)
        database = db_mod.Database(url)
        store = store_mod.Store(database, 'g1')
        generation = None
        for i in range(LBS):
            generation = store.create_loadbalancer(lb_doc(i))
        commits = []
        sa.event.listen(database.engine, 'commit',
                        lambda conn: commits.append(1))
        with tempfile.TemporaryDirectory() as keys:
            key = os.path.join(keys, 'se1.key')
            auth.generate_key(key)
            signer = auth.Signer(key)
            enrolment.enrol(database, 'g1', 'se1',
                            auth.load_private_key(key).public_key())
            modes = {
                'guarded': endpoints.AgentEndpoint(
                    store, guard=guard_mod.AgentGuard(database)),
                'unguarded': endpoints.AgentEndpoint(store),
            }
            samples = {}
            for _ in range(RUNS):
                for method, args in messages(generation).items():
                    for mode, endpoint in modes.items():
                        ctxt = signer.context(method, args)
                        before = len(commits)
                        c0, w0 = time.thread_time(), time.perf_counter()
                        getattr(endpoint, method)(ctxt, **args)
                        cpu = time.thread_time() - c0
                        wall = time.perf_counter() - w0
                        s = samples.setdefault((method, mode),
                                               ([], [], []))
                        s[0].append(cpu)
                        s[1].append(wall)
                        s[2].append(len(commits) - before)
            refused = modes['guarded'].guard.refusals.total()
            if refused:
                raise RuntimeError(f'{refused} messages refused')
        for (method, mode), (cpu, wall, txns) in sorted(samples.items()):
            out.setdefault(method, {})[mode] = {
                'cpu_ms': round(statistics.median(cpu) * 1e3, 3),
                'wall_ms': round(statistics.median(wall) * 1e3, 3),
                'transactions': statistics.median(txns)}
        for method in messages(0):
            entry = out[method]
            entry['guarded_cpu_vs_unguarded'] = round(
                entry['guarded']['cpu_ms'] / entry['unguarded']['cpu_ms'], 2)
            log(f'{method}: guarded {entry["guarded"]}, unguarded '
                f'{entry["unguarded"]}')
        out['known_objects_mb'] = known_objects_mb(guard_mod.AgentGuard(
            database))
        log(f'the guard remembering {KNOWN:,} objects: '
            f'{out["known_objects_mb"]} MB')
    except Exception as e:  # noqa: BLE001 -- reported in the JSON line
        exc = e
    finally:
        try:
            mysql(f'DROP DATABASE IF EXISTS {db_name}')
        except Exception:  # noqa: BLE001
            pass
    finish(out, t_start, exc)


if __name__ == '__main__':
    main()
