import copy
import ipaddress

import pytest

from amphora_agent import desired
from amphora_agent import snapshot


def document(**overrides):
    doc = {
        'schema_version': 1, 'se_group': 'g1', 'generation': 7,
        'load_balancers': [{
            'id': 'lb1', 'vips': [{'address': '192.0.2.10'},
                                  {'address': '2001:db8:f::10'}],
            'listeners': [{
                'id': 'l1', 'protocol': 'TCP', 'port': 80,
                'pool': {
                    'id': 'p1', 'algorithm': 'SOURCE_IP_PORT',
                    'health_monitor': {'id': 'hm1', 'type': 'HTTP',
                                       'delay': 2, 'timeout': 1,
                                       'max_retries': 2,
                                       'expected_codes': '200-204'},
                    'members': [
                        {'id': 'm1', 'address': '198.19.1.2',
                         'protocol_port': 80},
                        {'id': 'm2', 'address': '198.19.2.2',
                         'protocol_port': 80, 'weight': 3},
                        {'id': 'm3', 'address': '198.19.3.2',
                         'protocol_port': 80, 'backup': True},
                    ]}}]}]}
    doc.update(overrides)
    return doc


def test_valid_snapshot_parses():
    snap = snapshot.parse(document())
    assert snap.generation == 7
    (lb,) = snap.load_balancers
    assert lb.vips[1] == ipaddress.ip_address('2001:db8:f::10')
    assert [m.id for m, _, _ in snap.members()] == ['m1', 'm2', 'm3']


def _mutate(path_fn):
    doc = document()
    path_fn(doc)
    return doc


def _lst(doc):
    return doc['load_balancers'][0]['listeners'][0]


def _pool(doc):
    return _lst(doc)['pool']


def _members(doc):
    return _pool(doc)['members']


def _monitor(doc):
    return _pool(doc)['health_monitor']


@pytest.mark.parametrize('mutate,named', [
    (lambda d: d.update(schema_version=2), 'schema_version'),
    (lambda d: d.update(colour='red'), "['colour']"),
    (lambda d: d.update(generation=-1), 'generation'),
    (lambda d: d.update(generation=True), 'generation'),
    (lambda d: d.update(se_group=''), 'se_group'),
    (lambda d: d.update(load_balancers={}), 'load_balancers'),
])
def test_document_problems_reject_the_whole_snapshot(mutate, named):
    with pytest.raises(snapshot.InvalidSnapshot) as exc:
        snapshot.parse(_mutate(mutate))
    assert named in str(exc.value)


def test_not_a_dict_rejects_the_whole_snapshot():
    for document in (None, [], 'x'):
        with pytest.raises(snapshot.InvalidSnapshot):
            snapshot.parse(document)


def _second_lb(doc):
    """A second, valid load balancer on its own VIP."""
    lb2 = copy.deepcopy(doc['load_balancers'][0])
    lb2.update(id='lb2', vips=[{'address': '192.0.2.20'}])
    for lst in lb2['listeners']:
        lst['id'] += '-2'
        lst['pool']['id'] += '-2'
        lst['pool']['health_monitor']['id'] += '-2'
        for m in lst['pool']['members']:
            m['id'] += '-2'
    doc['load_balancers'].append(lb2)


