"""The desired state of an SE's dataplane: listeners, members, tunnel sources.

Validation lives here so that bad input is refused before anything is
written to the kernel: every error names the bad value and what is allowed.
"""

import dataclasses
import ipaddress
import re
from typing import Optional

from amphora_agent.dataplane import maglev
from amphora_agent.dataplane import structs


class InvalidConfig(ValueError):
    """Raised for input the dataplane cannot accept; nothing was changed."""


MAX_WEIGHT = 65535
MAX_CONN_LIMIT = 2 ** 32 - 1
# An idle timeout fits listener.idle_ms (u32 ms, 49 days); Octavia allows
# 24 days (octavia.common.constants.MAX_TIMEOUT).
MAX_IDLE_MS = 2 ** 32 - 1
MAX_POOL_MEMBERS = 2 ** 32 - 1
_LISTENER_RE = re.compile(r'^\[?(?P<vip>[0-9a-fA-F.:]+?)\]?:(?P<port>\d+)'
                          r'(?:/(?P<proto>[a-zA-Z]+))?$')


def parse_address(text, what='address'):
    try:
        return ipaddress.ip_address(str(text).strip('[]'))
    except ValueError:
        raise InvalidConfig(f'{what} {text!r} is not an IPv4 or IPv6 address')


def parse_protocol(text):
    proto = str(text).lower()
    if proto not in structs.PROTOCOLS:
        raise InvalidConfig(
            f'protocol {text!r} is not supported; allowed: '
            f'{", ".join(sorted(p.upper() for p in structs.PROTOCOLS))}')
    return proto


def parse_port(text):
    try:
        port = int(text)
    except (TypeError, ValueError):
        port = None
    if port is None or not 1 <= port <= 65535:
        raise InvalidConfig(f'port {text!r} is not an integer in 1..65535')
    return port


def parse_algorithm(text):
    try:
        return structs.HashAlgorithm[str(text).upper()]
    except KeyError:
        raise InvalidConfig(
            f'algorithm {text!r} is not supported; allowed: '
            f'{", ".join(a.name for a in structs.HashAlgorithm)} '
            '(DSR steers by consistent hash of the client address)')


def parse_encap(text):
    try:
        return structs.Encap[str(text).upper()]
    except KeyError:
        raise InvalidConfig(
            f'encapsulation {text!r} is not supported; allowed: '
            f'{", ".join(e.name.lower() for e in structs.Encap)}')


def parse_weight(text):
    try:
        weight = int(text)
    except (TypeError, ValueError):
        weight = None
    if weight is None or not 0 <= weight <= MAX_WEIGHT:
        raise InvalidConfig(
            f'weight {text!r} is not an integer in 0..{MAX_WEIGHT}')
    return weight


def parse_conn_limit(value):
    """connection_limit: None, 0 and -1 (Octavia's default) mean no
    limit (returned as 0); else an integer 1..2**32-1."""
    if value is None:
        return 0
    given = value
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value), 10)
        except ValueError:
            value = None
    if value is None or not -1 <= value <= MAX_CONN_LIMIT:
        raise InvalidConfig(
            f'connection limit {str(given)!r} is not -1 (no limit) or an '
            f'integer in 0..{MAX_CONN_LIMIT} (0: no limit)')
    return max(value, 0)


