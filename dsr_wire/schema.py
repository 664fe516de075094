"""What a service engine can run: one definition per object.

The provider driver (dsr_provider/validation.py) refuses at the API what
this module rejects, the agent's snapshot parser (amphora_agent/snapshot.py)
rejects an object that fails it, and the health checker's MonitorSpec
(amphora_agent/health/spec.py) validates with it, so the three cannot
disagree.  Structure, types, ranges and enums are JSON schemas (jsonschema);
what a schema cannot say (code ranges, timeout vs delay, member addresses)
is a small function beside it.

Every error is an :class:`Invalid` naming the field, the value and the
allowed values.  Nothing here does I/O.
"""

import copy
import functools
import ipaddress
import math
import re
import socket

import jsonschema

from dsr_wire import fastcheck

SCHEMA_VERSION = 1

PROTOCOLS = ('TCP', 'UDP', 'SCTP')
ALGORITHMS = ('SOURCE_IP_PORT', 'SOURCE_IP')
ENCAPS = ('ipip', 'gre')
# Octavia's monitor types the SE's health checker implements.
MONITOR_TYPES = ('HTTP', 'HTTPS', 'PING', 'TCP', 'TLS-HELLO', 'UDP-CONNECT')
HTTP_MONITOR_TYPES = ('HTTP', 'HTTPS')
# octavia.common.constants.SUPPORTED_HEALTH_MONITOR_HTTP_METHODS
HTTP_METHODS = ('CONNECT', 'DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH',
                'POST', 'PUT', 'TRACE')
HTTP_VERSIONS = (1.0, 1.1)
MIN_RETRIES, MAX_RETRIES = 1, 10        # octavia MIN/MAX_HM_RETRIES
DEFAULT_MAX_RETRIES_DOWN = 3
DEFAULT_HTTP_METHOD = 'GET'
DEFAULT_URL_PATH = '/'
DEFAULT_EXPECTED_CODES = '200'
MAX_DELAY = 86400
MAX_WEIGHT = 256
MAX_GENERATION = 2 ** 63 - 1
# Octavia's listener connection_limit: -1 (its default) is no limit.
MIN_CONNECTION_LIMIT, MAX_CONNECTION_LIMIT = -1, 2 ** 31 - 1
# Octavia's listener timeouts in ms (octavia.common.constants MIN_TIMEOUT,
# MAX_TIMEOUT: 24 days); timeout_client_data 0 means none, as in HAProxy.
MIN_TIMEOUT_MS, MAX_TIMEOUT_MS = 0, 24 * 24 * 60 * 60 * 1000

CODES_ALLOWED = ('a status code, a comma list or a range of codes in '
                 '100..599, e.g. "200", "200,202", "200-204"')
_CODE_ITEM_RE = re.compile(r'(\d{3})(?:-(\d{3}))?')


class Invalid(ValueError):
    """One object (or document) the SE cannot run; the message names the
    field, the value and what is allowed."""

    def __init__(self, field, value=None, allowed=None, why=None,
                 message=None):
        self.field, self.value, self.allowed = field, value, allowed
        if message is None:
            message = f'{field} {value!r} is invalid'
            if why:
                message += f': {why}'
            message += f' (allowed: {allowed})'
        super().__init__(message)


def _enum(values):
    return {'enum': list(values),
            'description': f'one of {", ".join(str(v) for v in values)}'}


def _int(low, high, what='an integer'):
    return {'type': 'integer', 'minimum': low, 'maximum': high,
            'description': f'{what} in {low}..{high}'}


# Octavia's ids are UUIDs (the controller makes some: "l7:<listener>",
# an SE's id); an id also names files on the L7 SEs (their state folder
# per load balancer), so nothing that could leave a folder: no "/", not
# "." or "..".
ID = {'type': 'string', 'pattern': r'^(?!\.+$)[A-Za-z0-9_.:@-]{1,255}$',
      'description': 'a non-empty string of at most 255 letters, digits, '
                     '"_.:@-", not only dots'}
BOOL = {'type': 'boolean', 'description': 'true or false'}
PORT = _int(1, 65535)
ADDRESS = {'type': 'string',
           'description': 'an IPv4 or IPv6 address given as a string'}


def _object(required, properties):
    return {'type': 'object', 'additionalProperties': False,
            'required': list(required), 'properties': properties}


