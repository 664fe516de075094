"""The driver finds an object's load balancer tier the way it finds its
listener port (octavia-driver-agent's get socket, then the cache) and
checks the object against that tier; L7 policies and rules are published
for tier 2 and refused, naming the tier, for tier 1."""

import os
import shutil
import tempfile

from octavia_lib.api.drivers import data_models as dm
from octavia_lib.api.drivers import exceptions
from oslo_config import cfg
import pytest

from dsr_provider import driver
from dsr_provider import octavia_lookup
from dsr_provider import rpc_api
from tests.unit.dsr_provider import fakes
# The driver with a real lookup over the fake get socket below (agent).
from tests.unit.dsr_provider.test_driver import client  # noqa: F401
from tests.unit.dsr_provider.test_driver import dsr  # noqa: F401
from tests.unit.dsr_provider.test_driver import refused
from tests.unit.dsr_provider.test_driver import sockdir  # noqa: F401

LB2 = 'a5b1c3d1-0000-4000-8000-0000000000b2'
LISTENER2 = 'a5b1c3d1-0000-4000-8000-0000000000c2'
POOL2 = 'a5b1c3d1-0000-4000-8000-0000000000d2'
POLICY2 = 'a5b1c3d1-0000-4000-8000-0000000000e2'
POLICY1 = 'a5b1c3d1-0000-4000-8000-0000000000e1'
LB3 = 'a5b1c3d1-0000-4000-8000-0000000000b3'
TCP2 = 'a5b1c3d1-0000-4000-8000-0000000000f2'     # a TCP listener of LB2
LISTENER3 = 'a5b1c3d1-0000-4000-8000-0000000000c3'

OBJECTS = {
    # Tier 1: the fakes' ids.
    ('loadbalancers', fakes.LB_ID): {'loadbalancer_id': fakes.LB_ID,
                                     'vip_address': '192.0.2.10',
                                     'flavor': {'tier': 1}},
    ('listeners', fakes.LISTENER_ID): {'listener_id': fakes.LISTENER_ID,
                                       'loadbalancer_id': fakes.LB_ID,
                                       'protocol': 'TCP',
                                       'protocol_port': 80},
    ('l7policies', POLICY1): {'l7policy_id': POLICY1,
                              'listener_id': fakes.LISTENER_ID},
    # Tier 2.
    ('loadbalancers', LB2): {'loadbalancer_id': LB2,
                             'vip_address': '192.0.2.20',
                             'flavor': {'tier': 2, 'se_group': 'edge'}},
    ('listeners', LISTENER2): {'listener_id': LISTENER2,
                               'loadbalancer_id': LB2, 'protocol': 'HTTP',
                               'protocol_port': 80},
    ('listeners', TCP2): {'listener_id': TCP2, 'loadbalancer_id': LB2,
                          'protocol': 'TCP', 'protocol_port': 5432},
    ('pools', POOL2): {'pool_id': POOL2, 'loadbalancer_id': LB2,
                       'listener_id': LISTENER2, 'members': []},
    ('l7policies', POLICY2): {'l7policy_id': POLICY2,
                              'listener_id': LISTENER2},
    # No flavor: [dsr_provider] default_tier decides.
    ('loadbalancers', LB3): {'loadbalancer_id': LB3,
                             'vip_address': '192.0.2.30'},
}


@pytest.fixture
def agent():
    path = tempfile.mkdtemp(prefix='dsr')
    fake = fakes.FakeDriverAgent(os.path.join(path, 'get.sock'),
                                 dict(OBJECTS))
    yield fake
    fake.close()
    shutil.rmtree(path)


def test_tier2_create_carries_the_l7_group(dsr, client):  # noqa: F811
    lb = fakes.loadbalancer(flavor={'tier': 2, 'se_group': 'edge'},
                            loadbalancer_id=LB2)
    dsr.loadbalancer_create(lb)
    ((method, kwargs),) = client.casts
    assert kwargs['loadbalancer']['dsr'] == {
        'se_group': 'edge', 'encapsulation': 'ipip', 'tier': 2,
        'l7_se_group': 'edge-l7'}


@pytest.fixture
def default_tier_2():
    cfg.CONF.set_override('default_tier', 2, group='dsr_provider')
    yield
    cfg.CONF.clear_override('default_tier', group='dsr_provider')


def test_default_tier_without_flavor(
        dsr, client, agent, default_tier_2):  # noqa: F811
    # Created without a flavor: tier 2, the default L7 group.
    dsr.loadbalancer_create(fakes.loadbalancer(loadbalancer_id=LB2))
    assert client.casts[0][1]['loadbalancer']['dsr'] == {
        'se_group': 'default', 'encapsulation': 'ipip', 'tier': 2,
        'l7_se_group': 'default-l7'}
    # Looked up (another octavia-api worker): a load balancer without a
    # flavor is tier 2 too, so its HTTP listener is accepted...
    dsr.listener_create(fakes.listener(listener_id=LISTENER3,
                                       loadbalancer_id=LB3,
                                       protocol='HTTP'))
    # ...and a flavor's own tier 1 still wins.
    text = refused(dsr.listener_create, fakes.listener(protocol='HTTP'))
    assert 'listener protocol HTTP' in text
    assert [m for m, _ in client.casts] == ['loadbalancer_create',
                                            'listener_create']


