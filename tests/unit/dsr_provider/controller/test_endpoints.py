"""ChangeEndpoint: which changes are applied, dropped or requeued."""

import threading
import time

import oslo_messaging as messaging
import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from dsr_provider.controller import endpoints
from dsr_provider.controller import guard as guard_mod
from dsr_provider.controller import models
from dsr_provider.controller import reporter as reporter_mod
from dsr_provider.controller import store as store_mod
from dsr_wire import auth
from tests.unit.dsr_provider.controller import test_config_flight as \
    flight_test
from tests.unit.dsr_provider.controller.test_guard import enrolled
from tests.unit.dsr_provider.controller.test_reporter import backdate
from tests.unit.dsr_provider.controller.test_reporter import make
from tests.unit.dsr_provider.controller.test_reporter import reported
from tests.unit.dsr_provider.controller.test_store import graph
from tests.unit.dsr_provider.controller import test_store_tier2 as t2
from tests.unit.dsr_provider import fakes

HANDLED = messaging.NotificationResult.HANDLED
REQUEUE = messaging.NotificationResult.REQUEUE


class FakeStore:
    def __init__(self, failures=0):
        self.failures = failures
        self.members = []

    def put_member(self, member):
        if self.failures:
            self.failures -= 1
            raise sa_exc.OperationalError('INSERT', {}, Exception('gone'))
        self.members.append(member)
        return 7


def deliver(endpoint, event_type, payload):
    return endpoint.info({}, 'octavia-dsr-provider', event_type, payload, {})


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(endpoints.time, 'sleep', lambda s: None)


def test_a_change_is_applied_and_acknowledged():
    store = FakeStore()
    ep = endpoints.ChangeEndpoint(endpoints.ProviderEndpoint(store))
    member = {'member_id': 'm', 'pool_id': 'p'}
    assert deliver(ep, 'member_create',
                   {'version': '1.0', 'args': {'member': member}}) == HANDLED
    assert store.members == [member]


def test_a_transient_database_error_is_retried_in_process():
    store = FakeStore(failures=2)
    ep = endpoints.ChangeEndpoint(endpoints.ProviderEndpoint(store))
    assert deliver(ep, 'member_create', {
        'version': '1.0', 'args': {'member': {'member_id': 'm'}}}) == HANDLED
    assert len(store.members) == 1


def test_a_lasting_database_outage_requeues_the_change():
    store = FakeStore(failures=100)
    ep = endpoints.ChangeEndpoint(endpoints.ProviderEndpoint(store))
    assert deliver(ep, 'member_create', {
        'version': '1.0', 'args': {'member': {'member_id': 'm'}}}) == REQUEUE
    assert store.members == []


@pytest.mark.parametrize('event_type,payload', [
    ('member_explode', {'version': '1.0', 'args': {}}),
    ('__init__', {'version': '1.0', 'args': {}}),
    ('member_create', {'version': '2.0', 'args': {'member': {}}}),
    ('member_create', {'version': '1.1', 'args': {'member': {}}}),
    ('member_create', {'version': 'one', 'args': {'member': {}}}),
    ('member_create', {'args': {'member': {}}}),
    ('member_create', {'version': '1.0', 'args': {'bogus': 1}}),
    ('member_create', {'version': '1.0'}),
    ('member_create', None),
])
def test_a_change_that_can_never_apply_is_dropped_not_requeued(
        event_type, payload):
    store = FakeStore()
    ep = endpoints.ChangeEndpoint(endpoints.ProviderEndpoint(store))
    assert deliver(ep, event_type, payload) == HANDLED
    assert store.members == []


def test_the_agents_are_told_right_after_the_commit(store):
    """Not on the leader's next loop round: any controller that stored a
    change publishes the new generation at once, and only once."""
    notifier = fakes.FakeNotifier()
    ep = endpoints.ChangeEndpoint(
        endpoints.ProviderEndpoint(store, notifier))
    lb = {'loadbalancer_id': 'lb1', 'vip_address': '192.0.2.10',
          'admin_state_up': True}
    assert deliver(ep, 'loadbalancer_create', {
        'version': '1.0', 'args': {'loadbalancer': lb}}) == HANDLED
    assert notifier.casts == [('g1', 1)]
    reporter_mod.publish_generations(store, notifier)   # the leader's turn
    assert notifier.casts == [('g1', 1)]


def agent_row(store, se_id):
    with store.db.session() as s:
        return s.get(models.AgentState, se_id)


