"""The controller's schema on the databases it supports: MariaDB (the
production choice, the running server) and a SQLite file (the single-host
default).  Migrations must produce exactly the models' schema, and epoch
timestamps must survive a round trip to sub-millisecond precision -- the
reporter's apply timeout compares them with time.time()."""

import concurrent.futures
import threading
import time
import uuid

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
import pytest
from sqlalchemy import exc as sa_exc

from dsr_provider.controller import db
from dsr_provider.controller import models
from dsr_provider.controller import store as store_mod
from tools.lab.localstack import octavia as localstack


@pytest.fixture(params=['mariadb', 'sqlite'])
def database_url(request, tmp_path):
    if request.param == 'sqlite':
        yield f'sqlite:///{tmp_path}/dsr.sqlite'
        return
    name = f'dsr_dbtest_{uuid.uuid4().hex[:12]}'
    localstack._sql(f'CREATE DATABASE {name}')
    try:
        yield (f'mysql+pymysql://{localstack.DB_USER}@{localstack.DB_HOST}:'
               f'{localstack.DB_PORT}/{name}')
    finally:
        localstack._sql(f'DROP DATABASE IF EXISTS {name}')


def test_migrations_produce_the_models_schema(database_url):
    db.upgrade(database_url)
    database = db.Database(database_url)
    try:
        with database.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(
                connection, opts={'compare_type': True}), models.Base.metadata)
    finally:
        database.engine.dispose()
    assert diff == []


def _round_trip_timestamps(database_url):
    database = db.Database(database_url)
    now = time.time()
    try:
        with database.session() as s:
            s.add(models.PendingStatus(se_group='g', generation=1,
                                       status={}, created_at=now))
            s.add(models.AgentState(se_id='se1', se_group='g',
                                    updated_at=now))
        with database.session() as s:
            created = s.query(models.PendingStatus.created_at).scalar()
            updated = s.query(models.AgentState.updated_at).scalar()
    finally:
        database.engine.dispose()
    return created - now, updated - now


def test_epoch_timestamps_keep_sub_millisecond_precision(database_url):
    db.upgrade(database_url)
    for error in _round_trip_timestamps(database_url):
        assert abs(error) < 1e-3


def test_upgrade_from_0001_converts_float_timestamps(database_url):
    db.upgrade(database_url, '0001')
    db.upgrade(database_url)
    for error in _round_trip_timestamps(database_url):
        assert abs(error) < 1e-3


def test_concurrent_changes_get_distinct_generations(database_url):
    """Many changes committed at once (50 load balancers created together
    through the API): every change gets its own generation and the group's
    generation ends at the highest -- a lost update would let an agent
    report a generation that lacks a change, or never reach a pending one."""
    db.upgrade(database_url)
    store = store_mod.Store(db.Database(database_url), 'g1')
    count = 24
    barrier = threading.Barrier(count)

    def create(i):
        barrier.wait()
        for attempt in range(20):
            try:
                return store.create_loadbalancer(
                    {'loadbalancer_id': f'lb{i}',
                     'vip_address': f'192.0.2.{i + 1}',
                     'admin_state_up': True})
            except sa_exc.OperationalError:   # deadlock / SQLite busy
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError('gave up')

    try:
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            generations = list(pool.map(create, range(count)))
        with store.db.session() as s:
            final = s.get(models.SEGroup, 'g1').generation
            pending = sorted(p.generation for p in
                             s.query(models.PendingStatus))
    finally:
        store.db.engine.dispose()
    assert sorted(generations) == list(range(1, count + 1))
    assert pending == list(range(1, count + 1))
    assert final == count


def _listeners_at_once(store, lbs, protocol, se_group):
    """Create the load balancers `lbs` (lb<i>), then listener l<i> on port
    80 of each, all at once (a deadlock is retried); returns the ids of
    the listeners rejected, how many are stored and se_group's snapshot.
    Closes the store's engine."""
    for lb in lbs:
        store.create_loadbalancer(lb)
    count = len(lbs)
    barrier = threading.Barrier(count)

    def create(i):
        barrier.wait()
        for attempt in range(20):
            try:
                return store.put_listener({
                    'listener_id': f'l{i}', 'loadbalancer_id': f'lb{i}',
                    'protocol': protocol, 'protocol_port': 80,
                    'admin_state_up': True})
            except sa_exc.OperationalError:   # deadlock: retried
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError('gave up')

    try:
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            list(pool.map(create, range(count)))
        with store.db.session() as s:
            return ([r.id for r in s.query(models.Listener) if r.rejected],
                    s.query(models.Listener).count(),
                    store.snapshot(se_group))
    finally:
        store.db.engine.dispose()


