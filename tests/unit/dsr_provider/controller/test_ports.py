"""Member ports (tier 1): the controller is the backstop of the driver's
check (dsr_provider/validation.check_pool_ports), which the driver skips
when octavia-driver-agent's get socket is missing or its cache is stale.
A DSR member receives the client's packet on the VIP's port: one on
another port would be health-checked (and ONLINE) on its own port while
no client traffic reaches it.  Real Store on SQLite, no capacity limits
(the check does not depend on them)."""

from amphora_agent import snapshot as snapshot_mod
from dsr_provider.cmd import status as status_cmd
from dsr_provider.controller import models
from dsr_provider.controller import store as store_mod
from tests.unit.dsr_provider.controller.test_store import graph
from tests.unit.dsr_provider.controller.test_store import pending
from tests.unit.dsr_provider.controller import test_store_tier2


def member(member_id, port, pool_id='p1', address='198.19.9.2', **extra):
    return dict({'member_id': member_id, 'pool_id': pool_id,
                 'address': address, 'protocol_port': port, 'weight': 1,
                 'admin_state_up': True}, **extra)


def listener(listener_id, port, pool_id=None):
    doc = {'listener_id': listener_id, 'loadbalancer_id': 'lb1',
           'protocol': 'TCP', 'protocol_port': port, 'admin_state_up': True}
    if pool_id:
        doc['default_pool_id'] = pool_id
    return doc


def pool(pool_id, members=(), listener_id=None):
    return {'pool_id': pool_id, 'loadbalancer_id': 'lb1',
            'listener_id': listener_id, 'lb_algorithm': 'SOURCE_IP_PORT',
            'protocol': 'TCP', 'admin_state_up': True,
            'members': list(members)}


def rejected(store, kind):
    with store.db.session() as s:
        return {r.id: r.rejected for r in s.query(store_mod._MODELS[kind])
                if r.rejected}


def stored(store, kind, obj_id):
    with store.db.session() as s:
        return s.get(store_mod._MODELS[kind], obj_id).doc


def served(store, group='g1'):
    """{listener id: [(member id, port), ...]} the SEs are sent (parsed
    by the agents' own parser)."""
    snap = snapshot_mod.parse(store.snapshot(group))
    return {lst.id: sorted((m.id, m.protocol_port)
                           for m in lst.pool.members) if lst.pool else []
            for lb in snap.load_balancers for lst in lb.listeners}


def last_status(store):
    """(generation the status waits for, what Octavia is told)."""
    generation, doc = pending(store)[-1]
    return generation, store_mod.octavia_status(doc)


def test_a_member_on_another_port_is_rejected_alone(store):
    store.create_loadbalancer(graph())
    store.put_member(member('m9', 8080))
    reason = rejected(store, 'members')['m9']
    assert 'protocol_port 8080' in reason and \
        'protocol_port 80 of listener l1' in reason
    assert rejected(store, 'listeners') == rejected(store, 'pools') == {}
    assert served(store) == {'l1': [('m1', 80), ('m2', 80)]}
    generation, status = last_status(store)
    assert generation == 0          # refused: waits for no SE
    assert status['members'] == [{'id': 'm9', 'provisioning_status': 'ERROR',
                                  'operating_status': 'ERROR'}]
    assert {i['provisioning_status'] for k in ('pools', 'listeners',
                                               'loadbalancers')
            for i in status[k]} == {'ACTIVE'}
    # dsr-status shows it with the reason.
    (group,) = status_cmd.fleet(store.db)['se_groups']
    (lb,) = group['load_balancers_not_as_desired']
    assert lb['id'] == 'lb1' and any(
        'member m9 left out by the controller: protocol_port 8080' in r
        for r in lb['reasons'])


