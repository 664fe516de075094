"""Delta apply: snapshot.Parser and desired.Planner, which re-do only the
load balancers a generation changed, give what a full parse and plan give,
over random edits of a fixture (weights, members added, removed and made
invalid, ids and VIP ports reused across load balancers, load balancers
added, removed, reordered and repeated, member health flipping)."""

import base64
import copy
import random
import zlib

import pytest

from amphora_agent import desired
from amphora_agent import service
from amphora_agent import snapshot
from dsr_wire import auth


def _member(rng, n):
    # Few ids and addresses, so that duplicates happen.
    return {'id': f'm{rng.randrange(n * 8)}',
            'address': f'198.19.{rng.randrange(4)}.{rng.randrange(1, 12)}',
            'protocol_port': 80, 'weight': rng.choice((0, 1, 1, 2)),
            'backup': rng.random() < 0.1}


def _load_balancer(rng, i):
    listeners = []
    for j in range(rng.randrange(1, 3)):
        listeners.append({
            'id': f'l{i}-{j}', 'protocol': rng.choice(('TCP', 'UDP')),
            'port': rng.choice((80, 443)),
            'admin_state_up': rng.random() > 0.1,
            'pool': {'id': f'p{i}-{j}', 'algorithm': 'SOURCE_IP_PORT',
                     'members': [_member(rng, 6) for _ in
                                 range(rng.randrange(0, 5))]}})
    return {'id': f'lb{i}',
            'vips': [{'address': f'192.0.2.{rng.randrange(1, 6)}'}],
            'listeners': listeners}


def _edit(rng, doc):
    lbs = doc['load_balancers']
    choice = rng.randrange(11)
    if not lbs or choice == 0:
        lbs.append(_load_balancer(rng, rng.randrange(20)))
        return
    lb = rng.choice(lbs)
    pools = [lst['pool'] for lst in lb['listeners'] if lst.get('pool')]
    members = [m for p in pools for m in p['members']]
    if choice == 1:
        lbs.remove(lb)
    elif choice == 2:
        rng.shuffle(lbs)
    elif choice == 3:
        lbs.append(copy.deepcopy(lb))          # the same id twice
    elif choice == 4 and members:
        rng.choice(members)['weight'] = rng.choice((0, 1, 5, 999))
    elif choice == 5 and pools:
        rng.choice(pools)['members'].append(_member(rng, 6))
    elif choice == 6 and members:
        pool = next(p for p in pools if p['members'])
        pool['members'].pop(rng.randrange(len(pool['members'])))
    elif choice == 7:
        rng.choice(lb['listeners'])['port'] = rng.choice((80, 443, 8080))
    elif choice == 8:
        lb['vips'][0]['address'] = f'192.0.2.{rng.randrange(1, 6)}'
    elif choice == 9:
        lb['admin_state_up'] = not lb.get('admin_state_up', True)
    elif choice == 10 and pools:
        rng.choice(pools)['id'] = f'p{rng.randrange(6)}'


def _same_snapshot(a, b):
    assert (a.se_group, a.generation) == (b.se_group, b.generation)
    assert a.load_balancers == b.load_balancers
    assert a.rejected == b.rejected


def _same_plan(a, b):
    assert a.state.listeners == b.state.listeners
    assert a.ready_vips == b.ready_vips
    assert a.listener_ids == b.listener_ids
    assert a.member_ids == b.member_ids


# packed: the controller's get_config answer with packed (agent_rpc.pack:
# load balancers as JSON texts); 'mixed': either, at random (an agent
# whose controller is upgraded, or downgraded, between two generations).
@pytest.mark.parametrize('packed', [False, True, 'mixed'])
@pytest.mark.parametrize('seed', range(12))
def test_delta_parse_and_plan_equal_full_ones(seed, packed):
    rng = random.Random(seed)
    doc = {'schema_version': 1, 'se_group': 'g', 'generation': 1,
           'load_balancers': [_load_balancer(rng, i) for i in range(6)]}
    parser, planner = snapshot.Parser(), desired.Planner()
    targets = service.HealthTargets()
    down, flipped = set(), set()
    for step in range(60):
        # The controller's RPC hands over a new document every time.
        sent = copy.deepcopy(doc)
        if packed is True or packed == 'mixed' and rng.random() < 0.5:
            sent = as_packed(sent)
        snap = parser.parse(sent)
        _same_snapshot(snap, snapshot.parse(copy.deepcopy(doc)))
        assert targets(snap) == service.health_targets(snap)

        def usable(member_id):
            return member_id not in down
        # health_changed as the agent passes it: what flipped since.
        plan = planner.plan(snap, usable, health_changed=flipped)
        _same_plan(plan, desired.plan(snap, usable))
        flipped = set()
        for _ in range(rng.randrange(3)):
            _edit(rng, doc)
        doc['generation'] += 1
        ids = [m.id for m, _, _ in snap.members()]
        if ids and rng.random() < 0.5:
            member_id = rng.choice(ids)
            down ^= {member_id}
            flipped.add(member_id)


def as_packed(document):
    """The document as the agent opens a packed envelope."""
    return auth.unpack(auth.pack(document))


