"""DSRProviderDriver end to end, with only the RPC client replaced.

Lookups go to a fake octavia-driver-agent get socket (the real protocol);
create_vip_port gets a fake openstacksdk connection.
"""

import os
import shutil
import tempfile

from octavia_lib.api.drivers import data_models as dm
from octavia_lib.api.drivers import exceptions
from oslo_config import cfg
import pytest

from dsr_provider import driver
from dsr_provider import octavia_lookup
from dsr_provider import opts
from dsr_provider import rpc_api
from tests.unit.dsr_provider import fakes

POOL_LISTENING = {
    ('pools', fakes.POOL_ID): {'pool_id': fakes.POOL_ID,
                               'listener_id': fakes.LISTENER_ID,
                               'loadbalancer_id': fakes.LB_ID,
                               'members': []},
    ('loadbalancers', fakes.LB_ID): {
        'loadbalancer_id': fakes.LB_ID, 'vip_address': '192.0.2.10',
        'additional_vips': [{'ip_address': '2001:db8:f::10'}]},
    ('listeners', fakes.LISTENER_ID): {'listener_id': fakes.LISTENER_ID,
                                       'protocol': 'TCP',
                                       'protocol_port': 80},
}


@pytest.fixture
def sockdir():
    path = tempfile.mkdtemp(prefix='dsr')
    yield path
    shutil.rmtree(path)


@pytest.fixture
def agent(sockdir):
    fake = fakes.FakeDriverAgent(os.path.join(sockdir, 'get.sock'),
                                 dict(POOL_LISTENING))
    yield fake
    fake.close()


@pytest.fixture
def client():
    return fakes.FakeRPCClient()


@pytest.fixture
def dsr(client, agent):
    opts.register_opts()
    yield driver.DSRProviderDriver(
        rpc=rpc_api.ControllerAPI(client=client),
        lookup=octavia_lookup.OctaviaLookup(
            agent.path, cache=octavia_lookup.PortCache()))
    cfg.CONF.clear_override('neutron_enabled', group='dsr_provider')
    cfg.CONF.clear_override('se_addresses', group='dsr_provider')


def refused(func, *args):
    with pytest.raises(exceptions.UnsupportedOptionError) as info:
        func(*args)
    return info.value.user_fault_string


def unset_free(value):
    if isinstance(value, dict):
        return all(unset_free(v) for v in value.values())
    if isinstance(value, list):
        return all(unset_free(v) for v in value)
    return not isinstance(value, dm.UnsetType)


# --- load balancers --------------------------------------------------------

def test_full_graph_create_is_one_cast_with_the_whole_graph(dsr, client):
    lb = fakes.full_graph(flavor={'encapsulation': 'gre'},
                          availability_zone={'se_group': 'edge'})
    dsr.loadbalancer_create(lb)

    assert len(client.casts) == 1
    method, kwargs = client.casts[0]
    assert method == 'loadbalancer_create'
    doc = kwargs['loadbalancer']
    assert unset_free(doc)
    assert doc['loadbalancer_id'] == fakes.LB_ID
    assert doc['vip_address'] == '192.0.2.10'
    assert doc['dsr'] == {'se_group': 'edge', 'encapsulation': 'gre',
                          'tier': 1}
    assert doc['flavor'] == {'encapsulation': 'gre'}
    assert doc['availability_zone'] == {'se_group': 'edge'}
    (listener,) = doc['listeners']
    assert listener['protocol'] == 'TCP' and listener['protocol_port'] == 80
    assert listener['default_pool_id'] == fakes.POOL_ID
    assert 'default_pool' not in listener
    (pool,) = doc['pools']
    assert pool['lb_algorithm'] == 'SOURCE_IP_PORT'
    assert [m['address'] for m in pool['members']] == [
        '198.19.1.2', '2001:db8:1::2']
    assert pool['healthmonitor']['type'] == 'HTTP'
    assert 'additional_vips' not in doc         # Unset: left out


def test_bare_lb_create_gets_default_settings(dsr, client):
    dsr.loadbalancer_create(fakes.loadbalancer(
        additional_vips=[{'ip_address': '2001:db8::10',
                          'subnet_id': 'subnet-6'}]))
    (method, kwargs), = client.casts
    doc = kwargs['loadbalancer']
    assert doc['dsr'] == {'se_group': 'default', 'encapsulation': 'ipip',
                          'tier': 1}
    assert doc['additional_vips'] == [{'ip_address': '2001:db8::10',
                                       'subnet_id': 'subnet-6'}]
    assert 'listeners' not in doc and 'pools' not in doc


