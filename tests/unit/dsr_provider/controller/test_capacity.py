"""Capacity: the controller refuses only the object that would take an SE
group over its live agents' smallest limits (real Store on SQLite)."""

import collections
import ipaddress
import logging
import random

import pytest

from amphora_agent import capacity
from amphora_agent.dataplane import dataplane as dp_mod
from amphora_agent import snapshot as snapshot_mod
from dsr_provider.controller import endpoints
from dsr_provider.controller import models
from dsr_provider.controller import reporter as reporter_mod
from dsr_provider.controller import store as store_mod
from dsr_wire import rings
from tests.unit.dsr_provider.controller.test_store import FakeDriverLib
from tests.unit.dsr_provider import fakes


def limits(max_listeners=64, max_members=1000):
    return {'max_listeners': max_listeners, 'max_members': max_members,
            'ring_size': 65537, 'conn_table_size': 262144}


@pytest.fixture
def live():
    return {'se1'}


@pytest.fixture
def cstore(store, live):
    """The shared SQLite store, with tooz membership stood in by `live`."""
    store.live_agents = lambda group: set(live)
    return store


def lb(i, vips=1, listeners=(), pools=()):
    doc = {'loadbalancer_id': f'lb{i}', 'vip_address': f'192.0.2.{i}',
           'admin_state_up': True,
           'listeners': list(listeners), 'pools': list(pools)}
    if vips == 2:
        doc['additional_vips'] = [{'ip_address': f'2001:db8:f::{i:x}'}]
    return doc


def listener(lb_i, n, pool=None, cidrs=None):
    doc = {'listener_id': f'l{lb_i}-{n}', 'loadbalancer_id': f'lb{lb_i}',
           'protocol': 'TCP', 'protocol_port': 80 + n,
           'admin_state_up': True}
    if pool:
        doc['default_pool_id'] = pool
    if cidrs is not None:
        doc['allowed_cidrs'] = list(cidrs)
    return doc


def pool(lb_i, name, listener_id=None, members=0, port=80):
    """port: its members' (their listener's: listener(lb_i, n) is on
    80 + n)."""
    return {'pool_id': name, 'loadbalancer_id': f'lb{lb_i}',
            'listener_id': listener_id, 'lb_algorithm': 'SOURCE_IP_PORT',
            'protocol': 'TCP', 'admin_state_up': True,
            'members': [member(name, k, port) for k in range(members)]}


def member(pool_id, k, port=80):
    return {'member_id': f'{pool_id}-m{k}', 'pool_id': pool_id,
            'address': f'198.19.{k // 250}.{k % 250 + 2}',
            'protocol_port': port, 'admin_state_up': True}


def pending_items(store):
    with store.db.session() as s:
        return [(p.generation, p.status) for p in s.query(
            models.PendingStatus).order_by(models.PendingStatus.id)]


def rejected_rows(store, kind):
    with store.db.session() as s:
        return {r.id: r.rejected for r in s.query(store_mod._MODELS[kind])
                if r.rejected}


def snapshot_listeners(store):
    snap = snapshot_mod.parse(store.snapshot('g1'))
    return sorted(lst.id for lb_ in snap.load_balancers
                  for lst in lb_.listeners)


def test_no_live_agent_means_no_controller_enforcement(cstore, live):
    cstore.record_agent('se1', 'g1', limits=limits(max_listeners=1))
    live.clear()
    cstore.create_loadbalancer(lb(1))
    for n in range(3):
        cstore.put_listener(listener(1, n))
    assert rejected_rows(cstore, 'listeners') == {}
    assert len(snapshot_listeners(cstore)) == 3


def test_listener_over_max_listeners_is_rejected_alone(cstore, caplog):
    """VIPs x listeners: a 2-VIP load balancer's second listener makes 4
    dataplane listeners; the limit is 3."""
    cstore.record_agent('se1', 'g1', limits=limits(max_listeners=3))
    cstore.create_loadbalancer(lb(1, vips=2))
    cstore.put_listener(listener(1, 0))
    with caplog.at_level(logging.ERROR):
        cstore.put_listener(listener(1, 1))
    reason = ('SE group g1: 4 listeners (VIP addresses x listeners) would '
              'exceed max_listeners 3 '
              '(SE se1)')
    assert rejected_rows(cstore, 'listeners') == {'l1-1': reason}
    assert 'listener l1-1 rejected: ' + reason in caplog.text
    assert snapshot_listeners(cstore) == ['l1-0']
    generation, status = pending_items(cstore)[-1]
    assert generation == 0          # waits for no agent
    assert store_mod.octavia_status(status) == {
        'listeners': [{'id': 'l1-1', 'provisioning_status': 'ERROR',
                       'operating_status': 'ERROR'}],
        'loadbalancers': [{'id': 'lb1', 'provisioning_status': 'ACTIVE'}]}