def _distinct(count, members, monitor=False):
    """count load balancers sharing no id, address or VIP."""
    lbs = []
    for i in range(count):
        pool = {'id': f'p{i}', 'algorithm': 'SOURCE_IP', 'members': [
            {'id': f'm{i}-{j}', 'address': f'198.19.{i}.{j + 1}',
             'protocol_port': 80} for j in range(members)]}
        if monitor:
            pool['health_monitor'] = {'id': f'hm{i}', 'type': 'TCP',
                                      'delay': 2, 'timeout': 1,
                                      'max_retries': 2}
        lbs.append({'id': f'lb{i}', 'vips': [{'address': f'192.0.2.{i + 1}'}],
                    'listeners': [{'id': f'l{i}-0', 'protocol': 'TCP',
                                   'port': 80, 'pool': pool}]})
    return {'schema_version': 1, 'se_group': 'g', 'generation': 1,
            'load_balancers': lbs}


def test_unchanged_load_balancers_keep_their_plan():
    doc = _distinct(4, 3)
    parser, planner = snapshot.Parser(), desired.Planner()
    first = planner.plan(parser.parse(copy.deepcopy(doc)), lambda _: True,
                         health_changed=())
    doc['load_balancers'][0]['listeners'][0]['pool']['members'].append(
        {'id': 'new', 'address': '198.19.9.9', 'protocol_port': 80})
    doc['generation'] = 2
    asked = []

    def usable(member_id):
        asked.append(member_id)
        return True
    second = planner.plan(parser.parse(copy.deepcopy(doc)), usable,
                          health_changed=())
    # Only the changed load balancer's members were asked about.
    assert 'new' in asked
    lb0 = {m['id'] for lst in doc['load_balancers'][0]['listeners']
           for m in lst['pool']['members']}
    assert set(asked) <= lb0
    for key, spec in first.state.listeners.items():
        if first.listener_ids[key].startswith('l0-'):
            continue
        assert second.state.listeners.get(key) is spec


def test_unchanged_load_balancers_keep_their_health_targets():
    doc = _distinct(3, 1, monitor=True)
    parser, targets = snapshot.Parser(), service.HealthTargets()
    first, _ = targets(parser.parse(copy.deepcopy(doc)))
    doc['load_balancers'][0]['listeners'][0]['pool']['members'][0][
        'protocol_port'] = 81
    second, _ = targets(parser.parse(copy.deepcopy(doc)))
    assert second['m0-0'].port == 81
    assert second['m1-0'] is first['m1-0']
    assert second['m2-0'] is first['m2-0']


def test_a_value_equal_to_the_last_but_of_another_type_is_parsed_again():
    doc = {'schema_version': 1, 'se_group': 'g', 'generation': 1,
           'load_balancers': [{
               'id': 'lb', 'vips': [{'address': '192.0.2.1'}],
               'listeners': [{
                   'id': 'l', 'protocol': 'TCP', 'port': 80,
                   'pool': {'id': 'p', 'algorithm': 'SOURCE_IP',
                            'members': [{'id': 'm', 'address': '198.19.0.1',
                                         'protocol_port': 80,
                                         'weight': 1}]}}]}]}
    parser = snapshot.Parser()
    assert not parser.parse(copy.deepcopy(doc)).rejected
    # True == 1 in Python, but a weight of true is invalid.
    doc['load_balancers'][0]['listeners'][0]['pool']['members'][0][
        'weight'] = True
    assert 'm' in parser.parse(copy.deepcopy(doc)).rejected['members']


def test_a_packed_load_balancer_is_decoded_only_when_its_text_changed(
        monkeypatch):
    decoded = []
    real_unpack = auth.unpack_line

    def unpack_line(line):
        decoded.append(line)
        return real_unpack(line)
    monkeypatch.setattr(auth, 'unpack_line', unpack_line)
    doc = _distinct(5, 3)
    parser = snapshot.Parser()
    sent = as_packed(copy.deepcopy(doc))
    decoded.clear()
    first = parser.parse(sent)
    assert len(decoded) == 5
    doc['generation'] = 2
    doc['load_balancers'][3]['listeners'][0]['pool']['members'][1][
        'weight'] = 7
    sent = as_packed(copy.deepcopy(doc))
    decoded.clear()
    second = parser.parse(sent)
    assert [real_unpack(t)['id'] for t in decoded] == ['lb3']
    assert second.load_balancers[:3] == first.load_balancers[:3]
    assert all(a is b for a, b in zip(second.load_balancers[:3],
                                      first.load_balancers[:3]))
    assert second.load_balancers[3].listeners[0].pool.members[1].weight \
        == 7
    _same_snapshot(second, snapshot.parse(copy.deepcopy(doc)))


@pytest.mark.parametrize('line', [
    'not base64!', base64.b64encode(b'not deflated').decode(),
    base64.b64encode(zlib.compress(b'{"id": "lb1", "vips": ')).decode(),
    base64.b64encode(zlib.compress(b'{"id": "lb1"}')[:-3]).decode(),
    base64.b64encode(zlib.compress(b'"a string"')).decode()])
def test_a_packed_load_balancer_that_is_not_one_is_rejected_alone(line):
    doc = as_packed(_distinct(3, 2))
    doc['load_balancers'][1] = line
    snap = snapshot.Parser().parse(doc)
    assert [lb.id for lb in snap.load_balancers] == ['lb0', 'lb2']
    assert list(snap.rejected['loadbalancers']) == ['load_balancers[1]']


def test_a_packed_load_balancer_sent_twice_is_a_duplicate():
    doc = as_packed(_distinct(2, 2))
    parser = snapshot.Parser()
    parser.parse(copy.deepcopy(doc))
    doc['load_balancers'].append(doc['load_balancers'][0])
    doc['generation'] = 2
    snap = parser.parse(doc)
    _same_snapshot(snap, snapshot.parse({**doc, 'load_balancers': [
        auth.unpack_line(t) for t in doc['load_balancers']]}))
    assert 'lb0' in snap.rejected['loadbalancers']