def test_refused_graph_casts_nothing(dsr, client):
    lb = fakes.full_graph()
    lb.pools[0].lb_algorithm = 'ROUND_ROBIN'
    text = refused(dsr.loadbalancer_create, lb)
    assert 'lb_algorithm ROUND_ROBIN' in text
    refused(dsr.loadbalancer_create,
            fakes.loadbalancer(flavor={'tier': 3}))
    assert client.casts == []


def test_lb_update_and_delete(dsr, client):
    old = fakes.loadbalancer(flavor={}, availability_zone='az1')
    dsr.loadbalancer_update(old, dm.LoadBalancer(loadbalancer_id=fakes.LB_ID,
                                                 admin_state_up=False))
    dsr.loadbalancer_delete(old, cascade=True)
    (m1, k1), (m2, k2) = client.casts
    assert m1 == 'loadbalancer_update'
    assert k1['new_loadbalancer'] == {'loadbalancer_id': fakes.LB_ID,
                                      'admin_state_up': False}
    assert k1['old_loadbalancer']['availability_zone'] == 'az1'
    assert m2 == 'loadbalancer_delete' and k2['cascade'] is True
    assert k2['loadbalancer']['loadbalancer_id'] == fakes.LB_ID


def test_lb_update_refuses_qos(dsr, client):
    refused(dsr.loadbalancer_update, fakes.loadbalancer(),
            dm.LoadBalancer(loadbalancer_id=fakes.LB_ID,
                            vip_qos_policy_id='q'))
    assert client.casts == []


def test_failover_is_not_implemented(dsr):
    with pytest.raises(exceptions.NotImplementedError):
        dsr.loadbalancer_failover(fakes.LB_ID)


# --- listeners -------------------------------------------------------------

def test_listener_create_and_update(dsr, client):
    dsr.listener_create(fakes.listener(protocol='UDP', port=53))
    # PUT with "timeout_client_data": null: Octavia substitutes its default.
    dsr.listener_update(fakes.listener(),
                        dm.Listener(listener_id=fakes.LISTENER_ID,
                                    name='renamed',
                                    timeout_client_data=50000))
    (m1, k1), (m2, k2) = client.casts
    assert m1 == 'listener_create' and k1['listener']['protocol'] == 'UDP'
    assert m2 == 'listener_update'
    assert k2['new_listener'] == {'listener_id': fakes.LISTENER_ID,
                                  'name': 'renamed',
                                  'timeout_client_data': 50000}
    assert k2['old_listener']['protocol_port'] == 80


def test_listener_refusals_cast_nothing(dsr, client):
    assert 'HTTP' in refused(dsr.listener_create,
                             fakes.listener(protocol='HTTP'))
    refused(dsr.listener_update, fakes.listener(),
            dm.Listener(listener_id=fakes.LISTENER_ID,
                        allowed_cidrs=['203.0.113.0/33']))
    assert client.casts == []


def test_listener_on_existing_pool_checks_member_ports(dsr, client, agent):
    pool = fakes.pool('p2', members=[fakes.member(port=8080, pool_id='p2')])
    text = refused(dsr.listener_create,
                   fakes.listener('l2', port=80, default_pool=pool))
    assert 'protocol_port 8080' in text and 'allowed: 80' in text
    dsr.listener_create(fakes.listener('l2', port=8080, default_pool=pool))
    assert [m for m, _ in client.casts] == ['listener_create']


def test_listener_on_pool_of_another_listener_port(dsr, agent):
    # POOL_ID already serves listener TCP/80 (per the driver agent).
    text = refused(dsr.listener_create, fakes.listener(
        'l2', port=81, default_pool=fakes.pool(members=[])))
    assert 'ports 80, 81' in text


def test_listener_update_to_a_pool_with_other_ports(dsr, agent):
    agent.objects[('pools', 'p3')] = {
        'pool_id': 'p3', 'listener_id': None,
        'members': [{'member_id': 'm', 'address': '198.19.9.9',
                     'protocol_port': 443}]}
    text = refused(dsr.listener_update, fakes.listener(),
                   dm.Listener(listener_id=fakes.LISTENER_ID,
                               default_pool_id='p3'))
    assert 'protocol_port 443' in text