def test_report_state_stores_the_isolation_keys(store):
    ep = endpoints.AgentEndpoint(store)
    helpers = {'bgp': {'state': 'running', 'restarts': 1,
                       'last_error': 'exabgp exited 1'},
               'health': {'state': 'running', 'restarts': 0,
                          'last_error': None}}
    ep.report_state({}, 'se1', 'g1', {
        'applied_generation': 4, 'error': None, 'rejected_generation': None,
        'rejected_objects': {'members': {'m1': 'loopback address'}},
        'limits': {'max_listeners': 8, 'max_members': 100,
                   'ring_size': 65537, 'conn_table_size': 262144},
        'helpers': helpers, 'serviceable': False, 'announced': []})
    row = agent_row(store, 'se1')
    assert row.applied_generation == 4
    assert row.rejected_objects == {'members': {'m1': 'loopback address'}}
    assert row.limits['max_listeners'] == 8
    assert row.helpers == helpers and row.serviceable is False


def failing(store, failures):
    """store.record_agent raising a database error ``failures`` times."""
    real = store.record_agent
    left = [failures]

    def record_agent(*args, **kwargs):
        if left[0]:
            left[0] -= 1
            raise sa_exc.OperationalError('UPDATE', {}, Exception('gone'))
        return real(*args, **kwargs)
    store.record_agent = record_agent
    return left


def test_an_agent_report_rides_out_a_database_blip(store):
    woken = []
    ep = endpoints.AgentEndpoint(store, on_news=lambda what: woken.append(1))
    left = failing(store, endpoints.REPORT_ATTEMPTS - 1)
    ep.report_state({}, 'se1', 'g1', {'applied_generation': 5})
    assert left == [0]
    assert agent_row(store, 'se1').applied_generation == 5
    assert woken == [1]
    failing(store, endpoints.REPORT_ATTEMPTS - 1)
    ep.report_member_status({}, 'se1', 'g1', 5, {'m1': 'ONLINE'})
    assert agent_row(store, 'se1').member_statuses == {'m1': 'ONLINE'}


def test_a_report_lost_to_an_outage_is_logged_not_raised(store, caplog):
    woken = []
    ep = endpoints.AgentEndpoint(store, on_news=lambda what: woken.append(1))
    left = failing(store, 100)
    # A cast: raising would only make oslo.messaging log a traceback; the
    # agent's next heartbeat carries the state again.
    ep.report_state({}, 'se1', 'g1', {'applied_generation': 5})
    assert left == [100 - endpoints.REPORT_ATTEMPTS]
    assert woken == []
    assert 'state of SE se1 not stored' in caplog.text
    left[0] = 0
    ep.report_state({}, 'se1', 'g1', {'applied_generation': 5})
    assert agent_row(store, 'se1').applied_generation == 5


def test_report_state_of_an_older_agent_lacks_them(store):
    ep = endpoints.AgentEndpoint(store)
    ep.report_state({}, 'se1', 'g1', {'applied_generation': 3,
                                      'error': None,
                                      'rejected_generation': None})
    row = agent_row(store, 'se1')
    assert row.applied_generation == 3
    assert (row.rejected_objects, row.limits, row.helpers,
            row.serviceable) == (None, None, None, None)


def test_report_state_drops_malformed_isolation_keys(store):
    ep = endpoints.AgentEndpoint(store)
    ep.report_state({}, 'se1', 'g1', {
        'applied_generation': 3,
        'rejected_objects': {'amphorae': {'x': 'y'}, 'members': ['m1']},
        'limits': {'max_listeners': 'many', 'max_members': -1,
                   'ring_size': True, 'surprise': 3}})
    row = agent_row(store, 'se1')
    assert row.rejected_objects is None and row.limits is None


class RefusingGuard:
    def check(self, ctxt, method, args):
        raise guard_mod.Refused('not enrolled')


def test_a_stored_state_wakes_the_reporter_a_refused_one_does_not(store):
    woken = []
    ep = endpoints.AgentEndpoint(store, on_news=lambda what: woken.append(
        agent_row(store, 'se1').applied_generation))
    ep.report_state({}, 'se1', 'g1', {'applied_generation': 5})
    # Woken after the commit: the reporter's round reads the new state.
    assert woken == [5]
    refused = endpoints.AgentEndpoint(store, guard=RefusingGuard(),
                                      on_news=lambda what: woken.append('x'))
    refused.report_state({}, 'se1', 'g1', {'applied_generation': 6})
    assert woken == [5]


