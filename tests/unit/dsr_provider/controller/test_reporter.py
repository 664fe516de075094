"""The leader's verdicts: per-object provisioning from the agents'
rejected_objects, operating status in the same update, no live SE."""

import logging
import threading
import time

from cryptography.hazmat.primitives.asymmetric import ed25519

from octavia_lib.api.drivers import exceptions as driver_exceptions

from dsr_provider.controller import db as db_mod
from dsr_provider.controller import enrolment
from dsr_provider.controller import models
from dsr_provider.controller import reporter as reporter_mod
from dsr_provider.controller import store as store_mod
from tests.unit.dsr_provider.controller.test_l4_snapshot import statements
from tests.unit.dsr_provider.controller.test_store import FakeDriverLib
from tests.unit.dsr_provider.controller.test_store import graph
from tests.unit.dsr_provider.controller.test_store import pending
from tests.unit.dsr_provider import fakes


def make(store, live, lib=None):
    lib = lib or FakeDriverLib()
    return lib, reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                      lambda group: set(live))


def reported(lib, kind, obj_id, field='provisioning_status'):
    """Every value of `field` sent for the object, in order."""
    return [item[field] for st in lib.statuses for item in st.get(kind, ())
            if item['id'] == obj_id and field in item]


def test_an_object_an_agent_rejects_is_error_alone(store, caplog):
    lib, reporter = make(store, {'se1', 'se2'})
    gen = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=gen,
                       rejected_objects={'healthmonitors': {
                           'hm1': 'expected_codes 999 out of 100-599'}})
    store.record_agent('se2', 'g1', applied_generation=gen)
    with caplog.at_level(logging.ERROR):
        reporter.run_once()
    (status,) = [st for st in lib.statuses if 'loadbalancers' in st and
                 'provisioning_status' in st['loadbalancers'][0]]
    assert status['healthmonitors'] == [{
        'id': 'hm1', 'provisioning_status': 'ERROR',
        'operating_status': 'ERROR'}]
    assert {i['provisioning_status'] for k, items in status.items()
            if k != 'healthmonitors' for i in items} == {'ACTIVE'}
    assert caplog.text.count('rejected by SE') == 1
    assert ('healthmonitor hm1 rejected by SE se1 of group g1: '
            'expected_codes 999 out of 100-599') in caplog.text
    # Still rejected: the operating loop never flips it, a later change
    # never makes it ACTIVE.
    reporter.run_once()
    gen = store.put_member({'member_id': 'm3', 'pool_id': 'p1',
                            'address': '198.19.3.2', 'protocol_port': 80})
    store.record_agent('se1', 'g1', applied_generation=gen)
    store.record_agent('se2', 'g1', applied_generation=gen)
    reporter.run_once()
    assert reported(lib, 'healthmonitors', 'hm1') == ['ERROR']
    assert set(reported(lib, 'healthmonitors', 'hm1',
                        'operating_status')) == {'ERROR'}
    assert reported(lib, 'members', 'm3') == ['ACTIVE']


def test_a_rejected_parent_stays_error_when_a_child_changes(store):
    lib, reporter = make(store, {'se1'})
    gen = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=gen,
                       rejected_objects={'pools': {'p1': 'bad'}})
    reporter.run_once()
    gen = store.put_member({'member_id': 'm3', 'pool_id': 'p1',
                            'address': '198.19.3.2', 'protocol_port': 80})
    store.record_agent('se1', 'g1', applied_generation=gen,
                       rejected_objects={'pools': {'p1': 'bad'}})
    reporter.run_once()
    assert reported(lib, 'pools', 'p1') == ['ERROR', 'ERROR']
    assert reported(lib, 'listeners', 'l1')[-1] == 'ACTIVE'


def test_whole_snapshot_rejection_still_fails_the_changed_objects(store):
    lib, reporter = make(store, {'se1'})
    gen = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=0,
                       rejected_generation=gen, error='schema_version 2')
    reporter.run_once()
    assert reported(lib, 'loadbalancers', 'lb1') == ['ERROR']
    assert reported(lib, 'members', 'm1') == ['ERROR']


