"""Listeners of one SE group on the same VIP address, transport protocol
and port (load balancers of two projects given one address on overlapping
networks): the controller refuses the newcomer alone, and what runs stays
on the SEs.  Before, the agents rejected the later one in their own order
(load balancers by id), which could be the one already running.  Real
Store on SQLite; the snapshot is parsed by the agents' own parser."""

from amphora_agent import snapshot as snapshot_mod
from dsr_provider.controller import store as store_mod
from dsr_wire import l7
from tests.unit.dsr_provider.controller.test_ports import rejected
from tests.unit.dsr_provider.controller.test_ports import stored
from tests.unit.dsr_provider.controller.test_store import pending


def lb(lb_id, vip='192.0.2.10', listeners=(), se_group=None, extra=()):
    doc = {'loadbalancer_id': lb_id, 'vip_address': vip,
           'admin_state_up': True, 'listeners': list(listeners),
           'pools': []}
    if extra:
        doc['additional_vips'] = [{'ip_address': a} for a in extra]
    if se_group:
        doc['flavor'] = {'se_group': se_group}
    return doc


def listener(listener_id, lb_id, port=80, protocol='TCP', **extra):
    return dict({'listener_id': listener_id, 'loadbalancer_id': lb_id,
                 'protocol': protocol, 'protocol_port': port,
                 'admin_state_up': True}, **extra)


def served(store, group='g1'):
    """{listener id: (load balancer id, port)} of the group's snapshot,
    and what the agents' parser rejects of it."""
    snap = snapshot_mod.parse(store.snapshot(group))
    return ({lst.id: (b.id, lst.port) for b in snap.load_balancers
             for lst in b.listeners if lst.id not in snap.rejected.get(
                 'listeners', {})},
            snap.rejected)


def statuses(store, kind):
    """{id: provisioning status} of `kind` in the last status owed."""
    _, doc = pending(store)[-1]
    return {i['id']: i['provisioning_status']
            for i in store_mod.octavia_status(doc).get(kind, [])}


def test_a_newcomer_on_a_running_listeners_vip_and_port_is_refused_alone(
        store):
    # 'lb-zzz' runs; 'lb-aaa' sorts first, so the agents used to keep it
    # and take the running listener off.
    store.create_loadbalancer(lb('lb-zzz', listeners=[
        listener('l-running', 'lb-zzz')]))
    store.create_loadbalancer(lb('lb-aaa', listeners=[
        listener('l-new', 'lb-aaa')]))
    reason = rejected(store, 'listeners')['l-new']
    assert 'TCP 192.0.2.10 port 80 is already served by listener ' \
        'l-running of load balancer lb-zzz in SE group g1' in reason
    assert served(store) == ({'l-running': ('lb-zzz', 80)}, {})
    assert statuses(store, 'listeners') == {'l-new': 'ERROR'}
    assert statuses(store, 'loadbalancers') == {'lb-aaa': 'ACTIVE'}


def test_another_port_protocol_address_or_group_is_no_clash(store):
    store.create_loadbalancer(lb('lb1', listeners=[listener('l1', 'lb1')]))
    store.create_loadbalancer(lb('lb2', listeners=[
        listener('l2', 'lb2', port=81),
        listener('l3', 'lb2', protocol='UDP')]))
    store.create_loadbalancer(lb('lb3', vip='192.0.2.11', listeners=[
        listener('l4', 'lb3')]))
    store.create_loadbalancer(lb('lb4', se_group='g2', listeners=[
        listener('l5', 'lb4')]))
    assert rejected(store, 'listeners') == {}
    assert served(store)[0] == {'l1': ('lb1', 80), 'l2': ('lb2', 81),
                                'l3': ('lb2', 80), 'l4': ('lb3', 80)}
    assert served(store, 'g2')[0] == {'l5': ('lb4', 80)}


def test_an_additional_vip_written_otherwise_clashes_too(store):
    store.create_loadbalancer(lb('lb1', extra=['2001:db8:f::10'],
                                 listeners=[listener('l1', 'lb1')]))
    store.create_loadbalancer(lb('lb2', vip='2001:DB8:F:0::10',
                                 listeners=[listener('l2', 'lb2')]))
    reason = rejected(store, 'listeners')['l2']
    assert 'TCP 2001:db8:f::10 port 80' in reason