def test_a_rejected_member_fixed_by_an_update_is_accepted(store):
    store.create_loadbalancer(graph())
    store.put_member(member('m9', 8080))
    assert set(rejected(store, 'members')) == {'m9'}
    generation = store.put_member(member('m9', 80), True)
    assert rejected(store, 'members') == {}
    assert served(store) == {'l1': [('m1', 80), ('m2', 80), ('m9', 80)]}
    waits_for, status = last_status(store)
    assert waits_for == generation and \
        status['members'] == [{'id': 'm9', 'provisioning_status': 'ACTIVE'}]


def test_a_running_member_updated_to_another_port_changes_nothing(store):
    store.create_loadbalancer(graph())
    store.put_member(dict(graph()['pools'][0]['members'][0],
                          protocol_port=8080, weight=7), True)
    # Not taken off the SEs: the update is refused, the member runs on.
    assert rejected(store, 'members') == {}
    assert stored(store, 'members', 'm1')['protocol_port'] == 80
    assert stored(store, 'members', 'm1')['weight'] == 1
    assert served(store) == {'l1': [('m1', 80), ('m2', 80)]}
    _, status = last_status(store)
    # ERROR for the update; its operating status is the SEs' (not ERROR).
    assert status['members'] == [{'id': 'm1', 'provisioning_status': 'ERROR'}]


def test_a_member_stored_on_a_wrong_port_is_rejected_when_updated(store):
    """One that got in before the controller checked ports is broken, not
    running: its next update rejects it rather than keeping it."""
    store.create_loadbalancer(graph())
    with store.db.session() as s:
        row = s.get(models.Member, 'm1')
        row.doc = dict(row.doc, protocol_port=8080)
    store.put_member(dict(stored(store, 'members', 'm1'), weight=3), True)
    assert 'protocol_port 8080' in rejected(store, 'members')['m1']
    assert served(store) == {'l1': [('m2', 80)]}


def test_batch_update_rejects_each_member_on_another_port(store):
    store.create_loadbalancer(graph())
    m1, m2 = graph()['pools'][0]['members']
    store.batch_update_members('p1', [
        m1, dict(m2, protocol_port=8081),       # running: refused, kept
        member('m3', 80), member('m4', 8080, address='198.19.9.3')])
    assert set(rejected(store, 'members')) == {'m4'}
    assert 'protocol_port 8080' in rejected(store, 'members')['m4']
    assert stored(store, 'members', 'm2')['protocol_port'] == 80
    assert served(store) == {'l1': [('m1', 80), ('m2', 80), ('m3', 80)]}
    _, status = last_status(store)
    assert sorted((i['id'], i['provisioning_status'],
                   i.get('operating_status'))
                  for i in status['members']) == [
        ('m1', 'ACTIVE', None), ('m2', 'ERROR', None), ('m3', 'ACTIVE', None),
        ('m4', 'ERROR', 'ERROR')]
    # A later batch with m4 on the right port accepts it.
    store.batch_update_members('p1', [m1, m2, member('m3', 80),
                                      member('m4', 80,
                                             address='198.19.9.3')])
    assert rejected(store, 'members') == {}


def test_a_pool_without_listener_is_checked_when_a_listener_takes_it(store):
    store.create_loadbalancer(graph())
    store.put_pool(pool('p2'))
    store.put_member(member('m9', 8080, pool_id='p2'))
    assert rejected(store, 'members') == {}     # serves nothing yet
    # A new listener on 80 taking it is refused, as the driver refuses it;
    # the members are left alone (they may serve another listener).
    store.put_listener(listener('l2', 80, 'p2'))
    reason = rejected(store, 'listeners')['l2']
    assert 'protocol_port 80' in reason and 'protocol_port 8080' in reason \
        and 'pool p2' in reason
    assert rejected(store, 'members') == {}
    assert set(served(store)) == {'l1'}
    generation, status = last_status(store)
    assert generation == 0 and status['listeners'] == [
        {'id': 'l2', 'provisioning_status': 'ERROR',
         'operating_status': 'ERROR'}]
    # The rejected listener, updated to its pool's port, is accepted.
    store.put_listener(listener('l2', 8080, 'p2'), True)
    assert rejected(store, 'listeners') == {}
    assert served(store)['l2'] == [('m9', 8080)]