def test_admin_down_member_is_active_and_offline_in_one_update(store):
    """Issue 14: the member's OFFLINE went in a later update, so Octavia
    showed ACTIVE / NO_MONITOR in between."""
    lib, reporter = make(store, {'se1'})
    gen = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=gen,
                       member_statuses={'m1': 'ONLINE', 'm2': 'ONLINE'})
    reporter.run_once()
    gen = store.put_member({'member_id': 'm3', 'pool_id': 'p1',
                            'address': '198.19.3.2', 'protocol_port': 80,
                            'admin_state_up': False})
    store.record_agent('se1', 'g1', applied_generation=gen)
    reporter.run_once()
    (update,) = [st for st in lib.statuses
                 if any(i['id'] == 'm3' for i in st.get('members', ()))]
    assert {'id': 'm3', 'provisioning_status': 'ACTIVE',
            'operating_status': 'OFFLINE'} in update['members']


def test_health_monitor_goes_online_with_its_provisioning_status(store):
    """Issue 14: Octavia creates monitors OFFLINE; nobody set them ONLINE."""
    lib, reporter = make(store, {'se1'})
    gen = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=gen)
    reporter.run_once()
    assert lib.statuses[0]['healthmonitors'] == [{
        'id': 'hm1', 'provisioning_status': 'ACTIVE',
        'operating_status': 'ONLINE'}]


def test_operating_loop_waits_for_the_provisioning_report(store):
    """An object Octavia may not have committed gets no operating status
    of its own (it would hit no row and never be resent)."""
    lib, reporter = make(store, {'se1'})
    store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=0,
                       member_statuses={'m1': 'ONLINE', 'm2': 'ONLINE'})
    reporter.run_once()
    assert lib.statuses == []


def test_group_without_a_live_se_is_offline_until_one_joins(store):
    """Issue 9 case 5: no SE, nothing serves: OFFLINE, provisioning ACTIVE
    (the desired state is stored); real statuses when an SE reports."""
    live = set()
    lib, reporter = make(store, live)
    store.create_loadbalancer(graph())
    reporter.run_once()
    (status,) = lib.statuses
    assert status['loadbalancers'] == [{
        'id': 'lb1', 'provisioning_status': 'ACTIVE',
        'operating_status': 'OFFLINE'}]
    assert {i['operating_status'] for items in status.values()
            for i in items} == {'OFFLINE'}
    live.add('se1')
    store.record_agent('se1', 'g1', applied_generation=1,
                       member_statuses={'m1': 'ONLINE', 'm2': 'ERROR'})
    reporter.run_once()
    assert reported(lib, 'loadbalancers', 'lb1', 'operating_status') == [
        'OFFLINE', 'DEGRADED']
    assert reported(lib, 'healthmonitors', 'hm1', 'operating_status') == [
        'OFFLINE', 'ONLINE']
    assert pending(store) == []


def test_an_unserviceable_se_serves_nothing(store):
    lib, reporter = make(store, {'se1'})
    store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=1, serviceable=False,
                       member_statuses={'m1': 'ONLINE', 'm2': 'ONLINE'})
    reporter.run_once()
    assert reported(lib, 'loadbalancers', 'lb1', 'operating_status') == [
        'OFFLINE']
    store.record_agent('se1', 'g1', serviceable=True)
    reporter.run_once()
    assert reported(lib, 'loadbalancers', 'lb1', 'operating_status') == [
        'OFFLINE', 'ONLINE']


# ------------------------------------- operating rounds recompute on change
OBJECT_TABLES = tuple(m.__tablename__ for m in (
    models.LoadBalancer, models.Listener, models.Pool, models.Member,
    models.HealthMonitor))


def reads_objects(sql):
    return [q for q in sql if any(f'FROM {t}' in q for t in OBJECT_TABLES)]


def settled(store, live=('se1',), lib=None):
    """A reporter after the load balancer of graph() went ACTIVE and its
    members ONLINE: nothing left to send.  live: read at every round."""
    lib, reporter = make(store, live, lib)
    gen = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=gen,
                       member_statuses={'m1': 'ONLINE', 'm2': 'ONLINE'})
    reporter.run_once()
    reporter.run_once()
    return lib, reporter


def test_an_idle_operating_round_reads_no_object_of_the_deployment(store):
    """The leader runs a round ten times a second: recomputing every
    object's status from every row kept an idle controller at 12 % of a
    core with one load balancer, and grows with the deployment."""
    lib, reporter = settled(store)
    sent = len(lib.statuses)
    with statements(store) as sql:
        reporter.report_operating_status()
    assert sql and not reads_objects(sql), sql
    assert len(lib.statuses) == sent


