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


@pytest.mark.parametrize('mutate,named', [
    (lambda d: d.update(schema_version=2), 'schema_version'),
    (lambda d: d.update(colour='red'), "['colour']"),
    (lambda d: _lst(d).update(protocol='HTTP'), 'protocol'),
    (lambda d: _lst(d)['pool'].update(algorithm='ROUND_ROBIN'),
     'SOURCE_IP_PORT, SOURCE_IP'),
    (lambda d: _lst(d)['pool']['members'][0].update(address='300.1.1.1'),
     "members[0].address: '300.1.1.1'"),
    (lambda d: _lst(d)['pool']['members'][1].update(address='198.19.1.2'),
     'is also members[0]'),
    (lambda d: d['load_balancers'][0]['listeners'].append(
        copy.deepcopy(_lst(d))), 'is also listeners[0]'),
    (lambda d: _lst(d)['pool']['health_monitor'].update(timeout=5),
     'exceeds delay'),
    (lambda d: _lst(d)['pool']['health_monitor'].update(
        expected_codes='2xx'), 'expected_codes'),
    (lambda d: _lst(d)['pool']['members'][0].update(weight=300),
     'weight'),
    (lambda d: d['load_balancers'].append(dict(
        copy.deepcopy(d['load_balancers'][0]), id='lb2')),
     'also served by load balancer lb1'),
])
def test_bad_snapshots_are_rejected_naming_the_field(mutate, named):
    with pytest.raises(snapshot.InvalidSnapshot) as exc:
        snapshot.parse(_mutate(mutate))
    assert named in str(exc.value)


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
