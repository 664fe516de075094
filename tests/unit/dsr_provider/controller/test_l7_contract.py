"""The controller's L7 document is what the L7 SEs run: each tier-2 load
balancer the store renders goes through the L7 engine's renderer
(amphora_agent/l7/render.py, Octavia's templater) and HAProxy 2.6 accepts
the configuration (haproxy -c)."""

from amphora_agent.l7 import render
from dsr_provider.controller import l7_snapshot
from dsr_wire import l7
from tests.unit.amphora_agent.l7.test_render import accepted
from tests.unit.amphora_agent.l7.test_render import needs_haproxy
from tests.unit.amphora_agent.l7.test_render import SNAT
from tests.unit.dsr_provider.controller.test_store_tier2 import graph
from tests.unit.dsr_provider.controller.test_store_tier2 import L7G


@needs_haproxy
def test_the_store_l7_document_renders_and_haproxy_accepts_it(
        store, tmp_path):
    store.create_loadbalancer(graph())
    store.put_pool({'pool_id': 'p3', 'loadbalancer_id': 'lb2',
                    'lb_algorithm': 'SOURCE_IP_PORT', 'protocol': 'HTTP',
                    'admin_state_up': True,
                    'session_persistence': {'type': 'APP_COOKIE',
                                            'cookie_name': 'SID'}})
    store.put_member({'member_id': 'm31', 'pool_id': 'p3',
                      'address': '2001:db8:5::31', 'protocol_port': 8443,
                      'weight': 3, 'admin_state_up': True})
    store.put_l7policy({'l7policy_id': 'pol2', 'listener_id': 'l2',
                        'action': 'REDIRECT_TO_POOL', 'position': 1,
                        'redirect_pool_id': 'p3', 'admin_state_up': True,
                        'rules': [{'l7rule_id': 'r2', 'l7policy_id': 'pol2',
                                   'type': 'HEADER', 'key': 'X-Api',
                                   'compare_type': 'EQUAL_TO',
                                   'value': 'v2', 'invert': False,
                                   'admin_state_up': True}]})
    store.put_listener({'listener_id': 'l4', 'loadbalancer_id': 'lb2',
                        'protocol': 'TERMINATED_HTTPS',
                        'protocol_port': 443, 'default_pool_id': 'p3',
                        'default_tls_container_ref': 'ref-default',
                        'sni_container_refs': ['ref-sni'],
                        'timeout_client_data': 30000,
                        'allowed_cidrs': ['203.0.113.0/24']})
    doc = store.snapshot(L7G)
    l7.check_document(doc)
    (lb,) = doc['load_balancers']
    paths = render.Paths(str(tmp_path))
    out = render.render(lb, paths, snat=SNAT)
    # The engine leaves UDP listeners to another path (its own note).
    assert set(out.not_rendered) == {'l3'}, out.not_rendered
    assert accepted(paths, out, lb_id='lb2')
    # The policy, the TLS listener, both persistence types, the L7 SE's
    # own source address towards members (SNAT).
    for text in ('X-Api', 'crt-list', 'res.cook(SID)', 'cookie SRV insert',
                 'source [2001:db8:2:1::2]', 'source 198.19.1.2'):
        assert text in out.config, text


# --- a listener's TLS versions, ciphers and ALPN ---------------------------

OCTAVIA_TLS = {
    # Octavia's [api_settings] defaults, which every TERMINATED_HTTPS
    # listener created without them carries.
    'tls_versions': ['TLSv1.2', 'TLSv1.3'],
    'tls_ciphers': 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:'
                   'ECDHE-ECDSA-AES128-GCM-SHA256:'
                   'ECDHE-RSA-AES128-GCM-SHA256',
    'alpn_protocols': ['h2', 'http/1.1', 'http/1.0'],
}


def tls_listener(**fields):
    return dict({'listener_id': 'l4', 'loadbalancer_id': 'lb2',
                 'protocol': 'TERMINATED_HTTPS', 'protocol_port': 443,
                 'default_pool_id': 'p2',
                 'default_tls_container_ref': 'ref-default'}, **fields)


def l7_listener(store, listener_id='l4'):
    doc = store.snapshot(L7G)
    l7.check_document(doc)
    (lb,) = doc['load_balancers']
    (item,) = [li for li in lb['listeners'] if li['id'] == listener_id]
    return lb, item


@needs_haproxy
def test_the_l7_document_carries_the_listener_tls_settings(store,
                                                           tmp_path):
    store.create_loadbalancer(graph())
    store.put_listener(tls_listener(**OCTAVIA_TLS))
    lb, item = l7_listener(store)
    assert {k: item.get(k) for k in OCTAVIA_TLS} == OCTAVIA_TLS
    # An update of one of them.
    store.put_listener(tls_listener(**dict(OCTAVIA_TLS,
                                           tls_versions=['TLSv1.3'])),
                       update=True)
    lb, item = l7_listener(store)
    assert item['tls_versions'] == ['TLSv1.3']
    assert item['alpn_protocols'] == OCTAVIA_TLS['alpn_protocols']
    paths = render.Paths(str(tmp_path))
    out = render.render(lb, paths, snat=SNAT)
    assert accepted(paths, out, lb_id='lb2')
    assert f'ssl crt-list {paths.crt_list("lb2", "l4")} ssl-min-ver TLSv1.3 ' \
        'ssl-max-ver TLSv1.3 ciphersuites TLS_AES_128_GCM_SHA256:' \
        'TLS_AES_256_GCM_SHA384 alpn h2,http/1.1,http/1.0' in out.config


def test_a_listener_without_tls_settings_has_none_in_the_document(store):
    # HAProxy's defaults then, as before (render's test for that).
    store.create_loadbalancer(graph())
    store.put_listener(tls_listener())
    _, item = l7_listener(store)
    assert not set(item) & set(l7.LISTENER_TLS_FIELDS)


def test_a_stored_tls_setting_the_l7_ses_cannot_apply_is_left_out(store):
    """A value the driver accepted (and ignored) before it checked them
    does not keep its load balancer out of the document: that setting
    alone is left out, HAProxy keeps its default for it."""
    store.create_loadbalancer(graph())
    store.put_listener(tls_listener(
        tls_versions=['TLSv1.1', 'TLSv1.2'],
        tls_ciphers='TLS_AES_128_GCM_SHA256 maxconn 1',
        alpn_protocols=['h2']))
    _, item = l7_listener(store)
    assert item['alpn_protocols'] == ['h2']
    assert 'tls_versions' not in item and 'tls_ciphers' not in item


def test_a_document_for_l7_ses_of_the_earlier_contract_has_no_tls_fields(
        store):
    """What an L7 SE of the earlier release (L7 contract 1) accepts: no
    listener field its schema lacks; the stored values stay for later."""
    store.create_loadbalancer(graph())
    store.put_listener(tls_listener(**OCTAVIA_TLS))
    earlier = set(l7.LISTENER['properties']) - set(l7.LISTENER_TLS_FIELDS)
    with store.db.session() as s:
        doc = l7_snapshot.document(s, L7G, 7, contract=1)
        current = l7_snapshot.document(s, L7G, 7, contract=2)
    l7.check_document(doc)
    for lb in doc['load_balancers']:
        for item in lb['listeners']:
            assert set(item) <= earlier, set(item) - earlier
    (item,) = [i for i in current['load_balancers'][0]['listeners']
               if i['id'] == 'l4']
    assert {k: item[k] for k in OCTAVIA_TLS} == OCTAVIA_TLS
