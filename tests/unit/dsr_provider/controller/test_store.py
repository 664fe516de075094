from amphora_agent import snapshot as snapshot_mod
import pytest

from dsr_provider.controller import models
from dsr_provider.controller import reporter as reporter_mod
from dsr_provider.controller import store as store_mod
from tests.unit.dsr_provider import fakes


def graph():
    return {
        'loadbalancer_id': 'lb1', 'vip_address': '192.0.2.10',
        'additional_vips': [{'ip_address': '2001:db8:f::10'}],
        'admin_state_up': True, 'flavor': {'encapsulation': 'gre'},
        'listeners': [{
            'listener_id': 'l1', 'loadbalancer_id': 'lb1', 'protocol': 'TCP',
            'protocol_port': 80, 'default_pool_id': 'p1',
            'admin_state_up': True}],
        'pools': [{
            'pool_id': 'p1', 'loadbalancer_id': 'lb1', 'listener_id': 'l1',
            'lb_algorithm': 'SOURCE_IP_PORT', 'protocol': 'TCP',
            'admin_state_up': True,
            'healthmonitor': {'healthmonitor_id': 'hm1', 'pool_id': 'p1',
                              'type': 'HTTP', 'delay': 5, 'timeout': 3,
                              'max_retries': 2, 'max_retries_down': 3,
                              'http_method': 'GET', 'url_path': '/',
                              'expected_codes': '200'},
            'members': [{'member_id': 'm1', 'pool_id': 'p1',
                         'address': '198.19.1.2', 'protocol_port': 80,
                         'weight': 1, 'admin_state_up': True},
                        {'member_id': 'm2', 'pool_id': 'p1',
                         'address': '198.19.2.2', 'protocol_port': 80,
                         'weight': 2, 'admin_state_up': True,
                         'monitor_port': 8080}]}]}


def pending(store):
    with store.db.session() as s:
        return [(p.generation, p.status)
                for p in s.query(models.PendingStatus).order_by(
                    models.PendingStatus.id)]


def test_full_graph_snapshot_is_a_valid_agent_snapshot(store):
    generation = store.create_loadbalancer(graph())
    doc = store.snapshot('g1')
    snap = snapshot_mod.parse(doc)  # the agent's own validation
    assert snap.generation == generation == 1
    (lb,) = snap.load_balancers
    assert [str(v) for v in lb.vips] == ['192.0.2.10', '2001:db8:f::10']
    pool = lb.listeners[0].pool
    assert pool.encap == 'gre' and pool.health_monitor.type == 'HTTP'
    assert [(m.id, m.weight, m.monitor_port) for m in pool.members] == [
        ('m1', 1, None), ('m2', 2, 8080)]
    ((_, status),) = pending(store)
    assert {k: sorted(i['id'] for i in v) for k, v in status.items()} == {
        'loadbalancers': ['lb1'], 'listeners': ['l1'], 'pools': ['p1'],
        'members': ['m1', 'm2'], 'healthmonitors': ['hm1']}


def test_connection_limit_and_allowed_cidrs_reach_the_dataplane(store):
    """Controller snapshot -> agent parser -> planner: the listener's limit
    and allow list reach every dataplane listener (one per VIP); a
    listener update changes them; -1 is no limit and is not sent."""
    from amphora_agent import desired
    doc = graph()
    doc['listeners'][0].update(connection_limit=200,
                               allowed_cidrs=['203.0.113.0/24',
                                              '2001:db8:c::/64'])
    store.create_loadbalancer(doc)
    sent = store.snapshot('g1')['load_balancers'][0]['listeners'][0]
    assert sent['connection_limit'] == 200
    plan = desired.plan(snapshot_mod.parse(store.snapshot('g1')),
                        lambda member_id: True)
    specs = sorted(plan.state.listeners.values(), key=lambda s: str(s.key))
    assert [s.conn_limit for s in specs] == [200, 200]
    assert {str(n) for n in specs[0].allowed_cidrs} == {
        '203.0.113.0/24', '2001:db8:c::/64'}
    assert {str(n) for s in specs for n in s.acl()} == {
        '203.0.113.0/24', '2001:db8:c::/64'}  # one family per VIP
    update = dict(doc['listeners'][0], connection_limit=-1,
                  allowed_cidrs=None)
    store.put_listener(update)
    sent = store.snapshot('g1')['load_balancers'][0]['listeners'][0]
    assert 'connection_limit' not in sent and sent['allowed_cidrs'] == []
    plan = desired.plan(snapshot_mod.parse(store.snapshot('g1')),
                        lambda member_id: True)
    assert all(s.conn_limit == 0 and s.allowed_cidrs is None
               for s in plan.state.listeners.values())