def test_listener_checked_against_its_lb_tier(
        dsr, client, agent):  # noqa: F811
    dsr.listener_create(fakes.listener(listener_id=LISTENER2,
                                       loadbalancer_id=LB2,
                                       protocol='HTTP'))
    text = refused(dsr.listener_create, fakes.listener(protocol='HTTP'))
    assert 'listener protocol HTTP' in text and 'tier-2' in text
    assert [m for m, _ in client.casts] == ['listener_create']
    # The tier is asked once per load balancer, then remembered.
    asked = len(agent.requests)
    dsr.listener_update(fakes.listener(listener_id=LISTENER2,
                                       loadbalancer_id=LB2),
                        dm.Listener(timeout_member_data=1000))
    assert len(agent.requests) == asked


def test_tier2_pool_member_and_monitor(dsr, client):  # noqa: F811
    dsr.pool_create(fakes.pool(pool_id=POOL2, loadbalancer_id=LB2,
                               lb_algorithm='LEAST_CONNECTIONS',
                               protocol='HTTP', listener_id=LISTENER2))
    # Port translation: listener 80, member 8080.
    dsr.member_create(fakes.member(pool_id=POOL2, port=8080))
    dsr.member_batch_update(POOL2, [fakes.member(pool_id=POOL2, port=81)])
    dsr.health_monitor_create(fakes.health_monitor(pool_id=POOL2,
                                                   type='TLS-HELLO'))
    assert [m for m, _ in client.casts] == [
        'pool_create', 'member_create', 'member_batch_update',
        'health_monitor_create']
    text = refused(dsr.health_monitor_create,
                   fakes.health_monitor(pool_id=POOL2, type='PING'))
    assert 'tier-2' in text


def test_l7_policy_and_rule_on_tier2_are_published(dsr, client):  # noqa: F811
    policy = dm.L7Policy(l7policy_id=POLICY2, listener_id=LISTENER2,
                         action='REDIRECT_TO_POOL', redirect_pool_id=POOL2,
                         position=1, admin_state_up=True)
    dsr.l7policy_create(policy)
    dsr.l7policy_update(policy, dm.L7Policy(position=2))
    rule = dm.L7Rule(l7rule_id='r1', l7policy_id=POLICY2, type='PATH',
                     compare_type='STARTS_WITH', value='/api',
                     invert=False, admin_state_up=True)
    dsr.l7rule_create(rule)
    dsr.l7rule_update(rule, dm.L7Rule(value='/v2'))
    dsr.l7rule_delete(rule)
    dsr.l7policy_delete(policy)
    assert [m for m, _ in client.casts] == [
        'l7policy_create', 'l7policy_update', 'l7rule_create',
        'l7rule_update', 'l7rule_delete', 'l7policy_delete']
    assert client.casts[0][1]['l7policy']['redirect_pool_id'] == POOL2
    text = refused(dsr.l7rule_create, dm.L7Rule(
        l7rule_id='r2', l7policy_id=POLICY2, type='HEADER',
        compare_type='EQUAL_TO', key='', value='x'))
    assert 'L7 rule key' in text


def test_l7_on_tier1_is_refused_naming_the_tier(dsr, client):  # noqa: F811
    text = refused(dsr.l7policy_create, dm.L7Policy(
        l7policy_id=POLICY1, listener_id=fakes.LISTENER_ID,
        action='REJECT'))
    assert 'tier-1' in text and 'tier-2 flavor' in text
    text = refused(dsr.l7rule_create, dm.L7Rule(
        l7rule_id='r1', l7policy_id=POLICY1, type='PATH',
        compare_type='EQUAL_TO', value='/'))
    assert 'L7 rules' in text and 'tier-1' in text
    assert client.casts == []


def test_listener_tls_settings_published_on_tier2_refused_on_tier1(
        dsr, client, agent):  # noqa: F811
    """The L7 SEs apply tls_versions, tls_ciphers and alpn_protocols: the
    driver publishes what HAProxy can do on tier 2 and refuses the rest
    (nothing cast); tier 1 applies none."""
    tls = {'tls_versions': ['TLSv1.3'], 'alpn_protocols': ['h2'],
           'tls_ciphers': 'TLS_AES_256_GCM_SHA384'}
    dsr.listener_create(fakes.listener(
        listener_id=LISTENER2, loadbalancer_id=LB2, port=443,
        protocol='TERMINATED_HTTPS', default_tls_container_ref='ref', **tls))
    dsr.listener_update(fakes.listener(listener_id=LISTENER2,
                                       loadbalancer_id=LB2),
                        dm.Listener(tls_versions=['TLSv1.2', 'TLSv1.3']))
    ((_, create), (_, update)) = client.casts
    assert {k: create['listener'][k] for k in tls} == tls
    assert update['new_listener'] == {'tls_versions': ['TLSv1.2',
                                                       'TLSv1.3']}
    text = refused(dsr.listener_update,
                   fakes.listener(listener_id=LISTENER2,
                                  loadbalancer_id=LB2),
                   dm.Listener(tls_versions=['TLSv1.1']))
    assert "tls_versions[0] 'TLSv1.1'" in text and 'TLSv1.2, TLSv1.3' in text
    text = refused(dsr.listener_update, fakes.listener(),
                   dm.Listener(tls_versions=['TLSv1.3']))
    assert 'no TLS termination' in text
    assert len(client.casts) == 2