# --- pools -----------------------------------------------------------------

def test_pool_create_update_delete(dsr, client):
    dsr.pool_create(fakes.pool(listener_id=fakes.LISTENER_ID))
    dsr.pool_update(fakes.pool(), dm.Pool(pool_id=fakes.POOL_ID,
                                          lb_algorithm='SOURCE_IP'))
    dsr.pool_delete(fakes.pool())
    assert [m for m, _ in client.casts] == ['pool_create', 'pool_update',
                                            'pool_delete']
    assert client.casts[0][1]['pool']['listener_id'] == fakes.LISTENER_ID
    assert client.casts[1][1]['new_pool'] == {'pool_id': fakes.POOL_ID,
                                              'lb_algorithm': 'SOURCE_IP'}


def test_pool_refusals(dsr, client):
    refused(dsr.pool_create, fakes.pool(lb_algorithm='LEAST_CONNECTIONS'))
    refused(dsr.pool_update, fakes.pool(),
            dm.Pool(pool_id=fakes.POOL_ID,
                    session_persistence={'type': 'HTTP_COOKIE'}))
    assert client.casts == []


# --- members ---------------------------------------------------------------

def test_member_create_on_the_listener_port(dsr, client, agent):
    dsr.member_create(fakes.member(port=80))
    (method, kwargs), = client.casts
    assert method == 'member_create'
    assert kwargs['member']['address'] == '198.19.1.2'
    assert {'object': 'pools', 'id': fakes.POOL_ID} in agent.requests


def test_member_create_after_a_seen_listener_and_pool_asks_nobody(
        dsr, client, agent):
    """The driver saw the load balancer, listener and pool creates: the
    member's port and address checks need no driver-agent round trip
    (150-500 ms each)."""
    dsr.loadbalancer_create(fakes.loadbalancer())
    dsr.listener_create(fakes.listener(port=80))
    dsr.pool_create(fakes.pool(listener_id=fakes.LISTENER_ID))
    agent.requests.clear()
    dsr.member_create(fakes.member(port=80))
    assert 'allowed: 80' in refused(dsr.member_create,
                                    fakes.member(port=8080))
    assert 'VIP' in refused(dsr.member_create,
                            fakes.member(address='192.0.2.10'))
    assert agent.requests == []


def test_a_looked_up_port_is_remembered(dsr, agent):
    dsr.member_create(fakes.member(port=80))
    asked = len(agent.requests)
    dsr.member_create(fakes.member(port=80))
    # pool (its listener and load balancer), load balancer, listener
    assert asked == 3 and len(agent.requests) == asked


def test_a_deleted_listener_is_forgotten(dsr, agent):
    dsr.listener_create(fakes.listener(port=81))
    dsr.pool_create(fakes.pool(listener_id=fakes.LISTENER_ID))
    dsr.listener_delete(fakes.listener(port=81))
    agent.requests.clear()
    dsr.member_create(fakes.member(port=80))      # the driver agent's view
    assert {'object': 'pools', 'id': fakes.POOL_ID} in agent.requests


def test_a_pool_binding_expires(dsr, agent):
    """Another octavia-api worker may have moved the pool to another
    listener: after the TTL the driver agent is asked again."""
    other = 'a5b1c3d1-0000-4000-8000-0000000000ff'
    dsr._lookup.cache.ttl = 0.0
    dsr.listener_create(fakes.listener(listener_id=other, port=81))
    dsr.pool_create(fakes.pool(listener_id=other))
    agent.requests.clear()
    dsr.member_create(fakes.member(port=80))      # now on the :80 listener
    assert {'object': 'pools', 'id': fakes.POOL_ID} in agent.requests


def test_member_create_on_another_port_is_refused(dsr, client):
    text = refused(dsr.member_create, fakes.member(port=8080))
    assert 'member 198.19.1.2 protocol_port 8080' in text
    assert 'allowed: 80' in text
    assert client.casts == []


def test_member_of_pool_without_listener_is_accepted(dsr, client, agent):
    agent.objects[('pools', fakes.POOL_ID)] = {'pool_id': fakes.POOL_ID,
                                               'listener_id': None}
    dsr.member_create(fakes.member(port=8080))
    assert len(client.casts) == 1


