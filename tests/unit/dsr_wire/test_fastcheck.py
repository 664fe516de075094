"""dsr_wire.fastcheck: the compiled schemas answer as jsonschema does.

The instances are every object kind of a valid snapshot with each field
replaced in turn by probe values (wrong types, the bounds of its range and
one past them, every enum value, strings at and past their lengths), each
required field removed and an unknown one added; jsonschema's answer is
the reference for both the full and the partial (update) schemas.
"""

import copy

import pytest

from dsr_wire import fastcheck
from dsr_wire import schema

MEMBER = {'id': 'm1', 'address': '198.19.1.2', 'protocol_port': 80,
          'weight': 3, 'admin_state_up': True, 'backup': False,
          'monitor_port': 8080, 'monitor_address': '198.19.1.3'}
MONITOR = {'id': 'hm1', 'type': 'HTTP', 'delay': 2, 'timeout': 1,
           'max_retries': 2, 'max_retries_down': 3, 'http_method': 'GET',
           'url_path': '/health', 'expected_codes': '200-204',
           'admin_state_up': True}
POOL = {'id': 'p1', 'algorithm': 'SOURCE_IP_PORT', 'encap': 'gre',
        'admin_state_up': True, 'members': [MEMBER],
        'health_monitor': MONITOR}
LISTENER = {'id': 'l1', 'protocol': 'TCP', 'port': 80,
            'admin_state_up': True, 'connection_limit': -1,
            'allowed_cidrs': ['203.0.113.0/24'],
            'timeout_client_data': 50000, 'pool': POOL}
LOAD_BALANCER = {'id': 'lb1', 'admin_state_up': True,
                 'vips': [{'address': '192.0.2.10'}],
                 'listeners': [LISTENER]}
BASES = {
    'member': MEMBER, 'health_monitor': MONITOR, 'pool': POOL,
    'listener': LISTENER, 'vip': {'address': '192.0.2.10'},
    'load_balancer': LOAD_BALANCER,
    'monitor_spec': dict({k: v for k, v in MONITOR.items() if k != 'id'},
                         delay=0.5, http_version=1.1,
                         domain_name='www.example.com'),
    'document': {'schema_version': 1, 'se_group': 'g', 'generation': 7,
                 'load_balancers': [LOAD_BALANCER]},
}

PROBES = (None, True, False, 0, 1, -1, 2, 1.0, 1.5, float('nan'),
          float('inf'), 2 ** 63, '', 'x', 'a' * 255, 'a' * 256, '/',
          '/a b', '/a\x00', '200', 'www.example.com', '-bad.example',
          '192.0.2.1', [], ['x'], [{}], [{'address': '192.0.2.1'}],
          [{'address': 1}], {}, {'address': '192.0.2.1'})


def _probes_for(sub):
    """PROBES and the values this property's schema singles out."""
    values = list(PROBES)
    for bound in ('minimum', 'maximum', 'exclusiveMinimum'):
        if bound in sub:
            values += [sub[bound] - 1, sub[bound], sub[bound] + 1,
                       sub[bound] + 0.5, float(sub[bound])]
    for length in ('minLength', 'maxLength'):
        if length in sub:
            values += ['a' * max(sub[length] - 1, 0), 'a' * sub[length],
                       'a' * (sub[length] + 1)]
    values += list(sub.get('enum', ())) + [str(v) for v in sub.get(
        'enum', ())]
    if 'const' in sub:
        values += [sub['const'], str(sub['const'])]
    return values


def instances(kind):
    base = BASES[kind]
    props = schema.SCHEMAS[kind]['properties']
    yield base
    for probe in PROBES:
        yield probe
    for name, sub in props.items():
        for value in _probes_for(sub):
            yield dict(base, **{name: value})
    for name in base:
        yield {k: v for k, v in base.items() if k != name}
    yield dict(base, colour='red')


@pytest.mark.parametrize('partial', [False, True])
@pytest.mark.parametrize('kind', sorted(schema.SCHEMAS))
def test_compiled_schema_answers_as_jsonschema(kind, partial):
    validator = schema._validator(kind, partial)
    check = schema._is_valid(kind, partial)
    count = 0
    for instance in instances(kind):
        before = copy.deepcopy(instance)
        assert check(instance) == validator.is_valid(instance), (
            kind, partial, instance)
        assert repr(instance) == repr(before)
        count += 1
    assert count > 50


def test_a_keyword_it_does_not_know_is_refused():
    for bad in ({'type': 'string', 'format': 'ipv4'},
                {'anyOf': [{'type': 'string'}]},
                {'type': 'object', 'additionalProperties': {'type': 'string'}},
                {'enum': [[1]]}, {'type': 'decimal'}):
        with pytest.raises(fastcheck.Unsupported):
            fastcheck.compile_schema(bad)


def test_an_invalid_object_still_gets_jsonschemas_message():
    with pytest.raises(schema.Invalid) as exc:
        schema.check_member(dict(MEMBER, weight=257))
    assert str(exc.value) == ('weight 257 is invalid (allowed: an integer '
                              'in 0..256)')
    with pytest.raises(schema.Invalid) as exc:
        schema.check_pool(dict(POOL, algorithm='ROUND_ROBIN'))
    assert "algorithm 'ROUND_ROBIN' is invalid (allowed: one of " \
        "SOURCE_IP_PORT, SOURCE_IP)" in str(exc.value)
