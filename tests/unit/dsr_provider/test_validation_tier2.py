"""A tier-2 load balancer accepts what its L7 service engines do (issue
11); the same objects stay refused on tier 1."""

from octavia_lib.api.drivers import data_models as dm
from octavia_lib.api.drivers import exceptions
from octavia_lib.common import constants as lib_consts
from oslo_config import cfg
import pytest

from dsr_provider import validation
from tests.unit.dsr_provider import fakes


def refused(func, *args, **kwargs):
    with pytest.raises(exceptions.UnsupportedOptionError) as info:
        func(*args, **kwargs)
    text = info.value.user_fault_string
    assert 'allowed' in text, text
    return text


def l7_graph():
    """HTTP listener with timeouts, limits, headers and an L7 policy;
    ROUND_ROBIN pool with cookie persistence, port-translated and backup
    members and an HTTP monitor."""
    members = [fakes.member(port=8080),
               fakes.member(fakes.MEMBER2_ID, address='198.19.2.2',
                            port=8081, backup=True)]
    the_pool = fakes.pool(
        members=members, protocol='HTTP', lb_algorithm='ROUND_ROBIN',
        session_persistence={'type': 'HTTP_COOKIE'},
        healthmonitor=fakes.health_monitor(type='HTTP'))
    policy = dm.L7Policy(
        l7policy_id='p7', action='REDIRECT_TO_URL', position=1,
        redirect_url='http://example.com/', redirect_http_code=302,
        rules=[dm.L7Rule(l7rule_id='r7', type='PATH',
                         compare_type='STARTS_WITH', value='/old',
                         invert=False)])
    listener = fakes.listener(
        protocol='HTTP', default_pool=the_pool, connection_limit=1000,
        allowed_cidrs=['203.0.113.0/24'], timeout_member_connect=1000,
        timeout_member_data=9000, timeout_tcp_inspect=50,
        insert_headers={'X-Forwarded-For': 'true'}, l7policies=[policy])
    return fakes.loadbalancer(listeners=[listener], pools=[the_pool],
                              flavor={'tier': 2})


def test_the_l7_graph_is_accepted_on_tier2_only():
    validation.check_graph(l7_graph(), tier=2)
    text = refused(validation.check_graph, l7_graph())
    assert 'listener protocol HTTP' in text


@pytest.mark.parametrize('protocol', ['HTTP', 'HTTPS', 'TERMINATED_HTTPS',
                                      'TCP', 'UDP'])
def test_tier2_listener_protocols(protocol):
    extra = {}
    if protocol == 'TERMINATED_HTTPS':
        extra = dict(default_tls_container_ref='ref-1',
                     sni_container_refs=['ref-2'])
    validation.check_listener(fakes.listener(protocol=protocol, **extra),
                              tier=2)


def test_tier2_listener_refusals_name_the_field_and_tier():
    text = refused(validation.check_listener,
                   fakes.listener(protocol='SCTP'), tier=2)
    assert 'listener protocol SCTP' in text and 'tier-2' in text
    assert 'HTTP, HTTPS, TERMINATED_HTTPS, TCP, UDP' in text
    text = refused(validation.check_listener,
                   dm.Listener(client_authentication='OPTIONAL'), tier=2)
    assert 'client_authentication OPTIONAL' in text
    text = refused(validation.check_listener,
                   dm.Listener(connection_limit=-5), tier=2)
    assert 'connection_limit' in text


@pytest.mark.parametrize('algorithm', ['ROUND_ROBIN', 'LEAST_CONNECTIONS',
                                       'SOURCE_IP', 'SOURCE_IP_PORT'])
def test_tier2_algorithms(algorithm):
    validation.check_pool(dm.Pool(lb_algorithm=algorithm, protocol='HTTP'),
                          tier=2)


@pytest.mark.parametrize('algorithm', ['ROUND_ROBIN', 'SOURCE_IP',
                                       'SOURCE_IP_PORT'])
def test_tier2_udp_algorithms(algorithm):
    validation.check_pool(dm.Pool(lb_algorithm=algorithm, protocol='UDP'),
                          tier=2)


def test_tier2_udp_least_connections_is_refused_also_by_update():
    text = refused(validation.check_pool, dm.Pool(
        lb_algorithm='LEAST_CONNECTIONS', protocol='UDP'), tier=2)
    assert 'lb_algorithm LEAST_CONNECTIONS' in text and 'UDP' in text
    assert 'ROUND_ROBIN, SOURCE_IP, SOURCE_IP_PORT' in text
    # An update changing only the algorithm of a UDP pool.
    refused(validation.check_pool, dm.Pool(lb_algorithm='LEAST_CONNECTIONS'),
            dm.Pool(lb_algorithm='ROUND_ROBIN', protocol='UDP'), tier=2)
    # An update of another field keeps a (tier-1 style) TCP pool's choice.
    validation.check_pool(dm.Pool(name='x'), dm.Pool(
        lb_algorithm='LEAST_CONNECTIONS', protocol='TCP'), tier=2)