def test_member_check_left_to_controller_without_driver_agent(
        client, sockdir):
    dsr = driver.DSRProviderDriver(
        rpc=rpc_api.ControllerAPI(client=client),
        lookup=octavia_lookup.OctaviaLookup(os.path.join(sockdir, 'none')))
    dsr.member_create(fakes.member(port=8080))
    assert len(client.casts) == 1


def test_member_update_and_delete(dsr, client):
    dsr.member_update(fakes.member(), dm.Member(member_id=fakes.MEMBER_ID,
                                                weight=0))
    dsr.member_delete(fakes.member())
    (m1, k1), (m2, k2) = client.casts
    assert k1['new_member'] == {'member_id': fakes.MEMBER_ID, 'weight': 0}
    assert k1['old_member']['weight'] == 1
    assert m2 == 'member_delete'
    assert k2['member']['member_id'] == fakes.MEMBER_ID


def test_member_batch_update_is_one_cast(dsr, client):
    members = [fakes.member(), fakes.member(fakes.MEMBER2_ID,
                                            address='2001:db8:1::2')]
    dsr.member_batch_update(fakes.POOL_ID, members)
    (method, kwargs), = client.casts
    assert method == 'member_batch_update'
    assert kwargs['pool_id'] == fakes.POOL_ID
    assert [m['member_id'] for m in kwargs['members']] == [
        fakes.MEMBER_ID, fakes.MEMBER2_ID]
    assert all(unset_free(m) for m in kwargs['members'])


def test_member_batch_update_empty_and_refused(dsr, client):
    dsr.member_batch_update(fakes.POOL_ID, [])
    assert client.casts[-1] == ('member_batch_update',
                                {'pool_id': fakes.POOL_ID, 'members': []})
    text = refused(dsr.member_batch_update, fakes.POOL_ID,
                   [fakes.member(), fakes.member(fakes.MEMBER2_ID,
                                                 address='198.19.1.3',
                                                 port=81)])
    assert 'member 198.19.1.3 protocol_port 81' in text
    assert len(client.casts) == 1


# --- health monitors -------------------------------------------------------

def test_health_monitor_operations(dsr, client):
    dsr.health_monitor_create(fakes.health_monitor(type='UDP-CONNECT'))
    dsr.health_monitor_update(
        fakes.health_monitor(),
        dm.HealthMonitor(healthmonitor_id=fakes.POOL_ID, delay=10))
    dsr.health_monitor_delete(fakes.health_monitor())
    assert [m for m, _ in client.casts] == [
        'health_monitor_create', 'health_monitor_update',
        'health_monitor_delete']
    assert client.casts[1][1]['new_healthmonitor'] == {
        'healthmonitor_id': fakes.POOL_ID, 'delay': 10}


@pytest.mark.parametrize('address, why', [
    ('127.0.0.1', 'loopback'), ('224.0.0.5', 'multicast'),
    ('0.0.0.0', 'unspecified'), ('::', 'unspecified'),
    ('fe80::1', 'link-local'), ('255.255.255.255', 'broadcast'),
    ('192.0.2.10', 'VIP'), ('2001:db8:f::10', 'VIP')])
def test_member_addresses_that_cannot_be_members_are_refused(
        dsr, client, address, why):
    text = refused(dsr.member_create, fakes.member(address=address))
    assert f"member address '{address}' is invalid" in text
    assert why in text
    text = refused(dsr.member_create, fakes.member(monitor_address=address))
    assert f"member monitor_address '{address}'" in text
    text = refused(dsr.member_batch_update, fakes.POOL_ID,
                   [fakes.member(), fakes.member(fakes.MEMBER2_ID,
                                                 address=address)])
    assert address in text
    text = refused(dsr.member_update, fakes.member(),
                   dm.Member(member_id=fakes.MEMBER_ID,
                             monitor_address=address))
    assert address in text
    assert client.casts == []


def test_pool_create_with_members_checks_their_addresses(dsr, client):
    text = refused(dsr.pool_create, fakes.pool(
        listener_id=fakes.LISTENER_ID,
        members=[fakes.member(address='2001:db8:f::10')]))
    assert 'VIP' in text
    assert client.casts == []