def test_a_report_stored_by_another_controller_is_seen_next_round(store):
    """Agents report to any controller: the leader learns of a changed
    member status from the database, not from its own endpoint."""
    lib, reporter = settled(store)
    other = store_mod.Store(db_mod.Database(str(store.db.engine.url)), 'g1')
    other.record_agent('se1', 'g1',
                       member_statuses={'m1': 'ERROR', 'm2': 'ONLINE'})
    with statements(store) as sql:
        reporter.report_operating_status()
    assert reads_objects(sql)
    assert reported(lib, 'members', 'm1', 'operating_status')[-1] == 'ERROR'
    assert reported(lib, 'loadbalancers', 'lb1',
                    'operating_status')[-1] == 'DEGRADED'
    # The same report again (a heartbeat) changes nothing: no recompute.
    other.record_agent('se1', 'g1',
                       member_statuses={'m1': 'ERROR', 'm2': 'ONLINE'})
    with statements(store) as sql:
        reporter.report_operating_status()
    assert not reads_objects(sql)


def test_a_se_leaving_the_group_is_seen_without_a_report(store):
    live = {'se1'}
    lib, reporter = settled(store, live)
    live.clear()
    reporter.run_once()
    assert reported(lib, 'loadbalancers', 'lb1',
                    'operating_status')[-1] == 'OFFLINE'


class FailingOnce(FakeDriverLib):
    def __init__(self):
        super().__init__()
        self.fail = False
        self.tries = 0

    def update_loadbalancer_status(self, status):
        self.tries += 1
        if self.fail:
            self.fail = False
            raise driver_exceptions.UpdateStatusError(
                fault_string='driver agent away')
        super().update_loadbalancer_status(status)


def test_an_operating_update_that_failed_is_sent_again_after_a_delay(
        store, monkeypatch):
    """A failed update (octavia-driver-agent away) is tried again after
    OPERATING_BACKOFF, doubled at each failure in a row: not at every
    round (each recomputed the statuses, seven times a second)."""
    lib, reporter = settled(store, lib=FailingOnce())
    clock = [reporter_mod.time.monotonic()]
    monkeypatch.setattr(reporter_mod.time, 'monotonic', lambda: clock[0])
    lib.fail = True
    store.record_agent('se1', 'g1',
                       member_statuses={'m1': 'ERROR', 'm2': 'ONLINE'})
    reporter.report_operating_status()           # fails
    assert reported(lib, 'members', 'm1', 'operating_status')[-1] == \
        'ONLINE'
    tries = lib.tries
    reporter.report_operating_status()           # too soon: not tried
    assert lib.tries == tries
    clock[0] += reporter_mod.OPERATING_BACKOFF
    lib.fail = True
    reporter.report_operating_status()           # fails again
    assert lib.tries == tries + 1
    clock[0] += reporter_mod.OPERATING_BACKOFF   # the delay doubled
    reporter.report_operating_status()
    assert lib.tries == tries + 1
    clock[0] += reporter_mod.OPERATING_BACKOFF
    reporter.report_operating_status()           # inputs unchanged: resent
    assert reported(lib, 'members', 'm1', 'operating_status')[-1] == 'ERROR'


def test_a_change_no_input_shows_is_still_reported_at_the_refresh(
        store, monkeypatch):
    """A status written behind the store's back (no digest, no
    generation) is recomputed at OPERATING_REFRESH at the latest."""
    lib, reporter = settled(store)
    with store.db.session() as s:
        s.get(models.AgentState, 'se1').member_statuses = {
            'm1': 'ERROR', 'm2': 'ONLINE'}
    reporter.report_operating_status()
    assert reported(lib, 'members', 'm1', 'operating_status')[-1] == \
        'ONLINE'
    now = reporter_mod.time.monotonic() + reporter_mod.OPERATING_REFRESH
    monkeypatch.setattr(reporter_mod.time, 'monotonic', lambda: now)
    reporter.report_operating_status()
    assert reported(lib, 'members', 'm1', 'operating_status')[-1] == 'ERROR'