def test_only_news_wakes_the_leader_a_heartbeat_does_not(store):
    woken = []
    ep = endpoints.AgentEndpoint(store, on_news=woken.append)
    state = {'applied_generation': 5, 'error': None,
             'limits': {'max_listeners': 8}, 'bgp': {'sessions': []}}
    ep.report_state({}, 'se1', 'g1', state)          # a new SE
    ep.report_state({}, 'se1', 'g1', state)          # its heartbeat
    ep.report_state({}, 'se1', 'g1', dict(state, error='ExaBGP down',
                                          limits={'max_listeners': 9}))
    ep.report_stats({}, 'se1', 'g1', {'listeners': {}})
    assert woken == ['state of SE se1']
    ep.report_state({}, 'se1', 'g1', dict(state, applied_generation=6))
    ep.report_member_status({}, 'se1', 'g1', 6, {'m1': 'ONLINE'})
    ep.report_member_status({}, 'se1', 'g1', 6, {'m1': 'ONLINE'})
    ep.report_member_status({}, 'se1', 'g1', 6, {'m1': 'ERROR'})
    ep.report_state({}, 'se1', 'g1', dict(state, applied_generation=6,
                                          serviceable=False))
    assert woken == ['state of SE se1'] * 2 + \
        ['member statuses of SE se1'] * 2 + ['state of SE se1']
    # An SE heard from again after agent_ttl (silent: its statuses had
    # stopped voting) is news, whatever it reports.
    woken.clear()
    store.agent_ttl = -60.0     # every row is older than "now + 60 s"
    ep.report_stats({}, 'se1', 'g1', {'listeners': {}})
    assert woken == ['statistics of SE se1']


# ------------------------------------- changes the store cannot apply
def change(event_type, **args):
    return event_type, {'version': '1.0', 'args': args}


def owed(store):
    """[(kind, id, provisioning status)] of the changed objects owed."""
    with store.db.session() as s:
        return [(kind, item['id'], item['provisioning_status'])
                for p in s.query(models.PendingStatus).order_by(
                    models.PendingStatus.id)
                for kind, items in p.status.items() for item in items
                if item.get('changed')]


@pytest.fixture
def ep(store):
    return endpoints.ChangeEndpoint(endpoints.ProviderEndpoint(store))


def lb_graph():
    return graph()


def test_an_update_of_an_unknown_object_is_error(store, ep):
    """Not left PENDING_UPDATE in Octavia forever."""
    store.create_loadbalancer(lb_graph())
    member = {'member_id': 'm9', 'pool_id': 'p1', 'address': '198.19.9.2',
              'protocol_port': 80}
    assert deliver(ep, *change('member_update', old_member=member,
                               new_member={'weight': 3})) == HANDLED
    assert owed(store)[-1] == ('members', 'm9', 'ERROR')


def test_a_create_under_an_unknown_parent_is_error(store, ep):
    member = {'member_id': 'm9', 'pool_id': 'p9', 'address': '198.19.9.2',
              'protocol_port': 80}
    assert deliver(ep, *change('member_create', member=member)) == HANDLED
    assert owed(store) == [('members', 'm9', 'ERROR')]


def test_a_delete_of_an_unknown_object_is_deleted(store, ep):
    assert deliver(ep, *change('listener_delete', listener={
        'listener_id': 'l9', 'loadbalancer_id': 'lb9'})) == HANDLED
    assert owed(store) == [('listeners', 'l9', 'DELETED')]


def test_a_redelivered_create_of_a_deleted_object_is_ignored(
        store, ep, caplog):
    lb = lb_graph()
    assert deliver(ep, *change('loadbalancer_create',
                               loadbalancer=lb)) == HANDLED
    assert deliver(ep, *change('loadbalancer_delete',
                               loadbalancer=lb)) == HANDLED
    before = owed(store)
    assert deliver(ep, *change('loadbalancer_create',
                               loadbalancer=lb)) == HANDLED
    assert store.snapshot('g1')['load_balancers'] == []
    assert owed(store) == before
    assert 'loadbalancer_create ignored: loadbalancer lb1 was deleted' in \
        caplog.text


@pytest.mark.parametrize('error', [
    sa_exc.IntegrityError('INSERT', {}, Exception('duplicate')),
    sa_exc.DataError('INSERT', {}, Exception('too long')),
])
def test_a_database_error_the_data_causes_is_error_not_requeued(
        store, ep, monkeypatch, error):
    """It would fail the same way on every redelivery."""
    store.create_loadbalancer(lb_graph())

    def put_member(member):
        raise error
    monkeypatch.setattr(store, 'put_member', put_member)
    member = {'member_id': 'm9', 'pool_id': 'p1', 'address': '198.19.9.2',
              'protocol_port': 80}
    assert deliver(ep, *change('member_create', member=member)) == HANDLED
    assert owed(store)[-1] == ('members', 'm9', 'ERROR')


def test_a_dropped_connection_requeues_the_change():
    """pymysql reports some outages as InterfaceError: transient too."""
    class Dropping(FakeStore):
        def put_member(self, member):
            raise sa_exc.InterfaceError('INSERT', {}, Exception('(0, "")'))
    ep = endpoints.ChangeEndpoint(endpoints.ProviderEndpoint(Dropping()))
    assert deliver(ep, *change('member_create', member={
        'member_id': 'm'})) == REQUEUE