def test_member_addresses_checked_without_vips_when_unknown(
        dsr, client, agent):
    del agent.objects[('loadbalancers', fakes.LB_ID)]
    agent.objects[('pools', fakes.POOL_ID)] = {
        'pool_id': fakes.POOL_ID, 'listener_id': fakes.LISTENER_ID,
        'loadbalancer_id': fakes.LB_ID}
    dsr.member_create(fakes.member(address='192.0.2.10'))
    assert 'loopback' in refused(dsr.member_create,
                                 fakes.member(address='127.0.0.1'))
    assert len(client.casts) == 1


def test_health_monitor_refusals(dsr, client):
    text = refused(dsr.health_monitor_create,
                   fakes.health_monitor(expected_codes='999'))
    assert "expected_codes '999' is invalid" in text and '100..599' in text
    refused(dsr.health_monitor_create, fakes.health_monitor(type='SCTP'))
    refused(dsr.health_monitor_update, fakes.health_monitor(delay=5),
            dm.HealthMonitor(max_retries=11))
    assert client.casts == []


# --- L7 --------------------------------------------------------------------

@pytest.mark.parametrize('method,args,what', [
    ('l7policy_create', (dm.L7Policy(),), 'L7 policies'),
    ('l7policy_update', (dm.L7Policy(), dm.L7Policy()), 'L7 policies'),
    ('l7rule_create', (dm.L7Rule(),), 'L7 rules'),
    ('l7rule_update', (dm.L7Rule(), dm.L7Rule()), 'L7 rules'),
])
def test_l7_with_its_tier_unknown_is_an_error_to_retry(
        dsr, client, method, args, what):
    """Its load balancer's tier cannot be told (no listener or policy
    known to the lookup): checked as tier 1 it is refused, but a tier-2
    load balancer would take it, so the answer is an error to retry, with
    the tier-1 refusal in it (tier 1 known: test_driver_tier2.py)."""
    with pytest.raises(exceptions.DriverError) as info:
        getattr(dsr, method)(*args)
    text = info.value.user_fault_string
    assert 'could not be looked up' in text and 'Retry' in text
    assert f'{what} are not supported' in text and 'Layer 4' in text
    assert client.casts == []


def test_l7_deletes_need_no_tier_when_the_lookup_is_down(client, sockdir):
    """An L7 policy or rule exists only on tier 2: its delete is cast
    even when its load balancer's tier cannot be looked up."""
    dsr = driver.DSRProviderDriver(
        rpc=rpc_api.ControllerAPI(client=client),
        lookup=octavia_lookup.OctaviaLookup(
            os.path.join(sockdir, 'none'),
            cache=octavia_lookup.PortCache()))
    dsr.l7policy_delete(dm.L7Policy(l7policy_id='p1', listener_id='l1'))
    dsr.l7rule_delete(dm.L7Rule(l7rule_id='r1', l7policy_id='p1'))
    assert [(m, k) for m, k in client.casts] == [
        ('l7policy_delete', {'l7policy': {'l7policy_id': 'p1',
                                          'listener_id': 'l1'}}),
        ('l7rule_delete', {'l7rule': {'l7rule_id': 'r1',
                                      'l7policy_id': 'p1'}})]


# --- VIP ports -------------------------------------------------------------

class FakeNetwork:
    def __init__(self):
        self.created = []
        self.deleted = []
        self.ports = {}

    def get_subnet(self, subnet_id):
        return {'id': subnet_id, 'network_id': 'net-from-subnet'}

    def get_port(self, port_id):
        return self.ports[port_id]

    def delete_port(self, port_id, ignore_missing=True):
        self.deleted.append(port_id)
        self.ports.pop(port_id, None)

    def create_port(self, **attrs):
        self.created.append(attrs)
        fixed, n = [], 0
        for ip in attrs.get('fixed_ips', [{'subnet_id': 'auto'}]):
            n += 1
            v6 = ip['subnet_id'].endswith('6')
            fixed.append({'subnet_id': ip['subnet_id'], 'ip_address':
                          ip.get('ip_address') or
                          ('2001:db8::%x' % n if v6 else '192.0.2.%d' % n)})
        port = {'id': 'vip-port', 'network_id': attrs['network_id'],
                'fixed_ips': fixed}
        self.ports['vip-port'] = port
        return port


class FakeConnection:
    def __init__(self):
        self.network = FakeNetwork()


