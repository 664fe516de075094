"""What the DSR dataplane can honour, checked before anything is cast.

Every refusal raises octavia-lib's UnsupportedOptionError (Octavia answers
HTTP 501 with its text), and the text names the object, the field, the
value, the allowed values and why.

Whatever a service engine would reject is refused here: objects are
checked against dsr_wire/schema.py, the one definition the agents'
snapshot parser and health checker use too.

The checks take octavia-lib data models as Octavia passes them: a field
the user did not give is Unset, and an update's "new" object carries only
the fields being changed. Values Octavia fills in on its own (default
timeouts, connection_limit -1, client_authentication NONE, ...) are
accepted; only a value DSR would have to ignore is refused.

docs/refusals.md lists every refusal with its reason;
tests/unit/dsr_provider/test_refusals_doc.py runs each documented example
through these checks and fails when a refuse() here is not documented.
"""

import ssl

from octavia_lib.api.drivers import data_models
from octavia_lib.api.drivers import exceptions
from octavia_lib.common import constants as lib_consts
from oslo_config import cfg

from dsr_provider import octavia_lookup
from dsr_wire import l7
from dsr_wire import schema

LISTENER_PROTOCOLS = (lib_consts.PROTOCOL_TCP, lib_consts.PROTOCOL_UDP,
                      lib_consts.PROTOCOL_SCTP)
POOL_PROTOCOLS = LISTENER_PROTOCOLS
LB_ALGORITHMS = (lib_consts.LB_ALGORITHM_SOURCE_IP_PORT,
                 lib_consts.LB_ALGORITHM_SOURCE_IP)
SESSION_PERSISTENCE_TYPES = (lib_consts.SESSION_PERSISTENCE_SOURCE_IP,)
HEALTH_MONITOR_TYPES = schema.MONITOR_TYPES
MAX_DELAY = schema.MAX_DELAY

L4_ONLY = ('DSR is Layer 4: the service engine forwards packets by '
           'consistent hash and never reads or answers the application '
           'stream (replies go from the member straight to the client)')

# Listener timeouts the SE cannot apply, with Octavia's own defaults (used
# when octavia-api's [haproxy_amphora] options are not registered: unit
# tests, other hosts), and why.  timeout_client_data is not here: the SEs
# honour it as the flows' idle timeout (docs/dataplane.md).
_TIMEOUT_DEFAULTS = {
    'timeout_member_connect': 5000,
    'timeout_member_data': 50000,
    'timeout_tcp_inspect': 0,
}
_MEMBER_SIDE = ('the service engine never sees the member side of a '
                'connection: the member answers the client directly '
                '(DSR), so there is no member connection whose {} it '
                'could time out')
_TIMEOUT_REASONS = {
    'timeout_member_connect': _MEMBER_SIDE.format('establishment'),
    'timeout_member_data': _MEMBER_SIDE.format('inactivity'),
    'timeout_tcp_inspect': (f'{L4_ONLY}, so there is no content '
                            'inspection to wait for (it only delays L7 '
                            'rules, which a DSR listener cannot have)'),
}

# Listener TLS settings no tier-1 SE applies (tier 2 applies them:
# check_listener_tls_tier2), with the [api_settings] options holding
# Octavia's defaults and their values in Octavia 19 (used when
# octavia-api's options are not registered). Octavia fills them in on
# TERMINATED_HTTPS creates and when a PUT sets them to null.
_TLS_DEFAULTS = {
    'tls_versions': ('default_listener_tls_versions',
                     ['TLSv1.2', 'TLSv1.3']),
    'tls_ciphers': ('default_listener_ciphers',
                    'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:'
                    'TLS_CHACHA20_POLY1305_SHA256:'
                    'ECDHE-ECDSA-AES128-GCM-SHA256:'
                    'ECDHE-RSA-AES128-GCM-SHA256:'
                    'ECDHE-ECDSA-AES256-GCM-SHA384:'
                    'ECDHE-RSA-AES256-GCM-SHA384:'
                    'ECDHE-ECDSA-CHACHA20-POLY1305:'
                    'ECDHE-RSA-CHACHA20-POLY1305:'
                    'DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:'
                    'DHE-RSA-CHACHA20-POLY1305'),
    'alpn_protocols': ('default_listener_alpn_protocols',
                       ['h2', 'http/1.1', 'http/1.0']),
}

