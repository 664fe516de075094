"""The controller's configuration snapshot for one SE group (schema v1).

docs/agent-protocol.md describes the format.  parse() validates a snapshot
as a whole: anything malformed or inconsistent raises InvalidSnapshot naming
the field, and the agent keeps running what it had.
"""

import dataclasses
import ipaddress
import re
from typing import Optional

SCHEMA_VERSION = 1

PROTOCOLS = ('TCP', 'UDP', 'SCTP')
ALGORITHMS = ('SOURCE_IP_PORT', 'SOURCE_IP')
ENCAPS = ('ipip', 'gre')
MONITOR_TYPES = ('TCP', 'HTTP', 'HTTPS', 'PING', 'UDP-CONNECT')
HTTP_METHODS = ('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH',
                'TRACE', 'CONNECT')
_CODES_RE = re.compile(r'^\d{3}(-\d{3})?(,\d{3}(-\d{3})?)*$')


class InvalidSnapshot(ValueError):
    """The snapshot is rejected as a whole; the message names the field."""


@dataclasses.dataclass(frozen=True)
class HealthMonitor:
    id: str
    type: str
    delay: int
    timeout: int
    max_retries: int
    max_retries_down: int
    http_method: str = 'GET'
    url_path: str = '/'
    expected_codes: str = '200'
    admin_state_up: bool = True


@dataclasses.dataclass(frozen=True)
class Member:
    id: str
    address: ipaddress._BaseAddress
    protocol_port: int
    weight: int = 1
    admin_state_up: bool = True
    backup: bool = False
    monitor_port: Optional[int] = None
    monitor_address: Optional[ipaddress._BaseAddress] = None


@dataclasses.dataclass(frozen=True)
class Pool:
    id: str
    algorithm: str
    encap: str
    admin_state_up: bool
    members: tuple
    health_monitor: Optional[HealthMonitor]


@dataclasses.dataclass(frozen=True)
class Listener:
    id: str
    protocol: str
    port: int
    admin_state_up: bool
    allowed_cidrs: tuple
    pool: Optional[Pool]


@dataclasses.dataclass(frozen=True)
class LoadBalancer:
    id: str
    admin_state_up: bool
    vips: tuple
    listeners: tuple


@dataclasses.dataclass(frozen=True)
class Snapshot:
    se_group: str
    generation: int
    load_balancers: tuple

    def members(self):
        """Every member with its pool and monitor: (member, pool, lb)."""
        for lb in self.load_balancers:
            for listener in lb.listeners:
                if listener.pool:
                    for member in listener.pool.members:
                        yield member, listener.pool, lb


def _fail(path, message):
    raise InvalidSnapshot(f'{path}: {message}')


def _fields(obj, path, required, optional=()):
    if not isinstance(obj, dict):
        _fail(path, 'must be an object')
    unknown = set(obj) - set(required) - set(optional)
    if unknown:
        _fail(path, f'unknown field(s) {sorted(unknown)}')
    missing = [f for f in required if f not in obj]
    if missing:
        _fail(path, f'missing field(s) {missing}')
    return obj


def _str(value, path):
    if not isinstance(value, str) or not value:
        _fail(path, f'{value!r} is not a non-empty string')
    return value


def _int(value, path, low, high):
    if isinstance(value, bool) or not isinstance(value, int) \
            or not low <= value <= high:
        _fail(path, f'{value!r} is not an integer in {low}..{high}')
    return value


def _bool(value, path):
    if not isinstance(value, bool):
        _fail(path, f'{value!r} is not true or false')
    return value


def _choice(value, path, allowed):
    if value not in allowed:
        _fail(path, f'{value!r} is not one of {", ".join(allowed)}')
    return value


def _address(value, path):
    try:
        return ipaddress.ip_address(value)
    except (TypeError, ValueError):
        _fail(path, f'{value!r} is not an IP address')