def test_l7_policies_only_on_listeners_haproxy_sees_requests_on(
        dsr, client):  # noqa: F811
    """An L7 policy of a TCP listener has no request to match: the L7
    snapshot refuses it, which took its whole load balancer out of the L7
    SEs while Octavia showed ACTIVE.  The API refuses it now, naming the
    listener protocols that take one."""
    policy = dm.L7Policy(l7policy_id='p-tcp', listener_id=TCP2,
                         action='REJECT', position=1, admin_state_up=True)
    text = refused(dsr.l7policy_create, policy)
    assert 'L7 policies on a TCP listener' in text
    assert 'allowed: L7 policies on HTTP, TERMINATED_HTTPS' in text
    text = refused(dsr.l7policy_update, policy, dm.L7Policy(position=2))
    assert 'TCP listener' in text
    text = refused(dsr.listener_create, fakes.listener(
        listener_id='l-udp', loadbalancer_id=LB2, protocol='UDP',
        l7policies=[dm.L7Policy(action='REJECT')]))
    assert 'L7 policies on a UDP listener' in text
    assert client.casts == []
    dsr.listener_create(fakes.listener(
        listener_id='l-http', loadbalancer_id=LB2, protocol='HTTP',
        l7policies=[dm.L7Policy(action='REJECT')]))
    # Its protocol is remembered: no lookup for its policies.
    dsr.l7policy_create(dm.L7Policy(l7policy_id='p-http',
                                    listener_id='l-http', action='REJECT'))
    assert [m for m, _ in client.casts] == ['listener_create',
                                            'l7policy_create']


@pytest.mark.parametrize('timeout', [-1, 2 ** 31])
def test_tier2_persistence_timeout_is_bounded(
        dsr, client, timeout):  # noqa: F811
    persistence = {'type': 'SOURCE_IP', 'persistence_timeout': timeout}
    text = refused(dsr.pool_create, fakes.pool(
        pool_id=POOL2, loadbalancer_id=LB2, protocol='HTTP',
        session_persistence=persistence))
    assert 'persistence_timeout' in text and '0..2147483647' in text
    refused(dsr.pool_update,
            fakes.pool(pool_id=POOL2, loadbalancer_id=LB2, protocol='HTTP'),
            dm.Pool(session_persistence=persistence))
    assert client.casts == []
    dsr.pool_create(fakes.pool(
        pool_id=POOL2, loadbalancer_id=LB2, protocol='HTTP',
        session_persistence=dict(persistence, persistence_timeout=3600)))
    assert [m for m, _ in client.casts] == ['pool_create']


@pytest.fixture
def lookup_down(client, sockdir):  # noqa: F811
    """The driver with octavia-driver-agent's get socket gone, and a cache
    that knows LB2 is tier 2 and LISTENER2 is one of its listeners."""
    cache = octavia_lookup.PortCache()
    cache.remember_tier(LB2, 2)
    cache.remember_listener_lb(LISTENER2, LB2)
    return driver.DSRProviderDriver(
        rpc=rpc_api.ControllerAPI(client=client),
        lookup=octavia_lookup.OctaviaLookup(
            os.path.join(sockdir, 'none'), cache=cache))


def test_an_unknown_tier_refuses_only_as_an_error_to_retry(
        lookup_down, client):  # noqa: F811
    """Without the tier, an object is checked as tier 1: what tier 1
    takes goes through; what it refuses is an error to retry (a tier-2
    load balancer may take it), not a refusal of the option."""
    down = lookup_down
    down.pool_create(fakes.pool(pool_id='p-t1', loadbalancer_id=LB3))
    with pytest.raises(exceptions.DriverError) as info:
        down.pool_create(fakes.pool(pool_id='p-rr', loadbalancer_id=LB3,
                                    lb_algorithm='ROUND_ROBIN'))
    text = info.value.user_fault_string
    assert f'load balancer {LB3} could not be looked up' in text
    assert 'lb_algorithm ROUND_ROBIN' in text and 'Retry' in text
    # A known tier refuses as before.
    refused(down.pool_create, fakes.pool(loadbalancer_id=LB2,
                                         protocol='SCTP'))
    assert [m for m, _ in client.casts] == ['pool_create']


def test_an_l7_policy_whose_listener_protocol_is_unknown_is_retried(
        lookup_down, client):  # noqa: F811
    with pytest.raises(exceptions.DriverError) as info:
        lookup_down.l7policy_create(dm.L7Policy(
            l7policy_id='p1', listener_id=LISTENER2, action='REJECT'))
    assert 'protocol of listener' in info.value.user_fault_string
    assert client.casts == []