def test_the_first_of_two_clashing_listeners_of_one_graph_is_served(store):
    """Tier 2: an HTTP and a TCP listener on one port are both TCP to the
    L4 SEs."""
    store.create_loadbalancer(lb('lb1', listeners=[
        listener('l-b', 'lb1', protocol='HTTP'),
        listener('l-a', 'lb1', protocol='TCP')]))
    assert set(rejected(store, 'listeners')) == {'l-a'}
    assert statuses(store, 'listeners') == {'l-a': 'ERROR',
                                            'l-b': 'ACTIVE'}


def test_a_refused_listener_is_accepted_once_updated_to_a_free_port(store):
    store.create_loadbalancer(lb('lb1', listeners=[listener('l1', 'lb1')]))
    store.create_loadbalancer(lb('lb2'))
    policy = {'l7policy_id': 'p1', 'listener_id': 'l2',
              'action': 'REJECT', 'position': 1, 'admin_state_up': True,
              'rules': [{'l7rule_id': 'r1', 'l7policy_id': 'p1',
                         'type': 'PATH', 'compare_type': 'STARTS_WITH',
                         'value': '/', 'admin_state_up': True}]}
    store.put_listener(listener('l2', 'lb2', l7policies=[policy]))
    assert set(rejected(store, 'listeners')) == {'l2'}
    # Its policies go with it.
    assert statuses(store, 'l7policies') == {'p1': 'ERROR'}
    assert statuses(store, 'l7rules') == {'r1': 'ERROR'}
    store.put_listener(listener('l2', 'lb2', port=8080), update=True)
    assert rejected(store, 'listeners') == {}
    assert served(store)[0] == {'l1': ('lb1', 80), 'l2': ('lb2', 8080)}


def test_a_running_listener_updated_onto_a_taken_port_runs_on(store):
    store.create_loadbalancer(lb('lb1', listeners=[listener('l1', 'lb1')]))
    store.create_loadbalancer(lb('lb2', listeners=[
        listener('l2', 'lb2', port=81)]))
    store.put_listener(listener('l2', 'lb2', port=80,
                                connection_limit=7), update=True)
    # Refused, rolled back: the SEs go on serving its previous version.
    assert rejected(store, 'listeners') == {}
    assert stored(store, 'listeners', 'l2')['protocol_port'] == 81
    assert 'connection_limit' not in stored(store, 'listeners', 'l2')
    assert served(store) == ({'l1': ('lb1', 80), 'l2': ('lb2', 81)}, {})
    assert statuses(store, 'listeners') == {'l2': 'ERROR'}


def test_an_update_that_keeps_its_port_is_not_refused(store):
    """Only a change of what steers the listener is checked: a listener
    already running beside a clash (stored before this check) keeps
    taking updates."""
    store.create_loadbalancer(lb('lb1', listeners=[listener('l1', 'lb1')]))
    store.create_loadbalancer(lb('lb2', listeners=[
        listener('l2', 'lb2', port=81)]))
    store.put_listener(listener('l2', 'lb2', port=81, connection_limit=7),
                       update=True)
    assert stored(store, 'listeners', 'l2')['connection_limit'] == 7
    assert statuses(store, 'listeners') == {'l2': 'ACTIVE'}


# Tier 2: load balancers of other L4 groups may share one L7 group, whose
# SEs bind every load balancer's HAProxy on its VIPs (SO_REUSEPORT): two
# on one address, protocol and port split the connections between them.
L7G = 'shared-l7'


def tier2(lb_id, l4_group, vip='192.0.2.10', listeners=(), extra=(),
          l7_group=L7G):
    return dict(lb(lb_id, vip, listeners, extra=extra),
                dsr={'se_group': l4_group, 'tier': 2, 'encapsulation': 'gre',
                     'l7_se_group': l7_group})


def l7_served(store, group=L7G):
    """{listener id: (load balancer id, port)} of the L7 group's document
    (checked by the L7 agents' own validation)."""
    doc = store.snapshot(group)
    l7.check_document(doc)
    return {lst['id']: (b['id'], lst['protocol_port'])
            for b in doc['load_balancers'] for lst in b['listeners']}