def test_the_smallest_limit_of_the_live_agents_counts(cstore, live):
    live.update({'se2'})
    cstore.record_agent('se1', 'g1', limits=limits(max_listeners=8))
    cstore.record_agent('se2', 'g1', limits=limits(max_listeners=2))
    cstore.record_agent('se3-dead', 'g1', limits=limits(max_listeners=1))
    cstore.create_loadbalancer(lb(1))
    for n in range(3):
        cstore.put_listener(listener(1, n))
    assert rejected_rows(cstore, 'listeners') == {
        'l1-2': 'SE group g1: 3 listeners (VIP addresses x listeners) '
                'would exceed max_listeners 2 '
                '(SE se2)'}


def test_members_count_once_per_vip_and_listener(cstore):
    """2 VIPs x 1 listener x 2 members = 4; a third member makes 6 > 5."""
    cstore.record_agent('se1', 'g1', limits=limits(max_members=5))
    cstore.create_loadbalancer(lb(1, vips=2, listeners=[
        listener(1, 0, pool='p1')], pools=[pool(1, 'p1', 'l1-0', 2)]))
    assert rejected_rows(cstore, 'members') == {}
    cstore.put_member(member('p1', 2))
    assert rejected_rows(cstore, 'members') == {
        'p1-m2': 'SE group g1: 6 members (per VIP address and listener) '
                 'would exceed max_members 5 '
                 '(SE se1)'}
    snap = snapshot_mod.parse(cstore.snapshot('g1'))
    assert [m.id for m in snap.load_balancers[0].listeners[0].pool
            .members] == ['p1-m0', 'p1-m1']
    _, status = pending_items(cstore)[-1]
    out = store_mod.octavia_status(status)
    assert out['members'] == [{'id': 'p1-m2', 'provisioning_status': 'ERROR',
                               'operating_status': 'ERROR'}]
    assert out['pools'] == [{'id': 'p1', 'provisioning_status': 'ACTIVE'}]


def test_batch_update_accepts_in_order_and_keeps_running_members(cstore):
    cstore.record_agent('se1', 'g1', limits=limits(max_members=3))
    cstore.create_loadbalancer(lb(1, listeners=[listener(1, 0, pool='p1')],
                                  pools=[pool(1, 'p1', 'l1-0', 2)]))
    wanted = [member('p1', k) for k in (0, 1, 2, 3, 4)]
    cstore.batch_update_members('p1', wanted)
    assert sorted(rejected_rows(cstore, 'members')) == ['p1-m3', 'p1-m4']
    _, status = pending_items(cstore)[-1]
    got = {m['id']: m['provisioning_status']
           for m in store_mod.octavia_status(status)['members']}
    assert got == {'p1-m0': 'ACTIVE', 'p1-m1': 'ACTIVE', 'p1-m2': 'ACTIVE',
                   'p1-m3': 'ERROR', 'p1-m4': 'ERROR'}


def test_a_load_balancer_graph_over_capacity_is_refused_whole(cstore):
    cstore.record_agent('se1', 'g1', limits=limits(max_listeners=1))
    cstore.create_loadbalancer(lb(1, listeners=[listener(1, 0)]))
    cstore.create_loadbalancer(lb(2, listeners=[listener(2, 0, pool='p2')],
                                  pools=[pool(2, 'p2', 'l2-0', 1)]))
    assert list(rejected_rows(cstore, 'loadbalancers')) == ['lb2']
    assert snapshot_listeners(cstore) == ['l1-0']
    generation, status = pending_items(cstore)[-1]
    assert generation == 0
    out = store_mod.octavia_status(status)
    assert {item['provisioning_status'] for items in out.values()
            for item in items} == {'ERROR'}
    assert sum(len(items) for items in out.values()) == 4