_LISTENER_TLS_FIELDS = ('default_tls_container_ref',
                        'default_tls_container_data',
                        'sni_container_refs', 'sni_container_data',
                        'client_ca_tls_container_ref',
                        'client_ca_tls_container_data',
                        'client_crl_container_ref',
                        'client_crl_container_data')
_POOL_TLS_FIELDS = ('tls_container_ref', 'tls_container_data',
                    'ca_tls_container_ref', 'ca_tls_container_data',
                    'crl_container_ref', 'crl_container_data')


def refuse(message):
    raise exceptions.UnsupportedOptionError(user_fault_string=message,
                                            operator_fault_string=message)


def given(obj, name):
    """obj.name, or None when it is Unset / absent (dicts accepted too)."""
    if isinstance(obj, dict):
        value = obj.get(name)
    else:
        value = getattr(obj, name, None)
    return None if isinstance(value, data_models.UnsetType) else value


def is_given(obj, name):
    """True when the object carries the field (None included)."""
    if isinstance(obj, dict):
        return name in obj
    value = getattr(obj, name, data_models.Unset)
    return not isinstance(value, data_models.UnsetType)


def _join(values):
    return ', '.join(str(v) for v in values)


# --- load balancer ---------------------------------------------------------

def check_loadbalancer(lb, qos_origin=''):
    """VIP port options that have no effect on a DSR VIP (lb: a load
    balancer or create_vip_port's vip_dictionary, same field names)."""
    if given(lb, 'vip_qos_policy_id'):
        refuse(f'load balancer vip_qos_policy_id '
               f'{given(lb, "vip_qos_policy_id")!r}{qos_origin} is not '
               'supported by the DSR provider (allowed: none): the service '
               'engines announce the VIP by BGP and no traffic crosses the '
               'VIP port, so a QoS policy on it would be silently ignored.')
    if given(lb, 'vip_sg_ids'):
        refuse(f'load balancer vip_sg_ids {given(lb, "vip_sg_ids")!r} are '
               'not supported by the DSR provider (allowed: none): no '
               'traffic crosses the VIP port, so security groups on it '
               'would be silently ignored.')


def check_vip(vip):
    """The VIP of a new load balancer: create_vip_port's vip_dictionary,
    the only place the request's vip_qos_policy_id and vip_sg_ids reach
    the driver whatever network driver allocates the port."""
    origin = ''
    if given(vip, 'vip_port_id'):
        # Octavia fills vip_qos_policy_id from the user's port when the
        # request names none.
        origin = (' (or the QoS policy of the VIP port vip_port_id, which '
                  'Octavia applies when the request names none)')
    check_loadbalancer(vip, qos_origin=origin)


# --- listener --------------------------------------------------------------

def _octavia_timeout_default(name):
    try:
        return getattr(cfg.CONF.haproxy_amphora, name)
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError, AttributeError):
        return _TIMEOUT_DEFAULTS[name]


def _octavia_tls_default(name):
    option, default = _TLS_DEFAULTS[name]
    try:
        return getattr(cfg.CONF.api_settings, option)
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError, AttributeError):
        return default


