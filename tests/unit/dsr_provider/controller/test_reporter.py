"""The leader's verdicts: per-object provisioning from the agents'
rejected_objects, operating status in the same update, no live SE."""

import logging

from dsr_provider.controller import reporter as reporter_mod
from tests.unit.dsr_provider.controller.test_store import FakeDriverLib
from tests.unit.dsr_provider.controller.test_store import graph
from tests.unit.dsr_provider.controller.test_store import pending
from tests.unit.dsr_provider import fakes


def make(store, live):
    lib = FakeDriverLib()
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
