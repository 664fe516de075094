"""The L7 (tier-2) snapshot: what an L7 service engine runs.

A tier-2 load balancer is served by two SE groups (docs/tier2.md): the L4
group runs the ordinary schema v1 document (dsr_wire/schema.py) whose
synthetic pools steer to the L7 SEs, and the L7 group runs the document
defined here, which the L7 SE's agent renders into an HAProxy
configuration (amphora_agent/l7/).  The field names are octavia-lib's
provider data model names, so the controller copies what it stores.

Structure, types and enums are JSON schemas (jsonschema, with the same
strict integers and error wording as dsr_wire/schema.py); what a schema
cannot say (references between objects, fields an action needs) is
checked by :func:`check_document`.  Every error is a
:class:`dsr_wire.schema.Invalid` naming the field, the value and the
allowed values.  Nothing here does I/O.
"""

import functools

from dsr_wire import schema
from dsr_wire.schema import Invalid

SCHEMA_VERSION = 1
ROLE = 'tier2'

LISTENER_PROTOCOLS = ('HTTP', 'HTTPS', 'TERMINATED_HTTPS', 'TCP', 'UDP')
POOL_PROTOCOLS = ('HTTP', 'HTTPS', 'TCP', 'UDP', 'PROXY', 'PROXYV2')
ALGORITHMS = ('ROUND_ROBIN', 'LEAST_CONNECTIONS', 'SOURCE_IP',
              'SOURCE_IP_PORT')
PERSISTENCE_TYPES = ('SOURCE_IP', 'HTTP_COOKIE', 'APP_COOKIE')
# octavia_lib.common.constants
L7POLICY_ACTIONS = ('REJECT', 'REDIRECT_TO_URL', 'REDIRECT_TO_POOL',
                    'REDIRECT_PREFIX')
L7RULE_TYPES = ('HOST_NAME', 'PATH', 'FILE_TYPE', 'HEADER', 'COOKIE',
                'SSL_CONN_HAS_CERT', 'SSL_VERIFY_RESULT', 'SSL_DN_FIELD')
L7RULE_COMPARE_TYPES = ('REGEX', 'STARTS_WITH', 'ENDS_WITH', 'CONTAINS',
                        'EQUAL_TO')
REDIRECT_HTTP_CODES = (301, 302, 303, 307, 308)
# Rule types whose "key" names the header, cookie or DN field.
KEYED_RULE_TYPES = ('HEADER', 'COOKIE', 'SSL_DN_FIELD')
HTTP_LISTENER_PROTOCOLS = ('HTTP', 'TERMINATED_HTTPS')

# A listener's TLS settings (octavia-lib names), applied to the bind lines
# of a TERMINATED_HTTPS listener.  Optional: a document without them (an
# older controller) leaves HAProxy's defaults.  Only the TLS versions HAProxy
# 2.6 on Debian 12's OpenSSL 3 can serve: that OpenSSL has no SSLv3, and
# at its default security level every TLS 1.0 and 1.1 handshake fails.
LISTENER_TLS_FIELDS = ('tls_versions', 'tls_ciphers', 'alpn_protocols')
TLS_VERSIONS = ('TLSv1.2', 'TLSv1.3')
ALPN_PROTOCOLS = ('h2', 'http/1.1', 'http/1.0')
# OpenSSL's TLS 1.3 cipher suites (HAProxy's "ciphersuites"); the other
# names of tls_ciphers are TLS 1.2 ciphers or keywords ("ciphers").
TLS13_CIPHERSUITES = ('TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384',
                      'TLS_CHACHA20_POLY1305_SHA256',
                      'TLS_AES_128_CCM_SHA256', 'TLS_AES_128_CCM_8_SHA256')
# Octavia's character set of a cipher string: the value becomes one HAProxy
# argument, which a space or a newline would end.
CIPHERS_PATTERN = r'\A[A-Za-z0-9\-+!:@=_.]+\Z'
MAX_CIPHERS_LENGTH = 2048      # Octavia's API limit