# The health monitor as the snapshot carries it (schema v1).  The
# controller removes the spaces Octavia allows in expected_codes.
HEALTH_MONITOR = _object(
    ('id', 'type', 'delay', 'timeout', 'max_retries'), {
        'id': ID,
        'type': _enum(MONITOR_TYPES),
        'delay': _int(1, MAX_DELAY, 'an integer number of seconds'),
        'timeout': _int(1, MAX_DELAY, 'an integer number of seconds'),
        'max_retries': _int(MIN_RETRIES, MAX_RETRIES),
        'max_retries_down': _int(MIN_RETRIES, MAX_RETRIES),
        'http_method': _enum(HTTP_METHODS),
        'url_path': {'type': 'string', 'pattern': r'\A/[^\s\x00-\x20\x7f]*\Z',
                     'description': 'a path starting with "/" without '
                                    'spaces or control characters'},
        'expected_codes': {'type': 'string', 'description': CODES_ALLOWED},
        'admin_state_up': BOOL,
    })

# The same monitor as the health checker takes it in-process: no id,
# delays in (fractional) seconds, and the HTTP options the snapshot does
# not carry yet.
MONITOR_SPEC = copy.deepcopy(HEALTH_MONITOR)
MONITOR_SPEC['required'].remove('id')
del MONITOR_SPEC['properties']['id']
for _name in ('delay', 'timeout'):
    MONITOR_SPEC['properties'][_name] = {
        'type': 'number', 'exclusiveMinimum': 0, 'maximum': MAX_DELAY,
        'description': f'a number of seconds > 0 and <= {MAX_DELAY}'}
MONITOR_SPEC['properties']['http_version'] = {
    'enum': list(HTTP_VERSIONS), 'description': 'one of 1.0, 1.1 or None '
                                                '(1.0)'}
MONITOR_SPEC['properties']['domain_name'] = {
    'type': 'string',
    'pattern': (r'\A(?=.{1,253}\Z)(?!-)[A-Za-z0-9-]{1,63}(?<!-)'
                r'(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?\Z'),
    'description': 'a DNS host name'}

MEMBER = _object(('id', 'address', 'protocol_port'), {
    'id': ID,
    'address': ADDRESS,
    'protocol_port': PORT,
    'weight': _int(0, MAX_WEIGHT),
    'admin_state_up': BOOL,
    'backup': BOOL,
    'monitor_port': dict(PORT, type=['integer', 'null'],
                         description='null or an integer in 1..65535'),
    'monitor_address': dict(ADDRESS, type=['string', 'null'],
                            description='null or an IPv4 or IPv6 address '
                                        'given as a string'),
})

# Children (members, health monitor, pool, listeners) are checked on their
# own, so that one bad child is rejected alone.
POOL = _object(('id', 'algorithm', 'members'), {
    'id': ID,
    'algorithm': _enum(ALGORITHMS),
    'encap': _enum(ENCAPS),
    'admin_state_up': BOOL,
    'members': {'type': 'array', 'description': 'a list of members'},
    'health_monitor': {'type': ['object', 'null'],
                       'description': 'null or a health monitor object'},
})

LISTENER = _object(('id', 'protocol', 'port'), {
    'id': ID,
    'protocol': _enum(PROTOCOLS),
    'port': PORT,
    'admin_state_up': BOOL,
    'connection_limit': dict(
        _int(MIN_CONNECTION_LIMIT, MAX_CONNECTION_LIMIT),
        type=['integer', 'null'],
        description=f'null, -1 (no limit) or an integer in '
                    f'0..{MAX_CONNECTION_LIMIT}'),
    'allowed_cidrs': {'type': ['array', 'null'],
                      'items': {'type': 'string',
                                'description': 'a CIDR such as '
                                               '203.0.113.0/24 or '
                                               '2001:db8::/32'},
                      'description': 'a list of CIDRs'},
    # The client-side idle timeout: an SE forgets a flow idle longer
    # (docs/dataplane.md, timeout_client_data).
    'timeout_client_data': dict(
        _int(MIN_TIMEOUT_MS, MAX_TIMEOUT_MS),
        type=['integer', 'null'],
        description=f'null or an integer number of ms in '
                    f'{MIN_TIMEOUT_MS}..{MAX_TIMEOUT_MS} (0: none)'),
    'pool': {'type': ['object', 'null'],
             'description': 'null or a pool object'},
})

VIP = _object(('address',), {'address': ADDRESS})

LOAD_BALANCER = _object(('id', 'vips', 'listeners'), {
    'id': ID,
    'admin_state_up': BOOL,
    'vips': {'type': 'array', 'minItems': 1, 'items': VIP,
             'description': 'a non-empty list of {"address": ...}'},
    'listeners': {'type': 'array', 'description': 'a list of listeners'},
})