def test_an_update_of_an_object_whose_delete_failed_is_error(store, ep):
    """Octavia still has it (ERROR) and lets the user update it: that is
    no stale message to ignore, or the member would stay PENDING_UPDATE."""
    failed_member_delete(store, ep)
    member = lb_graph()['pools'][0]['members'][0]
    assert deliver(ep, *change('member_update', old_member=member,
                               new_member={'weight': 3})) == HANDLED
    assert owed(store) == [('members', 'm1', 'ERROR')]
    # A redelivered create of it is still ignored.
    assert deliver(ep, *change('member_create', member=member)) == HANDLED
    assert owed(store) == [('members', 'm1', 'ERROR')]


def test_a_graph_the_database_refuses_is_error_whole(store, ep, monkeypatch):
    def create_loadbalancer(lb):
        raise sa_exc.DataError('INSERT', {}, Exception('too long'))
    monkeypatch.setattr(store, 'create_loadbalancer', create_loadbalancer)
    assert deliver(ep, *change('loadbalancer_create',
                               loadbalancer=lb_graph())) == HANDLED
    assert sorted(owed(store)) == [
        ('healthmonitors', 'hm1', 'ERROR'), ('listeners', 'l1', 'ERROR'),
        ('loadbalancers', 'lb1', 'ERROR'), ('members', 'm1', 'ERROR'),
        ('members', 'm2', 'ERROR'), ('pools', 'p1', 'ERROR')]


# ------------------------------- changes after a failed delete (ERROR)
def failed_member_delete(store, ep):
    """m1's delete never applied: reported ERROR, Octavia keeps m1 (no
    row here, a tombstone).  Returns (driver lib, reporter, generation
    se1 runs)."""
    lib, reporter = make(store, {'se1'})
    gen = store.create_loadbalancer(lb_graph())
    store.record_agent('se1', 'g1', applied_generation=gen)
    reporter.run_once()
    m1 = lb_graph()['pools'][0]['members'][0]
    assert deliver(ep, *change('member_delete', member=m1)) == HANDLED
    backdate(store, models.PendingStatus, 60)      # never applied
    reporter.run_once()
    assert reported(lib, 'members', 'm1') == ['ACTIVE', 'ERROR']
    return lib, reporter, gen


def new_member(member_id, address, port=80):
    return {'member_id': member_id, 'pool_id': 'p1', 'address': address,
            'protocol_port': port, 'weight': 1, 'admin_state_up': True}


def test_a_batch_leaving_out_a_member_whose_delete_failed_deletes_it(
        store, ep):
    """Octavia marks it PENDING_DELETE and does not pass it: its DELETED
    is owed with the batch, once the SEs apply it -- not PENDING_DELETE
    forever."""
    lib, reporter, gen = failed_member_delete(store, ep)
    m2 = lb_graph()['pools'][0]['members'][1]
    assert deliver(ep, *change('member_batch_update', pool_id='p1',
                               members=[m2])) == HANDLED
    # m2 is passed as it runs: in the status, not a change.
    assert owed(store) == [('members', 'm1', 'DELETED')]
    reporter.run_once()
    assert reported(lib, 'members', 'm1') == ['ACTIVE', 'ERROR']
    store.record_agent('se1', 'g1',
                       applied_generation=store.snapshot('g1')['generation'])
    reporter.run_once()
    assert reported(lib, 'members', 'm1') == ['ACTIVE', 'ERROR', 'DELETED']
    assert reported(lib, 'members', 'm2')[-1] == 'ACTIVE'
    # Reported DELETED: a redelivered batch or delete changes nothing.
    assert deliver(ep, *change('member_delete', member=lb_graph()[
        'pools'][0]['members'][0])) == HANDLED
    assert owed(store) == []


def test_a_batch_leaving_out_a_failed_delete_waits_for_the_ses_whatever(
        store, ep):
    """The rest of the batch refused (a new member on another port) does
    not make the deletes in it DELETED before the SEs apply them."""
    lib, reporter, gen = failed_member_delete(store, ep)
    assert deliver(ep, *change('member_batch_update', pool_id='p1', members=[
        new_member('m3', '198.19.3.2', port=81)])) == HANDLED
    assert sorted(owed(store)) == [('members', 'm1', 'DELETED'),
                                   ('members', 'm2', 'DELETED'),
                                   ('members', 'm3', 'ERROR')]
    reporter.run_once()
    assert reported(lib, 'members', 'm1') == ['ACTIVE', 'ERROR']
    assert reported(lib, 'members', 'm2') == ['ACTIVE']
    store.record_agent('se1', 'g1',
                       applied_generation=store.snapshot('g1')['generation'])
    reporter.run_once()
    assert reported(lib, 'members', 'm1')[-1] == 'DELETED'
    assert reported(lib, 'members', 'm2')[-1] == 'DELETED'
    assert reported(lib, 'members', 'm3') == ['ERROR']