# The L7 contract version: which optional fields an L7 agent understands.
# An L7 agent publishes it in its tooz capabilities (CONTRACT_CAPABILITY);
# one that publishes none (an earlier release) has BASE_CONTRACT.  The
# controller sends a group the fields of the lowest version among its live
# L7 SEs (group_contract) -- the control plane is upgraded first and speaks
# its agents' version until they are all upgraded, as OpenStack's version
# caps do.  The next field that an earlier agent would refuse adds a
# version here, with its fields in LISTENER_FIELDS_SINCE.
CONTRACT_CAPABILITY = 'l7_contract'
BASE_CONTRACT = 1
CONTRACT_VERSION = 2
# {contract version: listener fields it introduced}
LISTENER_FIELDS_SINCE = {2: LISTENER_TLS_FIELDS}


def contract_of(capabilities):
    """The L7 contract version one member's tooz capabilities publish
    (BASE_CONTRACT when none, or not a positive integer)."""
    value = capabilities.get(CONTRACT_CAPABILITY) \
        if isinstance(capabilities, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) \
            or value < BASE_CONTRACT:
        return BASE_CONTRACT
    return value


def is_l7_se(capabilities):
    """A live member of an L7 group that runs its document: role tier2,
    ready or not (one that is starting, or refused a document, fetches it
    too)."""
    return isinstance(capabilities, dict) \
        and capabilities.get('role') == ROLE


def group_contract(members):
    """{se_id: capabilities} of an L7 group's live members -> the version
    its document may use: the lowest its L7 SEs publish, at most this
    release's.  With no L7 SE, this release's: an L7 agent joins before it
    fetches its first document, so a joining one is counted then."""
    return min([contract_of(caps) for caps in members.values()
                if is_l7_se(caps)] + [CONTRACT_VERSION])


def listener_fields_above(contract):
    """The listener fields a document of `contract` leaves out."""
    return tuple(f for version, fields in sorted(
        LISTENER_FIELDS_SINCE.items()) if version > contract
        for f in fields)


_object, _enum, _int = schema._object, schema._enum, schema._int
ID, BOOL, PORT, ADDRESS = schema.ID, schema.BOOL, schema.PORT, schema.ADDRESS


def _nullable(base, what):
    if 'enum' in base:
        return dict(base, enum=[*base['enum'], None],
                    description=f'null or {what}')
    return dict(base, type=[base.get('type', 'string'), 'null'],
                description=f'null or {what}')


def _timeout():
    return _nullable(_int(schema.MIN_TIMEOUT_MS, schema.MAX_TIMEOUT_MS),
                     f'an integer number of ms in {schema.MIN_TIMEOUT_MS}..'
                     f'{schema.MAX_TIMEOUT_MS}')


STRING = {'type': 'string', 'description': 'a string'}
NULL_STRING = {'type': ['string', 'null'], 'description': 'null or a string'}
NULL_ID = _nullable(ID, 'a non-empty string of at most 255 characters')

HEALTH_MONITOR = _object(
    ('id', 'type', 'delay', 'timeout', 'max_retries'), {
        **schema.HEALTH_MONITOR['properties'],
        'http_method': _nullable(_enum(schema.HTTP_METHODS),
                                 'one of ' + ', '.join(schema.HTTP_METHODS)),
        'url_path': _nullable(schema.HEALTH_MONITOR['properties'][
            'url_path'], 'a path starting with "/" without spaces'),
        'expected_codes': _nullable(
            schema.HEALTH_MONITOR['properties']['expected_codes'],
            schema.CODES_ALLOWED),
    })

MEMBER = schema.MEMBER

SESSION_PERSISTENCE = _object(('type',), {
    'type': _enum(PERSISTENCE_TYPES),
    'cookie_name': NULL_STRING,
    'persistence_timeout': _nullable(_int(0, 2 ** 31 - 1),
                                     'an integer number of seconds in '
                                     '0..2147483647'),
    'persistence_granularity': NULL_STRING,
})

