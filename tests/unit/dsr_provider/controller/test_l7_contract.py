"""The controller's L7 document is what the L7 SEs run: each tier-2 load
balancer the store renders goes through the L7 engine's renderer
(amphora_agent/l7/render.py, Octavia's templater) and HAProxy 2.6 accepts
the configuration (haproxy -c)."""

from amphora_agent.l7 import render
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
