"""The validation matrix: what DSR accepts, and refusals that say why.

Every refusal must be octavia-lib's UnsupportedOptionError (HTTP 501)
whose text names the field and the allowed values.
"""

from octavia_lib.api.drivers import data_models as dm
from octavia_lib.api.drivers import exceptions
from oslo_config import cfg
import pytest

from dsr_provider import validation
from tests.unit.dsr_provider import fakes


def refused(func, *args, **kwargs):
    with pytest.raises(exceptions.UnsupportedOptionError) as info:
        func(*args, **kwargs)
    text = info.value.user_fault_string
    assert text == info.value.operator_fault_string
    assert 'allowed' in text, text
    return text


# --- listener --------------------------------------------------------------

@pytest.mark.parametrize('protocol', ['TCP', 'UDP', 'SCTP'])
def test_listener_as_octavia_creates_it_is_accepted(protocol):
    validation.check_listener(fakes.listener(protocol=protocol))


def test_listener_with_only_required_fields_is_accepted():
    validation.check_listener(dm.Listener(
        listener_id='l', protocol='TCP', protocol_port=80))


@pytest.mark.parametrize('protocol', ['HTTP', 'HTTPS'])
def test_http_listeners_need_tier2(protocol):
    text = refused(validation.check_listener,
                   fakes.listener(protocol=protocol))
    assert f'listener protocol {protocol}' in text
    assert 'TCP, UDP, SCTP' in text
    assert 'tier-2' in text and 'flavor' in text
    validation.check_listener(fakes.listener(protocol=protocol), tier=2)


def test_tls_termination_is_refused():
    text = refused(validation.check_listener,
                   fakes.listener(protocol='TERMINATED_HTTPS'))
    assert 'listener protocol TERMINATED_HTTPS' in text
    assert 'TCP, UDP, SCTP' in text
    assert 'TLS termination' in text


def test_prometheus_listener_is_refused():
    text = refused(validation.check_listener,
                   fakes.listener(protocol='PROMETHEUS'))
    assert 'listener protocol PROMETHEUS' in text


@pytest.mark.parametrize('cidrs', [None, [], ['0.0.0.0/0'], ['::/0'],
                                   ['10.0.0.0/8'], ['203.0.113.5/24'],
                                   ['0.0.0.0/0', '10.1.0.0/16'],
                                   ['2001:db8::/32', '192.0.2.0/24']])
def test_allowed_cidrs_are_accepted(cidrs):
    """The SEs enforce allowed_cidrs (docs/dataplane.md)."""
    validation.check_listener(fakes.listener(allowed_cidrs=cidrs))


@pytest.mark.parametrize('cidrs', [['10.0.0.0/33'], ['not-a-cidr'],
                                   ['2001:db8::/129'], [42]])
def test_bad_allowed_cidrs_are_refused_with_the_field(cidrs):
    text = refused(validation.check_listener,
                   fakes.listener(allowed_cidrs=cidrs))
    assert 'allowed_cidrs[0]' in text and '203.0.113.0/24' in text


@pytest.mark.parametrize('limit', [-1, None, 0, 1, 200, 2 ** 31 - 1])
def test_connection_limit_is_accepted(limit):
    """The SEs enforce it per SE (docs/dataplane.md)."""
    validation.check_listener(fakes.listener(connection_limit=limit))


@pytest.mark.parametrize('limit', [-2, 2 ** 31, '100', 1.5, True])
def test_bad_connection_limit_is_refused_with_the_field(limit):
    text = refused(validation.check_listener,
                   fakes.listener(connection_limit=limit))
    assert 'connection_limit' in text and '-1 (no limit)' in text


@pytest.mark.parametrize('name,default,why', [
    ('timeout_member_connect', 5000, 'never sees the member side'),
    ('timeout_member_data', 50000, 'never sees the member side'),
    ('timeout_tcp_inspect', 0, 'no content inspection')])
def test_listener_timeouts_the_se_cannot_apply(name, default, why):
    validation.check_listener(fakes.listener(**{name: default}))
    validation.check_listener(fakes.listener(**{name: None}))
    text = refused(validation.check_listener,
                   fakes.listener(**{name: default + 1000}))
    assert f'listener {name} {default + 1000}' in text
    assert str(default) in text and why in text


@pytest.mark.parametrize('value', [0, 1, 1000, 50000, 24 * 86400 * 1000])
def test_timeout_client_data_is_honoured_at_any_octavia_value(value):
    # The SEs apply it as the flows' idle timeout (0: none).
    validation.check_listener(fakes.listener(timeout_client_data=value))
    validation.check_listener(dm.Listener(listener_id='l',
                                          timeout_client_data=value))