@pytest.mark.parametrize('persistence', [
    {'type': 'SOURCE_IP'}, {'type': 'HTTP_COOKIE'},
    {'type': 'APP_COOKIE', 'cookie_name': 'JSESSIONID'}])
def test_tier2_session_persistence(persistence):
    validation.check_pool(dm.Pool(lb_algorithm='ROUND_ROBIN',
                                  session_persistence=persistence), tier=2)
    refused(validation.check_pool, dm.Pool(
        lb_algorithm='ROUND_ROBIN', session_persistence=persistence))


def test_tier2_pool_refusals():
    text = refused(validation.check_pool, dm.Pool(
        session_persistence={'type': 'APP_COOKIE'}), tier=2)
    assert 'cookie_name' in text
    text = refused(validation.check_pool, dm.Pool(protocol='SCTP'), tier=2)
    assert 'pool protocol SCTP' in text and 'PROXYV2' in text


@pytest.mark.parametrize('kind', ['HTTP', 'HTTPS', 'TLS-HELLO', 'TCP'])
def test_tier2_monitors(kind):
    validation.check_health_monitor(fakes.health_monitor(type=kind), tier=2)


def test_tier2_monitor_refusal():
    text = refused(validation.check_health_monitor,
                   fakes.health_monitor(type='PING'), tier=2)
    assert 'health monitor type PING' in text and 'TLS-HELLO' in text
    # The shared value checks still apply.
    text = refused(validation.check_health_monitor,
                   fakes.health_monitor(max_retries=11), tier=2)
    assert 'max_retries' in text


def test_l7_policies_and_rules():
    validation.check_l7policy(dm.L7Policy(action='REDIRECT_TO_POOL',
                                          redirect_pool_id=fakes.POOL_ID,
                                          position=2))
    validation.check_l7policy(dm.L7Policy(position=3))  # an update
    text = refused(validation.check_l7policy, dm.L7Policy(action='DROP'))
    assert 'L7 policy action' in text and 'REDIRECT_PREFIX' in text
    validation.check_l7rule(dm.L7Rule(type='HEADER', compare_type='REGEX',
                                      key='X-Tenant', value='^a'))
    text = refused(validation.check_l7rule,
                   dm.L7Rule(type='PATH', compare_type='LIKE', value='/'))
    assert 'L7 rule compare_type' in text and 'EQUAL_TO' in text
    text = refused(validation.check_l7rule, dm.L7Rule(
        type='SSL_DN_FIELD', compare_type='EQUAL_TO', key='CN', value='x'))
    assert 'SSL_DN_FIELD' in text and 'HOST_NAME' in text


def test_tier1_still_refuses_l7_naming_the_tier():
    text = refused(validation.check_listener, fakes.listener(
        l7policies=[dm.L7Policy(action='REJECT')]))
    assert 'tier-1' in text and 'tier-2 flavor' in text


# --- listener TLS settings: applied on tier 2, refused on tier 1 ----------

def octavia_tls_defaults():
    """The defaults tier 1 accepts (checked against Octavia's below)."""
    return {name: default
            for name, (_, default) in validation._TLS_DEFAULTS.items()}


def test_the_tls_defaults_are_octavias():
    constants = pytest.importorskip('octavia.common.constants')
    assert octavia_tls_defaults() == {
        'tls_ciphers': constants.CIPHERS_OWASP_SUITE_B,
        'tls_versions': constants.TLS_VERSIONS_OWASP_SUITE_B,
        # [api_settings] default_listener_alpn_protocols' default
        'alpn_protocols': [
            lib_consts.ALPN_PROTOCOL_HTTP_2,
            lib_consts.ALPN_PROTOCOL_HTTP_1_1,
            lib_consts.ALPN_PROTOCOL_HTTP_1_0]}


def test_tier2_tls_listener_as_octavia_creates_it_is_accepted():
    """Octavia fills in its defaults on a TERMINATED_HTTPS create, and on
    a PUT of null."""
    validation.check_listener(fakes.listener(
        protocol='TERMINATED_HTTPS', default_tls_container_ref='ref-1',
        **octavia_tls_defaults()), tier=2)
    validation.check_listener(dm.Listener(**octavia_tls_defaults()), tier=2)
    validation.check_listener(fakes.listener(protocol='HTTP'), tier=2)


@pytest.mark.parametrize('name,value', [
    ('tls_versions', ['TLSv1.3']),
    ('tls_versions', ['TLSv1.3', 'TLSv1.2']),
    ('tls_ciphers', 'ECDHE-ECDSA-AES256-GCM-SHA384'),
    ('alpn_protocols', ['h2']),
    ('alpn_protocols', []),
])
def test_tier1_refuses_listener_tls_settings_nothing_applies(name, value):
    defaults = octavia_tls_defaults()
    listener = fakes.listener(protocol='TCP', **dict(
        defaults, **{name: value}))
    text = refused(validation.check_listener, listener, tier=1)
    assert text.startswith(f'listener {name} {value!r} is not supported')
    assert f'allowed: unset or {defaults[name]!r}' in text
    assert 'no TLS termination' in text
    # An update setting only that field.
    refused(validation.check_listener, dm.Listener(**{name: value}), tier=1)