def test_create_vip_port_declines_when_neutron_is_off(dsr):
    with pytest.raises(exceptions.NotImplementedError):
        dsr.create_vip_port(fakes.LB_ID, fakes.PROJECT_ID,
                            {'vip_subnet_id': 'subnet-4'}, [])


def neutron_driver(client, conf_addresses=()):
    cfg.CONF.set_override('neutron_enabled', True, group='dsr_provider')
    cfg.CONF.set_override('se_addresses', list(conf_addresses),
                          group='dsr_provider')
    conn = FakeConnection()
    return conn, driver.DSRProviderDriver(
        rpc=rpc_api.ControllerAPI(client=client), neutron=conn)


def test_create_vip_port_ipv4_with_ipv6_additional_vip(dsr, client):
    conn, neutron_dsr = neutron_driver(client, ['198.18.1.2', '198.18.1.3'])
    vip, extra = neutron_dsr.create_vip_port(
        fakes.LB_ID, fakes.PROJECT_ID,
        {'vip_address': '192.0.2.10', 'vip_network_id': 'net-1',
         'vip_subnet_id': 'subnet-4', 'vip_port_id': None},
        [{'subnet_id': 'subnet-6'}])
    (attrs,) = conn.network.created
    assert attrs['network_id'] == 'net-1'
    assert attrs['device_owner'] == 'Octavia'
    assert attrs['project_id'] == fakes.PROJECT_ID
    assert attrs['fixed_ips'] == [
        {'subnet_id': 'subnet-4', 'ip_address': '192.0.2.10'},
        {'subnet_id': 'subnet-6'}]
    assert attrs['allowed_address_pairs'] == [{'ip_address': '198.18.1.2'},
                                              {'ip_address': '198.18.1.3'}]
    assert vip == {'vip_address': '192.0.2.10', 'vip_network_id': 'net-1',
                   'vip_subnet_id': 'subnet-4', 'vip_port_id': 'vip-port',
                   'octavia_owned': True}
    assert extra == [{'ip_address': '2001:db8::2', 'subnet_id': 'subnet-6',
                      'network_id': 'net-1', 'port_id': 'vip-port'}]


def test_create_vip_port_ipv6_from_subnet_only(dsr, client):
    conn, neutron_dsr = neutron_driver(client)
    vip, extra = neutron_dsr.create_vip_port(
        fakes.LB_ID, fakes.PROJECT_ID, {'vip_subnet_id': 'subnet-6'}, [])
    (attrs,) = conn.network.created
    assert attrs['network_id'] == 'net-from-subnet'
    assert 'allowed_address_pairs' not in attrs
    assert vip['vip_address'] == '2001:db8::1'
    assert vip['vip_port_id'] == 'vip-port' and extra == []


def test_create_vip_port_with_the_users_port(dsr, client):
    conn, neutron_dsr = neutron_driver(client)
    conn.network.ports['user-port'] = {
        'id': 'user-port', 'network_id': 'net-9',
        'fixed_ips': [{'subnet_id': 'subnet-9', 'ip_address': '192.0.2.99'}]}
    vip, extra = neutron_dsr.create_vip_port(
        fakes.LB_ID, fakes.PROJECT_ID, {'vip_port_id': 'user-port'}, [])
    assert conn.network.created == []
    assert vip['vip_address'] == '192.0.2.99'
    assert 'octavia_owned' not in vip      # the user's port stays theirs


def test_create_vip_port_neutron_failure_is_a_driver_error(dsr, client):
    conn, neutron_dsr = neutron_driver(client)

    def fail(**attrs):
        raise RuntimeError('quota exceeded')
    conn.network.create_port = fail
    with pytest.raises(exceptions.DriverError) as info:
        neutron_dsr.create_vip_port(fakes.LB_ID, fakes.PROJECT_ID,
                                    {'vip_subnet_id': 'subnet-4'}, [])
    assert 'quota exceeded' in info.value.operator_fault_string


# --- VIP options refused before anything is allocated ----------------------

@pytest.mark.parametrize('neutron_enabled', [False, True])
@pytest.mark.parametrize('field, value', [
    ('vip_qos_policy_id', 'qos-1'), ('vip_sg_ids', ['sg-1'])])