DOCUMENT = _object(
    ('schema_version', 'se_group', 'generation', 'load_balancers'), {
        'schema_version': {'const': SCHEMA_VERSION,
                           'description': f'{SCHEMA_VERSION} (this agent '
                                          f'speaks schema {SCHEMA_VERSION})'},
        'se_group': dict(ID),
        'generation': _int(0, MAX_GENERATION),
        'load_balancers': {'type': 'array',
                           'description': 'a list of load balancers'},
    })

SCHEMAS = {'health_monitor': HEALTH_MONITOR, 'monitor_spec': MONITOR_SPEC,
           'member': MEMBER, 'pool': POOL, 'listener': LISTENER, 'vip': VIP,
           'load_balancer': LOAD_BALANCER, 'document': DOCUMENT}


def _strict_integer(checker, instance):
    # JSON 1.0 is an integer to jsonschema; to a port or weight it is not.
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        'integer', _strict_integer))


def _schema(kind, partial):
    schema = SCHEMAS[kind]
    return dict(schema, required=[]) if partial else schema


@functools.lru_cache(maxsize=None)
def _validator(kind, partial):
    schema = _schema(kind, partial)
    _Validator.check_schema(schema)
    return _Validator(schema)


@functools.lru_cache(maxsize=None)
def _is_valid(kind, partial):
    # The compiled yes/no; jsonschema names the field of an invalid one.
    return fastcheck.compile_schema(_schema(kind, partial))


def _field(prefix, path):
    text = prefix
    for item in path:
        if isinstance(item, int):
            text += f'[{item}]'
        else:
            text += f'.{item}' if text else str(item)
    return text


def _to_invalid(error, prefix):
    field = _field(prefix, error.absolute_path)
    if error.validator == 'required':
        missing = [n for n in error.validator_value
                   if n not in error.instance]
        return Invalid(field, message=f'{_field(field, [missing[0]])} is '
                                      'missing (a required field)')
    if error.validator == 'additionalProperties':
        known = sorted(error.schema.get('properties', ()))
        unknown = sorted(set(error.instance) - set(known))
        return Invalid(field, unknown, message=(
            f'{field or "object"}: unknown field(s) {unknown} (allowed: '
            f'{", ".join(known)})'))
    if error.validator == 'type' and not error.absolute_path \
            and 'description' not in error.schema:
        return Invalid(field or 'object', error.instance, 'a JSON object')
    return Invalid(field, error.instance,
                   error.schema.get('description', error.message))


def _structure(kind, obj, prefix='', partial=False):
    """Raise Invalid for the first schema error (structural ones first)."""
    if _is_valid(kind, partial)(obj):
        return
    validator = _validator(kind, partial)
    errors = list(validator.iter_errors(obj))
    if errors:
        errors.sort(key=lambda e: (len(e.absolute_path),
                                   [str(p) for p in e.absolute_path]))
        raise _to_invalid(errors[0], prefix)


# --- semantic checks ---------------------------------------------------------

def parse_expected_codes(text, field='expected_codes'):
    """"200", "200,202", "200-204", "200,202-204" -> frozenset of codes in
    100..599; a range must not be reversed."""
    if not isinstance(text, str) or not text:
        raise Invalid(field, text, CODES_ALLOWED)
    codes = set()
    for item in text.split(','):
        m = _CODE_ITEM_RE.fullmatch(item)
        if not m:
            raise Invalid(field, text, CODES_ALLOWED)
        low = int(m.group(1))
        high = int(m.group(2) or low)
        if not (100 <= low <= 599 and 100 <= high <= 599) or high < low:
            raise Invalid(field, text, CODES_ALLOWED)
        codes.update(range(low, high + 1))
    return frozenset(codes)


def normalize_expected_codes(text):
    """What the controller sends for Octavia's "200, 202": no spaces."""
    return text.replace(' ', '') if isinstance(text, str) else text


def _monitor_semantics(obj, prefix):
    # timeout may exceed delay, as Octavia allows: the checker never
    # overlaps two probes of a member (amphora_agent/health/monitor.py).
    if 'expected_codes' in obj and obj['expected_codes'] is not None:
        parse_expected_codes(obj['expected_codes'],
                             _field(prefix, ['expected_codes']))


def check_health_monitor(obj, prefix='', partial=False):
    """A snapshot health monitor (dict).  partial: an update's fields."""
    _structure('health_monitor', obj, prefix, partial)
    _monitor_semantics(obj, prefix)