def test_tier2_load_balancers_of_other_l4_groups_sharing_an_l7_group_clash(
        store):
    store.create_loadbalancer(tier2('lb-zzz', 'edge-a', listeners=[
        listener('l-running', 'lb-zzz', protocol='HTTP')]))
    store.create_loadbalancer(tier2('lb-aaa', 'edge-b', listeners=[
        listener('l-new', 'lb-aaa', protocol='HTTP'),
        listener('l-other', 'lb-aaa', port=81, protocol='HTTP')]))
    reason = rejected(store, 'listeners')['l-new']
    assert 'TCP 192.0.2.10 port 80 is already served by listener ' \
        'l-running of load balancer lb-zzz in L7 SE group shared-l7' \
        in reason
    assert set(rejected(store, 'listeners')) == {'l-new'}
    assert statuses(store, 'listeners') == {'l-new': 'ERROR',
                                            'l-other': 'ACTIVE'}
    assert statuses(store, 'loadbalancers') == {'lb-aaa': 'ACTIVE'}
    # Neither tier serves it: the L7 SEs keep one HAProxy on the port.
    assert l7_served(store) == {'l-running': ('lb-zzz', 80),
                                'l-other': ('lb-aaa', 81)}
    assert served(store, 'edge-a')[0] == {'l-running': ('lb-zzz', 80)}
    assert served(store, 'edge-b')[0] == {'l-other': ('lb-aaa', 81)}


def test_a_tier2_listener_created_or_updated_onto_a_port_the_l7_group_serves(
        store):
    store.create_loadbalancer(tier2('lb1', 'edge-a', listeners=[
        listener('l1', 'lb1')]))
    # Another spelling of the same IPv6 address, a TCP listener against
    # an HTTP one: both TCP on the L7 SEs.
    store.create_loadbalancer(tier2('lb2', 'edge-b', extra=[
        '2001:db8:f::10']))
    store.create_loadbalancer(tier2('lb3', 'edge-c', vip='192.0.2.30',
                                    extra=['2001:DB8:F:0::10']))
    store.put_listener(listener('l2', 'lb2', protocol='HTTP'))
    assert set(rejected(store, 'listeners')) == {'l2'}
    store.put_listener(listener('l2', 'lb2', port=8080), update=True)
    assert rejected(store, 'listeners') == {}
    store.put_listener(listener('l3', 'lb3', port=8080, protocol='HTTP'))
    reason = rejected(store, 'listeners')['l3']
    assert 'TCP 2001:db8:f::10 port 8080 is already served by listener ' \
        'l2 of load balancer lb2 in L7 SE group shared-l7' in reason
    # A running listener updated onto a taken port runs on.
    store.put_listener(listener('l2', 'lb2', port=80, connection_limit=7),
                       update=True)
    assert stored(store, 'listeners', 'l2')['protocol_port'] == 8080
    assert statuses(store, 'listeners') == {'l2': 'ERROR'}
    assert l7_served(store) == {'l1': ('lb1', 80), 'l2': ('lb2', 8080)}


def test_tier2_load_balancers_sharing_no_group_or_port_do_not_clash(store):
    store.create_loadbalancer(tier2('lb1', 'edge-a', listeners=[
        listener('l1', 'lb1', protocol='HTTP')]))
    # Another L7 group (and L4 group), another port, another transport
    # protocol, another address, a tier-1 load balancer of another group.
    store.create_loadbalancer(tier2('lb2', 'edge-b', l7_group='other-l7',
                                    listeners=[listener('l2', 'lb2')]))
    store.create_loadbalancer(tier2('lb3', 'edge-c', listeners=[
        listener('l3', 'lb3', port=81), listener('l4', 'lb3',
                                                 protocol='UDP')]))
    store.create_loadbalancer(tier2('lb4', 'edge-d', vip='192.0.2.11',
                                    listeners=[listener('l5', 'lb4')]))
    store.create_loadbalancer(lb('lb5', se_group='g2', listeners=[
        listener('l6', 'lb5')]))
    assert rejected(store, 'listeners') == {}
    assert l7_served(store) == {'l1': ('lb1', 80), 'l3': ('lb3', 81),
                                'l4': ('lb3', 80), 'l5': ('lb4', 80)}
    assert l7_served(store, 'other-l7') == {'l2': ('lb2', 80)}


def test_a_tier2_and_a_tier1_load_balancer_of_one_l4_group_still_clash(
        store):
    store.create_loadbalancer(lb('lb-zzz', se_group='edge-a', listeners=[
        listener('l-running', 'lb-zzz')]))
    store.create_loadbalancer(tier2('lb-aaa', 'edge-a', listeners=[
        listener('l-new', 'lb-aaa', protocol='HTTP')]))
    assert 'already served by listener l-running of load balancer ' \
        'lb-zzz in SE group edge-a: the SEs steer by VIP address' in \
        rejected(store, 'listeners')['l-new']