# ------------------------------------------------ one document per round
class NoGetDriverLib(FakeDriverLib):
    """Counts status documents; a get would be a fork of the driver agent
    the reporter must not spend."""

    def __init__(self, refuse=()):
        super().__init__()
        self.refuse = set(refuse)     # object ids Octavia cannot update yet

    def get_loadbalancer(self, obj_id):
        raise AssertionError(f'get of {obj_id}: no get before a report')

    get_member = get_listener = get_pool = get_healthmonitor = \
        get_loadbalancer

    def update_loadbalancer_status(self, status):
        for kind, items in status.items():
            for item in items:
                if item['id'] in self.refuse:
                    # What octavia-driver-agent answers for a listener it
                    # cannot read yet (octavia-lib raises it).
                    raise driver_exceptions.UpdateStatusError(
                        fault_string='Listener not found',
                        status_object=kind, status_object_id=item['id'])
        super().update_loadbalancer_status(status)


def small_lb(i):
    return {'loadbalancer_id': f'lb{i}', 'vip_address': f'192.0.2.{i}',
            'admin_state_up': True}


def provisioned(lib):
    """The load balancers of each provisioning document, in order."""
    return [[i['id'] for i in st.get('loadbalancers', ())
             if 'provisioning_status' in i] for st in lib.statuses]


def test_every_ready_load_balancer_goes_in_one_document(store):
    lib = NoGetDriverLib()
    reporter = reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                     lambda group: {'se1'})
    for i in range(1, 5):
        gen = store.create_loadbalancer(small_lb(i))
    store.record_agent('se1', 'g1', applied_generation=gen)
    reporter.run_once()
    assert provisioned(lib) == [['lb1', 'lb2', 'lb3', 'lb4']]
    assert pending(store) == []


def test_one_load_balancers_changes_merge_last_value_wins(store):
    lib = NoGetDriverLib()
    reporter = reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                     lambda group: {'se1'})
    store.create_loadbalancer(graph())
    store.put_member({'member_id': 'm3', 'pool_id': 'p1',
                      'address': '198.19.3.2', 'protocol_port': 80})
    gen = store.delete_member('m3')
    store.record_agent('se1', 'g1', applied_generation=gen)
    reporter.run_once()
    (status,) = lib.statuses
    assert [i for i in status['members'] if i['id'] == 'm3'] == [
        {'id': 'm3', 'provisioning_status': 'DELETED'}]
    assert [i['id'] for i in status['loadbalancers']] == ['lb1']
    assert pending(store) == []


def test_a_later_verdict_never_overtakes_an_earlier_change(store):
    """se1 applied generation 1 and rejected 2; se2 has applied nothing:
    generation 2 is ERROR already, generation 1 not decided.  Reporting 2
    first would let 1's ACTIVE overwrite its ERROR."""
    lib = NoGetDriverLib()
    reporter = reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                     lambda group: {'se1', 'se2'})
    store.create_loadbalancer(small_lb(1))
    store.update_loadbalancer({'loadbalancer_id': 'lb1', 'name': 'x'})
    store.record_agent('se1', 'g1', applied_generation=1,
                       rejected_generation=2, error='bad')
    store.record_agent('se2', 'g1', applied_generation=0)
    reporter.run_once()
    assert lib.statuses == []
    store.record_agent('se2', 'g1', applied_generation=1)
    reporter.run_once()
    assert reported(lib, 'loadbalancers', 'lb1') == ['ERROR']
    assert pending(store) == []


def test_an_object_octavia_refuses_holds_back_only_its_load_balancer(
        store, caplog):
    lib = NoGetDriverLib()
    reporter = reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                     lambda group: set())
    store.create_loadbalancer(small_lb(1))
    store.create_loadbalancer(small_lb(2))
    store.put_listener({'listener_id': 'l2', 'loadbalancer_id': 'lb2',
                        'protocol': 'TCP', 'protocol_port': 80,
                        'admin_state_up': True})
    store.create_loadbalancer(small_lb(3))
    lib.refuse.add('l2')
    with caplog.at_level(logging.WARNING):
        reporter.run_once()
    assert provisioned(lib) == [['lb1', 'lb3']]
    assert 'load balancer lb2 waits a round' in caplog.text
    assert [st['loadbalancers'][0]['id'] for _gen, st in pending(store)] \
        == ['lb2', 'lb2']
    lib.refuse.clear()          # Octavia committed it
    reporter.run_once()
    assert provisioned(lib) == [['lb1', 'lb3'], ['lb2']]
    assert pending(store) == []