def test_a_batch_listing_a_member_whose_delete_failed_stores_it_again(
        store, ep):
    """additive_only passes the untouched members, ERROR ones too:
    Octavia keeps it and the user asks for it, so it exists again (and
    the rest of the batch applies)."""
    lib, reporter, gen = failed_member_delete(store, ep)
    m1, m2 = lb_graph()['pools'][0]['members']
    assert deliver(ep, *change('member_batch_update', pool_id='p1', members=[
        m1, m2, new_member('m3', '198.19.3.2')])) == HANDLED
    # m2 is untouched (as it runs): in the status, not a change.
    assert owed(store) == [('members', 'm1', 'ACTIVE'),
                           ('members', 'm3', 'ACTIVE')]
    served = store.snapshot('g1')
    (lb,) = served['load_balancers']
    assert [m['id'] for m in lb['listeners'][0]['pool']['members']] == [
        'm1', 'm2', 'm3']
    store.record_agent('se1', 'g1', applied_generation=served['generation'])
    reporter.run_once()
    assert reported(lib, 'members', 'm1')[-1] == 'ACTIVE'
    assert reported(lib, 'members', 'm2')[-1] == 'ACTIVE'
    assert reported(lib, 'members', 'm3')[-1] == 'ACTIVE'
    # Stored again: a later delete of it is a delete of a stored member.
    assert deliver(ep, *change('member_delete', member=m1)) == HANDLED
    assert owed(store) == [('members', 'm1', 'DELETED')]


def test_a_listener_update_after_a_failed_rule_delete_applies(store, ep):
    """Octavia's old listener carries its L7 policies and rules, the rule
    whose delete failed too: they are not put again (the update would be
    refused, healthy policies ERROR), and the stored ones stay as they
    are."""
    import copy
    lib, reporter = t2.make_reporter(store, {t2.L4: {'se1'},
                                             t2.L7G: {'l7a'}})
    gen = store.create_loadbalancer(t2.graph())
    store.record_agent('se1', t2.L4, applied_generation=gen)
    with store.db.session() as s:
        g7 = s.get(models.SEGroup, t2.L7G).generation
    store.record_agent('l7a', t2.L7G, applied_generation=g7)
    reporter.run_once()
    listener = t2.graph()['listeners'][0]
    rule = listener['l7policies'][0]['rules'][0]
    assert deliver(ep, *change('l7rule_delete', l7rule=rule)) == HANDLED
    backdate(store, models.PendingStatus, 60)     # never applied
    reporter.run_once()
    assert owed(store) == []
    with store.db.session() as s:
        policy_before = dict(s.get(models.L7Policy, 'pol1').doc)
    assert deliver(ep, *change(
        'listener_update', old_listener=copy.deepcopy(listener),
        new_listener={'timeout_client_data': 60000})) == HANDLED
    assert owed(store) == [('listeners', 'l2', 'ACTIVE')]
    with store.db.session() as s:
        assert s.get(models.Listener, 'l2').doc['timeout_client_data'] == \
            60000
        assert s.get(models.L7Policy, 'pol1').doc == policy_before
        assert s.get(models.L7Rule, 'r1') is None


# ------------------------------------------- a change that fails on a bug
def bug_in(store, monkeypatch, method):
    def broken(*args):
        raise RuntimeError('a bug')
    monkeypatch.setattr(store, method, broken)


def test_a_change_that_fails_on_a_bug_is_error_not_requeued(
        store, ep, monkeypatch, caplog):
    """oslo.messaging requeues what an endpoint raises, and a requeued
    message comes straight back: every controller would fail on it
    forever while Octavia showed PENDING_CREATE."""
    store.create_loadbalancer(lb_graph())
    bug_in(store, monkeypatch, 'put_member')
    member = {'member_id': 'm9', 'pool_id': 'p1', 'address': '198.19.9.2',
              'protocol_port': 80}
    assert deliver(ep, *change('member_create', member=member)) == HANDLED
    assert owed(store)[-1] == ('members', 'm9', 'ERROR')
    assert 'internal error: RuntimeError: a bug' in caplog.text


def test_a_delete_that_fails_on_a_bug_is_error(store, ep, monkeypatch):
    lb = lb_graph()
    store.create_loadbalancer(lb)
    bug_in(store, monkeypatch, 'delete_loadbalancer')
    assert deliver(ep, *change('loadbalancer_delete',
                               loadbalancer=lb)) == HANDLED
    assert ('loadbalancers', 'lb1', 'ERROR') in owed(store)
    assert store.snapshot('g1')['load_balancers'] != []