@pytest.mark.parametrize('mutate,kind,obj_id,named', [
    (lambda d: _lst(d).update(protocol='HTTP'), 'listeners', 'l1',
     "protocol 'HTTP' is invalid (allowed: one of TCP, UDP, SCTP)"),
    (lambda d: _lst(d).update(allowed_cidrs=['203.0.113.0/24',
                                             '10.0.0.0/33']),
     'listeners', 'l1', "allowed_cidrs[1] '10.0.0.0/33' is invalid"),
    (lambda d: _lst(d).update(connection_limit=-2), 'listeners', 'l1',
     'connection_limit -2 is invalid (allowed: null, -1 (no limit)'),
    (lambda d: _lst(d).update(connection_limit='100'), 'listeners', 'l1',
     'connection_limit'),
    (lambda d: _lst(d).update(timeout_client_data=-1), 'listeners', 'l1',
     'timeout_client_data -1 is invalid (allowed: null or an integer'),
    (lambda d: _pool(d).update(algorithm='ROUND_ROBIN'), 'pools', 'p1',
     'SOURCE_IP_PORT, SOURCE_IP'),
    (lambda d: _members(d)[0].update(address='300.1.1.1'), 'members', 'm1',
     "address '300.1.1.1' is invalid"),
    (lambda d: _members(d)[0].update(address=3322085634), 'members', 'm1',
     'given as a string'),
    (lambda d: _members(d)[0].update(address='127.0.0.1'), 'members', 'm1',
     'loopback'),
    (lambda d: _members(d)[0].update(address='224.0.0.5'), 'members', 'm1',
     'multicast'),
    (lambda d: _members(d)[0].update(address='0.0.0.0'), 'members', 'm1',
     'unspecified'),
    (lambda d: _members(d)[0].update(address='::'), 'members', 'm1',
     'unspecified'),
    (lambda d: _members(d)[0].update(address='fe80::1'), 'members', 'm1',
     'link-local'),
    (lambda d: _members(d)[0].update(address='255.255.255.255'), 'members',
     'm1', 'broadcast'),
    (lambda d: _members(d)[0].update(address='192.0.2.10'), 'members', 'm1',
     'VIP of the member\'s own load balancer'),
    (lambda d: _members(d)[0].update(monitor_address='2001:db8:f::10'),
     'members', 'm1', 'monitor_address'),
    (lambda d: _members(d)[1].update(address='198.19.1.2'), 'members', 'm2',
     'is also member m1'),
    (lambda d: _members(d)[0].update(weight=300), 'members', 'm1',
     'weight 300 is invalid (allowed: an integer in 0..256)'),
    (lambda d: _members(d)[0].update(protocol_port=80.0), 'members', 'm1',
     'protocol_port'),
    (lambda d: _monitor(d).update(expected_codes='999'), 'healthmonitors',
     'hm1', "expected_codes '999' is invalid"),
    (lambda d: _monitor(d).update(expected_codes='204-200'),
     'healthmonitors', 'hm1', '100..599'),
    (lambda d: _monitor(d).update(expected_codes='2xx'), 'healthmonitors',
     'hm1', 'expected_codes'),
    (lambda d: d['load_balancers'][0]['listeners'].append(
        dict(copy.deepcopy(_lst(d)), id='l2', pool=None)), 'listeners', 'l2',
     'is also listener l1'),
    (lambda d: d['load_balancers'][0].update(colour='red'), 'loadbalancers',
     'lb1', "['colour']"),
    (lambda d: d['load_balancers'][0].update(vips=[{'address': 'x'}]),
     'loadbalancers', 'lb1', 'vips[0].address'),
    # Children without a usable id: the closest parent with one goes.
    (lambda d: _members(d)[0].pop('id'), 'pools', 'p1',
     'members[0] has no usable id'),
    (lambda d: _monitor(d).update(id=7), 'pools', 'p1',
     'health_monitor has no usable id'),
    (lambda d: _pool(d).update(id=''), 'listeners', 'l1',
     'pool has no usable id'),
    (lambda d: _lst(d).pop('id'), 'loadbalancers', 'lb1',
     'listeners[0] has no usable id'),
    (lambda d: _members(d).append(5), 'pools', 'p1',
     'members[3] has no usable id'),
])
def test_a_bad_object_is_rejected_alone(mutate, kind, obj_id, named):
    doc = document()
    _second_lb(doc)
    mutate(doc)
    snap = snapshot.parse(doc)
    assert set(snap.rejected) == {kind}, snap.rejected
    assert list(snap.rejected[kind]) == [obj_id]
    assert named in snap.rejected[kind][obj_id]
    # The other load balancer is untouched and complete.
    lb2 = [lb for lb in snap.load_balancers if lb.id == 'lb2']
    assert len(lb2) == 1 and len(lb2[0].listeners[0].pool.members) == 3
    lb1 = [lb for lb in snap.load_balancers if lb.id == 'lb1']
    if kind == 'loadbalancers':
        assert lb1 == []
        return
    (lb1,) = lb1
    ids = {lst.id for lst in lb1.listeners}
    pool = lb1.listeners[0].pool if lb1.listeners else None
    if kind == 'listeners':
        assert obj_id not in ids and (obj_id == 'l2') == ('l1' in ids)
    elif kind == 'pools':
        assert pool is None and ids == {'l1'}
    elif kind == 'healthmonitors':
        assert pool.health_monitor is None and len(pool.members) == 3
    else:
        assert obj_id not in {m.id for m in pool.members}
        assert len(pool.members) == 2 and pool.health_monitor is not None


def test_a_listener_clashing_across_load_balancers_is_rejected_later_one():
    doc = document()
    _second_lb(doc)
    doc['load_balancers'][1]['vips'].append({'address': '2001:db8:f::10'})
    snap = snapshot.parse(doc)
    assert list(snap.rejected) == ['listeners']
    reason = snap.rejected['listeners']['l1-2']
    assert 'TCP 2001:db8:f::10 port 80 is also served by listener l1 of ' \
        'load balancer lb1' in reason
    lb2 = snap.load_balancers[1]
    assert lb2.id == 'lb2' and lb2.listeners == ()
    # Snapshot order decides: swapped, lb1's listener is the one left out.
    doc['load_balancers'].reverse()
    snap = snapshot.parse(doc)
    assert list(snap.rejected['listeners']) == ['l1']


def test_duplicate_member_ids_reject_the_later_member():
    doc = document()
    _second_lb(doc)
    doc['load_balancers'][1]['listeners'][0]['pool']['members'][0]['id'] = \
        'm1'
    snap = snapshot.parse(doc)
    assert snap.rejected == {'members': {
        'm1': 'member m1: the id is used twice'}}
    assert len(snap.load_balancers[0].listeners[0].pool.members) == 3
    assert len(snap.load_balancers[1].listeners[0].pool.members) == 2


