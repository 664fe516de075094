"""A refused update of a running object (capacity, member ports, a VIP
clash) changes nothing on the SEs, while Octavia keeps the update's values:
the object must stay ERROR -- also as the parent of a later change, which
used to make it ACTIVE -- until an accepted update sends those values
again.  Real Store on SQLite, the leader's Reporter, a fake driver
library."""

from dsr_provider.cmd import status as status_cmd
from tests.unit.dsr_provider.controller.test_ports import stored
from tests.unit.dsr_provider.controller.test_reporter import make
from tests.unit.dsr_provider.controller.test_reporter import reported
from tests.unit.dsr_provider.controller.test_vip_clash import lb
from tests.unit.dsr_provider.controller.test_vip_clash import listener


def two_load_balancers():
    """lb1 serves TCP 192.0.2.10:80; lb2, on the same address, :81 with
    pool p2."""
    first = lb('lb1', listeners=[listener('l1', 'lb1')])
    second = lb('lb2', listeners=[
        listener('l2', 'lb2', port=81, default_pool_id='p2')])
    second['pools'] = [{
        'pool_id': 'p2', 'loadbalancer_id': 'lb2', 'listener_id': 'l2',
        'lb_algorithm': 'SOURCE_IP_PORT', 'protocol': 'TCP',
        'admin_state_up': True,
        'members': [{'member_id': 'm1', 'pool_id': 'p2',
                     'address': '198.19.1.2', 'protocol_port': 81}]}]
    return first, second


def applied(store, reporter, generation):
    store.record_agent('se1', 'g1', applied_generation=generation)
    reporter.run_once()


def new_member(store, member_id):
    return store.put_member({'member_id': member_id, 'pool_id': 'p2',
                             'address': '198.19.9.2', 'protocol_port': 81})


def test_a_refused_update_stays_error_as_the_parent_of_a_later_change(
        store):
    lib, reporter = make(store, {'se1'})
    for doc in two_load_balancers():
        applied(store, reporter, store.create_loadbalancer(doc))
    # Onto lb1's port: refused, l2 runs on :81.
    store.put_listener(listener('l2', 'lb2', port=80), update=True)
    reporter.run_once()
    assert stored(store, 'listeners', 'l2')['protocol_port'] == 81
    # A member of its pool: Octavia locked l2 as its parent.
    applied(store, reporter, new_member(store, 'm2'))
    assert reported(lib, 'members', 'm2') == ['ACTIVE']
    assert reported(lib, 'listeners', 'l2') == ['ACTIVE', 'ERROR', 'ERROR']
    assert reported(lib, 'loadbalancers', 'lb2')[-1] == 'ACTIVE'
    # Running: its operating status is still the SEs' view, not ERROR.
    assert 'ERROR' not in reported(lib, 'listeners', 'l2',
                                   'operating_status')
    # dsr-status names what differs.
    (group,) = status_cmd.fleet(store.db)['se_groups']
    (differing,) = group['load_balancers_not_as_desired']
    assert differing == {'id': 'lb2', 'reasons': [
        'listener l2 runs its previous version: its update was refused '
        '(protocol_port=80)']}
    # The user sends the port again, one that is free: accepted, and the
    # next child change leaves it ACTIVE.
    applied(store, reporter, store.put_listener(
        listener('l2', 'lb2', port=82), update=True))
    applied(store, reporter, new_member(store, 'm3'))
    assert reported(lib, 'listeners', 'l2')[-2:] == ['ACTIVE', 'ACTIVE']
    assert stored(store, 'listeners', 'l2')['protocol_port'] == 82
    (group,) = status_cmd.fleet(store.db)['se_groups']
    assert group['load_balancers_not_as_desired'] == []


def test_an_accepted_update_of_other_fields_leaves_it_error(store):
    lib, reporter = make(store, {'se1'})
    for doc in two_load_balancers():
        applied(store, reporter, store.create_loadbalancer(doc))
    store.put_listener(listener('l2', 'lb2', port=80), update=True)
    reporter.run_once()
    # A rename is accepted, but the SEs still run :81 where Octavia shows
    # :80.
    applied(store, reporter, store.put_listener(
        {'listener_id': 'l2', 'loadbalancer_id': 'lb2', 'name': 'web'},
        update=True))
    assert stored(store, 'listeners', 'l2')['name'] == 'web'
    assert reported(lib, 'listeners', 'l2')[-1] == 'ERROR'
    applied(store, reporter, new_member(store, 'm2'))
    assert reported(lib, 'listeners', 'l2')[-1] == 'ERROR'
