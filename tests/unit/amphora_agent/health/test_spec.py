"""MonitorSpec / Target validation and expected_codes parsing."""

import ipaddress

import pytest

from amphora_agent.health import monitor as hm
from amphora_agent.health.spec import InvalidMonitor


def spec(**kw):
    args = dict(type='HTTP', delay=5, timeout=3, max_retries=3)
    args.update(kw)
    return hm.MonitorSpec(**args)


# -- expected_codes ---------------------------------------------------------

@pytest.mark.parametrize('text, codes', [
    ('200', {200}),
    ('200,202', {200, 202}),
    ('200, 202 ,204', {200, 202, 204}),
    ('200-204', {200, 201, 202, 203, 204}),
    ('200,202-204', {200, 202, 203, 204}),
    ('404', {404}),
    ('100-101', {100, 101}),
    ('599', {599}),
])
def test_expected_codes_ok(text, codes):
    assert hm.parse_expected_codes(text) == frozenset(codes)


@pytest.mark.parametrize('text', [
    '', ' ', '20', '2000', 'abc', '200,', ',200', '200-', '-200',
    '204-200', '099', '600', '200-600', '200;202', '2OO', None, 200,
])
def test_expected_codes_bad(text):
    with pytest.raises(InvalidMonitor) as exc:
        hm.parse_expected_codes(text)
    assert 'expected_codes' in str(exc.value)
    assert '200-204' in str(exc.value)  # says what is allowed


def test_spec_parses_codes_and_defaults():
    s = spec(expected_codes='200-202')
    assert s.codes == {200, 201, 202}
    d = spec(http_method=None, url_path=None, expected_codes=None)
    assert (d.http_method, d.url_path, d.expected_codes) == (
        'GET', '/', '200')
    assert d.codes == {200}
    assert d.max_retries_down == 3


def test_spec_normalises_case():
    s = spec(type='udp-connect', http_method='head')
    assert s.type == 'UDP-CONNECT'
    assert s.http_method == 'HEAD'


# -- validation: every error names the field and the allowed values ---------

@pytest.mark.parametrize('kw, field, allowed', [
    ({'type': 'SCTP'}, 'type', 'HTTP, HTTPS, PING, TCP, TLS-HELLO, '
                               'UDP-CONNECT'),
    ({'type': None}, 'type', 'one of'),
    ({'delay': 0}, 'delay', '> 0'),
    ({'delay': -1}, 'delay', '> 0'),
    ({'delay': True}, 'delay', 'number'),
    ({'delay': '5'}, 'delay', 'number'),
    ({'delay': float('nan')}, 'delay', 'number'),
    ({'delay': 10 ** 6}, 'delay', '86400'),
    ({'timeout': 0}, 'timeout', '> 0'),
    ({'max_retries': 0}, 'max_retries', '1..10'),
    ({'max_retries': 11}, 'max_retries', '1..10'),
    ({'max_retries': 2.5}, 'max_retries', '1..10'),
    ({'max_retries_down': 0}, 'max_retries_down', '1..10'),
    ({'max_retries_down': 11}, 'max_retries_down', '1..10'),
    ({'http_method': 'FETCH'}, 'http_method', 'GET'),
    ({'url_path': 'health'}, 'url_path', 'starting with "/"'),
    ({'url_path': '/a b'}, 'url_path', 'without spaces'),
    ({'url_path': '/a\r\nX: y'}, 'url_path', 'control'),
    ({'expected_codes': '2xx'}, 'expected_codes', '200-204'),
    ({'http_version': 2.0}, 'http_version', '1.0, 1.1'),
    ({'domain_name': 'bad name'}, 'domain_name', 'DNS host name'),
])
def test_spec_validation(kw, field, allowed):
    with pytest.raises(InvalidMonitor) as exc:
        spec(**kw)
    msg = str(exc.value)
    assert msg.startswith(field + ' '), msg
    assert allowed in msg, msg


def test_spec_accepts_timeout_beyond_delay():
    """Octavia allows it (octavia-tempest-plugin uses delay 2, timeout
    3); the checker spaces the probes out instead."""
    s = spec(delay=2, timeout=3)
    assert (s.delay, s.timeout) == (2, 3)


def test_spec_accepts_fractional_seconds_and_bounds():
    s = spec(delay=0.5, timeout=0.5, max_retries=1, max_retries_down=10)
    assert (s.delay, s.timeout) == (0.5, 0.5)
    spec(http_version=1.1, domain_name='health.example.com')


def test_spec_equality_ignores_derived_codes():
    assert spec() == spec()
    assert spec() != spec(delay=6)
    assert hash(spec()) == hash(spec())


def test_from_octavia():
    assert hm.MonitorSpec.from_octavia(None) is None
    assert hm.MonitorSpec.from_octavia(
        {'type': 'TCP', 'delay': 5, 'timeout': 3, 'max_retries': 2,
         'admin_state_up': False}) is None
    s = hm.MonitorSpec.from_octavia(
        {'type': 'HTTP', 'delay': 5, 'timeout': 3, 'max_retries': 2,
         'max_retries_down': None, 'http_method': None, 'url_path': '/hz',
         'expected_codes': '200-204', 'admin_state_up': True})
    assert (s.max_retries_down, s.http_method, s.url_path) == (
        3, 'GET', '/hz')

    class Obj:
        type = 'PING'
        delay = 2
        timeout = 1
        max_retries = 1
        max_retries_down = 2
    assert hm.MonitorSpec.from_octavia(Obj()).type == 'PING'


# -- Target -------------------------------------------------------------------

def test_target_normalises_address():
    t = hm.Target('2001:DB8:0::1', 80, spec())
    assert t.address == '2001:db8::1'
    assert t.family == 6
    assert hm.Target(ipaddress.ip_address('192.0.2.1'), 80).address == \
        '192.0.2.1'
    assert hm.Target('[::1]', 80).address == '::1'
    assert hm.Target('192.0.2.1', 80).family == 4


@pytest.mark.parametrize('kw, field', [
    ({'address': 'example.com'}, 'address'),
    ({'address': '300.1.1.1'}, 'address'),
    ({'port': 0}, 'port'),
    ({'port': 65536}, 'port'),
    ({'port': '80'}, 'port'),
    ({'port': None}, 'port'),  # a TCP monitor needs a port
    ({'admin_state_up': 'yes'}, 'admin_state_up'),
    ({'monitor': {'type': 'TCP'}}, 'monitor'),
])
def test_target_validation(kw, field):
    args = dict(address='192.0.2.1', port=80, monitor=spec(type='TCP'))
    args.update(kw)
    with pytest.raises(InvalidMonitor) as exc:
        hm.Target(**args)
    assert str(exc.value).startswith(field + ' ')


def test_target_port_optional_for_ping_and_unmonitored():
    assert hm.Target('192.0.2.1', None, spec(type='PING')).probed
    assert not hm.Target('192.0.2.1').probed
    assert not hm.Target('192.0.2.1', 80, spec(),
                         admin_state_up=False).probed