def _tls_value(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def check_listener_tls_settings(listener, reason):
    """tls_versions, tls_ciphers, alpn_protocols: unset or Octavia's
    default, which every listener carries when the user gives none; any
    other value would be ignored. reason: why nothing applies them."""
    for name, (option, default) in _TLS_DEFAULTS.items():
        value = _tls_value(given(listener, name))
        accepted = [default]
        configured = _tls_value(_octavia_tls_default(name))
        if configured != default:
            accepted.append(configured)
        if value is not None and value not in accepted:
            shown = ' or '.join(repr(v) for v in accepted)
            refuse(f'listener {name} {value!r} is not supported by the DSR '
                   f'provider (allowed: unset or {shown}, Octavia\'s '
                   f'default, [api_settings] {option}): {reason}.')


def check_listener_protocol(protocol):
    if protocol in LISTENER_PROTOCOLS:
        return
    allowed = _join(LISTENER_PROTOCOLS)
    if protocol == lib_consts.PROTOCOL_TERMINATED_HTTPS:
        refuse(f'listener protocol TERMINATED_HTTPS is not supported by the '
               f'DSR provider (allowed: {allowed}): no TLS termination — '
               'replies bypass the service engine, which never sees the '
               'server side of a TLS session.')
    if protocol in (lib_consts.PROTOCOL_HTTP, lib_consts.PROTOCOL_HTTPS):
        refuse(f'listener protocol {protocol} is not supported by the DSR '
               f'provider (allowed: {allowed}): {L4_ONLY}. HTTP and HTTPS '
               'listeners need a tier-2 (L7 service engine) flavor; '
               'or use TCP.')
    refuse(f'listener protocol {protocol} is not supported by the DSR '
           f'provider (allowed: {allowed}): {L4_ONLY}.')


def check_listener_limits(listener):
    """connection_limit, allowed_cidrs and timeout_client_data, which
    the SEs enforce (docs/dataplane.md): checked with the agents' listener
    definition."""
    doc = {name: given(listener, name)
           for name in ('connection_limit', 'allowed_cidrs',
                        'timeout_client_data')
           if is_given(listener, name)}
    try:
        schema.check_listener(doc, partial=True)
    except schema.Invalid as exc:
        _refuse_invalid('listener', exc)


def check_listener(listener, tier=1):
    """A new listener, or the changed fields of an updated one; tier: its
    load balancer's (flavors.tier_of)."""
    if tier == 2:
        return check_listener_tier2(listener)
    if is_given(listener, 'protocol'):
        check_listener_protocol(given(listener, 'protocol'))

    check_listener_limits(listener)

    for name in _TIMEOUT_DEFAULTS:
        value = given(listener, name)
        accepted = {_TIMEOUT_DEFAULTS[name], _octavia_timeout_default(name)}
        if value is not None and value not in accepted:
            refuse(f'listener {name} {value} is not supported by the DSR '
                   f'provider (allowed: unset or {_join(sorted(accepted))}'
                   f', Octavia\'s default): {_TIMEOUT_REASONS[name]}. '
                   'timeout_client_data (the idle timeout of client '
                   'flows) is honoured.')

    headers = given(listener, 'insert_headers')
    if headers:
        refuse(f'listener insert_headers {sorted(headers)!r} are not '
               f'supported by the DSR provider (allowed: none): {L4_ONLY}.')

    for name in _LISTENER_TLS_FIELDS:
        if given(listener, name):
            refuse(f'listener {name} is not supported by the DSR provider '
                   '(allowed: none): no TLS termination — replies bypass '
                   'the service engine.')
    check_listener_tls_settings(
        listener, 'no TLS termination — replies bypass the service engine')
    auth = given(listener, 'client_authentication')
    if auth not in (None, lib_consts.CLIENT_AUTH_NONE):
        refuse(f'listener client_authentication {auth} is not supported by '
               'the DSR provider (allowed: NONE): no TLS termination.')
    for name in ('hsts_max_age', 'hsts_include_subdomains', 'hsts_preload'):
        if given(listener, name):
            refuse(f'listener {name} is not supported by the DSR provider '
                   f'(allowed: unset): {L4_ONLY}.')

    if given(listener, 'l7policies'):
        refuse_l7('L7 policies')


def refuse_l7(what):
    refuse(f'{what} are not supported on a tier-1 load balancer of the '
           f'DSR provider (allowed: none): {L4_ONLY}, so it '
           'cannot match, redirect or reject requests. Use one listener '
           'with a default pool per port, or a tier-2 flavor (L7 service '
           'engines behind the L4 SEs).')


# --- pool ------------------------------------------------------------------

def check_pool(pool, old_pool=None, listener_protocol=None, tier=1):
    """A new pool (old_pool None) or the changed fields of an updated one.

    listener_protocol, when known, is the protocol of the listener the
    pool serves.
    """
    if tier == 2:
        return check_pool_tier2(pool, old_pool)
    protocol = given(pool, 'protocol')
    if is_given(pool, 'protocol') and protocol not in POOL_PROTOCOLS:
        refuse(f'pool protocol {protocol} is not supported by the DSR '
               f'provider (allowed: {_join(POOL_PROTOCOLS)}): {L4_ONLY}, so '
               'it cannot add a PROXY header or speak HTTP to members.')
    if protocol and listener_protocol and protocol != listener_protocol:
        refuse(f'pool protocol {protocol} does not match its listener\'s '
               f'protocol {listener_protocol} (allowed: '
               f'{listener_protocol}): the service engine forwards the '
               'client\'s packets to members unchanged.')

    algorithm = given(pool, 'lb_algorithm')
    if is_given(pool, 'lb_algorithm') and algorithm not in LB_ALGORITHMS:
        refuse(f'pool lb_algorithm {algorithm} is not supported by the DSR '
               f'provider (allowed: {_join(LB_ALGORITHMS)}): DSR steers '
               'every packet by consistent (Maglev) hash of the client '
               'address and port (SOURCE_IP_PORT) or address (SOURCE_IP); '
               'there is no per-connection scheduler.')

    if is_given(pool, 'session_persistence') or (
            old_pool is not None and is_given(pool, 'lb_algorithm')):
        persistence = (given(pool, 'session_persistence')
                       if is_given(pool, 'session_persistence')
                       else given(old_pool, 'session_persistence'))
        effective = algorithm or given(old_pool, 'lb_algorithm')
        check_session_persistence(persistence, effective)

    if given(pool, 'tls_enabled'):
        refuse('pool tls_enabled true is not supported by the DSR provider '
               '(allowed: false): the service engine forwards the client\'s '
               'packets and cannot re-encrypt them towards members.')
    for name in _POOL_TLS_FIELDS:
        if given(pool, name):
            refuse(f'pool {name} is not supported by the DSR provider '
                   '(allowed: none): no TLS towards members.')


def check_session_persistence(persistence, algorithm):
    if not persistence:
        return
    kind = given(persistence, 'type')
    if kind not in SESSION_PERSISTENCE_TYPES:
        refuse(f'pool session_persistence type {kind} is not supported by '
               'the DSR provider (allowed: SOURCE_IP, with lb_algorithm '
               f'SOURCE_IP): {L4_ONLY}, so it cannot read or set cookies.')
    if algorithm != lib_consts.LB_ALGORITHM_SOURCE_IP:
        refuse(f'pool session_persistence SOURCE_IP with lb_algorithm '
               f'{algorithm} is not supported by the DSR provider (allowed: '
               'lb_algorithm SOURCE_IP): source-IP persistence is what the '
               'SOURCE_IP hash gives; with SOURCE_IP_PORT one client\'s '
               'connections spread over members.')
    for name in ('persistence_timeout', 'persistence_granularity',
                 'cookie_name'):
        if given(persistence, name):
            refuse(f'pool session_persistence {name} '
                   f'{given(persistence, name)!r} is not supported by the '
                   'DSR provider (allowed: unset): the consistent hash keeps '
                   'a client on its member for as long as the member set '
                   'is unchanged, with no timeout or netmask to apply.')


# --- member ----------------------------------------------------------------

def check_member_port(member, listener_port):
    """listener_port: port of the listener the member's pool serves, or
    None when the pool serves no listener yet (then anything goes)."""
    port = given(member, 'protocol_port')
    if listener_port is None or port is None or port == listener_port:
        return
    address = given(member, 'address')
    refuse(f'member {address} protocol_port {port} differs from the port '
           f'of its pool\'s listener (allowed: {listener_port}): DSR cannot '
           'translate ports — the member receives the client\'s packet '
           'unchanged, addressed to the VIP and its port.')


def check_pool_ports(pool_id, listener_ports, members):
    """listener_ports: ports of every listener whose default pool this is."""
    ports = sorted(set(listener_ports))
    if len(ports) > 1:
        refuse(f'pool {pool_id} would serve listeners on ports '
               f'{_join(ports)}: a DSR pool serves one port (allowed: one '
               'listener port per pool), because members receive the VIP\'s '
               'own port. Use one pool per listener.')
    for member in members or ():
        check_member_port(member, ports[0] if ports else None)


# --- shared definition (dsr_wire/schema.py) ------------------------------

def _refuse_invalid(what, exc):
    refuse(f'{what} {exc}: the DSR provider refuses what its service '
           'engines would reject.')


# --- member ----------------------------------------------------------------

MEMBER_FIELDS = ('address', 'protocol_port', 'weight', 'admin_state_up',
                 'backup', 'monitor_address', 'monitor_port')


def check_member(member, vips=()):
    """A member (or the changed fields of one) against the definition the
    agents use; vips: its load balancer's VIP addresses, when known."""
    doc = {name: given(member, name) for name in MEMBER_FIELDS
           if is_given(member, name)}
    doc = {k: v for k, v in doc.items()
           if v is not None or k in ('monitor_address', 'monitor_port')}
    try:
        schema.check_member(doc, vips=vips or (), partial=True)
    except schema.Invalid as exc:
        _refuse_invalid('member', exc)


# --- health monitor --------------------------------------------------------

MONITOR_FIELDS = ('type', 'delay', 'timeout', 'max_retries',
                  'max_retries_down', 'http_method', 'url_path',
                  'expected_codes', 'admin_state_up')


def check_health_monitor(hm, old_hm=None, tier=1):
    """A new health monitor (old_hm None) or the changed fields of one,
    checked as the controller will send it to the agents (the merged
    values, expected_codes without spaces)."""
    if tier == 2 and given(hm, 'type') is not None:
        _tier2_choice(hm, 'health monitor', 'type', TIER2_MONITOR_TYPES)

    def effective(name):
        if is_given(hm, name) or old_hm is None:
            return given(hm, name)
        return given(old_hm, name)

    doc = {name: effective(name) for name in MONITOR_FIELDS}
    doc = {k: v for k, v in doc.items() if v is not None}
    if 'expected_codes' in doc:
        doc['expected_codes'] = schema.normalize_expected_codes(
            doc['expected_codes'])
    try:
        schema.check_health_monitor(doc, partial=True)
    except schema.Invalid as exc:
        _refuse_invalid('health monitor', exc)
    version = given(hm, 'http_version')
    if version is not None and version != 1.0:
        refuse(f'health monitor http_version {version} is not supported by '
               'the DSR provider yet (allowed: unset or 1.0): service '
               'engines send HTTP/1.0 probes.')
    if given(hm, 'domain_name'):
        refuse(f'health monitor domain_name {given(hm, "domain_name")!r} is '
               'not supported by the DSR provider yet (allowed: unset): '
               'service engines send HTTP/1.0 probes without a Host header.')


# --- a whole load balancer -------------------------------------------------

def _items(value):
    return [] if not value else list(value)


def check_graph(lb, tier=1):
    """A load balancer created with its listeners, pools, members and
    health monitors in one call."""
    if tier == 2:
        return check_graph_tier2(lb)
    check_loadbalancer(lb)
    vips = octavia_lookup.vip_addresses(lb)
    pools = {given(p, 'pool_id'): p for p in _items(given(lb, 'pools'))}
    listeners = _items(given(lb, 'listeners'))
    ports_of_pool, protocol_of_pool = {}, {}
    for listener in listeners:
        check_listener(listener)
        pool = given(listener, 'default_pool')
        pool_id = given(listener, 'default_pool_id') or given(pool,
                                                              'pool_id')
        if pool_id and pool_id not in pools and pool is not None:
            pools[pool_id] = pool
        if pool_id:
            ports_of_pool.setdefault(pool_id, []).append(
                given(listener, 'protocol_port'))
            protocol_of_pool[pool_id] = given(listener, 'protocol')
    for pool_id, pool in pools.items():
        check_pool(pool, listener_protocol=protocol_of_pool.get(pool_id))
        monitor = given(pool, 'healthmonitor')
        if monitor:
            check_health_monitor(monitor)
        members = _items(given(pool, 'members'))
        for member in members:
            check_member(member, vips)
        check_pool_ports(pool_id, ports_of_pool.get(pool_id, ()), members)


# --- tier 2: L4 DSR in front of L7 service engines (docs/tier2.md) -------

TIER2_LISTENER_PROTOCOLS = l7.LISTENER_PROTOCOLS
TIER2_POOL_PROTOCOLS = l7.POOL_PROTOCOLS
TIER2_LB_ALGORITHMS = l7.ALGORITHMS
TIER2_PERSISTENCE_TYPES = l7.PERSISTENCE_TYPES
TIER2_MONITOR_TYPES = ('HTTP', 'HTTPS', 'TLS-HELLO', 'TCP', 'UDP-CONNECT')
# UDP listeners are nftables rules on the L7 SEs (amphora_agent/l7/udp.py).
TIER2_UDP_LB_ALGORITHMS = tuple(a for a in l7.ALGORITHMS
                                if a != 'LEAST_CONNECTIONS')
TIER2_L7 = ('a tier-2 load balancer is served by HAProxy on its L7 '
            'service engines, configured from the L7 snapshot '
            '(dsr_wire/l7.py), which does not carry this')
_TIER2_UNSUPPORTED_LISTENER = (
    'client_ca_tls_container_ref', 'client_ca_tls_container_data',
    'client_crl_container_ref', 'client_crl_container_data',
    'hsts_max_age', 'hsts_include_subdomains', 'hsts_preload')
_TIER2_UNSUPPORTED_POOL = ('tls_enabled',
                           'tls_container_ref', 'tls_container_data',
                           'ca_tls_container_ref', 'ca_tls_container_data',
                           'crl_container_ref', 'crl_container_data')
# Client certificate rules need client authentication, not offered yet.
_CLIENT_CERT_RULES = ('SSL_CONN_HAS_CERT', 'SSL_VERIFY_RESULT',
                      'SSL_DN_FIELD')


def _tier2_choice(obj, what, name, allowed):
    """Refuse obj.name when given and not one of allowed."""
    value = given(obj, name)
    if is_given(obj, name) and value not in allowed:
        refuse(f'{what} {name} {value} is not supported on a tier-2 load '
               f'balancer (allowed: {_join(allowed)}): {TIER2_L7}.')


def _tier2_unset(obj, what, names):
    """Refuse any of names that is set (the L7 snapshot lacks them)."""
    for name in names:
        if given(obj, name):
            refuse(f'{what} {name} is not supported on a tier-2 load '
                   f'balancer yet (allowed: unset): {TIER2_L7}.')


def check_listener_tier2(listener):
    """A listener of a tier-2 load balancer: what the L7 SEs serve."""
    _tier2_choice(listener, 'listener', 'protocol', TIER2_LISTENER_PROTOCOLS)
    check_listener_limits(listener)
    _tier2_unset(listener, 'listener', _TIER2_UNSUPPORTED_LISTENER)
    check_listener_tls_tier2(listener)
    if given(listener, 'client_authentication') is not None:
        _tier2_choice(listener, 'listener', 'client_authentication',
                      (lib_consts.CLIENT_AUTH_NONE,))
    policies = _items(given(listener, 'l7policies'))
    if policies:
        check_l7policy_listener(given(listener, 'protocol'))
    for policy in policies:
        check_l7policy(policy)


def check_l7policy_listener(protocol):
    """L7 policies match HTTP requests: a listener of another protocol has
    none to match (the L7 snapshot refuses them, dsr_wire/l7.py)."""
    if protocol not in l7.HTTP_LISTENER_PROTOCOLS:
        refuse(f'L7 policies on a {protocol} listener are not supported '
               f'(allowed: L7 policies on '
               f'{_join(l7.HTTP_LISTENER_PROTOCOLS)} listeners): they '
               'match and redirect HTTP requests, which HAProxy sees only '
               'on those.')


def _openssl_takes(ciphers):
    """Whether this host's OpenSSL finds a cipher in a TLS 1.2 cipher
    list: the call HAProxy makes on the L7 SE (SSL_CTX_set_cipher_list),
    which refuses the configuration when none matches."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(ciphers)
    except ssl.SSLError:
        return False
    return True


def check_listener_tls_tier2(listener):
    """tls_versions, tls_ciphers and alpn_protocols, which HAProxy on the
    L7 SEs applies to a TERMINATED_HTTPS listener: refused when it could
    not (the L7 snapshot's definition, dsr_wire/l7.py)."""
    doc = {name: _tls_value(given(listener, name))
           for name in l7.LISTENER_TLS_FIELDS
           if given(listener, name) is not None}
    try:
        l7.check_listener_tls(doc)
    except schema.Invalid as exc:
        refuse(f'listener {exc}: not supported on a tier-2 load balancer, '
               'whose L7 service engines (HAProxy 2.6, OpenSSL 3) could not '
               'apply it.')
    tls12 = l7.split_ciphers(doc.get('tls_ciphers') or '')[0]
    if tls12 and not _openssl_takes(':'.join(tls12)):
        refuse(f'listener tls_ciphers {doc["tls_ciphers"]!r} is not '
               'supported on a tier-2 load balancer (allowed: a cipher '
               'string in which OpenSSL finds a cipher besides the TLS 1.3 '
               f'suites {", ".join(l7.TLS13_CIPHERSUITES)}): OpenSSL finds '
               f'none in {":".join(tls12)!r}, and HAProxy refuses such a '
               'configuration.')


def check_pool_tier2(pool, old_pool=None):
    _tier2_choice(pool, 'pool', 'protocol', TIER2_POOL_PROTOCOLS)
    _tier2_choice(pool, 'pool', 'lb_algorithm', TIER2_LB_ALGORITHMS)
    protocol = given(pool, 'protocol') or given(old_pool, 'protocol')
    algorithm = given(pool, 'lb_algorithm') or given(old_pool,
                                                     'lb_algorithm')
    if protocol == lib_consts.PROTOCOL_UDP and \
            algorithm not in TIER2_UDP_LB_ALGORITHMS:
        refuse(f'pool lb_algorithm {algorithm} is not supported for a UDP '
               f'pool of a tier-2 load balancer (allowed: '
               f'{_join(TIER2_UDP_LB_ALGORITHMS)}): the L7 service engines '
               'serve UDP with nftables, which picks a member per new flow '
               'by a counter or a hash and has no per-member connection '
               'count to pick the least loaded by.')
    persistence = given(pool, 'session_persistence')
    if persistence:
        _tier2_choice(persistence, 'pool session_persistence', 'type',
                      TIER2_PERSISTENCE_TYPES)
        if given(persistence, 'type') == \
                lib_consts.SESSION_PERSISTENCE_APP_COOKIE and \
                not given(persistence, 'cookie_name'):
            refuse('pool session_persistence APP_COOKIE without a '
                   'cookie_name is not supported (allowed: a cookie_name '
                   'with APP_COOKIE): HAProxy must know which cookie of '
                   'the application to follow.')
        doc = {name: given(persistence, name) for name in (
            'type', 'cookie_name', 'persistence_timeout',
            'persistence_granularity')}
        try:
            l7._structure('session_persistence', doc, '')
        except schema.Invalid as exc:
            _refuse_invalid('pool session_persistence', exc)
    _tier2_unset(pool, 'pool', _TIER2_UNSUPPORTED_POOL)


def check_l7policy(policy):
    """An L7 policy (and its rules) of a tier-2 load balancer, or the
    changed fields of one."""
    doc = {'id': given(policy, 'l7policy_id') or 'new'}
    for name in ('action', 'position', 'redirect_pool_id', 'redirect_url',
                 'redirect_prefix', 'redirect_http_code',
                 'admin_state_up'):
        if given(policy, name) is not None:
            doc[name] = given(policy, name)
    doc.setdefault('action', 'REJECT')
    try:
        l7._structure('l7policy', doc, '')
    except schema.Invalid as exc:
        _refuse_invalid('L7 policy', exc)
    for rule in _items(given(policy, 'rules')):
        check_l7rule(rule)


def check_l7rule(rule):
    """An L7 rule of a tier-2 load balancer, or the changed fields of
    one."""
    kind = given(rule, 'type')
    if kind in _CLIENT_CERT_RULES:
        allowed = [t for t in l7.L7RULE_TYPES if t not in _CLIENT_CERT_RULES]
        refuse(f'L7 rule type {kind} is not supported on a tier-2 load '
               f'balancer yet (allowed: {_join(allowed)}): it tests the '
               'client certificate, and listener client_authentication '
               'is not offered yet.')
    doc = {'id': given(rule, 'l7rule_id') or 'new', 'type': 'PATH',
           'compare_type': 'EQUAL_TO', 'value': '/'}
    for name in ('type', 'compare_type', 'key', 'value', 'invert',
                 'admin_state_up'):
        if given(rule, name) is not None:
            doc[name] = given(rule, name)
    try:
        l7._structure('l7rule', doc, '')
        if doc['type'] in l7.KEYED_RULE_TYPES and is_given(rule, 'key') \
                and not doc.get('key'):
            raise schema.Invalid('key', doc.get('key'),
                                 f'a non-empty key ({doc["type"]} rules '
                                 'need one)')
    except schema.Invalid as exc:
        _refuse_invalid('L7 rule', exc)


def check_graph_tier2(lb):
    """A tier-2 load balancer created with its graph."""
    check_loadbalancer(lb)
    vips = octavia_lookup.vip_addresses(lb)
    pools = {given(p, 'pool_id'): p for p in _items(given(lb, 'pools'))}
    for listener in _items(given(lb, 'listeners')):
        check_listener_tier2(listener)
        pool = given(listener, 'default_pool')
        if pool is not None:
            pools.setdefault(given(pool, 'pool_id'), pool)
    for pool in pools.values():
        check_pool_tier2(pool)
        monitor = given(pool, 'healthmonitor')
        if monitor:
            check_health_monitor(monitor, tier=2)
        for member in _items(given(pool, 'members')):
            check_member(member, vips)