def check_monitor_spec(values):
    """The health checker's monitor (dict of MonitorSpec fields, None
    values meaning "the default" already replaced)."""
    _structure('monitor_spec', values)
    for name in ('delay', 'timeout'):
        if not math.isfinite(values[name]):
            raise Invalid(name, values[name], MONITOR_SPEC['properties'][
                name]['description'])
    _monitor_semantics(values, '')


def _ip(value, field):
    if not isinstance(value, str):
        raise Invalid(field, value, ADDRESS['description'])
    try:
        # inet_pton is 4 x faster than ipaddress's own parser, and no
        # more lenient (dotted quads only, no leading zeros); anything
        # it refuses (IPv6 too) gets ipaddress's answer.
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, value))
    except (OSError, ValueError):
        pass
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise Invalid(field, value, ADDRESS['description']) from None


_THIS_NETWORK = ipaddress.ip_network('0.0.0.0/8')
_BROADCAST = ipaddress.IPv4Address('255.255.255.255')


def address_problem(address):
    """Why an address cannot receive a member's traffic, or None."""
    if address.is_unspecified:
        return 'it is the unspecified address'
    if address.is_loopback:
        return 'it is a loopback address'
    if address.is_multicast:
        return 'it is a multicast address'
    if address.is_link_local:
        return 'it is a link-local address'
    if address.version == 4:
        if address in _THIS_NETWORK:
            return 'it is in 0.0.0.0/8 ("this network")'
        if address == _BROADCAST:
            return 'it is the broadcast address'
        if address.is_reserved:
            return 'it is reserved (240.0.0.0/4)'
    elif address.ipv4_mapped is not None:
        return 'it is an IPv4-mapped IPv6 address (give the IPv4 address)'
    return None


MEMBER_ADDRESS_ALLOWED = ('a unicast address that is not loopback, '
                          'multicast, unspecified, link-local, reserved, '
                          'broadcast or one of the load balancer\'s VIPs')


def check_member_address(value, field='address', vips=()):
    """A member's address (or monitor_address) as a string; vips: the load
    balancer's VIP addresses.  Returns the ipaddress object."""
    address = _ip(value, field)
    why = address_problem(address)
    if why is None and vips and address in {
            v if isinstance(v, ipaddress._BaseAddress)
            else ipaddress.ip_address(v) for v in vips}:
        why = 'it is a VIP of the member\'s own load balancer'
    if why:
        raise Invalid(field, value, MEMBER_ADDRESS_ALLOWED, why=why)
    return address


def check_member(obj, prefix='', vips=(), partial=False):
    """Returns (address, monitor_address) as ipaddress objects (None when
    absent)."""
    _structure('member', obj, prefix, partial)
    address = monitor_address = None
    if 'address' in obj:
        address = check_member_address(
            obj['address'], _field(prefix, ['address']), vips)
    if obj.get('monitor_address') is not None:
        monitor_address = check_member_address(
            obj['monitor_address'], _field(prefix, ['monitor_address']),
            vips)
    return address, monitor_address


def check_pool(obj, prefix=''):
    _structure('pool', obj, prefix)


CIDR_ALLOWED = 'a CIDR such as 203.0.113.0/24 or 2001:db8::/32'


def parse_cidr(value, field='allowed_cidrs'):
    """One allowed_cidrs entry -> ip_network; host bits are cleared as
    Octavia does ("203.0.113.5/24" is 203.0.113.0/24)."""
    if not isinstance(value, str):
        raise Invalid(field, value, CIDR_ALLOWED)
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise Invalid(field, value, CIDR_ALLOWED) from None


def check_listener(obj, prefix='', partial=False):
    """Returns the allowed_cidrs as a tuple of ip_network (None when
    absent or empty: Octavia's "no restriction")."""
    _structure('listener', obj, prefix, partial)
    cidrs = tuple(parse_cidr(c, _field(prefix, ['allowed_cidrs', i]))
                  for i, c in enumerate(obj.get('allowed_cidrs') or ()))
    return cidrs or None


def check_load_balancer(obj, prefix=''):
    """Returns the VIP addresses (ipaddress objects)."""
    _structure('load_balancer', obj, prefix)
    return tuple(_ip(v['address'], _field(prefix, ['vips', i, 'address']))
                 for i, v in enumerate(obj['vips']))


def check_document(obj):
    """Only what rejects a whole snapshot: the document's own fields."""
    _structure('document', obj, 'snapshot')
