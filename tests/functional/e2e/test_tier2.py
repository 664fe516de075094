"""Tier 2 through the real octavia-api and the `openstack` CLI (the
product lab: Keystone-less Octavia, driver agent, dsr-controller on
MariaDB, L4 SE agents in namespaces): a tier-2 flavor, an HTTP listener, a
ROUND_ROBIN pool with port-translated members and an HTTP monitor, an L7
policy redirecting /api to a second pool -- every object ACTIVE (no L7 SE
yet: stored, applied when one joins); the controller's two documents; an
L7 SE that joins its tooz group enters the L4 SEs' rings; the same calls on
a tier-1 load balancer are refused naming the tier; a cascade delete leaves
nothing behind."""

import time

from cryptography.hazmat.primitives.asymmetric import ed25519
import pytest

from dsr_provider.controller import db as db_mod
from dsr_provider.controller import enrolment
from dsr_provider.controller import models
from dsr_provider.controller import store as store_mod
from dsr_wire import l7
from dsr_wire import membership
from tests.functional.e2e import helpers as h
from tools.lab import netns
from tools.lab import product_lab as pl

VIP1, VIP2 = '192.0.2.31', '192.0.2.32'


@pytest.fixture(scope='module')
def lab():
    with h.product(n_se=2, n_members=2) as lab:
        yield lab


@pytest.fixture
def store(lab):
    database = db_mod.Database(lab.controller_db_url)
    yield store_mod.Store(database, lab.agents.se_group)
    database.engine.dispose()


def test_tier2_through_octavia(lab, store):
    l4 = lab.agents.se_group
    l7_group = f'{l4}-l7'
    h.tier2_flavor(lab)
    h.act(lab, 'create', '--name', 'lb2', '--provider', 'dsr', '--flavor',
          'tier2', '--vip-subnet-id', pl.VIP_SUBNET, '--vip-address', VIP2)
    h.act(lab, 'listener', 'create', '--name', 'web', '--protocol', 'HTTP',
          '--protocol-port', '80', '--timeout-member-connect', '2000', 'lb2')
    h.act(lab, 'pool', 'create', '--name', 'p-web', '--listener', 'web',
          '--protocol', 'HTTP', '--lb-algorithm', 'ROUND_ROBIN',
          '--session-persistence', 'type=HTTP_COOKIE')
    h.act(lab, 'pool', 'create', '--name', 'p-api', '--loadbalancer',
          'lb2', '--protocol', 'HTTP', '--lb-algorithm',
          'LEAST_CONNECTIONS')
    h.act(lab, 'healthmonitor', 'create', '--name', 'hm-web', '--type',
          'HTTP', '--delay', '5', '--timeout', '3', '--max-retries', '2',
          '--url-path', '/health', 'p-web')
    h.act(lab, *h.member_args('w1', '198.19.1.2', 'p-web', port=8080))
    h.act(lab, *h.member_args('a1', '198.19.2.2', 'p-api', port=8081))
    h.act(lab, 'l7policy', 'create', '--name', 'to-api', '--action',
          'REDIRECT_TO_POOL', '--redirect-pool', 'p-api', 'web')
    h.act(lab, 'l7rule', 'create', '--type', 'PATH', '--compare-type',
          'STARTS_WITH', '--value', '/api', 'to-api')
    policy = h.find(lab, 'l7policies', 'to-api')
    assert policy['operating_status'] == 'ONLINE', policy

    # The L7 group's document: what the L7 SEs will run.
    doc = store.snapshot(l7_group)
    l7.check_document(doc)
    (lb,) = doc['load_balancers']
    (web,) = lb['listeners']
    assert web['protocol'] == 'HTTP'
    assert web['timeout_member_connect'] == 2000
    ((rule,),) = [p['rules'] for p in web['l7policies']]
    assert (rule['type'], rule['compare_type'], rule['value']) == (
        'PATH', 'STARTS_WITH', '/api')
    pools = {p['id']: p for p in lb['pools']}
    assert pools[web['l7policies'][0]['redirect_pool_id']][
        'lb_algorithm'] == 'LEAST_CONNECTIONS'
    assert {m['protocol_port'] for p in pools.values()
            for m in p['members']} == {8080, 8081}

    # The L4 SEs run it with an empty synthetic pool until an L7 SE joins.
    def l4_members():
        lbs = {x['id']: x for x in store.snapshot(l4)['load_balancers']}
        (listener,) = lbs[lb['id']]['listeners']
        assert listener['protocol'] == 'TCP'
        assert listener['pool']['id'] == f'l7:{web["id"]}'
        return [(m['id'], m['address'], m['protocol_port'])
                for m in listener['pool']['members']]
    assert l4_members() == []
    # Only an enrolled L7 SE's membership counts (docs/security.md): the
    # one below joins as the real agent does, enrolled in its group.
    enrolment.enrol(store.db, l7_group, 'l7se-1',
                    ed25519.Ed25519PrivateKey.generate().public_key())
    # And only once it reported (signed), at the tunnel addresses of its
    # report: as report_state stores it.
    store.record_agent('l7se-1', l7_group, sent=('report_state', time.time()),
                       applied_generation=doc['generation'],
                       tunnel_addresses={'4': lab.topo.members[0].ipv4})
    se = membership.Membership(
        lab.agents.redis_url, 'l7se-1', l7_group,
        {'role': 'tier2', 'ready': True, 'draining': False,
         'tunnel_addresses': {'4': lab.topo.members[0].ipv4}})
    se.start()
    try:
        expected = [(f'l7se:l7se-1@{web["id"]}', lab.topo.members[0].ipv4,
                     80)]
        netns.wait_for(lambda: l4_members() == expected, 2.0,
                       'the L7 SE in the L4 snapshot')
        h.wait_agents_converged(lab)        # the L4 SEs applied it
    finally:
        se.stop()
    netns.wait_for(lambda: l4_members() == [], 3.0, 'the L7 SE gone')

    # Tier 1 is untouched: HTTP and L7 stay refused, naming the tier.
    h.act(lab, 'create', '--name', 'lb1', '--provider', 'dsr',
          '--vip-subnet-id', pl.VIP_SUBNET, '--vip-address', VIP1)
    text = h.refused(lab, 'loadbalancer', 'listener', 'create', '--name',
                     'l-http', '--protocol', 'HTTP', '--protocol-port', '80',
                     'lb1')
    assert 'listener protocol HTTP' in text and 'tier-2' in text, text
    h.act(lab, 'listener', 'create', '--name', 'tcp', '--protocol', 'TCP',
          '--protocol-port', '80', 'lb1')
    text = h.refused(lab, 'loadbalancer', 'l7policy', 'create', '--action',
                     'REJECT', 'tcp')
    assert 'tier-1' in text, text

    # A cascade delete takes the L7 objects with it.
    lab.openstack('loadbalancer', 'delete', '--cascade', 'lb2')
    netns.wait_for(lambda: [x['name'] for x in h.api(
        lab, 'loadbalancers')['loadbalancers']] == ['lb1'], 60,
        'lb2 deleted')
    with store.db.session() as s:
        assert s.query(models.L7Policy).count() == 0
        assert s.query(models.L7Rule).count() == 0
    assert store.snapshot(l7_group)['load_balancers'] == []
    h.wait_all_active(lab)