def _monitor(obj, path):
    _fields(obj, path, ('id', 'type', 'delay', 'timeout', 'max_retries'),
            ('max_retries_down', 'http_method', 'url_path',
             'expected_codes', 'admin_state_up'))
    kind = _choice(obj['type'], f'{path}.type', MONITOR_TYPES)
    delay = _int(obj['delay'], f'{path}.delay', 1, 86400)
    timeout = _int(obj['timeout'], f'{path}.timeout', 1, 86400)
    if timeout > delay:
        _fail(f'{path}.timeout', f'{timeout} exceeds delay {delay}')
    codes = obj.get('expected_codes', '200')
    if kind in ('HTTP', 'HTTPS') and not _CODES_RE.match(str(codes)):
        _fail(f'{path}.expected_codes',
              f'{codes!r} is not a code, list or range like 200,202-204')
    url = obj.get('url_path', '/')
    if not isinstance(url, str) or not url.startswith('/'):
        _fail(f'{path}.url_path', f'{url!r} does not start with /')
    return HealthMonitor(
        id=_str(obj['id'], f'{path}.id'), type=kind, delay=delay,
        timeout=timeout,
        max_retries=_int(obj['max_retries'], f'{path}.max_retries', 1, 10),
        max_retries_down=_int(obj.get('max_retries_down', 3),
                              f'{path}.max_retries_down', 1, 10),
        http_method=_choice(obj.get('http_method', 'GET'),
                            f'{path}.http_method', HTTP_METHODS),
        url_path=url, expected_codes=str(codes),
        admin_state_up=_bool(obj.get('admin_state_up', True),
                             f'{path}.admin_state_up'))


def _member(obj, path):
    _fields(obj, path, ('id', 'address', 'protocol_port'),
            ('weight', 'admin_state_up', 'backup', 'monitor_port',
             'monitor_address'))
    monitor_port = obj.get('monitor_port')
    monitor_address = obj.get('monitor_address')
    return Member(
        id=_str(obj['id'], f'{path}.id'),
        address=_address(obj['address'], f'{path}.address'),
        protocol_port=_int(obj['protocol_port'], f'{path}.protocol_port',
                           1, 65535),
        weight=_int(obj.get('weight', 1), f'{path}.weight', 0, 256),
        admin_state_up=_bool(obj.get('admin_state_up', True),
                             f'{path}.admin_state_up'),
        backup=_bool(obj.get('backup', False), f'{path}.backup'),
        monitor_port=None if monitor_port is None else _int(
            monitor_port, f'{path}.monitor_port', 1, 65535),
        monitor_address=None if monitor_address is None else _address(
            monitor_address, f'{path}.monitor_address'))


def _pool(obj, path):
    _fields(obj, path, ('id', 'algorithm', 'members'),
            ('encap', 'admin_state_up', 'health_monitor'))
    members = obj['members']
    if not isinstance(members, list):
        _fail(f'{path}.members', 'must be a list')
    parsed = tuple(_member(m, f'{path}.members[{i}]')
                   for i, m in enumerate(members))
    seen = {}
    for i, m in enumerate(parsed):
        if m.address in seen:
            _fail(f'{path}.members[{i}].address',
                  f'{m.address} is also members[{seen[m.address]}] '
                  '(DSR members are addresses: the port cannot differ)')
        seen[m.address] = i
    monitor = obj.get('health_monitor')
    return Pool(
        id=_str(obj['id'], f'{path}.id'),
        algorithm=_choice(obj['algorithm'], f'{path}.algorithm', ALGORITHMS),
        encap=_choice(obj.get('encap', 'ipip'), f'{path}.encap', ENCAPS),
        admin_state_up=_bool(obj.get('admin_state_up', True),
                             f'{path}.admin_state_up'),
        members=parsed,
        health_monitor=None if monitor is None else _monitor(
            monitor, f'{path}.health_monitor'))