def test_issue_9_case_2_twenty_load_balancers_on_eight_listeners(cstore):
    """20 load balancers x 1 listener x 1 pool x 2 members on a group whose
    agents allow 8 listeners: the first 8 converge, exactly 12 fail."""
    cstore.record_agent('se1', 'g1', limits=limits(max_listeners=8))
    lib = FakeDriverLib()
    reporter = reporter_mod.Reporter(cstore, fakes.FakeNotifier(), lib,
                                     lambda group: {'se1'})
    for i in range(1, 21):
        cstore.create_loadbalancer(lb(i))
        cstore.put_listener(listener(i, 0))
        cstore.put_pool(pool(i, f'p{i}', f'l{i}-0', 2))
    with cstore.db.session() as s:
        generation = s.get(models.SEGroup, 'g1').generation
    cstore.record_agent('se1', 'g1', applied_generation=generation)
    reporter.run_once()
    final = {}
    for st in lib.statuses:
        for item in st.get('listeners', ()):
            if 'provisioning_status' in item:
                final[item['id']] = item['provisioning_status']
    assert sorted(k for k, v in final.items() if v == 'ACTIVE') == sorted(
        f'l{i}-0' for i in range(1, 9))
    assert sorted(k for k, v in final.items() if v == 'ERROR') == sorted(
        f'l{i}-0' for i in range(9, 21))
    assert len(snapshot_listeners(cstore)) == 8
    assert pending_items(cstore) == []


def test_deleting_a_rejected_object_works(cstore):
    cstore.record_agent('se1', 'g1', limits=limits(max_listeners=1))
    cstore.create_loadbalancer(lb(1))
    cstore.put_listener(listener(1, 0))
    cstore.put_listener(listener(1, 1))
    cstore.delete_listener('l1-1')
    assert rejected_rows(cstore, 'listeners') == {}
    _, status = pending_items(cstore)[-1]
    assert store_mod.octavia_status(status)['listeners'] == [
        {'id': 'l1-1', 'provisioning_status': 'DELETED'}]
    assert snapshot_listeners(cstore) == ['l1-0']


def test_a_rejected_object_updated_once_room_is_free_is_accepted(cstore):
    cstore.record_agent('se1', 'g1', limits=limits(max_listeners=1))
    cstore.create_loadbalancer(lb(1))
    cstore.put_listener(listener(1, 0))
    cstore.put_listener(listener(1, 1))
    cstore.delete_listener('l1-0')
    cstore.put_listener(listener(1, 1))     # listener update
    assert rejected_rows(cstore, 'listeners') == {}
    assert snapshot_listeners(cstore) == ['l1-1']


def test_running_objects_are_never_displaced_when_limits_shrink(cstore):
    cstore.record_agent('se1', 'g1', limits=limits(max_listeners=4))
    cstore.create_loadbalancer(lb(1))
    for n in range(3):
        cstore.put_listener(listener(1, n))
    cstore.record_agent('se1', 'g1', limits=limits(max_listeners=2))
    cstore.update_loadbalancer({'loadbalancer_id': 'lb1', 'name': 'x'})
    cstore.put_listener(listener(1, 0))     # an update adding nothing
    assert rejected_rows(cstore, 'loadbalancers') == {}
    assert rejected_rows(cstore, 'listeners') == {}
    cstore.put_listener(listener(1, 3))
    assert list(rejected_rows(cstore, 'listeners')) == ['l1-3']
    assert len(snapshot_listeners(cstore)) == 3


def test_a_rejected_parent_stays_error_on_a_later_change(cstore):
    """A pool refused for its members stays ERROR when a health monitor is
    added below it (Octavia set it PENDING_UPDATE as a parent)."""
    cstore.record_agent('se1', 'g1', limits=limits(max_members=2))
    cstore.create_loadbalancer(lb(1, listeners=[listener(1, 0)]))
    cstore.put_pool(pool(1, 'p1', 'l1-0', 3))
    assert list(rejected_rows(cstore, 'pools')) == ['p1']
    cstore.put_healthmonitor({'healthmonitor_id': 'hm1', 'pool_id': 'p1',
                              'type': 'TCP', 'delay': 5, 'timeout': 3,
                              'max_retries': 3})
    lib = FakeDriverLib()
    reporter_mod.Reporter(cstore, fakes.FakeNotifier(), lib,
                          lambda group: set()).run_once()
    last = [st for st in lib.statuses if 'healthmonitors' in st][-1]
    assert last['pools'] == [{'id': 'p1', 'provisioning_status': 'ERROR',
                              'operating_status': 'ERROR'}]
    # The SEs run no check of a rejected pool: not ACTIVE, not ONLINE.
    assert last['healthmonitors'] == [{'id': 'hm1',
                                       'provisioning_status': 'ERROR',
                                       'operating_status': 'OFFLINE'}]
    # ... and the operating-status loop does not flip it afterwards.
    assert all(item['operating_status'] == 'ERROR'
               for st in lib.statuses for item in st.get('pools', ())
               if 'operating_status' in item)