def _parse_count(value, limit, what, zero):
    """None or an integer 0..limit (None -> 0); InvalidConfig otherwise,
    naming the field (`what`) and what 0 means (`zero`)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 0 <= value <= limit:
        raise InvalidConfig(
            f'{what} {value!r} is not an integer in 0..{limit} (0: {zero})')
    return value


def parse_idle_timeout(value):
    """timeout_client_data in ms: None and 0 mean none (returned as 0:
    entries live until LRU eviction); else an integer 1..MAX_IDLE_MS."""
    return _parse_count(value, MAX_IDLE_MS, 'idle timeout (ms)', 'none')


def parse_pool_members(value):
    """pool_members: the members the ring is sized for (the pool's
    configured members; None or 0: the members listed)."""
    return _parse_count(value, MAX_POOL_MEMBERS, 'pool_members',
                        'the members listed')


def parse_cidrs(values):
    """An allow list: None (no restriction) or CIDRs -> a sorted tuple of
    ip_network (host bits are cleared, as Octavia does); an empty list
    allows nobody."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    nets = set()
    for value in values:
        try:
            nets.add(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            raise InvalidConfig(
                f'allowed CIDR {value!r} is not a CIDR such as '
                '203.0.113.0/24 or 2001:db8::/32')
    return tuple(sorted(nets, key=lambda n: (n.version, n.network_address,
                                             n.prefixlen)))


@dataclasses.dataclass(frozen=True, order=True)
class ListenerKey:
    vip: ipaddress._BaseAddress
    port: int
    protocol: str = 'tcp'

    @classmethod
    def parse(cls, text):
        """'198.51.100.10:80/tcp' or '[2001:db8::10]:53/udp'."""
        match = _LISTENER_RE.match(str(text).strip())
        if not match:
            raise InvalidConfig(
                f'listener {text!r} is not VIP:PORT[/PROTOCOL], e.g. '
                '198.51.100.10:80/tcp or [2001:db8::10]:53/udp')
        return cls(parse_address(match['vip'], 'VIP'),
                   parse_port(match['port']),
                   parse_protocol(match['proto'] or 'tcp'))

    def __str__(self):
        vip = f'[{self.vip}]' if self.vip.version == 6 else str(self.vip)
        return f'{vip}:{self.port}/{self.protocol}'


# Slots: one per member of every pool (160,000 at 10,000 listeners x 16),
# 110 bytes less each than with a __dict__.
@dataclasses.dataclass(slots=True)
class Member:
    address: ipaddress._BaseAddress
    weight: int = 1
    backup: bool = False


@dataclasses.dataclass
class ListenerSpec:
    """One dataplane listener.  conn_limit: concurrent flows this SE
    admits (0: no limit).  allowed_cidrs: None (anyone) or a tuple of
    ip_network; only the prefixes of the VIP's family apply, so a list
    without one of that family allows nobody.  idle_timeout_ms: a flow
    idle longer loses its conn-table entry (timeout_client_data; 0:
    none)."""
    key: ListenerKey
    algorithm: structs.HashAlgorithm = structs.HashAlgorithm.SOURCE_IP_PORT
    encap: structs.Encap = structs.Encap.IPIP
    members: dict = dataclasses.field(default_factory=dict)
    conn_limit: int = 0
    allowed_cidrs: Optional[tuple] = None
    idle_timeout_ms: int = 0
    # Members the ring is sized for (maglev.ring_size_for): the pool's
    # configured members, so a member going down and up does not resize
    # the ring; at least len(members).  Not part of equality: the maps
    # keep the size, not the count.
    pool_members: int = dataclasses.field(default=0, compare=False)

    def ring_size(self, ceiling):
        """Slots of this listener's ring (0: no members, no ring)."""
        count = max(self.pool_members, len(self.members))
        return maglev.ring_size_for(count, ceiling) if count else 0

    def acl(self):
        """The prefixes this listener's VIP family enforces, or None."""
        if self.allowed_cidrs is None:
            return None
        return frozenset(n for n in self.allowed_cidrs
                         if n.version == self.key.vip.version)

    def to_dict(self):
        return {
            'listener': str(self.key), 'vip': str(self.key.vip),
            'port': self.key.port, 'protocol': self.key.protocol,
            'algorithm': self.algorithm.name,
            'encap': self.encap.name.lower(),
            'connection_limit': self.conn_limit,
            'idle_timeout_ms': self.idle_timeout_ms,
            'allowed_cidrs': (None if self.allowed_cidrs is None
                              else [str(n) for n in self.allowed_cidrs]),
            'members': [{'address': str(m.address), 'weight': m.weight}
                        for m in sorted(self.members.values(),
                                        key=lambda m: m.address.packed)],
        } | ({'pool_members': self.pool_members} if self.pool_members
             else {})


@dataclasses.dataclass
class DesiredState:
    listeners: dict = dataclasses.field(default_factory=dict)
    tunnel_source4: Optional[ipaddress.IPv4Address] = None
    tunnel_source6: Optional[ipaddress.IPv6Address] = None
    icmp_echo: bool = True

    def copy(self):
        return DesiredState(
            listeners={
                k: dataclasses.replace(
                    v, members={a: dataclasses.replace(m)
                                for a, m in v.members.items()})
                for k, v in self.listeners.items()},
            tunnel_source4=self.tunnel_source4,
            tunnel_source6=self.tunnel_source6,
            icmp_echo=self.icmp_echo)

    def validate(self, keys=None):
        """Cross-object checks the parsers cannot make on their own.

        keys: check the members of these listeners only (the others passed
        with the same tunnel sources before); None checks every one."""
        if (self.tunnel_source4 is not None
                and self.tunnel_source4.version != 4):
            raise InvalidConfig(
                f'IPv4 tunnel source {self.tunnel_source4} is not IPv4')
        if (self.tunnel_source6 is not None
                and self.tunnel_source6.version != 6):
            raise InvalidConfig(
                f'IPv6 tunnel source {self.tunnel_source6} is not IPv6')
        listeners = self.listeners.items() if keys is None else (
            (key, self.listeners[key]) for key in keys)
        for key, spec in listeners:
            for address in spec.members:
                source = (self.tunnel_source4 if address.version == 4
                          else self.tunnel_source6)
                if source is None:
                    raise InvalidConfig(
                        f'member {address} of listener {key} needs an '
                        f'IPv{address.version} tunnel source; set one with '
                        f'"tunnel-source set --ipv{address.version}"')

    def to_dict(self):
        return {
            'tunnel_source': {
                'ipv4': str(self.tunnel_source4) if self.tunnel_source4
                else None,
                'ipv6': str(self.tunnel_source6) if self.tunnel_source6
                else None},
            'icmp_echo': self.icmp_echo,
            'listeners': [self.listeners[k].to_dict()
                          for k in sorted(self.listeners,
                                          key=lambda k: (k.vip.version,
                                                         k.vip.packed,
                                                         k.protocol, k.port))],
        }

    @classmethod
    def from_dict(cls, data):
        """Build from the JSON form of to_dict(); unknown keys are errors."""
        if not isinstance(data, dict):
            raise InvalidConfig('state must be a JSON object')
        unknown = set(data) - {'tunnel_source', 'icmp_echo', 'listeners'}
        if unknown:
            raise InvalidConfig(f'unknown state field(s): {sorted(unknown)}')
        state = cls(icmp_echo=bool(data.get('icmp_echo', True)))
        sources = data.get('tunnel_source') or {}
        if sources.get('ipv4'):
            state.tunnel_source4 = parse_address(sources['ipv4'],
                                                 'IPv4 tunnel source')
        if sources.get('ipv6'):
            state.tunnel_source6 = parse_address(sources['ipv6'],
                                                 'IPv6 tunnel source')
        for item in data.get('listeners') or []:
            unknown = set(item) - {'listener', 'vip', 'port', 'protocol',
                                   'algorithm', 'encap', 'members',
                                   'connection_limit', 'allowed_cidrs',
                                   'idle_timeout_ms', 'pool_members'}
            if unknown:
                raise InvalidConfig(
                    f'unknown listener field(s): {sorted(unknown)}')
            if 'listener' in item:
                key = ListenerKey.parse(item['listener'])
            else:
                key = ListenerKey(parse_address(item.get('vip'), 'VIP'),
                                  parse_port(item.get('port')),
                                  parse_protocol(item.get('protocol', 'tcp')))
            if key in state.listeners:
                raise InvalidConfig(f'listener {key} is listed twice')
            spec = ListenerSpec(
                key, parse_algorithm(item.get('algorithm', 'SOURCE_IP_PORT')),
                parse_encap(item.get('encap', 'ipip')),
                conn_limit=parse_conn_limit(item.get('connection_limit')),
                allowed_cidrs=parse_cidrs(item.get('allowed_cidrs')),
                idle_timeout_ms=parse_idle_timeout(
                    item.get('idle_timeout_ms')),
                pool_members=parse_pool_members(item.get('pool_members')))
            for member in item.get('members') or []:
                address = parse_address(member.get('address'),
                                        'member address')
                if address in spec.members:
                    raise InvalidConfig(
                        f'member {address} is listed twice in {key}')
                spec.members[address] = Member(
                    address, parse_weight(member.get('weight', 1)),
                    bool(member.get('backup', False)))
            state.listeners[key] = spec
        state.validate()
        return state