@pytest.mark.parametrize('database_url', ['mariadb'], indirect=True)
def test_concurrent_creates_never_exceed_the_groups_capacity(database_url):
    """20 listener creates at once on a group whose agents allow 8
    listeners: exactly 8 are accepted.  The count runs under the group's
    row lock and must see what the previous holder committed (on MariaDB a
    REPEATABLE READ view taken before the lock would not)."""
    # MariaDB only: SQLite has no row locks (one writer at a time).
    db.upgrade(database_url)
    store = store_mod.Store(db.Database(database_url), 'g1',
                            live_agents=lambda group: {'se1'})
    store.record_agent('se1', 'g1', limits={'max_listeners': 8,
                                            'max_members': 1000})
    count = 20
    rejected, total, snapshot = _listeners_at_once(store, [
        {'loadbalancer_id': f'lb{i}', 'vip_address': f'192.0.2.{i + 1}',
         'admin_state_up': True} for i in range(count)], 'TCP', 'g1')
    assert total == count
    assert len(rejected) == count - 8
    assert sum(len(lb['listeners']) for lb in
               snapshot['load_balancers']) == 8


@pytest.mark.parametrize('database_url', ['mariadb'], indirect=True)
def test_an_unchanged_l7_membership_never_waits_for_a_changes_lock(
        database_url):
    """The tier-2 watcher's look (four a second) finds the L7 SEs as
    stored without the L4 group's lock: while a change holds it, the look
    answers at once; a membership that did change waits for the change to
    commit and then bumps the L4 group."""
    # Row locks (SELECT ... FOR UPDATE): MariaDB's, not SQLite's.
    from tests.unit.dsr_provider.controller import test_store_tier2 as t2
    db.upgrade(database_url)
    store = store_mod.Store(db.Database(database_url), 'g1')
    holder = db.Database(database_url)
    members = {'l7a': {'tunnel_addresses': {'4': '198.18.0.7'},
                       'draining': False}}
    moved = dict(members, l7b={'tunnel_addresses': {'4': '198.18.0.8'},
                               'draining': False})
    try:
        store.create_loadbalancer(t2.graph())
        assert store.set_l7_members(t2.L7G, members) == [t2.L4]
        with store.db.session() as s:
            before = s.get(models.SEGroup, t2.L4).generation
        locked, release = threading.Event(), threading.Event()

        def change_in_progress():
            with holder.session() as s:
                s.get(models.SEGroup, t2.L4, with_for_update=True)
                locked.set()
                release.wait(30)

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            held = pool.submit(change_in_progress)
            assert locked.wait(10)
            started = time.monotonic()
            assert store.set_l7_members(t2.L7G, members) == []
            # The lock is held for up to 30 s.
            assert time.monotonic() - started < 10.0, 'waited for the lock'
            waiting = pool.submit(store.set_l7_members, t2.L7G, moved)
            with pytest.raises(concurrent.futures.TimeoutError):
                waiting.result(timeout=0.5)     # behind the change's lock
            release.set()
            held.result(10)
            assert waiting.result(10) == [t2.L4]
        with store.db.session() as s:
            assert s.get(models.SEGroup, t2.L4).generation == before + 1
        assert store.l7_members(t2.L7G) == moved
    finally:
        release.set()
        store.db.engine.dispose()
        holder.engine.dispose()


@pytest.mark.parametrize('database_url', ['mariadb'], indirect=True)
def test_concurrent_tier2_listeners_on_one_vip_and_port_of_one_l7_group(
        database_url):
    """8 tier-2 load balancers, each in its own L4 group and all in one
    L7 group, on one VIP: 8 listener creates at once on its port 80.
    Each change locks its own L4 group only; the VIP-clash check also
    takes the L7 group's lock, so exactly one is accepted (the L7 SEs
    would split the connections between the rest)."""
    # MariaDB only: SQLite has no row locks (one writer at a time).
    db.upgrade(database_url)
    store = store_mod.Store(db.Database(database_url), 'g1')
    count = 8
    rejected, total, document = _listeners_at_once(store, [
        {'loadbalancer_id': f'lb{i}', 'vip_address': '192.0.2.10',
         'admin_state_up': True,
         'dsr': {'se_group': f'edge{i}', 'tier': 2, 'encapsulation': 'gre',
                 'l7_se_group': 'shared-l7'}} for i in range(count)],
        'HTTP', 'shared-l7')
    assert total == count
    accepted = [f'l{i}' for i in range(count) if f'l{i}' not in rejected]
    assert len(accepted) == 1
    assert [lst['id'] for lb in document['load_balancers']
            for lst in lb['listeners']] == accepted


@pytest.mark.parametrize('scenario', [
    'test_an_update_the_l7_ses_cannot_run_changes_nothing',
    'test_a_rule_update_that_would_stop_its_running_policy_is_refused',
    'test_a_member_update_the_l7_ses_cannot_run_changes_nothing',
    'test_a_load_balancer_its_l7_ses_cannot_run_at_all_is_rejected',
    'test_what_never_ran_does_not_refuse_an_update',
    'test_a_new_rule_never_takes_its_running_policy_off',
    'test_what_a_refused_update_carried_is_refused_with_it'])
def test_refused_tier2_updates_keep_what_runs(database_url, scenario):
    """The unit tests' tier-2 refusals on the real MariaDB (READ
    COMMITTED, the change rolled back to a savepoint under the group's
    row lock, the listener's inside the port check's; a change tried
    again after the objects that never ran are rejected), not only
    SQLite."""
    from tests.unit.dsr_provider.controller import test_store_tier2 as t2
    db.upgrade(database_url)
    store = store_mod.Store(db.Database(database_url), 'g1')
    try:
        getattr(t2, scenario)(store)
    finally:
        store.db.engine.dispose()
