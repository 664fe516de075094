"""dsr_wire.l7: the L7 (tier-2) document; errors name the field, the
value and the allowed values."""

import copy

import pytest

from dsr_wire import l7
from dsr_wire.schema import Invalid


def document():
    """A tier-2 document using most of the contract: an HTTP listener with
    an L7 policy to a second pool, a TERMINATED_HTTPS listener."""
    member = {'id': 'm1', 'address': '198.51.100.11', 'protocol_port': 8080,
              'weight': 1, 'admin_state_up': True, 'backup': False,
              'monitor_address': None, 'monitor_port': None}
    return {
        'schema_version': 1, 'role': 'tier2', 'se_group': 'g1-l7',
        'generation': 3,
        'load_balancers': [{
            'id': 'lb1', 'admin_state_up': True,
            'vips': [{'address': '192.0.2.10'}],
            'listeners': [{
                'id': 'li1', 'protocol': 'HTTP', 'protocol_port': 80,
                'admin_state_up': True, 'connection_limit': -1,
                'default_pool_id': 'p1', 'timeout_client_data': 50000,
                'timeout_member_connect': 5000,
                'timeout_member_data': 50000, 'timeout_tcp_inspect': 0,
                'allowed_cidrs': None,
                'insert_headers': {'X-Forwarded-For': 'true'},
                'default_tls_container_ref': None, 'sni_container_refs': [],
                'l7policies': [{
                    'id': 'pol1', 'action': 'REDIRECT_TO_POOL',
                    'position': 1, 'redirect_pool_id': 'p2',
                    'redirect_url': None, 'redirect_prefix': None,
                    'redirect_http_code': None, 'admin_state_up': True,
                    'rules': [{'id': 'r1', 'type': 'PATH',
                               'compare_type': 'STARTS_WITH', 'key': None,
                               'value': '/api', 'invert': False,
                               'admin_state_up': True}]}]}, {
                'id': 'li2', 'protocol': 'TERMINATED_HTTPS',
                'protocol_port': 443, 'default_pool_id': 'p1',
                'default_tls_container_ref': 'file:///certs/web',
                'l7policies': []}],
            'pools': [
                {'id': 'p1', 'protocol': 'HTTP', 'lb_algorithm': 'ROUND_ROBIN',
                 'admin_state_up': True, 'session_persistence': None,
                 'members': [member],
                 'healthmonitor': {'id': 'hm1', 'type': 'HTTP', 'delay': 5,
                                   'timeout': 3, 'max_retries': 3,
                                   'max_retries_down': 3,
                                   'http_method': 'GET', 'url_path': '/',
                                   'expected_codes': '200',
                                   'admin_state_up': True}},
                {'id': 'p2', 'protocol': 'HTTP',
                 'lb_algorithm': 'LEAST_CONNECTIONS',
                 'session_persistence': {'type': 'HTTP_COOKIE',
                                         'cookie_name': None},
                 'members': [dict(member, id='m2',
                                  address='198.51.100.12')],
                 'healthmonitor': None}]}]}


def test_the_sample_document_is_valid():
    l7.check_document(document())


@pytest.mark.parametrize('lb_id', ['../../tmp/x', 'a/b', '..', '.'])
def test_an_id_that_could_name_another_folder_is_refused(lb_id):
    """An L7 SE names its state folder per load balancer by its id."""
    doc = document()
    doc['load_balancers'][0]['id'] = lb_id
    with pytest.raises(Invalid, match='not only dots'):
        l7.check_document(doc)


def test_optional_fields_may_be_absent():
    doc = document()
    lb = doc['load_balancers'][0]
    lb['listeners'] = [{'id': 'li', 'protocol': 'TCP',
                        'protocol_port': 22}]
    lb['pools'] = [{'id': 'p', 'protocol': 'TCP',
                    'lb_algorithm': 'SOURCE_IP', 'members': []}]
    l7.check_document(doc)


def _lb(doc):
    return doc['load_balancers'][0]