def test_timeout_client_data_reaches_the_dataplane(store):
    """The listener's timeout_client_data (Octavia fills in 50000 when
    the user gives none) becomes the dataplane listeners' idle timeout;
    an update changes it; 0 is no idle timeout."""
    from amphora_agent import desired
    doc = graph()
    doc['listeners'][0].update(timeout_client_data=50000)
    store.create_loadbalancer(doc)
    sent = store.snapshot('g1')['load_balancers'][0]['listeners'][0]
    assert sent['timeout_client_data'] == 50000
    store.put_listener(dict(doc['listeners'][0], timeout_client_data=1000))
    plan = desired.plan(snapshot_mod.parse(store.snapshot('g1')),
                        lambda member_id: True)
    assert [s.idle_timeout_ms for s in plan.state.listeners.values()] == [
        1000, 1000]
    store.put_listener(dict(doc['listeners'][0], timeout_client_data=0))
    plan = desired.plan(snapshot_mod.parse(store.snapshot('g1')),
                        lambda member_id: True)
    assert all(s.idle_timeout_ms == 0
               for s in plan.state.listeners.values())


def test_member_changes_report_object_and_parents(store):
    store.create_loadbalancer(graph())
    store.put_member({'member_id': 'm3', 'pool_id': 'p1',
                      'address': '198.19.3.2', 'protocol_port': 80})
    store.delete_member('m1')
    status = pending(store)[-1][1]
    assert store_mod.octavia_status(status) == {
        'members': [{'id': 'm1', 'provisioning_status': 'DELETED'}],
        'pools': [{'id': 'p1', 'provisioning_status': 'ACTIVE'}],
        'loadbalancers': [{'id': 'lb1', 'provisioning_status': 'ACTIVE'}],
        'listeners': [{'id': 'l1', 'provisioning_status': 'ACTIVE'}]}
    failed = store_mod.octavia_status(pending(store)[-2][1], failed=True)
    assert failed['members'] == [{'id': 'm3',
                                  'provisioning_status': 'ERROR',
                                  'operating_status': 'ERROR'}]
    assert failed['pools'] == [{'id': 'p1', 'provisioning_status': 'ACTIVE'}]
    members = snapshot_mod.parse(store.snapshot('g1')).load_balancers[0] \
        .listeners[0].pool.members
    assert [m.id for m in members] == ['m2', 'm3']


def test_batch_update_and_cascade_delete(store):
    store.create_loadbalancer(graph())
    store.batch_update_members('p1', [
        {'member_id': 'm2', 'pool_id': 'p1', 'address': '198.19.2.2',
         'protocol_port': 80, 'weight': 5},
        {'member_id': 'm9', 'pool_id': 'p1', 'address': '198.19.9.2',
         'protocol_port': 80}])
    members = snapshot_mod.parse(store.snapshot('g1')).load_balancers[0] \
        .listeners[0].pool.members
    assert [(m.id, m.weight) for m in members] == [('m2', 5), ('m9', 1)]
    store.delete_loadbalancer('lb1', cascade=True)
    assert store.snapshot('g1')['load_balancers'] == []
    status = store_mod.octavia_status(pending(store)[-1][1])
    assert all(item['provisioning_status'] == 'DELETED'
               for items in status.values() for item in items)
    assert sum(len(v) for v in status.values()) == 6


class FakeDriverLib:
    """Octavia's driver-agent sockets, at the boundary of a unit test."""

    def __init__(self, visible=True):
        self.statuses = []
        self.stats = []
        self.visible = visible

    def update_loadbalancer_status(self, status):
        self.statuses.append(status)

    def update_listener_statistics(self, stats):
        self.stats.append(stats)

    def get_loadbalancer(self, lb_id):
        return {'id': lb_id} if self.visible else None

    get_member = get_listener = get_pool = get_healthmonitor = \
        get_loadbalancer