POOL = _object(('id', 'protocol', 'lb_algorithm', 'members'), {
    'id': ID,
    'protocol': _enum(POOL_PROTOCOLS),
    'lb_algorithm': _enum(ALGORITHMS),
    'admin_state_up': BOOL,
    'session_persistence': {'type': ['object', 'null'],
                            'description': 'null or {"type", "cookie_name"}'},
    'tls_enabled': BOOL,
    'members': {'type': 'array', 'description': 'a list of members'},
    'healthmonitor': {'type': ['object', 'null'],
                      'description': 'null or a health monitor object'},
})

L7RULE = _object(('id', 'type', 'compare_type', 'value'), {
    'id': ID,
    'type': _enum(L7RULE_TYPES),
    'compare_type': _enum(L7RULE_COMPARE_TYPES),
    'key': NULL_STRING,
    'value': {'type': 'string', 'minLength': 1,
              'description': 'a non-empty string'},
    'invert': BOOL,
    'admin_state_up': BOOL,
})

L7POLICY = _object(('id', 'action'), {
    'id': ID,
    'action': _enum(L7POLICY_ACTIONS),
    'position': _int(1, 2 ** 31 - 1),
    'redirect_pool_id': NULL_ID,
    'redirect_url': NULL_STRING,
    'redirect_prefix': NULL_STRING,
    'redirect_http_code': _nullable(_enum(REDIRECT_HTTP_CODES),
                                    'one of ' + ', '.join(
                                        map(str, REDIRECT_HTTP_CODES))),
    'admin_state_up': BOOL,
    'rules': {'type': 'array', 'items': L7RULE,
              'description': 'a list of L7 rules'},
})


def _choices(values, what, note=''):
    item = _enum(values)
    item['description'] += note
    return {'type': ['array', 'null'], 'minItems': 1, 'uniqueItems': True,
            'items': item,
            'description': f'null or a non-empty list of distinct {what}, '
                           f'each one of {", ".join(values)}'}


LISTENER_TLS = _object((), {
    'tls_versions': _choices(TLS_VERSIONS, 'TLS versions',
                             '; HAProxy 2.6 on OpenSSL 3 serves no SSLv3, '
                             'TLSv1 or TLSv1.1'),
    'tls_ciphers': {'type': ['string', 'null'], 'pattern': CIPHERS_PATTERN,
                    'maxLength': MAX_CIPHERS_LENGTH,
                    'description': 'null or an OpenSSL cipher string of at '
                                   f'most {MAX_CIPHERS_LENGTH} letters, '
                                   'digits and - + ! : @ = _ .'},
    'alpn_protocols': _choices(ALPN_PROTOCOLS, 'ALPN protocols'),
})

LISTENER = _object(('id', 'protocol', 'protocol_port'), {
    'id': ID,
    'protocol': _enum(LISTENER_PROTOCOLS),
    'protocol_port': PORT,
    'admin_state_up': BOOL,
    'connection_limit': schema.LISTENER['properties']['connection_limit'],
    'default_pool_id': NULL_ID,
    'timeout_client_data': _timeout(),
    'timeout_member_connect': _timeout(),
    'timeout_member_data': _timeout(),
    'timeout_tcp_inspect': _timeout(),
    'allowed_cidrs': schema.LISTENER['properties']['allowed_cidrs'],
    'insert_headers': {'type': ['object', 'null'],
                       'additionalProperties': {'type': 'string'},
                       'description': 'null or an object of header name '
                                      '-> "true"/"false" or a value'},
    'default_tls_container_ref': NULL_STRING,
    'sni_container_refs': {'type': ['array', 'null'],
                           'items': {'type': 'string'},
                           'description': 'null or a list of container '
                                          'references'},
    'l7policies': {'type': 'array', 'description': 'a list of L7 policies'},
    **LISTENER_TLS['properties'],
})

LOAD_BALANCER = _object(('id', 'vips', 'listeners', 'pools'), {
    'id': ID,
    'admin_state_up': BOOL,
    'vips': schema.LOAD_BALANCER['properties']['vips'],
    'listeners': {'type': 'array', 'description': 'a list of listeners'},
    'pools': {'type': 'array', 'description': 'a list of pools'},
})