@pytest.mark.parametrize('value', [-1, 24 * 86400 * 1000 + 1, '1000', 1.5])
def test_timeout_client_data_out_of_range_is_refused(value):
    text = refused(validation.check_listener,
                   fakes.listener(timeout_client_data=value))
    assert 'timeout_client_data' in text and '0..2073600000' in text


def test_listener_timeouts_follow_octavias_configured_defaults():
    # Inside octavia-api the defaults come from [haproxy_amphora].
    opt = cfg.IntOpt('timeout_member_data', default=50000)
    try:
        cfg.CONF.register_opt(opt, group='haproxy_amphora')
    except cfg.DuplicateOptError:     # octavia itself was imported
        opt = None
    cfg.CONF.set_override('timeout_member_data', 30000,
                          group='haproxy_amphora')
    try:
        validation.check_listener(fakes.listener(timeout_member_data=30000))
        validation.check_listener(fakes.listener(timeout_member_data=50000))
        refused(validation.check_listener,
                fakes.listener(timeout_member_data=60000))
    finally:
        cfg.CONF.clear_override('timeout_member_data',
                                group='haproxy_amphora')
        if opt is not None:
            cfg.CONF.unregister_opt(opt, group='haproxy_amphora')


@pytest.mark.parametrize('field,value', [
    ('insert_headers', {'X-Forwarded-For': 'true'}),
    ('default_tls_container_ref', 'barbican://cert'),
    ('sni_container_refs', ['barbican://sni']),
    ('client_ca_tls_container_ref', 'barbican://ca'),
    ('client_crl_container_ref', 'barbican://crl'),
    ('client_authentication', 'MANDATORY'),
    ('hsts_max_age', 3600),
    ('hsts_preload', True),
])
def test_listener_options_dsr_cannot_honour(field, value):
    text = refused(validation.check_listener,
                   fakes.listener(**{field: value}))
    assert f'listener {field}' in text


def test_listener_update_with_only_some_fields():
    # An update object carries only what changes, the rest is Unset.
    validation.check_listener(dm.Listener(listener_id='l', name='new'))
    validation.check_listener(dm.Listener(listener_id='l',
                                          timeout_client_data=50000))
    validation.check_listener(dm.Listener(listener_id='l',
                                          allowed_cidrs=['192.0.2.0/24'],
                                          connection_limit=100))
    refused(validation.check_listener,
            dm.Listener(listener_id='l', connection_limit=-5))


def test_l7_policies_in_a_listener_are_refused():
    text = refused(validation.check_listener,
                   fakes.listener(l7policies=[dm.L7Policy(action='REJECT')]))
    assert 'L7 policies' in text and 'Layer 4' in text


# --- pool ------------------------------------------------------------------

@pytest.mark.parametrize('algorithm', ['SOURCE_IP_PORT', 'SOURCE_IP'])
def test_hash_algorithms_are_accepted(algorithm):
    validation.check_pool(fakes.pool(lb_algorithm=algorithm))


@pytest.mark.parametrize('algorithm', ['ROUND_ROBIN', 'LEAST_CONNECTIONS'])
def test_other_algorithms_are_refused(algorithm):
    text = refused(validation.check_pool,
                   fakes.pool(lb_algorithm=algorithm))
    assert f'pool lb_algorithm {algorithm}' in text
    assert 'SOURCE_IP_PORT, SOURCE_IP' in text
    assert 'consistent' in text and 'hash' in text


@pytest.mark.parametrize('protocol', ['HTTP', 'HTTPS', 'PROXY', 'PROXYV2'])
def test_pool_protocols_other_than_l4_are_refused(protocol):
    text = refused(validation.check_pool, fakes.pool(protocol=protocol))
    assert f'pool protocol {protocol}' in text
    assert 'TCP, UDP, SCTP' in text


def test_pool_protocol_must_match_the_listener():
    validation.check_pool(fakes.pool(protocol='UDP'),
                          listener_protocol='UDP')
    text = refused(validation.check_pool, fakes.pool(protocol='TCP'),
                   listener_protocol='UDP')
    assert 'pool protocol TCP' in text and 'UDP' in text


def test_source_ip_persistence_with_source_ip_hash_is_accepted():
    validation.check_pool(fakes.pool(
        lb_algorithm='SOURCE_IP',
        session_persistence={'type': 'SOURCE_IP', 'cookie_name': None,
                             'persistence_timeout': None,
                             'persistence_granularity': None}))


def test_source_ip_persistence_with_source_ip_port_hash_is_refused():
    text = refused(validation.check_pool, fakes.pool(
        lb_algorithm='SOURCE_IP_PORT',
        session_persistence={'type': 'SOURCE_IP'}))
    assert 'session_persistence' in text
    assert 'lb_algorithm SOURCE_IP' in text