def test_a_change_whose_error_cannot_be_stored_for_a_bug_is_dropped(
        store, ep, monkeypatch, caplog):
    store.create_loadbalancer(lb_graph())
    bug_in(store, monkeypatch, 'put_member')
    bug_in(store, monkeypatch, 'refuse')
    member = {'member_id': 'm9', 'pool_id': 'p1', 'address': '198.19.9.2',
              'protocol_port': 80}
    assert deliver(ep, *change('member_create', member=member)) == HANDLED
    assert 'could not be set ERROR' in caplog.text


def test_a_bug_met_during_an_outage_requeues_the_change(
        store, ep, monkeypatch):
    """Its ERROR cannot be stored now: another try, once the database is
    back, can store it (or apply the change)."""
    store.create_loadbalancer(lb_graph())
    bug_in(store, monkeypatch, 'put_member')

    def down(*args):
        raise sa_exc.OperationalError('INSERT', {}, Exception('gone'))
    monkeypatch.setattr(store, 'refuse', down)
    member = {'member_id': 'm9', 'pool_id': 'p1', 'address': '198.19.9.2',
              'protocol_port': 80}
    assert deliver(ep, *change('member_create', member=member)) == REQUEUE


@pytest.mark.parametrize('error', [
    sa_exc.TimeoutError('QueuePool limit of size 5 overflow 10 reached'),
    sa_exc.DisconnectionError('connection lost'),
])
def test_no_connection_from_the_pool_requeues_the_change(
        store, ep, monkeypatch, error):
    """Not a DBAPIError, and not a bug: many changes at once (the listener
    runs more threads than the pool has connections) or a server that
    stopped answering.  Another try applies the change."""
    store.create_loadbalancer(lb_graph())

    def busy(*args):
        raise error
    monkeypatch.setattr(store, 'put_member', busy)
    member = {'member_id': 'm9', 'pool_id': 'p1', 'address': '198.19.9.2',
              'protocol_port': 80}
    before = owed(store)
    assert deliver(ep, *change('member_create', member=member)) == REQUEUE
    assert owed(store) == before


def test_a_bug_whose_error_cannot_get_a_connection_requeues(
        store, ep, monkeypatch):
    store.create_loadbalancer(lb_graph())
    bug_in(store, monkeypatch, 'put_member')

    def busy(*args):
        raise sa_exc.TimeoutError('QueuePool limit reached')
    monkeypatch.setattr(store, 'refuse', busy)
    member = {'member_id': 'm9', 'pool_id': 'p1', 'address': '198.19.9.2',
              'protocol_port': 80}
    assert deliver(ep, *change('member_create', member=member)) == REQUEUE


def test_a_stored_or_refused_change_wakes_the_leader_after_its_commit(
        store):
    woken = []
    ep = endpoints.ChangeEndpoint(endpoints.ProviderEndpoint(
        store, on_change=lambda what: woken.append((what, owed(store)))))
    assert deliver(ep, *change('loadbalancer_create',
                               loadbalancer=lb_graph())) == HANDLED
    member = {'member_id': 'm9', 'pool_id': 'p9', 'address': '198.19.9.2',
              'protocol_port': 80}
    assert deliver(ep, *change('member_create', member=member)) == HANDLED
    # Each wake came after its commit: the round it starts reads it.
    assert len(woken) == 2
    assert ('loadbalancers', 'lb1', 'ACTIVE') in woken[0][1]
    assert woken[1][1][-1] == ('members', 'm9', 'ERROR')


def test_statistics_keep_the_listeners_only(store):
    """Octavia takes listener statistics alone: the per-member counters an
    agent sends are not stored (13 x the listeners' size at scale, past
    MariaDB's max_allowed_packet); a malformed report stores none."""
    ep = endpoints.AgentEndpoint(store)
    listeners = {'l1': {'bytes_in': 10, 'total_connections': 1}}
    ep.report_stats({}, 'se1', 'g1', {'listeners': listeners, 'members': {
        'm1': {'bytes_in': 10}}})
    with store.db.session() as s:
        assert s.get(models.AgentState, 'se1').stats == {
            'listeners': listeners}
    ep.report_stats({}, 'se1', 'g1', {'listeners': ['junk']})
    with store.db.session() as s:
        assert s.get(models.AgentState, 'se1').stats == {'listeners': {}}