def test_a_pool_cannot_have_more_members_than_ring_slots(cstore):
    cstore.record_agent('se1', 'g1', limits={'max_listeners': 64,
                                             'max_members': 1000,
                                             'ring_size': 3})
    cstore.create_loadbalancer(lb(1, listeners=[listener(1, 0, pool='p1')],
                                  pools=[pool(1, 'p1', 'l1-0', 3)]))
    cstore.put_member(member('p1', 3))
    assert rejected_rows(cstore, 'members') == {
        'p1-m3': 'SE group g1: 4 members in one pool (ring slots) would '
                 'exceed ring_size 3 (SE se1)'}


RING_SLOTS = ('SE group g1: {n} ring slots (per VIP address and listener, '
              'each ring sized by its pool) would exceed ring_slots {limit} '
              '(SE se1)')


def ring_limits(ring_slots):
    return dict(limits(), ring_slots=ring_slots)


def test_rings_over_ring_slots_refuse_the_load_balancer_that_adds_them(
        cstore):
    """Each ring takes its pool's tier (4001 slots up to 4 members): two
    listeners with pools need 8002 slots of 7500."""
    cstore.record_agent('se1', 'g1', limits=ring_limits(7500))
    cstore.create_loadbalancer(lb(1, listeners=[listener(1, 0, pool='p1')],
                                  pools=[pool(1, 'p1', 'l1-0', 2)]))
    # A listener without a pool has no ring: it fits.
    cstore.create_loadbalancer(lb(2, listeners=[listener(2, 0)]))
    cstore.create_loadbalancer(lb(3, listeners=[listener(3, 0, pool='p3')],
                                  pools=[pool(3, 'p3', 'l3-0', 1)]))
    assert rejected_rows(cstore, 'loadbalancers') == {
        'lb3': RING_SLOTS.format(n=8002, limit=7500)}
    assert snapshot_listeners(cstore) == ['l1-0', 'l2-0']


def test_a_member_that_moves_its_ring_up_a_tier_is_refused_alone(cstore):
    """A fifth member takes the pool's ring from 4001 to 8009 slots, over
    ring_slots 7500 (what amphora_agent.capacity would refuse too); the
    four members already there keep running."""
    cstore.record_agent('se1', 'g1', limits=ring_limits(7500))
    cstore.create_loadbalancer(lb(1, listeners=[listener(1, 0, pool='p1')],
                                  pools=[pool(1, 'p1', 'l1-0', 4)]))
    cstore.put_member(member('p1', 4))
    assert rejected_rows(cstore, 'members') == {'p1-m4': RING_SLOTS.format(
        n=8009, limit=7500)}
    snap = snapshot_mod.parse(cstore.snapshot('g1'))
    assert len(snap.load_balancers[0].listeners[0].pool.members) == 4


def test_ring_slots_are_counted_at_the_groups_ring_size(cstore):
    """With ring_size 2003 (below the first tier) every ring is 2003
    slots: three listeners with pools fit in 6009, not in 6008."""
    cstore.record_agent('se1', 'g1', limits=dict(
        ring_limits(6008), ring_size=2003))
    for i in (1, 2, 3):
        cstore.create_loadbalancer(lb(
            i, listeners=[listener(i, 0, pool=f'p{i}')],
            pools=[pool(i, f'p{i}', f'l{i}-0', 1)]))
    assert list(rejected_rows(cstore, 'loadbalancers')) == ['lb3']