def test_without_keeps_unchanged_load_balancers_identical():
    doc = document()
    _second_lb(doc)
    snap = snapshot.parse(doc)
    smaller = snapshot.without(snap, {'members': {'m1-2': 'why'}})
    assert smaller.load_balancers[0] is snap.load_balancers[0]
    assert smaller.load_balancers[1] is not snap.load_balancers[1]
    assert smaller.rejected == {'members': {'m1-2': 'why'}}
    assert snapshot.without(snap, {}) is snap


def test_parser_memo_reuses_unchanged_load_balancers_and_their_rejections():
    parser = snapshot.Parser()
    doc = document()
    _second_lb(doc)
    _monitor(doc)['expected_codes'] = '999'
    first = parser.parse(copy.deepcopy(doc))
    doc['generation'] += 1
    doc['load_balancers'][1]['listeners'][0]['pool']['members'][0][
        'weight'] = 5
    second = parser.parse(copy.deepcopy(doc))
    assert second.load_balancers[0] is first.load_balancers[0]
    assert second.load_balancers[1] is not first.load_balancers[1]
    assert second.rejected == first.rejected == {'healthmonitors': {
        'hm1': second.rejected['healthmonitors']['hm1']}}
    assert second.generation == 8


def test_listener_limits_are_parsed_and_planned():
    doc = document()
    _lst(doc).update(connection_limit=50,
                     allowed_cidrs=['203.0.113.5/24', '2001:db8:c::/64'])
    (lb,) = snapshot.parse(doc).load_balancers
    lst = lb.listeners[0]
    assert lst.connection_limit == 50
    assert lst.allowed_cidrs == (ipaddress.ip_network('203.0.113.0/24'),
                                 ipaddress.ip_network('2001:db8:c::/64'))
    plan = desired.plan(snapshot.parse(doc), lambda m: True)
    for key, spec in plan.state.listeners.items():
        assert spec.conn_limit == 50
        (net,) = spec.acl()
        assert net.version == key.vip.version
    # Octavia's defaults: no limit, no list.
    plain = desired.plan(snapshot.parse(document()), lambda m: True)
    assert all(s.conn_limit == 0 and s.allowed_cidrs is None
               for s in plain.state.listeners.values())
    _lst(doc).update(connection_limit=-1, allowed_cidrs=[])
    plain = desired.plan(snapshot.parse(doc), lambda m: True)
    assert all(s.conn_limit == 0 and s.allowed_cidrs is None
               for s in plain.state.listeners.values())


def test_timeout_client_data_is_the_idle_timeout():
    doc = document()
    plain = desired.plan(snapshot.parse(doc), lambda m: True)
    assert all(s.idle_timeout_ms == 0
               for s in plain.state.listeners.values())
    _lst(doc).update(timeout_client_data=1500)
    assert snapshot.parse(doc).load_balancers[0].listeners[
        0].timeout_client_data == 1500
    plan = desired.plan(snapshot.parse(doc), lambda m: True)
    assert {s.idle_timeout_ms for s in plan.state.listeners.values()} == {
        1500}


def test_monitor_timeout_beyond_delay_is_accepted():
    doc = document()
    _monitor(doc).update(delay=2, timeout=3)
    snap = snapshot.parse(doc)
    assert not snap.rejected
    assert snap.load_balancers[0].listeners[0].pool.health_monitor \
        .timeout == 3


def test_plan_follows_octavia_semantics():
    snap = snapshot.parse(document())
    up = {'m1': True, 'm2': True, 'm3': True}
    plan = desired.plan(snap, up.get,
                        ipaddress.ip_address('198.18.1.2'), None)
    # Every listener on every VIP; backups idle while primaries are usable.
    assert len(plan.state.listeners) == 2
    for spec in plan.state.listeners.values():
        assert {str(a) for a in spec.members} == {'198.19.1.2', '198.19.2.2'}
    assert plan.ready_vips == {ipaddress.ip_address('192.0.2.10'),
                               ipaddress.ip_address('2001:db8:f::10')}

    up.update(m1=False, m2=False)
    plan = desired.plan(snap, up.get, None, None)
    for spec in plan.state.listeners.values():
        assert {str(a) for a in spec.members} == {'198.19.3.2'}

    up.update(m3=False)
    plan = desired.plan(snap, up.get, None, None)
    assert plan.ready_vips == set()
    assert all(not s.members for s in plan.state.listeners.values())


def test_plan_skips_disabled_objects_and_drains_weight_zero():
    doc = document()
    _lst(doc)['pool']['members'][0]['weight'] = 0
    _lst(doc)['pool']['members'][1]['admin_state_up'] = False
    snap = snapshot.parse(doc)
    plan = desired.plan(snap, lambda _: True, None, None)
    spec = next(iter(plan.state.listeners.values()))
    # m1 drains (weight 0, kept for its flows); m2 is admin down; the
    # backup stands in because no primary takes new flows.
    assert {str(a): m.weight for a, m in spec.members.items()} == {
        '198.19.3.2': 1, '198.19.1.2': 0}
    doc['load_balancers'][0]['admin_state_up'] = False
    plan = desired.plan(snapshot.parse(doc), lambda _: True, None, None)
    assert plan.state.listeners == {} and plan.ready_vips == set()