# ------------------------------------------------ reports out of order
def test_a_report_that_arrives_after_a_newer_one_is_dropped(store, tmp_path):
    """Two signed reports of one SE handled at once (two RPC threads, two
    controllers) may be stored in the other order: the older one,
    arriving last, must not replace the newer state -- an SE's state
    stays as it is until its next report (10 s), its member statuses
    until they change again.  Each kind is ordered on its own."""
    signer = enrolled(store, tmp_path, (('se1', 'g1'),))['se1']
    ep = endpoints.AgentEndpoint(store, guard=guard_mod.AgentGuard(store.db))

    def signed(method, **args):
        return signer.context(method, dict(se_id='se1', se_group='g1',
                                           **args))
    old_state = {'applied_generation': 5}
    new_state = {'applied_generation': 6}
    old = signed('report_state', state=old_state)
    new = signed('report_state', state=new_state)
    stats = signed('report_stats', stats={'listeners': {}})
    ep.report_state(new, 'se1', 'g1', new_state)
    ep.report_stats(stats, 'se1', 'g1', {'listeners': {}})
    ep.report_state(old, 'se1', 'g1', old_state)
    assert agent_row(store, 'se1').applied_generation == 6
    # Statuses: ERROR then ONLINE, stored the other way round.
    error = signed('report_member_status', generation=6,
                   statuses={'m1': 'ERROR'})
    online = signed('report_member_status', generation=6,
                    statuses={'m1': 'ONLINE'})
    ep.report_member_status(online, 'se1', 'g1', 6, {'m1': 'ONLINE'})
    ep.report_member_status(error, 'se1', 'g1', 6, {'m1': 'ERROR'})
    assert agent_row(store, 'se1').member_statuses == {'m1': 'ONLINE'}
    # In order, each is stored.
    newer = signed('report_state', state={'applied_generation': 7})
    ep.report_state(newer, 'se1', 'g1', {'applied_generation': 7})
    assert agent_row(store, 'se1').applied_generation == 7


def test_a_report_after_the_ses_clock_went_back_is_taken(store):
    """The last report was signed ahead of this controller's clock by more
    than CLOCK_SKEW: the SE's clock was fast and has been set back, and
    its reports from now on are the newer ones -- stored, or they would
    wait for its clock.  A report that was merely late is dropped, and
    still counts as a sign of life."""
    now = time.time()
    assert store.record_agent('se1', 'g1', sent=('report_state', now - 1),
                              applied_generation=5)
    store.agent_ttl = 0.0          # every stored report is "silent" at once
    assert store.record_agent('se1', 'g1', sent=('report_state', now - 2),
                              applied_generation=4) is True
    row = agent_row(store, 'se1')
    assert row.applied_generation == 5 and row.updated_at >= now
    store.agent_ttl = 30.0
    assert store.record_agent('se1', 'g1', sent=('report_state', now - 2),
                              applied_generation=4) is False
    # Fast by a minute, then set back.
    store.record_agent('se1', 'g1', sent=('report_state', now + 60),
                       applied_generation=6)
    store.record_agent('se1', 'g1', sent=('report_state', now + 0.5),
                       applied_generation=7)
    assert agent_row(store, 'se1').applied_generation == 7


def test_two_reports_at_once_keep_the_newer_on_sqlite(store, monkeypatch):
    """The compare and set holds with two RPC threads at once on SQLite,
    where FOR UPDATE means nothing: the older report's transaction is held
    right after it read the row, the newer one runs meanwhile."""
    now = time.time()
    store.record_agent('se1', 'g1', sent=('report_state', now - 10),
                       applied_generation=1)
    real = store_mod._overtaken
    read, resume = threading.Event(), threading.Event()

    def overtaken(*args):
        if args[2] == now - 2:          # the older report
            read.set()
            resume.wait(10)
        return real(*args)
    monkeypatch.setattr(store_mod, '_overtaken', overtaken)
    older = threading.Thread(target=store.record_agent, args=(
        'se1', 'g1'), kwargs={'sent': ('report_state', now - 2),
                              'applied_generation': 2})
    # The newer report either waits for the older one's transaction (it
    # asks for SQLite's write lock) or, without that lock, is stored at
    # once: the older one resumes at whichever comes first.
    newer_went = threading.Event()

    def newer_report():
        try:
            store.record_agent('se1', 'g1', sent=('report_state', now - 1),
                               applied_generation=3)
        finally:
            newer_went.set()
    newer = threading.Thread(target=newer_report)

    def asks_for_the_lock(conn, cursor, statement, *args):
        if threading.current_thread() is newer and \
                statement.startswith('BEGIN IMMEDIATE'):
            newer_went.set()
    sa.event.listen(store.db.engine, 'before_cursor_execute',
                    asks_for_the_lock)
    try:
        older.start()
        assert read.wait(10)
        newer.start()
        assert newer_went.wait(10)
        resume.set()
        older.join(10)
        newer.join(10)
    finally:
        resume.set()
        sa.event.remove(store.db.engine, 'before_cursor_execute',
                        asks_for_the_lock)
    assert agent_row(store, 'se1').applied_generation == 3