@pytest.mark.parametrize('change, message', [
    (lambda d: d.update(role='tier1'),
     "l7snapshot.role 'tier1' is invalid (allowed: \"tier2\")"),
    (lambda d: d.update(schema_version=2), 'schema_version 2 is invalid'),
    (lambda d: _lb(d)['pools'][0].update(lb_algorithm='RANDOM'),
     "pools[0].lb_algorithm 'RANDOM' is invalid (allowed: one of "
     "ROUND_ROBIN, LEAST_CONNECTIONS, SOURCE_IP, SOURCE_IP_PORT)"),
    (lambda d: _lb(d)['listeners'][0].update(protocol='SCTP'),
     "listeners[0].protocol 'SCTP' is invalid (allowed: one of HTTP, "
     "HTTPS, TERMINATED_HTTPS, TCP, UDP)"),
    (lambda d: _lb(d)['listeners'][0].update(default_pool_id='nope'),
     "listeners[0].default_pool_id 'nope' is invalid (allowed: a pool of "
     "the load balancer: ['p1', 'p2'])"),
    (lambda d: _lb(d)['listeners'][0]['l7policies'][0].update(
        redirect_pool_id='p9'), "redirect_pool_id 'p9' is invalid"),
    (lambda d: _lb(d)['listeners'][0]['l7policies'][0].update(
        redirect_pool_id=None),
     'redirect_pool_id None is invalid (allowed: a value (REDIRECT_TO_POOL'
     ' needs redirect_pool_id))'),
    (lambda d: _lb(d)['listeners'][0]['l7policies'][0].update(
        action='REDIRECT_TO_URL'), 'redirect_url None is invalid'),
    (lambda d: _lb(d)['listeners'][0]['l7policies'][0].update(
        redirect_http_code=305), 'redirect_http_code 305 is invalid '
                                 '(allowed: null or one of 301, 302'),
    (lambda d: _lb(d)['listeners'][0]['l7policies'][0]['rules'][0].update(
        type='HEADER'), "rules[0].key None is invalid (allowed: a non-empty "
                        "key (HEADER rules need one))"),
    (lambda d: _lb(d)['listeners'][0]['l7policies'][0]['rules'][0].update(
        compare_type='LIKE'), "compare_type 'LIKE' is invalid"),
    (lambda d: _lb(d)['listeners'][1].update(default_tls_container_ref=None),
     'listeners[1].default_tls_container_ref None is invalid (allowed: a '
     'certificate container reference (TERMINATED_HTTPS needs one))'),
    (lambda d: _lb(d)['listeners'][1].update(protocol_port=80),
     'listeners[1].protocol_port 80 is invalid (allowed: a port no other'),
    (lambda d: _lb(d)['listeners'][0].update(allowed_cidrs=['10.0.0.0/33']),
     "allowed_cidrs[0] '10.0.0.0/33' is invalid"),
    (lambda d: _lb(d)['listeners'][0].update(protocol='TCP'),
     "l7policies[0].action 'REDIRECT_TO_POOL' is invalid (allowed: L7 "
     "policies on HTTP or TERMINATED_HTTPS listeners only"),
    (lambda d: _lb(d)['pools'][1]['members'][0].update(address='127.0.0.1'),
     "pools[1].members[0].address '127.0.0.1' is invalid"),
    (lambda d: _lb(d)['pools'][1]['members'][0].update(weight=1.0),
     'weight 1.0 is invalid'),
    (lambda d: _lb(d)['pools'][1].update(session_persistence={
        'type': 'APP_COOKIE'}), 'session_persistence.cookie_name None is '
                                'invalid (allowed: a cookie name'),
    (lambda d: _lb(d)['pools'][0]['healthmonitor'].update(
        expected_codes='700'), "healthmonitor.expected_codes '700' is "
                               "invalid"),
    (lambda d: _lb(d)['pools'][1].update(id='p1'),
     "pools[1].id 'p1' is invalid (allowed: an id no other pool"),
    (lambda d: _lb(d)['pools'][0].update(colour=1),
     "unknown field(s) ['colour']"),
])
def test_errors_name_field_value_and_allowed(change, message):
    doc = copy.deepcopy(document())
    change(doc)
    with pytest.raises(Invalid) as exc:
        l7.check_document(doc)
    assert message in str(exc.value)
    assert 'l7snapshot' in str(exc.value)