def reference_count(session, group, excluded, ceiling=65537):
    """The usage counted the slow way: every accepted member of every
    accepted pool of every accepted listener, row by row."""
    lbs = {lb.id: len(models.vip_addresses(lb.doc)) for lb in
           session.query(models.LoadBalancer).filter_by(se_group=group,
                                                        rejected=None)}
    pools = {p.id for p in session.query(models.Pool).filter_by(
        rejected=None) if p.loadbalancer_id in lbs}
    members = collections.defaultdict(list)
    for m in session.query(models.Member).filter_by(rejected=None):
        members[m.pool_id].append(m.id)
    out = dict.fromkeys(('max_listeners', 'max_members', 'ring_size',
                         'ring_slots'), 0)
    families = {lb.id: [ipaddress.ip_address(a).version
                        for a in models.vip_addresses(lb.doc)]
                for lb in session.query(models.LoadBalancer).filter_by(
                    se_group=group, rejected=None)}
    cidrs = {4: 0, 6: 0}
    for lst in session.query(models.Listener).filter_by(rejected=None):
        lb_id, pool_id = lst.loadbalancer_id, lst.doc.get('default_pool_id')
        if lb_id not in lbs or ('listeners', lst.id) in excluded \
                or ('loadbalancers', lb_id) in excluded:
            continue
        out['max_listeners'] += lbs[lb_id]
        for vip_family in families[lb_id]:
            cidrs[vip_family] += len({
                n for n in map(ipaddress.ip_network,
                               lst.doc.get('allowed_cidrs') or ())
                if n.version == vip_family})
        if pool_id in pools and ('pools', pool_id) not in excluded:
            n = sum(1 for mid in members[pool_id]
                    if ('members', mid) not in excluded)
            out['max_members'] += lbs[lb_id] * n
            out['ring_size'] = max(out['ring_size'], n)
            out['ring_slots'] += lbs[lb_id] * (
                rings.ring_size_for(n, ceiling) if n else 0)
    out['max_cidrs'] = max(cidrs.values())
    return out


def test_the_usage_count_is_the_count_of_every_accepted_row(cstore):
    """Members are counted per pool by the database; excluding members
    (the change's own, Store._admit) subtracts only those in a count."""
    rnd = random.Random(3)
    cidr_rnd = random.Random(5)     # its own: rnd's draws stay as they were
    cstore.record_agent('se1', 'g1', limits=dict(limits(),
                                                 max_members=120))
    for i in range(1, 16):
        cstore.create_loadbalancer(lb(
            i, vips=rnd.choice((1, 2)),
            listeners=[listener(i, n, pool=f'p{i}-{n}',
                                cidrs=cidr_rnd.sample(
                                    CIDRS, cidr_rnd.randint(0, len(CIDRS))))
                       for n in range(rnd.randint(0, 2))] + [
                listener(i, 5)],
            pools=[pool(i, f'p{i}-{n}', f'l{i}-{n}', rnd.randint(0, 9),
                        port=80 + n)
                   for n in range(2)]))
    for i in range(1, 16):
        for k in range(20, 23):
            cstore.put_member(member(f'p{i}-0', k))
    with cstore.db.session() as s:
        for model in (models.Member, models.LoadBalancer):
            assert s.query(model).filter(model.rejected.isnot(None)).count()
        ids = {kind: [r.id for r in s.query(model)] for kind, model in (
            ('members', models.Member), ('pools', models.Pool),
            ('listeners', models.Listener),
            ('loadbalancers', models.LoadBalancer))}
        usage = store_mod._Usage(s, 'g1', {'ring_size': 65537})
        for _ in range(200):
            excluded = {(kind, x) for kind, pool_ in ids.items()
                        for x in rnd.sample(pool_, min(len(pool_), rnd.randint(
                            0, 12 if kind == 'members' else 2)))}
            assert usage.count(excluded) == reference_count(
                s, 'g1', excluded), excluded


def stored_doc(store, kind, obj_id):
    with store.db.session() as s:
        return s.get(store_mod._MODELS[kind], obj_id).doc


def last_status(store):
    _, status = pending_items(store)[-1]
    return store_mod.octavia_status(status)


def test_a_refused_listener_update_keeps_the_running_listener(cstore):
    """Pointing a running listener at a pool too big for the SEs changes
    nothing: the SEs go on serving the previous listener, the update is
    ERROR (not the listener's operating status), nothing is rejected."""
    cstore.record_agent('se1', 'g1', limits=limits(max_members=4))
    cstore.create_loadbalancer(lb(1, listeners=[listener(1, 0, 'pA')],
                                  pools=[pool(1, 'pA', 'l1-0', 2),
                                         pool(1, 'pB', None, 5)]))
    cstore.put_listener(dict(listener(1, 0, 'pB'), name='new'))
    assert rejected_rows(cstore, 'listeners') == {}
    assert snapshot_listeners(cstore) == ['l1-0']
    doc = stored_doc(cstore, 'listeners', 'l1-0')
    assert (doc['default_pool_id'], doc.get('name')) == ('pA', None)
    status = last_status(cstore)
    assert status['listeners'] == [{'id': 'l1-0',
                                    'provisioning_status': 'ERROR'}]
    assert status['loadbalancers'][0]['provisioning_status'] == 'ACTIVE'