def test_a_listener_update_to_a_misported_pool_changes_nothing(store):
    store.create_loadbalancer(graph())
    store.put_pool(pool('p2', [member('m9', 8080, pool_id='p2')]))
    store.put_listener(dict(listener('l1', 80, 'p2'), name='new'), True)
    # The running listener keeps its pool; nothing is rejected behind it.
    assert rejected(store, 'listeners') == rejected(store, 'members') == {}
    doc = stored(store, 'listeners', 'l1')
    assert (doc['default_pool_id'], doc.get('name')) == ('p1', None)
    assert served(store) == {'l1': [('m1', 80), ('m2', 80)]}
    _, status = last_status(store)
    assert status['listeners'] == [{'id': 'l1',
                                    'provisioning_status': 'ERROR'}]
    assert status['loadbalancers'][0]['provisioning_status'] == 'ACTIVE'
    # An update that keeps its pool is not refused for ports.
    store.put_listener(dict(listener('l1', 80, 'p1'), name='new'), True)
    assert stored(store, 'listeners', 'l1')['name'] == 'new'


def test_graph_creates_reject_only_the_members_on_another_port(store):
    doc = graph()
    doc['pools'][0]['members'].append(member('m9', 8080))
    store.create_loadbalancer(doc)
    assert set(rejected(store, 'members')) == {'m9'}
    assert served(store) == {'l1': [('m1', 80), ('m2', 80)]}
    # A pool created as a listener's default with its members.
    store.put_listener(listener('l2', 443))
    store.put_pool(pool('p2', [member('m21', 443, pool_id='p2'),
                               member('m22', 80, pool_id='p2')], 'l2'))
    assert set(rejected(store, 'members')) == {'m9', 'm22'}
    assert served(store)['l2'] == [('m21', 443)]
    _, status = last_status(store)
    assert {i['id']: i['provisioning_status']
            for i in status['members']} == {'m21': 'ACTIVE', 'm22': 'ERROR'}


def test_tier2_member_ports_are_free(store):
    """The L7 SEs proxy: members on 8080 and 8081 behind port 80."""
    store.create_loadbalancer(test_store_tier2.graph())
    store.put_member(member('m23', 9000, pool_id='p2'))
    store.put_pool(dict(pool('p4'), loadbalancer_id='lb2',
                        members=[member('m41', 9001, pool_id='p4')]))
    store.put_listener(dict(listener('l4', 81, 'p4'),
                            loadbalancer_id='lb2', protocol='HTTP'))
    assert rejected(store, 'members') == rejected(store, 'listeners') == {}


def test_a_member_refused_for_its_port_takes_no_capacity(store):
    """With capacity enforced: graph() counts 2 VIPs x 2 members = 4 of
    max_members 6; the member on 8080 is refused for its port (not for
    capacity) and leaves the last slots to the next one."""
    store.live_agents = lambda group: {'se1'}
    store.record_agent('se1', 'g1', limits={'max_listeners': 64,
                                            'max_members': 6,
                                            'ring_size': 65537})
    store.create_loadbalancer(graph())
    store.put_member(member('m9', 8080))
    store.put_member(member('m10', 80, address='198.19.9.3'))
    reasons = rejected(store, 'members')
    assert set(reasons) == {'m9'} and 'protocol_port 8080' in reasons['m9']
    # A running member's update to another port is refused the same way
    # under capacity enforcement (savepoint): nothing changes.
    store.put_member(member('m10', 8080, address='198.19.9.3'), True)
    assert stored(store, 'members', 'm10')['protocol_port'] == 80
    assert served(store)['l1'] == [('m1', 80), ('m10', 80), ('m2', 80)]