def test_an_l7_ses_reported_tunnel_addresses_are_kept_if_well_formed(store):
    ep = endpoints.AgentEndpoint(store)
    ep.report_state({}, 'l7a', 'edge-l7', {'tunnel_addresses': {
        '4': '198.18.7.1', '6': '2001:db8:7::1'}})
    assert agent_row(store, 'l7a').tunnel_addresses == {
        '4': '198.18.7.1', '6': '2001:db8:7::1'}
    ep.report_state({}, 'l7a', 'edge-l7', {'tunnel_addresses': {
        '4': '2001:db8:7::1', '6': 'nope', '5': '198.18.7.1'}})
    assert agent_row(store, 'l7a').tunnel_addresses is None
    ep.report_state({}, 'l7a', 'edge-l7', {'tunnel_addresses': ['x']})
    assert agent_row(store, 'l7a').tunnel_addresses is None


def members_of(document):
    """The member ids of an L4 document, packed or not."""
    ids = []
    for lb in document['load_balancers']:
        if isinstance(lb, str):     # a packed line
            lb = auth.unpack_line(lb)
        ids += [m['id'] for listener in lb['listeners']
                for m in listener['pool']['members']]
    return sorted(ids)


@pytest.fixture
def signer(tmp_path):
    auth.generate_key(str(tmp_path / 'controller.key'))
    return auth.Signer(str(tmp_path / 'controller.key'))


def test_a_get_config_during_a_build_has_a_change_committed_before_it(
        store, signer, monkeypatch):
    """The stale answer of 939e801: an SE told of a change asks while a
    build that read the database before the commit is under way.  It gets
    the next build, whatever the variant it asks for."""
    store.create_loadbalancer(graph())
    ep = endpoints.AgentEndpoint(store, signer=signer)
    read, resume = threading.Event(), threading.Event()
    real = store.snapshot

    def snapshot(se_group):
        document = real(se_group)
        if not read.is_set():
            read.set()
            assert resume.wait(flight_test.DEADLINE)
        return document
    monkeypatch.setattr(store, 'snapshot', snapshot)
    before = flight_test.Ask(ep.get_config, {}, 'g1', 'se1', True)
    assert read.wait(flight_test.DEADLINE)
    generation = store.put_member({
        'member_id': 'm3', 'pool_id': 'p1', 'address': '198.19.3.2',
        'protocol_port': 80, 'weight': 1, 'admin_state_up': True})
    after = [flight_test.Ask(ep.get_config, {}, 'g1', se, packed)
             for se, packed in (('se2', True), ('se3', False))]
    flight_test.wait_until(lambda: ep._answers.queued('g1') == 2)
    resume.set()
    public = signer._key.public_key()
    old = auth.open_envelope(before.result(), lambda kid: public)
    assert members_of(old) == ['m1', 'm2']
    packed, whole = (ask.result() for ask in after)
    assert (packed['format'], whole['format']) == (auth.PACKED_FORMAT,
                                                   auth.SIGNED_FORMAT)
    for answer in (packed, whole):
        new = auth.open_envelope(answer, lambda kid: public)
        assert new['generation'] == generation > old['generation']
        assert members_of(new) == ['m1', 'm2', 'm3']


class Documents:
    def __init__(self, document):
        self.document = document

    def snapshot(self, se_group):
        return dict(self.document, se_group=se_group)


L4 = {'schema_version': 1, 'generation': 4, 'load_balancers': [
    {'id': 'lb1', 'vips': [{'address': '192.0.2.1'}], 'listeners': []}]}
L7 = {'schema_version': 1, 'role': 'tier2', 'generation': 4,
      'load_balancers': []}


@pytest.mark.parametrize('document', [L4, L7])
@pytest.mark.parametrize('packed', [True, False])
def test_each_get_config_variant_is_answered_as_asked(
        signer, document, packed):
    unsigned = endpoints.AgentEndpoint(Documents(document))
    expected = dict(document, se_group='g1')
    assert unsigned.get_config({}, 'g1', 'se1', packed) == expected
    ep = endpoints.AgentEndpoint(Documents(document), signer=signer)
    answer = ep.get_config({}, 'g1', 'se1', packed)
    # Only an L4 document is ever packed.
    assert answer['format'] == (auth.PACKED_FORMAT if packed and document
                                is L4 else auth.SIGNED_FORMAT)
    opened = auth.open_envelope(answer, lambda kid: signer._key.public_key())
    if answer['format'] == auth.PACKED_FORMAT:
        opened['load_balancers'] = [auth.unpack_line(line) for line in
                                    opened['load_balancers']]
    assert opened == expected