def test_reporter_waits_for_every_live_agent(store):
    lib, notifier = FakeDriverLib(), fakes.FakeNotifier()
    live = {'se1', 'se2'}
    reporter = reporter_mod.Reporter(store, notifier, lib,
                                     lambda group: live)
    gen = store.create_loadbalancer(graph())
    reporter.run_once()
    assert notifier.casts == [('g1', gen)]
    assert lib.statuses == []                      # nobody applied yet
    store.record_agent('se1', 'g1', applied_generation=gen)
    reporter.run_once()
    assert lib.statuses == []                      # se2 has not
    store.record_agent('se2', 'g1', applied_generation=gen)
    store.record_agent('se3-dead', 'g1', applied_generation=0)
    reporter.run_once()
    (status,) = lib.statuses
    assert status['loadbalancers'] == [{'id': 'lb1',
                                        'provisioning_status': 'ACTIVE'}]
    assert pending(store) == []


def test_reporter_reports_error_when_an_agent_rejects(store):
    lib = FakeDriverLib()
    reporter = reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                     lambda group: {'se1'})
    gen = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=0,
                       rejected_generation=gen, error='bad')
    reporter.run_once()
    assert lib.statuses[0]['loadbalancers'][0]['provisioning_status'] == \
        'ERROR'


def test_operating_status_and_stats_aggregate_over_ses(store):
    lib = FakeDriverLib()
    reporter = reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                     lambda group: {'se1', 'se2'})
    store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=1,
                       member_statuses={'m1': 'ONLINE', 'm2': 'ERROR'},
                       stats={'listeners': {'l1': {
                           'bytes_in': 10, 'bytes_out': 0, 'packets': 1,
                           'total_connections': 2, 'active_connections': 1,
                           'request_errors': 0}}})
    store.record_agent('se2', 'g1', applied_generation=1,
                       member_statuses={'m1': 'ONLINE', 'm2': 'ERROR'},
                       stats={'listeners': {'l1': {
                           'bytes_in': 5, 'bytes_out': 0, 'packets': 1,
                           'total_connections': 3, 'active_connections': 0,
                           'request_errors': 1}}})
    reporter.run_once(stats_interval=0)
    operating = [s for s in lib.statuses if 'members' in s and
                 'operating_status' in s['members'][0]][0]
    assert {m['id']: m['operating_status'] for m in operating['members']} \
        == {'m1': 'ONLINE', 'm2': 'ERROR'}
    assert operating['pools'] == [{'id': 'p1', 'operating_status':
                                   'DEGRADED',
                                   'provisioning_status': 'ACTIVE'}]
    assert operating['loadbalancers'][0]['operating_status'] == 'DEGRADED'
    assert lib.stats[-1]['listeners'] == [{
        'id': 'l1', 'active_connections': 1, 'bytes_in': 15,
        'bytes_out': 0, 'request_errors': 1, 'total_connections': 5}]
    count = len(lib.statuses)
    reporter.run_once(stats_interval=0)
    assert len(lib.statuses) == count  # unchanged statuses are not resent


class FailingStatsLib(FakeDriverLib):
    fail = False

    def update_listener_statistics(self, stats):
        if self.fail:
            raise RuntimeError('driver agent away')
        super().update_listener_statistics(stats)