def test_after_a_timeout_its_load_balancers_wait_and_documents_shrink(
        store, monkeypatch):
    """The driver agent's child goes on after octavia-lib gave up: its load
    balancers are not sent again until it can have finished."""
    clock = [1000.0]
    monkeypatch.setattr(reporter_mod.time, 'monotonic', lambda: clock[0])

    class TimesOutOnce(NoGetDriverLib):
        failed = False

        def update_loadbalancer_status(self, status):
            if not self.failed:
                self.failed = True
                raise driver_exceptions.UpdateStatusError(
                    fault_string='The driver agent did not respond in 30 '
                                 'seconds.')
            super().update_loadbalancer_status(status)
    lib = TimesOutOnce()
    reporter = reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                     lambda group: set(), max_update_cost=4,
                                     hold_after_timeout=30.0,
                                     report_workers=1)
    for i in range(1, 5):
        store.create_loadbalancer(small_lb(i))
    reporter.run_once()
    assert lib.statuses == [] and len(pending(store)) == 4
    for i in range(5, 9):
        store.create_loadbalancer(small_lb(i))
    clock[0] += 29
    reporter.run_once()
    assert provisioned(lib) == [['lb5', 'lb6'], ['lb7', 'lb8']]
    clock[0] += 1
    reporter.run_once()
    assert provisioned(lib)[2:] == [['lb1', 'lb2', 'lb3', 'lb4']]
    assert pending(store) == []


def test_documents_carry_whole_load_balancers_up_to_the_cost_limit(store):
    lib = NoGetDriverLib()
    reporter = reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                     lambda group: set(), max_update_cost=2,
                                     report_workers=1)
    for i in range(2, 7):
        store.create_loadbalancer(small_lb(i))
    store.create_loadbalancer(graph())          # lb1, 7 objects: alone
    reporter.run_once()
    assert provisioned(lib) == [['lb2', 'lb3'], ['lb4', 'lb5'], ['lb6'],
                                ['lb1']]
    # A deletion costs more (Octavia deletes the row, frees the quota).
    store.delete_loadbalancer('lb2')
    store.delete_loadbalancer('lb3')
    reporter.run_once()
    assert provisioned(lib)[4:] == [['lb2'], ['lb3']]
    assert pending(store) == []


def test_several_documents_are_in_flight_at_once(store):
    """Deletions fill several documents; report_workers of them go at the
    same time (a barrier only opens when both are being sent)."""
    class Rendezvous(NoGetDriverLib):
        barrier = threading.Barrier(2, timeout=5)

        def update_loadbalancer_status(self, status):
            self.barrier.wait()
            super().update_loadbalancer_status(status)
    lib = Rendezvous()
    reporter = reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                     lambda group: set(), max_update_cost=1,
                                     report_workers=2)
    store.create_loadbalancer(small_lb(1))
    store.create_loadbalancer(small_lb(2))
    reporter.run_once()
    assert sorted(provisioned(lib)) == [['lb1'], ['lb2']]
    assert pending(store) == []


def test_an_idle_round_is_one_transaction(store, count_sessions):
    """The leader's round runs ten times a second: with nothing to
    publish, report or recompute it reads in one transaction, and a change
    still reaches the agents and Octavia in the next round."""
    lib, reporter = make(store, {'se1'})
    gen = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=gen)
    reporter.run_statuses()
    reporter.run_statuses()
    opened = count_sessions()
    reporter.run_statuses()
    assert len(opened) == 1
    # A member change: published, applied, reported ACTIVE.
    gen = store.put_member({'member_id': 'm3', 'pool_id': 'p1',
                            'address': '198.19.3.2', 'protocol_port': 80})
    reporter.run_statuses()
    assert reporter.notifier.casts[-1] == ('g1', gen)
    store.record_agent('se1', 'g1', applied_generation=gen)
    reporter.run_statuses()
    assert reported(lib, 'members', 'm3') == ['ACTIVE']


# ------------------------------------------- deletes the SEs do not apply
def backdate(store, model, seconds, **filters):
    """Rows of model (filtered) as if written `seconds` ago: the apply
    timeout, an SE's silence or a tombstone's age without sleeping."""
    column = {'PendingStatus': 'created_at', 'AgentState': 'updated_at',
              'Tombstone': 'deleted_at'}[model.__name__]
    with store.db.session() as s:
        for row in s.query(model).filter_by(**filters):
            setattr(row, column, time.time() - seconds)


