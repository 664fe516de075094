#!/usr/bin/env python3
"""The controller at scale: what every change costs it, by group size.

    .venv/bin/python bench/controller_bench.py

N load balancers x 1 TCP listener x 1 pool x MEMBERS members in one SE
group of the controller's real store, on MariaDB (127.0.0.1:3306, root, a
database of its own, dropped at the end; DSR_BENCH_DB_URL for another, e.g.
sqlite:////tmp/c.db).  Created through Store.create_loadbalancer with
capacity enforcement off (it would only slow the set-up down), then, with
one live agent whose limits fit, timed (median of DSR_BENCH_RUNS):

* one member added (Store.put_member: the change's transaction, with the
  group's capacity count), then removed again;
* the group's document (Store.snapshot), what every agent asks for after
  every change;
* that document signed as one JSON payload (auth.Signer.envelope) and
  packed (one deflated line per load balancer, controller API 1.1; the
  Signer reuses the lines of unchanged load balancers, so after the first
  run only the head is new), and the size of each;
* the leader's operating-status round (Reporter.report_operating_status,
  run ten times a second): a new leader's first (every object's status
  from every row: what every round did before it compared its inputs,
  and every round after a member status report before operating_delta),
  idle (nothing changed since the last round: a few small queries), and
  after an agent reported a member's status change (that member's load
  balancer).

Environment: DSR_BENCH_LBS (default 2000), DSR_BENCH_MEMBERS (16),
DSR_BENCH_RUNS (5).  No targets: the issue's targets are the agent's
(bench/scale_bench.py); this shows what the controller adds to them.
Last line: one JSON object.
"""

import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import finish  # noqa: E402
from _common import log  # noqa: E402

LBS = int(os.environ.get('DSR_BENCH_LBS', 2000))
MEMBERS = int(os.environ.get('DSR_BENCH_MEMBERS', 16))
RUNS = int(os.environ.get('DSR_BENCH_RUNS', 5))
DB_URL = os.environ.get('DSR_BENCH_DB_URL')


def lb_doc(i):
    pool_id = f'p{i}'
    return {
        'loadbalancer_id': f'lb{i}', 'vip_address':
            f'198.18.{i // 250}.{i % 250 + 1}', 'admin_state_up': True,
        'listeners': [{'listener_id': f'l{i}', 'loadbalancer_id': f'lb{i}',
                       'protocol': 'TCP', 'protocol_port': 80,
                       'default_pool_id': pool_id, 'admin_state_up': True}],
        'pools': [{'pool_id': pool_id, 'loadbalancer_id': f'lb{i}',
                   'listener_id': f'l{i}', 'lb_algorithm': 'SOURCE_IP_PORT',
                   'protocol': 'TCP', 'admin_state_up': True,
                   'members': [member(pool_id, i, j)
                               for j in range(MEMBERS)]}]}


def member(pool_id, i, j):
    n = i * MEMBERS + j
    return {'member_id': f'{pool_id}-m{j}', 'pool_id': pool_id,
            'address': f'198.19.{n // 250 % 256}.{n % 250 + 2}',
            'protocol_port': 80, 'admin_state_up': True, 'weight': 1}


class _NoOctavia:
    """octavia-driver-agent's sockets, not what is timed here."""

    def update_loadbalancer_status(self, status):
        pass


def timed(fn, runs=RUNS):
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


@contextlib.contextmanager
def group_store(out):
    """A Store whose SE group g1 holds LBS load balancers (lb_doc), on
    DB_URL, else on a MariaDB database of its own dropped at the end; out
    gets the database's kind and the time of a create."""
    from dsr_provider.controller import db as db_mod
    from dsr_provider.controller import store as store_mod
    from tools.lab.localstack import services
    from tools.lab.product_lab import mysql

    db_name = f'dsrbench_{uuid.uuid4().hex[:8]}'
    url = DB_URL
    try:
        if url is None:
            services.ensure('mariadb')
            mysql(f'CREATE DATABASE {db_name}')
            url = f'mysql+pymysql://root@127.0.0.1:3306/{db_name}'
        out['database'] = 'sqlite' if url.startswith('sqlite') else 'mariadb'
        db_mod.upgrade(url)
        store = store_mod.Store(db_mod.Database(url), 'g1')
        t0 = time.perf_counter()
        for i in range(LBS):
            store.create_loadbalancer(lb_doc(i))
        out['create_each_ms'] = round(
            (time.perf_counter() - t0) / LBS * 1e3, 2)
        yield store
    finally:
        if DB_URL is None:
            try:
                mysql(f'DROP DATABASE IF EXISTS {db_name}')
            except Exception:  # noqa: BLE001 - the result matters more
                pass