def _listener(obj, path):
    _fields(obj, path, ('id', 'protocol', 'port'),
            ('admin_state_up', 'allowed_cidrs', 'pool'))
    cidrs = obj.get('allowed_cidrs') or []
    if not isinstance(cidrs, list):
        _fail(f'{path}.allowed_cidrs', 'must be a list')
    parsed_cidrs = []
    for i, cidr in enumerate(cidrs):
        try:
            parsed_cidrs.append(ipaddress.ip_network(cidr))
        except (TypeError, ValueError):
            _fail(f'{path}.allowed_cidrs[{i}]', f'{cidr!r} is not a CIDR')
    pool = obj.get('pool')
    return Listener(
        id=_str(obj['id'], f'{path}.id'),
        protocol=_choice(obj['protocol'], f'{path}.protocol', PROTOCOLS),
        port=_int(obj['port'], f'{path}.port', 1, 65535),
        admin_state_up=_bool(obj.get('admin_state_up', True),
                             f'{path}.admin_state_up'),
        allowed_cidrs=tuple(parsed_cidrs),
        pool=None if pool is None else _pool(pool, f'{path}.pool'))


def _load_balancer(obj, path):
    _fields(obj, path, ('id', 'vips', 'listeners'), ('admin_state_up',))
    if not isinstance(obj['vips'], list) or not obj['vips']:
        _fail(f'{path}.vips', 'must be a non-empty list')
    vips = []
    for i, vip in enumerate(obj['vips']):
        _fields(vip, f'{path}.vips[{i}]', ('address',))
        vips.append(_address(vip['address'], f'{path}.vips[{i}].address'))
    if not isinstance(obj['listeners'], list):
        _fail(f'{path}.listeners', 'must be a list')
    listeners = tuple(_listener(x, f'{path}.listeners[{i}]')
                      for i, x in enumerate(obj['listeners']))
    seen = {}
    for i, lst in enumerate(listeners):
        key = (lst.protocol, lst.port)
        if key in seen:
            _fail(f'{path}.listeners[{i}]',
                  f'{lst.protocol} port {lst.port} is also listeners'
                  f'[{seen[key]}]')
        seen[key] = i
    return LoadBalancer(
        id=_str(obj['id'], f'{path}.id'),
        admin_state_up=_bool(obj.get('admin_state_up', True),
                             f'{path}.admin_state_up'),
        vips=tuple(vips), listeners=listeners)


class Parser:
    """parse() that reuses the validated form of unchanged load balancers.

    A new generation usually changes one object among thousands; comparing
    a load balancer's document with the previous one is far cheaper than
    validating it again.
    """

    def __init__(self):
        self._memo = {}

    def parse(self, document):
        memo, fresh = self._memo, {}

        def load_balancer(obj, path):
            key = obj.get('id') if isinstance(obj, dict) else None
            hit = memo.get(key)
            if hit is not None and hit[0] == obj:
                fresh[key] = hit
                return hit[1]
            parsed = _load_balancer(obj, path)
            fresh[key] = (obj, parsed)
            return parsed
        result = parse(document, _lb=load_balancer)
        self._memo = fresh
        return result


def parse(document, _lb=None):
    """Validate a snapshot document (dict); returns a Snapshot."""
    _lb = _lb or _load_balancer
    _fields(document, 'snapshot',
            ('schema_version', 'se_group', 'generation', 'load_balancers'))
    version = document['schema_version']
    if version != SCHEMA_VERSION:
        _fail('snapshot.schema_version',
              f'{version!r} is not supported (this agent speaks '
              f'{SCHEMA_VERSION})')
    lbs = document['load_balancers']
    if not isinstance(lbs, list):
        _fail('snapshot.load_balancers', 'must be a list')
    parsed = tuple(_lb(lb, f'load_balancers[{i}]')
                   for i, lb in enumerate(lbs))
    owners = {}
    for i, lb in enumerate(parsed):
        for lst in lb.listeners:
            for vip in lb.vips:
                key = (vip, lst.protocol, lst.port)
                if key in owners:
                    _fail(f'load_balancers[{i}]',
                          f'{lst.protocol} {vip} port {lst.port} is also '
                          f'served by load balancer {owners[key]}')
                owners[key] = lb.id
    return Snapshot(
        se_group=_str(document['se_group'], 'snapshot.se_group'),
        generation=_int(document['generation'], 'snapshot.generation', 0,
                        2 ** 63 - 1),
        load_balancers=parsed)