@pytest.mark.parametrize('name,value', [
    ('tls_versions', ['TLSv1.3']),
    ('tls_versions', ('TLSv1.2',)),
    ('tls_versions', ['TLSv1.3', 'TLSv1.2']),
    ('tls_ciphers', 'ECDHE-ECDSA-AES256-GCM-SHA384'),
    ('tls_ciphers', 'TLS_AES_256_GCM_SHA384'),
    ('tls_ciphers', 'HIGH:!aNULL:@STRENGTH'),
    ('alpn_protocols', ['h2']),
    ('alpn_protocols', ['http/1.1', 'h2']),
])
def test_tier2_applies_listener_tls_settings(name, value):
    """The L7 snapshot carries them to HAProxy: any value it can apply is
    accepted, on create and on an update of that field alone."""
    listener = fakes.listener(
        protocol='TERMINATED_HTTPS', default_tls_container_ref='ref-1',
        **dict(octavia_tls_defaults(), **{name: value}))
    validation.check_listener(listener, tier=2)
    validation.check_listener(dm.Listener(**{name: value}), tier=2)


@pytest.mark.parametrize('name,value,allowed', [
    # Not in the L7 SEs' OpenSSL, or failing at its security level.
    ('tls_versions', ['SSLv3'], 'one of TLSv1.2, TLSv1.3'),
    ('tls_versions', ['TLSv1', 'TLSv1.2'], 'one of TLSv1.2, TLSv1.3'),
    ('tls_versions', ['TLSv1.2', 'TLSv1.1'], 'one of TLSv1.2, TLSv1.3'),
    ('tls_versions', ['TLSv1.4'], 'one of TLSv1.2, TLSv1.3'),
    ('tls_versions', [], 'null or a non-empty list'),
    ('tls_versions', ['TLSv1.2', 'TLSv1.2'],
     'null or a non-empty list of distinct'),
    ('alpn_protocols', ['h3'], 'one of h2, http/1.1, http/1.0'),
    ('alpn_protocols', [], 'null or a non-empty list'),
    # One HAProxy argument: a space would end it.
    ('tls_ciphers', 'HIGH maxconn 1', 'letters, digits and - + ! : @ = _ .'),
    ('tls_ciphers', 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:HIGH',
     'TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384'),
    # HAProxy refuses a cipher list OpenSSL finds nothing in.
    ('tls_ciphers', 'NO-SUCH-CIPHER:TLS_AES_128_GCM_SHA256',
     'a cipher string in which OpenSSL finds a cipher'),
])
def test_tier2_refuses_tls_settings_haproxy_cannot_apply(name, value,
                                                         allowed):
    for listener in (fakes.listener(protocol='TERMINATED_HTTPS',
                                    default_tls_container_ref='ref-1',
                                    **{name: value}),
                     dm.Listener(**{name: value})):
        text = refused(validation.check_listener, listener, tier=2)
        assert text.startswith(f'listener {name}'), text
        assert allowed in text[text.index('(allowed: '):], text
        assert 'tier-2' in text, text


def test_tier2_graph_with_tls_settings():
    listener = fakes.listener(
        protocol='TERMINATED_HTTPS', default_tls_container_ref='ref-1',
        tls_versions=['TLSv1.3'], alpn_protocols=['h2', 'http/1.1'])
    validation.check_graph(fakes.loadbalancer(listeners=[listener]),
                           tier=2)
    listener.tls_versions = ['TLSv1.1']
    text = refused(validation.check_graph,
                   fakes.loadbalancer(listeners=[listener]), tier=2)
    assert "tls_versions[0] 'TLSv1.1'" in text


def test_listener_tls_settings_follow_octavias_configured_defaults():
    # Inside octavia-api the defaults come from [api_settings] (tier 1,
    # which applies none: tier 2 applies any value HAProxy can).
    opt = cfg.ListOpt('default_listener_tls_versions',
                      default=['TLSv1.2', 'TLSv1.3'])
    try:
        cfg.CONF.register_opt(opt, group='api_settings')
    except cfg.DuplicateOptError:     # octavia itself was imported
        opt = None
    cfg.CONF.set_override('default_listener_tls_versions', ['TLSv1.3'],
                          group='api_settings')
    try:
        for versions in (['TLSv1.3'], ['TLSv1.2', 'TLSv1.3']):
            validation.check_listener(dm.Listener(tls_versions=versions),
                                      tier=1)
        text = refused(validation.check_listener,
                       dm.Listener(tls_versions=['TLSv1.2']), tier=1)
        assert "['TLSv1.2', 'TLSv1.3'] or ['TLSv1.3']" in text
    finally:
        cfg.CONF.clear_override('default_listener_tls_versions',
                                group='api_settings')
        if opt is not None:
            cfg.CONF.unregister_opt(opt, group='api_settings')
