"""dsr_wire.schema: one definition per object, errors that name the
field, the value and the allowed values."""

import ipaddress

import pytest

from dsr_wire import schema


def monitor(**kw):
    doc = {'id': 'hm1', 'type': 'HTTP', 'delay': 5, 'timeout': 3,
           'max_retries': 3}
    doc.update(kw)
    return doc


@pytest.mark.parametrize('kw, message', [
    ({'delay': 5.0}, "delay 5.0 is invalid (allowed: an integer number of "
                     "seconds in 1..86400)"),
    ({'delay': True}, 'delay True is invalid'),
    ({'max_retries': 11}, 'max_retries 11 is invalid (allowed: an integer '
                          'in 1..10)'),
    ({'type': 'SCTP'}, "type 'SCTP' is invalid (allowed: one of HTTP, "
                       "HTTPS, PING, TCP, TLS-HELLO, UDP-CONNECT)"),
    ({'expected_codes': '200-100'}, "expected_codes '200-100' is invalid "
                                    "(allowed: a status code"),
    ({'expected_codes': '200\n'}, 'expected_codes'),
    ({'url_path': '/a\n'}, 'url_path'),
    ({'colour': 1}, "unknown field(s) ['colour'] (allowed: admin_state_up"),
])
def test_monitor_errors_name_field_value_and_allowed(kw, message):
    with pytest.raises(schema.Invalid) as exc:
        schema.check_health_monitor(monitor(**kw))
    assert message in str(exc.value)


def test_missing_field_is_named():
    doc = monitor()
    del doc['delay']
    with pytest.raises(schema.Invalid, match='delay is missing'):
        schema.check_health_monitor(doc)
    # A partial check (an update's changed fields) needs nothing.
    schema.check_health_monitor({'delay': 7}, partial=True)


def test_expected_codes():
    assert schema.parse_expected_codes('200,202-204') == {
        200, 202, 203, 204}
    assert schema.normalize_expected_codes('200, 202') == '200,202'
    for bad in ('999', '099', '200-600', '204-200', '200, 202', '', None):
        with pytest.raises(schema.Invalid):
            schema.parse_expected_codes(bad)


@pytest.mark.parametrize('address', [
    '198.19.1.2', '10.1.2.3', '2001:db8:2::2', '100.64.0.1'])
def test_member_addresses_allowed(address):
    assert schema.check_member_address(address, vips=('192.0.2.10',)) == \
        ipaddress.ip_address(address)


@pytest.mark.parametrize('address, why', [
    ('127.0.0.1', 'loopback'), ('::1', 'loopback'),
    ('224.0.0.5', 'multicast'), ('ff02::1', 'multicast'),
    ('0.0.0.0', 'unspecified'), ('::', 'unspecified'),
    ('0.0.0.1', '0.0.0.0/8'), ('169.254.1.1', 'link-local'),
    ('fe80::1', 'link-local'), ('255.255.255.255', 'broadcast'),
    ('240.0.0.1', 'reserved'), ('::ffff:198.19.1.2', 'IPv4-mapped'),
    ('192.0.2.10', 'VIP'), (3322085634, 'given as a string'),
    ('198.19.1', 'given as a string')])
def test_member_addresses_refused(address, why):
    with pytest.raises(schema.Invalid) as exc:
        schema.check_member_address(address, 'address',
                                    vips=(ipaddress.ip_address('192.0.2.10'),))
    assert f'address {address!r} is invalid' in str(exc.value)
    assert why in str(exc.value)


def test_ports_and_weights_are_strict_integers():
    member = {'id': 'm', 'address': '198.19.1.2', 'protocol_port': 80}
    schema.check_member(member)
    for kw in ({'protocol_port': 80.0}, {'protocol_port': True},
               {'weight': 257}, {'monitor_port': 0}, {'backup': 1}):
        with pytest.raises(schema.Invalid):
            schema.check_member(dict(member, **kw))


def test_document_level():
    schema.check_document({'schema_version': 1, 'se_group': 'g',
                           'generation': 0, 'load_balancers': []})
    with pytest.raises(schema.Invalid, match='snapshot.schema_version 2'):
        schema.check_document({'schema_version': 2, 'se_group': 'g',
                               'generation': 0, 'load_balancers': []})
    with pytest.raises(schema.Invalid, match='a JSON object'):
        schema.check_document([])


@pytest.mark.parametrize('text', [
    '1.2.3.4', '0.0.0.0', '255.255.255.255', '01.2.3.4', '1.2.3',
    '1.2.3.4.5', '256.1.1.1', '1.2.3.04', ' 1.2.3.4', '1.2.3.4\n',
    '0x1.2.3.4', '1..3.4', '\u0661.2.3.4', '000.0.0.0', '1.2.3.4/32',
    '+1.2.3.4', '1.2.3.4%eth0', '1.2.3.4\x00', '', '2001:db8::1',
    '::ffff:1.2.3.4', '::01.2.3.4', 'fe80::1%eth0'])
def test_address_parsing_agrees_with_ipaddress(text):
    # The fast IPv4 path (inet_pton) accepts exactly what ipaddress does.
    try:
        expected = ipaddress.ip_address(text)
    except ValueError:
        with pytest.raises(schema.Invalid):
            schema._ip(text, 'address')
    else:
        assert schema._ip(text, 'address') == expected