def test_a_delete_not_applied_in_time_is_error_and_can_be_retried(store):
    """The SE still announces the VIP: Octavia must not free it.  The
    user deletes the object again; that delete waits for the SEs."""
    lib, reporter = make(store, {'se1'})
    gen = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=gen)
    reporter.run_once()
    store.delete_loadbalancer('lb1')        # se1 never applies it
    backdate(store, models.PendingStatus, 60)
    reporter.run_once()
    assert reported(lib, 'loadbalancers', 'lb1') == ['ACTIVE', 'ERROR']
    assert reported(lib, 'members', 'm1') == ['ACTIVE', 'ERROR']
    assert store.delete_missing('loadbalancers', {'id': 'lb1'}) == gen + 1
    reporter.run_once()
    assert reported(lib, 'loadbalancers', 'lb1') == ['ACTIVE', 'ERROR']
    store.record_agent('se1', 'g1', applied_generation=gen + 1)
    reporter.run_once()
    assert reported(lib, 'loadbalancers', 'lb1')[-1] == 'DELETED'
    # Its children were ERROR too: Octavia deletes them with it.
    assert reported(lib, 'members', 'm1')[-1] == 'DELETED'
    assert reported(lib, 'listeners', 'l1')[-1] == 'DELETED'
    # The same message again (redelivered) changes nothing.
    assert store.delete_missing('loadbalancers', {'id': 'lb1'}) is None
    assert pending(store) == []


def test_a_delete_refused_whole_is_error_until_a_retry_applies(store):
    lib, reporter = make(store, {'se1'})
    gen = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=gen)
    reporter.run_once()
    g2 = store.delete_member('m1')
    store.record_agent('se1', 'g1', applied_generation=gen,
                       rejected_generation=g2, error='bad')
    reporter.run_once()
    assert reported(lib, 'members', 'm1') == ['ACTIVE', 'ERROR']
    assert reported(lib, 'pools', 'p1')[-1] == 'ACTIVE'
    # Retried while the SE still refuses the generation: ERROR again.
    store.delete_missing('members', {'id': 'm1', 'pool_id': 'p1'})
    reporter.run_once()
    assert reported(lib, 'members', 'm1') == ['ACTIVE', 'ERROR', 'ERROR']
    store.record_agent('se1', 'g1', applied_generation=g2,
                       rejected_generation=None, error=None)
    store.delete_missing('members', {'id': 'm1', 'pool_id': 'p1'})
    reporter.run_once()
    assert reported(lib, 'members', 'm1')[-1] == 'DELETED'
    assert reported(lib, 'pools', 'p1')[-1] == 'ACTIVE'


def test_a_delete_of_an_object_never_known_is_deleted_at_once(store):
    """Nothing to remove; its parents Octavia locked are ACTIVE again."""
    lib, reporter = make(store, {'se1'})
    gen = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=gen)
    reporter.run_once()
    store.delete_missing('members', {'id': 'm9', 'pool_id': 'p1'})
    reporter.run_once()
    (status,) = [st for st in lib.statuses if 'm9' in str(st)]
    assert status['members'] == [{'id': 'm9',
                                  'provisioning_status': 'DELETED'}]
    for kind, obj_id in (('pools', 'p1'), ('listeners', 'l1'),
                         ('loadbalancers', 'lb1')):
        assert [i['provisioning_status'] for i in status[kind]
                if i['id'] == obj_id] == ['ACTIVE']
    assert store.snapshot('g1')['generation'] == gen


def test_a_delete_never_known_waits_for_no_se_of_the_default_group(store):
    """Nothing to remove: a lagging or refusing SE of the default group
    (unrelated to it) does not make it ERROR."""
    lib, reporter = make(store, {'se1'})
    gen = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=gen)
    reporter.run_once()
    g2 = store.update_loadbalancer({'loadbalancer_id': 'lb1', 'name': 'x'})
    store.record_agent('se1', 'g1', applied_generation=gen - 1,
                       rejected_generation=g2, error='bad')
    assert store.delete_missing('members',
                                {'id': 'm9', 'pool_id': 'p9'}) == 0
    backdate(store, models.PendingStatus, 60)      # past apply_timeout
    reporter.run_once()
    assert reported(lib, 'members', 'm9') == ['DELETED']
    assert reported(lib, 'loadbalancers', 'lb1')[-1] == 'ERROR'
    assert pending(store) == []