DOCUMENT = _object(
    ('schema_version', 'role', 'se_group', 'generation', 'load_balancers'), {
        'schema_version': {'const': SCHEMA_VERSION,
                           'description': f'{SCHEMA_VERSION} (this agent '
                                          f'speaks L7 schema '
                                          f'{SCHEMA_VERSION})'},
        'role': {'const': ROLE, 'description': f'"{ROLE}"'},
        'se_group': dict(ID),
        'generation': _int(0, schema.MAX_GENERATION),
        'load_balancers': {'type': 'array',
                           'description': 'a list of load balancers'},
    })

SCHEMAS = {'health_monitor': HEALTH_MONITOR, 'member': MEMBER,
           'session_persistence': SESSION_PERSISTENCE, 'pool': POOL,
           'l7policy': L7POLICY, 'l7rule': L7RULE, 'listener': LISTENER,
           'listener_tls': LISTENER_TLS,
           'load_balancer': LOAD_BALANCER, 'document': DOCUMENT}


@functools.lru_cache(maxsize=None)
def _validator(kind):
    s = SCHEMAS[kind]
    schema._Validator.check_schema(s)
    return schema._Validator(s)


def _structure(kind, obj, prefix):
    errors = list(_validator(kind).iter_errors(obj))
    if errors:
        errors.sort(key=lambda e: (len(e.absolute_path),
                                   [str(p) for p in e.absolute_path]))
        raise schema._to_invalid(errors[0], prefix)


_field = schema._field


def check_health_monitor(obj, prefix=''):
    _structure('health_monitor', obj, prefix)
    if obj.get('expected_codes') is not None:
        schema.parse_expected_codes(obj['expected_codes'],
                                    _field(prefix, ['expected_codes']))


def check_pool(obj, prefix='', vips=(), members_checked=False):
    """A pool with its members (unless the caller checked each already:
    members_checked), persistence and monitor."""
    _structure('pool', obj, prefix)
    sp = obj.get('session_persistence')
    if sp is not None:
        sp_prefix = _field(prefix, ['session_persistence'])
        _structure('session_persistence', sp, sp_prefix)
        if sp['type'] == 'APP_COOKIE' and not sp.get('cookie_name'):
            raise Invalid(_field(sp_prefix, ['cookie_name']),
                          sp.get('cookie_name'),
                          'a cookie name (APP_COOKIE needs one)')
    for i, member in enumerate(() if members_checked else obj['members']):
        m_prefix = _field(prefix, ['members', i])
        _structure('member', member, m_prefix)
        schema.check_member(member, m_prefix, vips)
    if obj.get('healthmonitor') is not None:
        check_health_monitor(obj['healthmonitor'],
                             _field(prefix, ['healthmonitor']))


def _check_policy(policy, prefix, listener, pool_ids):
    _structure('l7policy', policy, prefix)
    action = policy['action']
    needs = {'REDIRECT_TO_POOL': 'redirect_pool_id',
             'REDIRECT_TO_URL': 'redirect_url',
             'REDIRECT_PREFIX': 'redirect_prefix'}.get(action)
    if needs and not policy.get(needs):
        raise Invalid(_field(prefix, [needs]), policy.get(needs),
                      f'a value ({action} needs {needs})')
    if action == 'REDIRECT_TO_POOL' \
            and policy['redirect_pool_id'] not in pool_ids:
        raise Invalid(_field(prefix, ['redirect_pool_id']),
                      policy['redirect_pool_id'],
                      f'a pool of the load balancer: {sorted(pool_ids)}')
    if listener['protocol'] not in HTTP_LISTENER_PROTOCOLS:
        raise Invalid(_field(prefix, ['action']), action,
                      'L7 policies on HTTP or TERMINATED_HTTPS listeners '
                      f'only (the listener is {listener["protocol"]})')
    for j, rule in enumerate(policy.get('rules') or ()):
        if rule['type'] in KEYED_RULE_TYPES and not rule.get('key'):
            raise Invalid(_field(prefix, ['rules', j, 'key']),
                          rule.get('key'),
                          f'a non-empty key ({rule["type"]} rules need '
                          'one)')