def test_statistics_are_sent_when_they_change_and_all_again_at_refresh(
        store, monkeypatch):
    """Each update costs Octavia a driver-agent child: idle listeners'
    unchanged totals are not sent every round, only at STATS_REFRESH;
    an update that failed is sent again."""
    clock = [1000.0]
    monkeypatch.setattr(reporter_mod.time, 'monotonic', lambda: clock[0])
    lib = FailingStatsLib()
    reporter = reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                     lambda group: {'se1'})
    g = graph()
    g['listeners'].append(dict(g['listeners'][0], listener_id='l2',
                               protocol_port=81, default_pool_id=None))
    store.create_loadbalancer(g)

    def report(l1, l2):
        store.record_agent('se1', 'g1', applied_generation=1, stats={
            'listeners': {lid: {'bytes_in': n, 'bytes_out': 0,
                                'total_connections': n,
                                'active_connections': 0,
                                'request_errors': 0}
                          for lid, n in (('l1', l1), ('l2', l2))}})

    def sent():
        return {e['id']: e['total_connections']
                for e in lib.stats[-1]['listeners']}
    report(1, 1)
    reporter.report_statistics()
    assert sent() == {'l1': 1, 'l2': 1}
    clock[0] += 1
    reporter.report_statistics()
    assert len(lib.stats) == 1                 # nothing moved
    report(2, 1)
    reporter.report_statistics()
    assert len(lib.stats) == 2 and sent() == {'l1': 2}
    report(3, 1)
    lib.fail = True
    reporter.report_statistics()               # lost: sent again
    lib.fail = False
    reporter.report_statistics()
    assert len(lib.stats) == 3 and sent() == {'l1': 3}
    clock[0] += reporter_mod.STATS_REFRESH
    reporter.report_statistics()
    assert len(lib.stats) == 4 and sent() == {'l1': 3, 'l2': 1}
    reporter.report_statistics()
    assert len(lib.stats) == 4


def test_record_agent_first_reports_racing_both_land(store, monkeypatch):
    """An agent's first report_state and report_member_status arrive
    together: both see no row and insert it; the loser of the insert
    updates the winner's row instead of losing its report."""
    from sqlalchemy import orm

    from dsr_provider.controller import models
    store.record_agent('se1', 'g1', member_statuses={'m1': 'ONLINE'})
    real_get = orm.Session.get
    missed = []

    def get(session, model, key, *a, **kw):
        if model is models.AgentState and not missed:
            missed.append(key)      # as if the other insert had not landed
            return None
        return real_get(session, model, key, *a, **kw)
    monkeypatch.setattr(orm.Session, 'get', get)
    store.record_agent('se1', 'g1', applied_generation=3)
    assert missed == ['se1']
    with store.db.session() as s:
        row = s.get(models.AgentState, 'se1')
        assert (row.applied_generation, row.member_statuses) == (
            3, {'m1': 'ONLINE'})


def tombstones(store):
    with store.db.session() as s:
        return {(t.kind, t.id): (t.parent_id, t.se_groups, t.outcome)
                for t in s.query(models.Tombstone)}


def test_a_delete_leaves_tombstones_for_its_whole_cascade(store):
    store.create_loadbalancer(graph())
    store.delete_loadbalancer('lb1')
    assert tombstones(store) == {
        ('loadbalancers', 'lb1'): (None, ['g1'], None),
        ('listeners', 'l1'): ('lb1', ['g1'], None),
        ('pools', 'p1'): ('lb1', ['g1'], None),
        ('members', 'm1'): ('p1', ['g1'], None),
        ('members', 'm2'): ('p1', ['g1'], None),
        ('healthmonitors', 'hm1'): ('p1', ['g1'], None)}


@pytest.mark.parametrize('redelivered', [
    lambda store: store.create_loadbalancer(graph()),
    lambda store: store.update_loadbalancer({'loadbalancer_id': 'lb1',
                                             'name': 'x'}),
    lambda store: store.put_listener(graph()['listeners'][0]),
])
def test_a_redelivered_change_of_a_deleted_object_brings_nothing_back(
        store, redelivered):
    """RabbitMQ redelivers a message its controller committed but did not
    acknowledge: the object must not come back onto the SEs."""
    store.create_loadbalancer(graph())
    generation = store.delete_loadbalancer('lb1')
    with pytest.raises(LookupError, match="was deleted"):
        redelivered(store)
    assert store.snapshot('g1')['load_balancers'] == []
    assert store.snapshot('g1')['generation'] == generation


def test_a_redelivered_member_create_after_its_delete_is_refused(store):
    store.create_loadbalancer(graph())
    member = graph()['pools'][0]['members'][0]
    store.delete_member('m1')
    with pytest.raises(LookupError, match="was deleted"):
        store.put_member(member)
    (listener,) = store.snapshot('g1')['load_balancers'][0]['listeners']
    assert [m['id'] for m in listener['pool']['members']] == ['m2']