@pytest.mark.parametrize('kind', ['HTTP_COOKIE', 'APP_COOKIE'])
def test_cookie_persistence_is_refused(kind):
    text = refused(validation.check_pool, fakes.pool(
        lb_algorithm='SOURCE_IP',
        session_persistence={'type': kind, 'cookie_name': 'c'}))
    assert f'session_persistence type {kind}' in text
    assert 'SOURCE_IP' in text


def test_persistence_timeout_is_refused():
    text = refused(validation.check_pool, fakes.pool(
        lb_algorithm='SOURCE_IP',
        session_persistence={'type': 'SOURCE_IP',
                             'persistence_timeout': 360}))
    assert 'persistence_timeout 360' in text


def test_pool_update_checks_algorithm_against_kept_persistence():
    old = fakes.pool(lb_algorithm='SOURCE_IP',
                     session_persistence={'type': 'SOURCE_IP'})
    refused(validation.check_pool,
            dm.Pool(pool_id='p', lb_algorithm='SOURCE_IP_PORT'), old_pool=old)
    # Dropping persistence along with the hash change is fine.
    validation.check_pool(dm.Pool(pool_id='p', lb_algorithm='SOURCE_IP_PORT',
                                  session_persistence=None), old_pool=old)
    # Adding persistence to a SOURCE_IP pool is fine.
    validation.check_pool(
        dm.Pool(pool_id='p', session_persistence={'type': 'SOURCE_IP'}),
        old_pool=fakes.pool(lb_algorithm='SOURCE_IP'))
    validation.check_pool(dm.Pool(pool_id='p', name='x'), old_pool=old)


def test_pool_tls_is_refused():
    text = refused(validation.check_pool, fakes.pool(tls_enabled=True))
    assert 'pool tls_enabled' in text and 'false' in text
    text = refused(validation.check_pool,
                   fakes.pool(ca_tls_container_ref='barbican://ca'))
    assert 'pool ca_tls_container_ref' in text


# --- member ports ----------------------------------------------------------

def test_member_port_must_be_the_listener_port():
    validation.check_member_port(fakes.member(port=80), 80)
    text = refused(validation.check_member_port, fakes.member(port=8080), 80)
    assert 'protocol_port 8080' in text
    assert 'allowed: 80' in text
    assert 'cannot translate ports' in text


def test_member_of_a_pool_without_listener_is_accepted():
    validation.check_member_port(fakes.member(port=8080), None)


def test_a_pool_serves_one_port():
    validation.check_pool_ports('p', [80, 80], [fakes.member(port=80)])
    text = refused(validation.check_pool_ports, 'p', [80, 443], [])
    assert 'ports 80, 443' in text and 'one listener port per pool' in text


# --- health monitor --------------------------------------------------------

@pytest.mark.parametrize('kind', ['TCP', 'HTTP', 'HTTPS', 'PING',
                                  'UDP-CONNECT', 'TLS-HELLO'])
def test_monitor_types_the_agent_runs(kind):
    validation.check_health_monitor(fakes.health_monitor(type=kind))


@pytest.mark.parametrize('kind', ['SCTP', 'http'])
def test_other_monitor_types_are_refused(kind):
    text = refused(validation.check_health_monitor,
                   fakes.health_monitor(type=kind))
    assert f"health monitor type '{kind}' is invalid" in text
    assert 'HTTP, HTTPS, PING, TCP, TLS-HELLO, UDP-CONNECT' in text


def test_monitor_timeout_beyond_delay_is_accepted():
    """Octavia allows timeout > delay (HAProxy: timeout check > inter);
    the SEs' checker spaces such probes out (health/monitor.py)."""
    validation.check_health_monitor(fakes.health_monitor(delay=3, timeout=3))
    validation.check_health_monitor(fakes.health_monitor(delay=2, timeout=3))


def test_monitor_delay_and_timeout_ranges():
    text = refused(validation.check_health_monitor,
                   fakes.health_monitor(delay=0, timeout=0))
    assert 'delay 0' in text and '1..86400' in text


def test_monitor_update_checks_the_merged_values():
    old = fakes.health_monitor(type='HTTP', delay=10, timeout=5)
    validation.check_health_monitor(dm.HealthMonitor(delay=4), old_hm=old)
    text = refused(validation.check_health_monitor,
                   dm.HealthMonitor(expected_codes='999'), old_hm=old)
    assert "expected_codes '999' is invalid" in text


@pytest.mark.parametrize('codes', ['999', '099', '600', '200-600',
                                   '204-200', '200,999', '2xx', '200;202',
                                   '200,\t202', ''])
def test_monitor_expected_codes_the_agents_reject_are_refused(codes):
    text = refused(validation.check_health_monitor,
                   fakes.health_monitor(expected_codes=codes))
    assert 'expected_codes' in text and '100..599' in text


@pytest.mark.parametrize('codes', ['200', '200,202', '200, 202', '200-204',
                                   '100', '599', '100-599'])