def split_ciphers(ciphers):
    """A tls_ciphers string -> (TLS 1.2 names, TLS 1.3 suites), each in
    the given order (the server's preference) and once."""
    tls12, tls13 = [], []
    for name in ciphers.split(':'):
        part = tls13 if name in TLS13_CIPHERSUITES else tls12
        if name and name not in part:
            part.append(name)
    return tls12, tls13


def check_listener_tls(obj, prefix=''):
    """tls_versions, tls_ciphers and alpn_protocols of a listener (or of
    the changed fields of one): the provider driver refuses with this what
    the L7 SEs would reject."""
    _structure('listener_tls', {k: obj[k] for k in LISTENER_TLS_FIELDS
                                if k in obj}, prefix)
    ciphers = obj.get('tls_ciphers')
    if ciphers is None:
        return
    # OpenSSL takes no IANA name ("TLS_ECDHE_...") in a TLS 1.2 cipher
    # list: a "TLS_" name that is not a TLS 1.3 suite would be ignored.
    for name in split_ciphers(ciphers)[0]:
        if name.startswith('TLS_'):
            raise Invalid(_field(prefix, ['tls_ciphers']), ciphers,
                          'OpenSSL cipher names; the TLS 1.3 suites are '
                          + ', '.join(TLS13_CIPHERSUITES),
                          f'{name} is not a cipher name OpenSSL knows')


def check_listener(obj, prefix='', pool_ids=frozenset()):
    _structure('listener', obj, prefix)
    check_listener_tls(obj, prefix)
    for i, cidr in enumerate(obj.get('allowed_cidrs') or ()):
        schema.parse_cidr(cidr, _field(prefix, ['allowed_cidrs', i]))
    if obj.get('default_pool_id') is not None \
            and obj['default_pool_id'] not in pool_ids:
        raise Invalid(_field(prefix, ['default_pool_id']),
                      obj['default_pool_id'],
                      f'a pool of the load balancer: {sorted(pool_ids)}')
    if obj['protocol'] == 'TERMINATED_HTTPS' \
            and not obj.get('default_tls_container_ref'):
        raise Invalid(_field(prefix, ['default_tls_container_ref']),
                      obj.get('default_tls_container_ref'),
                      'a certificate container reference '
                      '(TERMINATED_HTTPS needs one)')
    for i, policy in enumerate(obj.get('l7policies') or ()):
        _check_policy(policy, _field(prefix, ['l7policies', i]), obj,
                      pool_ids)


def check_load_balancer(obj, prefix='', members_checked=False):
    """Returns the VIP addresses (ipaddress objects).  members_checked:
    the caller checked each member already (check_pool)."""
    _structure('load_balancer', obj, prefix)
    vips = tuple(schema._ip(v['address'],
                            _field(prefix, ['vips', i, 'address']))
                 for i, v in enumerate(obj['vips']))
    pool_ids = set()
    for i, pool in enumerate(obj['pools']):
        p_prefix = _field(prefix, ['pools', i])
        check_pool(pool, p_prefix, vips, members_checked)
        if pool['id'] in pool_ids:
            raise Invalid(_field(p_prefix, ['id']), pool['id'],
                          'an id no other pool of the load balancer has')
        pool_ids.add(pool['id'])
    ports = set()
    for i, listener in enumerate(obj['listeners']):
        l_prefix = _field(prefix, ['listeners', i])
        check_listener(listener, l_prefix, frozenset(pool_ids))
        key = (listener['protocol'] == 'UDP', listener['protocol_port'])
        if key in ports:
            raise Invalid(_field(l_prefix, ['protocol_port']),
                          listener['protocol_port'],
                          'a port no other listener of the load balancer '
                          'uses for the same transport')
        ports.add(key)
    return vips


def check_document(obj):
    """The whole L7 document: every load balancer, listener, policy and
    pool.  Raises Invalid for the first problem."""
    _structure('document', obj, 'l7snapshot')
    for i, lb in enumerate(obj['load_balancers']):
        check_load_balancer(lb, f'l7snapshot.load_balancers[{i}]')