def test_an_update_of_an_unknown_object_is_error(store):
    lib, reporter = make(store, {'se1'})
    gen = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=gen)
    reporter.run_once()
    store.refuse('members', [{'id': 'm9', 'pool_id': 'p1'}],
                 'member m9 is unknown')
    reporter.run_once()
    assert reported(lib, 'members', 'm9') == ['ERROR']
    assert reported(lib, 'pools', 'p1')[-1] == 'ACTIVE'


def test_tombstones_are_purged_after_their_ttl_at_most_once_a_minute(
        store):
    lib = FakeDriverLib()
    reporter = reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                     lambda group: {'se1'},
                                     tombstone_ttl=3600)
    store.create_loadbalancer(graph())
    store.delete_member('m1')
    store.delete_member('m2')
    backdate(store, models.Tombstone, 7200, id='m1')
    reporter.run_statuses()
    assert {i for _, i in tombstones(store)} == {'m1', 'm2'}
    reporter._purged_at -= reporter_mod.PURGE_INTERVAL
    reporter.run_statuses()
    assert {i for _, i in tombstones(store)} == {'m2'}


def tombstones(store):
    with store.db.session() as s:
        return {(t.kind, t.id) for t in s.query(models.Tombstone)}


# ------------------------------------------------------------ silent SEs
def two_ses(store, statuses2):
    lib, reporter = make(store, {'se1', 'se2'})
    gen = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=gen,
                       member_statuses={'m1': 'ERROR', 'm2': 'ONLINE'})
    store.record_agent('se2', 'g1', applied_generation=gen,
                       member_statuses=statuses2)
    reporter.run_once()
    return lib, reporter


def test_a_silent_se_no_longer_votes_in_operating_statuses(store, caplog):
    lib, reporter = two_ses(store, {'m1': 'ONLINE', 'm2': 'ONLINE'})
    assert reported(lib, 'members', 'm1', 'operating_status') == ['ONLINE']
    backdate(store, models.AgentState, 31, se_id='se2')
    with caplog.at_level(logging.INFO):
        reporter.run_once()
        reporter.run_once()
    assert reported(lib, 'members', 'm1', 'operating_status') == [
        'ONLINE', 'ERROR']
    assert caplog.text.count('SE se2 of group g1: no report for over') == 1
    store.record_agent('se2', 'g1', member_statuses={'m1': 'ONLINE',
                                                     'm2': 'ONLINE'})
    with caplog.at_level(logging.INFO):
        reporter.run_once()
    assert reported(lib, 'members', 'm1', 'operating_status')[-1] == \
        'ONLINE'
    assert caplog.text.count('SE se2 reports again') == 1


def test_a_group_whose_ses_are_all_silent_is_error_health_unknown(store):
    lib, reporter = make(store, {'se1'})
    gen = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=gen,
                       member_statuses={'m1': 'ONLINE', 'm2': 'ONLINE'})
    reporter.run_once()
    backdate(store, models.AgentState, 31)
    reporter.run_once()
    last = {(kind, obj_id): reported(lib, kind, obj_id,
                                     'operating_status')[-1]
            for kind, obj_id in (('loadbalancers', 'lb1'),
                                 ('listeners', 'l1'), ('pools', 'p1'),
                                 ('members', 'm1'), ('members', 'm2'))}
    assert last == {('loadbalancers', 'lb1'): 'ERROR',
                    ('listeners', 'l1'): 'ERROR',
                    ('pools', 'p1'): 'NO_MONITOR',
                    ('members', 'm1'): 'NO_MONITOR',
                    ('members', 'm2'): 'NO_MONITOR'}


def test_a_change_still_waits_for_a_silent_se(store):
    """Its dataplane may still forward with the old generation."""
    lib, reporter = two_ses(store, {'m1': 'ONLINE', 'm2': 'ONLINE'})
    backdate(store, models.AgentState, 31, se_id='se2')
    gen = store.put_member({'member_id': 'm3', 'pool_id': 'p1',
                            'address': '198.19.3.2', 'protocol_port': 80})
    store.record_agent('se1', 'g1', applied_generation=gen)
    reporter.run_once()
    assert reported(lib, 'members', 'm3') == []
    backdate(store, models.PendingStatus, 60)
    reporter.run_once()
    assert reported(lib, 'members', 'm3') == ['ERROR']