def test_monitor_expected_codes_octavia_allows_are_accepted(codes):
    validation.check_health_monitor(fakes.health_monitor(expected_codes=codes))


@pytest.mark.parametrize('path', ['health', '/a b', '/a\x01'])
def test_monitor_url_paths_the_agents_reject_are_refused(path):
    text = refused(validation.check_health_monitor,
                   fakes.health_monitor(url_path=path))
    assert 'url_path' in text and 'starting with "/"' in text


@pytest.mark.parametrize('address, why', [
    ('127.0.0.1', 'loopback'), ('::1', 'loopback'),
    ('224.0.0.5', 'multicast'), ('ff02::1', 'multicast'),
    ('0.0.0.0', 'unspecified'), ('::', 'unspecified'),
    ('0.1.2.3', '0.0.0.0/8'), ('169.254.1.1', 'link-local'),
    ('fe80::1', 'link-local'), ('255.255.255.255', 'broadcast'),
    ('240.0.0.1', 'reserved'), ('::ffff:198.19.1.2', 'IPv4-mapped'),
    ('192.0.2.10', 'VIP'), ('2001:db8:f::10', 'VIP'),
    ('example.com', 'IPv4 or IPv6 address')])
def test_member_addresses_that_cannot_be_members_are_refused(address, why):
    vips = ('192.0.2.10', '2001:db8:f::10')
    text = refused(validation.check_member, fakes.member(address=address),
                   vips)
    assert f"member address '{address}' is invalid" in text
    assert why in text
    text = refused(validation.check_member,
                   fakes.member(monitor_address=address), vips)
    assert f"member monitor_address '{address}' is invalid" in text


@pytest.mark.parametrize('kw, field', [
    ({'weight': 257}, 'weight'), ({'weight': -1}, 'weight'),
    ({'protocol_port': 0}, 'protocol_port'),
    ({'monitor_port': 65536}, 'monitor_port')])
def test_member_ranges(kw, field):
    text = refused(validation.check_member, fakes.member(**kw))
    assert f'member {field}' in text


def test_members_that_can_be_members_are_accepted():
    for address in ('198.19.1.2', '2001:db8:2::2', '10.0.0.1', '192.0.2.11'):
        validation.check_member(fakes.member(address=address, weight=0,
                                             monitor_address=address,
                                             monitor_port=8080),
                                ('192.0.2.10',))


def test_graph_members_are_checked_against_the_vips():
    lb = fakes.full_graph(members=[fakes.member(address='192.0.2.10')])
    assert 'VIP' in refused(validation.check_graph, lb)


def test_monitor_http_options_agents_do_not_send():
    validation.check_health_monitor(fakes.health_monitor(http_version=1.0))
    text = refused(validation.check_health_monitor,
                   fakes.health_monitor(http_version=1.1,
                                        domain_name='example.com'))
    assert 'http_version 1.1' in text and '1.0' in text
    text = refused(validation.check_health_monitor,
                   fakes.health_monitor(domain_name='example.com'))
    assert 'domain_name' in text


# --- load balancer ---------------------------------------------------------

def test_vip_port_options_without_effect_are_refused():
    text = refused(validation.check_loadbalancer,
                   fakes.loadbalancer(vip_qos_policy_id='qos-1'))
    assert 'vip_qos_policy_id' in text
    text = refused(validation.check_loadbalancer,
                   fakes.loadbalancer(vip_sg_ids=['sg-1']))
    assert 'vip_sg_ids' in text


def test_full_graph_is_accepted():
    validation.check_graph(fakes.full_graph())


def test_graph_member_on_another_port_is_refused():
    lb = fakes.full_graph(members=[fakes.member(port=80),
                                   fakes.member(fakes.MEMBER2_ID,
                                                address='198.19.1.3',
                                                port=81)])
    text = refused(validation.check_graph, lb)
    assert 'protocol_port 81' in text and 'allowed: 80' in text


def test_graph_pool_shared_by_listeners_on_two_ports_is_refused():
    pool = fakes.pool()
    lb = fakes.loadbalancer(
        listeners=[fakes.listener(default_pool=pool),
                   fakes.listener('l2', port=81, default_pool=pool)],
        pools=[pool])
    text = refused(validation.check_graph, lb)
    assert 'ports 80, 81' in text


def test_graph_refusals_reach_nested_objects():
    bad_monitor = fakes.pool(healthmonitor=fakes.health_monitor(type='SCTP'))
    refused(validation.check_graph,
            fakes.loadbalancer(pools=[bad_monitor], listeners=[]))
    refused(validation.check_graph, fakes.loadbalancer(
        pools=[fakes.pool(lb_algorithm='ROUND_ROBIN')]))
    udp_pool = fakes.pool(protocol='UDP')
    refused(validation.check_graph, fakes.loadbalancer(
        listeners=[fakes.listener(default_pool=udp_pool)], pools=[udp_pool]))