def test_a_refused_load_balancer_update_keeps_it_running(cstore):
    """A second VIP doubles the listeners and members counted."""
    cstore.record_agent('se1', 'g1', limits=limits(max_members=3))
    cstore.create_loadbalancer(lb(1, listeners=[listener(1, 0, 'pA')],
                                  pools=[pool(1, 'pA', 'l1-0', 2)]))
    cstore.update_loadbalancer({
        'loadbalancer_id': 'lb1',
        'additional_vips': [{'ip_address': '2001:db8:f::1'}]})
    assert rejected_rows(cstore, 'loadbalancers') == {}
    assert 'additional_vips' not in stored_doc(cstore, 'loadbalancers',
                                               'lb1')
    assert snapshot_listeners(cstore) == ['l1-0']
    assert last_status(cstore)['loadbalancers'] == [
        {'id': 'lb1', 'provisioning_status': 'ERROR'}]


def test_a_refused_pool_update_keeps_the_running_pool(cstore):
    """An update naming a listener that has no pool makes the pool its
    default (Store.put_pool): over capacity, neither changes."""
    cstore.record_agent('se1', 'g1', limits=limits(max_members=4))
    cstore.create_loadbalancer(lb(1, listeners=[listener(1, 0)],
                                  pools=[pool(1, 'pB', None, 5)]))
    update = pool(1, 'pB', 'l1-0')
    del update['members']
    cstore.put_pool(update)
    assert rejected_rows(cstore, 'pools') == {}
    assert 'default_pool_id' not in stored_doc(cstore, 'listeners', 'l1-0')
    assert stored_doc(cstore, 'pools', 'pB').get('listener_id') is None
    assert last_status(cstore)['pools'] == [
        {'id': 'pB', 'provisioning_status': 'ERROR'}]


def test_a_refused_create_is_still_rejected(cstore):
    cstore.record_agent('se1', 'g1', limits=limits(max_members=4))
    cstore.create_loadbalancer(lb(1, listeners=[listener(1, 0, 'pB')]))
    cstore.put_pool(pool(1, 'pB', 'l1-0', 5))
    assert list(rejected_rows(cstore, 'pools')) == ['pB']


CIDRS = ['203.0.113.0/24', '198.51.100.0/24', '192.0.2.0/28',
         '2001:db8:c::/48', '2001:db8:d::/48']


def test_allowed_cidrs_over_max_cidrs_refuse_the_listener_alone(cstore):
    """Prefixes of one family, counted on every VIP address of that
    family: a dual-stack load balancer enforces a listener's IPv4
    prefixes on its IPv4 VIP and its IPv6 prefixes on its IPv6 VIP."""
    cstore.record_agent('se1', 'g1', limits=dict(limits(), max_cidrs=4))
    cstore.create_loadbalancer(lb(1, vips=2))
    cstore.put_listener(listener(1, 0, cidrs=CIDRS))     # 3 v4 + 2 v6
    cstore.put_listener(listener(1, 1, cidrs=CIDRS[3:]))  # + 2 v6 = 4
    cstore.put_listener(listener(1, 2, cidrs=CIDRS[:2]))  # 5 v4 > 4
    assert rejected_rows(cstore, 'listeners') == {
        'l1-2': 'SE group g1: 5 allowed_cidrs prefixes of one IP family '
                '(per VIP address of that family and listener) would '
                'exceed max_cidrs 4 (SE se1)'}
    assert snapshot_listeners(cstore) == ['l1-0', 'l1-1']


def test_an_agent_reports_max_cidrs_and_the_controller_keeps_it():
    """From the live maps' size to the stored limits (an agent of an
    earlier release reports none: the controller then does not count)."""
    reported = capacity.Limits.of_dataplane(dp_mod.Limits(
        max_listeners=8, ring_size=251, max_reals=65, conn_table_size=4096,
        max_cidrs=100)).to_dict()
    assert reported['max_cidrs'] == 100
    assert endpoints._per_limit(reported, 1)['max_cidrs'] == 100
    # A limit of 0 is no limit: dropped (what an SE holds may be 0).
    assert 'max_cidrs' not in endpoints._per_limit(
        dict(reported, max_cidrs=0), 1)
    assert endpoints._per_limit({'max_cidrs': 0}, 0) == {'max_cidrs': 0}