def main():
    from dsr_provider.controller import reporter as reporter_mod
    from dsr_wire import auth

    t_start = time.monotonic()
    out = {'bench': 'controller', 'load_balancers': LBS,
           'members': MEMBERS, 'runs': RUNS, 'targets': {}}
    exc = None
    stack = contextlib.ExitStack()
    try:
        store = stack.enter_context(group_store(out))
        store.record_agent('se1', 'g1', limits={
            'max_listeners': 10 * LBS, 'max_members': 10 * LBS * MEMBERS,
            'ring_size': 128021, 'conn_table_size': 262144,
            'ring_slots': 10 ** 10})
        store.live_agents = lambda group: {'se1'}

        # A new id every run: a deleted id is remembered (tombstones), and
        # Octavia never gives one out again.
        runs = itertools.count()

        def add_remove():
            extra = dict(member('p0', 0, MEMBERS),
                         member_id=f'p0-extra-{next(runs)}')
            store.put_member(extra)
            store.delete_member(extra['member_id'])
        change, _ = timed(add_remove)
        out['member_add_and_delete_ms'] = round(change * 1e3, 1)
        snap_s, document = timed(lambda: store.snapshot('g1'))
        out['snapshot_ms'] = round(snap_s * 1e3, 1)
        assert len(document['load_balancers']) == LBS
        with tempfile.TemporaryDirectory() as keys:
            auth.generate_key(os.path.join(keys, 'k'))
            signer = auth.Signer(os.path.join(keys, 'k'))
            for packed in (False, True):
                name = 'packed' if packed else 'whole'
                sign_s, env = timed(
                    lambda: signer.envelope(document, packed=packed))
                out[f'sign_{name}_ms'] = round(sign_s * 1e3, 1)
                out[f'payload_{name}_mb'] = round(
                    len(env['payload']) / 1e6, 2)

        def new_reporter():
            return reporter_mod.Reporter(store, None, _NoOctavia(),
                                         store.live_agents)
        # A new leader's first round computes every object's status (what
        # every round after a member report cost before operating_delta).
        full_s, _ = timed(lambda: new_reporter().report_operating_status())
        reporter = new_reporter()
        reporter.report_operating_status()
        idle_s, _ = timed(reporter.report_operating_status)
        # A member's health flaps (the agent reports it): the round after
        # computes the statuses of that member's load balancer.
        flapped = []
        for run in range(RUNS):
            store.record_agent('se1', 'g1', member_statuses={
                'p0-m0': ('ERROR', 'ONLINE')[run % 2]})
            t0 = time.perf_counter()
            reporter.report_operating_status()
            flapped.append(time.perf_counter() - t0)
        out['operating_round_full_ms'] = round(full_s * 1e3, 1)
        out['operating_round_idle_ms'] = round(idle_s * 1e3, 2)
        out['operating_round_after_a_report_ms'] = round(
            statistics.median(flapped) * 1e3, 1)
        log(f'operating-status round: every object '
            f'{out["operating_round_full_ms"]} ms; idle '
            f'{out["operating_round_idle_ms"]} ms; after a member status '
            f'report {out["operating_round_after_a_report_ms"]} ms')
        log(f'{LBS} load balancers x {MEMBERS} members on '
            f'{out["database"]}: create {out["create_each_ms"]} ms each '
            f'(capacity off); one member added and deleted '
            f'{out["member_add_and_delete_ms"]} ms; the group\'s document '
            f'{out["snapshot_ms"]} ms; signed whole '
            f'{out["sign_whole_ms"]} ms ({out["payload_whole_mb"]} MB), '
            f'packed {out["sign_packed_ms"]} ms '
            f'({out["payload_packed_mb"]} MB)')
    except BaseException as e:  # noqa: BLE001 - reported in the JSON line
        exc = e
    finally:
        stack.close()
    return finish(out, t_start, exc)


if __name__ == '__main__':
    sys.exit(main())