def test_create_vip_port_refuses_vip_options_before_allocating(
        dsr, client, neutron_enabled, field, value):
    """Octavia's network driver drops the QoS policy (and the noop one the
    security groups) from the VIP loadbalancer_create gets: create_vip_port
    is where they are refused, whatever neutron_enabled says."""
    conn, neutron_dsr = neutron_driver(client)
    cfg.CONF.set_override('neutron_enabled', neutron_enabled,
                          group='dsr_provider')
    text = refused(neutron_dsr.create_vip_port, fakes.LB_ID,
                   fakes.PROJECT_ID,
                   {'vip_subnet_id': 'subnet-4', 'vip_network_id': 'net-1',
                    field: value}, [])
    assert text.startswith(f'load balancer {field} ')
    assert 'allowed: none' in text
    assert conn.network.created == [] and client.casts == []


def test_create_vip_port_names_the_users_port_as_the_qos_origin(
        dsr, client):
    conn, neutron_dsr = neutron_driver(client)
    text = refused(neutron_dsr.create_vip_port, fakes.LB_ID,
                   fakes.PROJECT_ID,
                   {'vip_port_id': 'user-port', 'vip_qos_policy_id': 'q'},
                   [])
    assert 'QoS policy of the VIP port vip_port_id' in text


# --- VIP ports the driver created are not leaked ----------------------------

def test_create_vip_port_deletes_its_port_when_it_fails_after_creating_it(
        dsr, client):
    conn, neutron_dsr = neutron_driver(client)
    create = conn.network.create_port

    def without_the_requested_address(**attrs):
        port = create(**attrs)
        port['fixed_ips'][0]['ip_address'] = '192.0.2.99'
        return port
    conn.network.create_port = without_the_requested_address
    with pytest.raises(exceptions.DriverError):
        neutron_dsr.create_vip_port(
            fakes.LB_ID, fakes.PROJECT_ID,
            {'vip_subnet_id': 'subnet-4', 'vip_address': '192.0.2.10'}, [])
    assert len(conn.network.created) == 1
    assert conn.network.deleted == ['vip-port']


def test_a_refused_create_deletes_the_vip_port_the_driver_created(
        dsr, client):
    """Octavia rolls back only its database when loadbalancer_create
    refuses the graph: the port create_vip_port made is deleted."""
    conn, neutron_dsr = neutron_driver(client)
    vip, _ = neutron_dsr.create_vip_port(
        fakes.LB_ID, fakes.PROJECT_ID, {'vip_subnet_id': 'subnet-4'}, [])
    lb = fakes.full_graph(vip_port_id=vip['vip_port_id'])
    lb.listeners[0].protocol = 'HTTP'
    refused(neutron_dsr.loadbalancer_create, lb)
    assert conn.network.deleted == ['vip-port']
    assert client.casts == []


def test_a_failed_cast_deletes_the_vip_port_the_driver_created(
        dsr, client):
    conn, neutron_dsr = neutron_driver(client)
    neutron_dsr.create_vip_port(fakes.LB_ID, fakes.PROJECT_ID,
                                {'vip_subnet_id': 'subnet-4'}, [])

    def fail(*args, **kwargs):
        raise RuntimeError('no broker')
    client.cast = fail
    with pytest.raises(RuntimeError):
        neutron_dsr.loadbalancer_create(fakes.loadbalancer(
            vip_port_id='vip-port'))
    assert conn.network.deleted == ['vip-port']


def test_an_accepted_create_or_the_users_port_is_never_deleted(
        dsr, client):
    conn, neutron_dsr = neutron_driver(client)
    neutron_dsr.create_vip_port(fakes.LB_ID, fakes.PROJECT_ID,
                                {'vip_subnet_id': 'subnet-4'}, [])
    neutron_dsr.loadbalancer_create(fakes.loadbalancer(
        vip_port_id='vip-port'))
    assert len(client.casts) == 1
    # The user's own port (not octavia_owned) stays on a refusal.
    conn.network.ports['user-port'] = {
        'id': 'user-port', 'network_id': 'net-9',
        'fixed_ips': [{'subnet_id': 'subnet-9', 'ip_address': '192.0.2.99'}]}
    neutron_dsr.create_vip_port('lb-2', fakes.PROJECT_ID,
                                {'vip_port_id': 'user-port'}, [])
    refused(neutron_dsr.loadbalancer_create, fakes.loadbalancer(
        loadbalancer_id='lb-2', vip_port_id='user-port', flavor={'tier': 3}))
    assert conn.network.deleted == []