def test_a_revoked_se_stops_voting_at_once(store):
    enrolment.enrol(store.db, 'g1', 'se2',
                    ed25519.Ed25519PrivateKey.generate().public_key())
    lib, reporter = two_ses(store, {'m1': 'ONLINE', 'm2': 'ONLINE'})
    assert reported(lib, 'members', 'm1', 'operating_status') == ['ONLINE']
    assert enrolment.revoke(store.db, 'se2')
    reporter.run_once()
    assert reported(lib, 'members', 'm1', 'operating_status') == [
        'ONLINE', 'ERROR']


def test_a_cascade_delete_never_known_deletes_the_whole_graph(store):
    """A load balancer whose create the controller never stored (refused
    whole, or its tombstone purged): Octavia's cascade delete sends the
    graph, and every object in it is DELETED -- Octavia decrements each
    one's quota and removes its row only on that status."""
    lib, reporter = make(store, {'se1'})
    store.delete_missing('loadbalancers', graph())
    reporter.run_once()
    (status,) = lib.statuses
    assert {kind: sorted((i['id'], i['provisioning_status'])
                         for i in items)
            for kind, items in status.items()} == {
        'loadbalancers': [('lb1', 'DELETED')],
        'listeners': [('l1', 'DELETED')],
        'pools': [('p1', 'DELETED')],
        'members': [('m1', 'DELETED'), ('m2', 'DELETED')],
        'healthmonitors': [('hm1', 'DELETED')]}


def test_what_an_se_runs_none_of_below_a_rejected_load_balancer_is_error(
        store):
    """An SE rejects the load balancer of a graph create: its listeners,
    pools, members and monitor are not ACTIVE either (the controller's
    own refusal of a graph says the same), and not served: OFFLINE, the
    monitor too.  A later change below it leaves them ERROR."""
    lib, reporter = make(store, {'se1'})
    gen = store.create_loadbalancer(graph())
    rejection = {'loadbalancers': {'lb1': 'vip_address not usable'}}
    store.record_agent('se1', 'g1', applied_generation=gen,
                       rejected_objects=rejection)
    reporter.run_once()
    (status,) = [st for st in lib.statuses
                 if 'provisioning_status' in st['loadbalancers'][0]]
    assert {(kind, i['id']): (i['provisioning_status'],
                              i.get('operating_status'))
            for kind, items in status.items() for i in items} == {
        ('loadbalancers', 'lb1'): ('ERROR', 'ERROR'),
        ('listeners', 'l1'): ('ERROR', 'OFFLINE'),
        ('pools', 'p1'): ('ERROR', 'OFFLINE'),
        ('members', 'm1'): ('ERROR', 'OFFLINE'),
        ('members', 'm2'): ('ERROR', 'OFFLINE'),
        ('healthmonitors', 'hm1'): ('ERROR', 'OFFLINE')}
    gen = store.put_member({'member_id': 'm3', 'pool_id': 'p1',
                            'address': '198.19.3.2', 'protocol_port': 80})
    store.record_agent('se1', 'g1', applied_generation=gen,
                       rejected_objects=rejection)
    reporter.run_once()
    assert reported(lib, 'members', 'm3') == ['ERROR']
    assert reported(lib, 'pools', 'p1')[-1] == 'ERROR'


def test_a_failed_batch_leaves_the_members_it_did_not_change_active(store):
    """additive_only: Octavia passes every member of the pool and leaves
    the status of those the batch does not touch be; a batch the SEs do
    not apply is ERROR for what it changed only -- the untouched members
    run as before."""
    lib, reporter = make(store, {'se1'})
    applied = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=applied)
    reporter.run_once()
    members = graph()['pools'][0]['members']
    gen = store.batch_update_members('p1', members + [{
        'member_id': 'm3', 'pool_id': 'p1', 'address': '198.19.3.2',
        'protocol_port': 80}])
    store.record_agent('se1', 'g1', applied_generation=applied,
                       rejected_generation=gen, error='schema_version 2')
    reporter.run_once()
    assert reported(lib, 'members', 'm3') == ['ERROR']
    assert reported(lib, 'members', 'm1')[-1] == 'ACTIVE'
    assert reported(lib, 'members', 'm2')[-1] == 'ACTIVE'
