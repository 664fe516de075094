"""The BGP speaker's configuration and its rendering for ExaBGP 5.

Pure functions and value objects, no I/O: unit-testable on their own.

One ExaBGP process per SE.  Every peer is a ``neighbor`` block carrying the
family of its address only (a v4 session for IPv4 VIPs, a native v6 session
for IPv6 VIPs), ``local-address`` = the SE's address of that family, no
graceful-restart capability (ExaBGP's default: off; with it, routers would
keep a dead SE's routes for the restart time), ``adj-rib-out`` on (ExaBGP
keeps what it announced and replays it when a session comes back; the
speaker reads it back with ``show adj-rib out``).

Routes are not in the file: the agent announces them at run time through the
API helper process (exabgp_api.py, a ``process`` of this config), each one
as ``neighbor <peer> announce route <vip>/32 next-hop <SE v4>`` (or /128 with
the SE's v6 address), so that an ExaBGP restart for a config change never
carries stale routes.

MD5 passwords are written base64-encoded (``md5-base64 true``): no quoting
problem whatever characters the password holds.
"""

import base64
import dataclasses
import hashlib
import ipaddress
import json
import os
import pwd
import re

API_PROCESS = 'octavia-dsr-api'
MAX_MD5_PASSWORD = 80          # RFC 2385 / TCP_MD5SIG_MAXKEYLEN
DEFAULT_HOLD_TIME = 9
LOG_LEVELS = ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')
_SAFE_PATH = re.compile(r'^/[A-Za-z0-9_./+@%=:-]*$')


class ConfigError(ValueError):
    """The speaker configuration is invalid."""


def _ip(value, what):
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise ConfigError(f'{what}: {value!r} is not an IP address') from None


def _asn(value, what):
    try:
        asn = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f'{what}: {value!r} is not an AS number') from None
    if not 1 <= asn <= 4294967295:
        raise ConfigError(f'{what}: AS number {asn} out of range')
    return asn


def _hold_time(value, what):
    try:
        hold = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f'{what}: hold time {value!r} is not an integer'
                          ) from None
    if hold != 0 and not 3 <= hold <= 65535:
        raise ConfigError(f'{what}: hold time must be 0 or 3..65535 seconds')
    return hold


def host_prefix(prefix):
    """'192.0.2.10' or '192.0.2.10/32' -> IPv4Network('192.0.2.10/32');
    likewise /128 for IPv6.  Anything wider than a host route is refused:
    the speaker only announces VIPs."""
    try:
        net = ipaddress.ip_network(str(prefix).strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f'{prefix!r} is not a host prefix: {exc}') from None
    if net.prefixlen != net.max_prefixlen:
        raise ValueError(f'{prefix!r}: only /32 (IPv4) and /128 (IPv6) VIPs '
                         'are announced')
    return net


@dataclasses.dataclass(frozen=True)
class Peer:
    """One BGP neighbour (a router) of the SE."""
    address: str
    asn: int
    password: str = None        # TCP MD5 (RFC 2385); None: none
    hold_time: int = DEFAULT_HOLD_TIME
    local_address: str = None   # default: the SE's next hop of the family

    def __post_init__(self):
        addr = _ip(self.address, 'peer address')
        object.__setattr__(self, 'address', str(addr))
        object.__setattr__(self, 'asn', _asn(self.asn, f'peer {addr}'))
        object.__setattr__(self, 'hold_time',
                           _hold_time(self.hold_time, f'peer {addr}'))
        if self.local_address is not None:
            local = _ip(self.local_address, f'peer {addr} local address')
            if local.version != addr.version:
                raise ConfigError(f'peer {addr}: local address {local} is '
                                  'not of the same family')
            object.__setattr__(self, 'local_address', str(local))
        if self.password is not None:
            if not isinstance(self.password, str) or not self.password:
                raise ConfigError(f'peer {addr}: empty MD5 password')
            if len(self.password.encode()) > MAX_MD5_PASSWORD:
                raise ConfigError(f'peer {addr}: MD5 password longer than '
                                  f'{MAX_MD5_PASSWORD} bytes')

    @property
    def family(self):
        """4 or 6: the family of the session, and of the routes it
        carries."""
        return ipaddress.ip_address(self.address).version

    def __repr__(self):  # never print the password
        pw = '***' if self.password else None
        return (f'Peer(address={self.address!r}, asn={self.asn}, '
                f'password={pw}, hold_time={self.hold_time}, '
                f'local_address={self.local_address!r})')


def parse_peer(spec, default_password=None, default_hold_time=None):
    """Parse an operator's peer spec: ``ADDRESS ASN [key=value ...]`` with
    keys ``hold_time``, ``password``, ``local_address``, e.g.
    ``"198.18.1.1 65000"`` or ``"2001:db8::1 65000 hold_time=30"``.
    Space-separated so IPv6 addresses need no escaping."""
    words = str(spec).split()
    if len(words) < 2:
        raise ConfigError(f'peer {spec!r}: expected "ADDRESS ASN '
                          '[hold_time=N] [password=P] [local_address=A]"')
    kwargs = {'address': words[0], 'asn': words[1]}
    if default_password:
        kwargs['password'] = default_password
    if default_hold_time is not None:
        kwargs['hold_time'] = default_hold_time
    for word in words[2:]:
        key, sep, value = word.partition('=')
        if not sep or key not in ('hold_time', 'password', 'local_address'):
            raise ConfigError(f'peer {spec!r}: unknown option {word!r}')
        kwargs[key] = value
    return Peer(**kwargs)


@dataclasses.dataclass(frozen=True)
class SpeakerConfig:
    """Everything ExaBGP's configuration is made of."""
    local_asn: int
    router_id: str
    peers: tuple
    nexthop4: str = None     # the SE's IPv4 address: next hop of v4 VIPs
    nexthop6: str = None     # the SE's IPv6 address: next hop of v6 VIPs

    def __post_init__(self):
        object.__setattr__(self, 'local_asn',
                           _asn(self.local_asn, 'local AS'))
        rid = _ip(self.router_id, 'router id')
        if rid.version != 4:
            raise ConfigError('router id must be an IPv4 address')
        object.__setattr__(self, 'router_id', str(rid))
        for attr, fam in (('nexthop4', 4), ('nexthop6', 6)):
            value = getattr(self, attr)
            if value is None:
                continue
            nh = _ip(value, attr)
            if nh.version != fam:
                raise ConfigError(f'{attr}: {nh} is not IPv{fam}')
            object.__setattr__(self, attr, str(nh))
        peers = tuple(p if isinstance(p, Peer) else Peer(**p)
                      for p in self.peers)
        if not peers:
            raise ConfigError('at least one BGP peer is needed')
        seen = set()
        for p in peers:
            if p.address in seen:
                raise ConfigError(f'peer {p.address} configured twice')
            seen.add(p.address)
            if self.nexthop(p.family) is None:
                raise ConfigError(f'peer {p.address} is IPv{p.family} but '
                                  f'the SE has no IPv{p.family} next hop')
        object.__setattr__(self, 'peers',
                           tuple(sorted(peers, key=lambda p: (p.family,
                                                              p.address))))

    def nexthop(self, family):
        return self.nexthop4 if family == 4 else self.nexthop6

    def peers_of(self, family):
        return [p for p in self.peers if p.family == family]

    def local_address(self, peer):
        return peer.local_address or self.nexthop(peer.family)


def config_from_options(opts, nexthop4=None, nexthop6=None):
    """SpeakerConfig from an oslo.config group (or any object) with the
    attributes ``local_asn``, ``router_id``, ``peers`` (list of
    :func:`parse_peer` specs), ``md5_password``, ``hold_time``,
    ``nexthop_ipv4``, ``nexthop_ipv6``.  ``nexthop4``/``nexthop6``: the
    SE's own addresses, used when the options leave the next hops unset;
    the router id defaults to the IPv4 next hop."""
    nh4 = getattr(opts, 'nexthop_ipv4', None) or nexthop4
    nh6 = getattr(opts, 'nexthop_ipv6', None) or nexthop6
    router_id = getattr(opts, 'router_id', None) or nh4
    if not router_id:
        raise ConfigError('bgp router_id is needed when the SE has no IPv4 '
                          'address')
    hold = getattr(opts, 'hold_time', None)
    peers = [parse_peer(spec, getattr(opts, 'md5_password', None),
                        DEFAULT_HOLD_TIME if hold is None else hold)
             for spec in (getattr(opts, 'peers', None) or [])]
    return SpeakerConfig(local_asn=getattr(opts, 'local_asn', None),
                         router_id=router_id, peers=tuple(peers),
                         nexthop4=nh4, nexthop6=nh6)


def _check_path(path, what):
    path = str(path)
    if not _SAFE_PATH.match(path):
        raise ConfigError(f'{what} {path!r}: must be absolute, without '
                          'spaces or quotes (ExaBGP config token)')
    return path


def render_config(config, api_argv):
    """The ExaBGP configuration file text.

    ``api_argv``: argv of the API helper process (absolute paths; ExaBGP
    starts it and restarts it if it dies).
    """
    run = ' '.join(a if a.startswith('-') else
                   _check_path(a, 'API helper argument') for a in api_argv)
    lines = [
        '# Generated by the octavia-dsr amphora agent: do not edit.',
        '# Routes are announced at run time through the API process.',
        '',
        f'process {API_PROCESS} {{',
        f'    run {run};',
        '    encoder text;',
        '}',
    ]
    for p in config.peers:
        afi = 'ipv4' if p.family == 4 else 'ipv6'
        lines += [
            '',
            f'neighbor {p.address} {{',
            f'    description "octavia-dsr peer AS{p.asn}";',
            f'    router-id {config.router_id};',
            f'    local-address {config.local_address(p)};',
            f'    local-as {config.local_asn};',
            f'    peer-as {p.asn};',
            f'    hold-time {p.hold_time};',
            '    adj-rib-out true;',
            '    group-updates true;',
        ]
        if p.password:
            b64 = base64.b64encode(p.password.encode()).decode()
            lines += [
                '    md5-base64 true;',
                f'    md5-password {b64};',
            ]
        lines += [
            '    family {',
            f'        {afi} unicast;',
            '    }',
            '    api {',
            f'        processes [ {API_PROCESS} ];',
            '    }',
            '}',
        ]
    return '\n'.join(lines) + '\n'


# ExaBGP's reactor.speed: its loop sleeps speed/100 s when nothing is
# ready (peer sockets and the API process's pipe wake it at once), and
# its timers (keepalive, hold, connect retry) are looked at once a loop.
# The default (1.0) wakes it a hundred times a second, 1.7-2 % of a core
# for an idle speaker; 5.0 wakes it twenty times (0.5 %), a 50 ms
# granularity for timers counted in seconds (docs/benchmarks.md,
# "Session 32": announce, withdraw, BFD and hold-timer figures unchanged).
REACTOR_SPEED = '5.0'


def render_env(log_level='INFO', user=None):
    """ExaBGP's environment (INI) file: its loop's pace (REACTOR_SPEED),
    our API process with acks, no named pipe CLI, no daemonising (the
    speaker detaches it), no privilege drop (the API helper must reach its
    socket in the state dir), no listening socket (ExaBGP connects out),
    logs to stdout (the speaker's log file)."""
    if str(log_level).upper() not in LOG_LEVELS:
        raise ConfigError(f'ExaBGP log level {log_level!r}: one of '
                          f'{", ".join(LOG_LEVELS)}')
    log_level = str(log_level).upper()
    if user is None:
        user = pwd.getpwuid(os.getuid()).pw_name
    sections = {
        'exabgp.reactor': {'speed': REACTOR_SPEED},
        'exabgp.api': {'ack': 'true', 'cli': 'false', 'encoder': 'text',
                       'respawn': 'true', 'terminate': 'false'},
        'exabgp.daemon': {'daemonize': 'false', 'drop': 'false',
                          'user': user},
        'exabgp.log': {'destination': 'stdout', 'level': log_level,
                       'short': 'false'},
    }
    out = ['# Generated by the octavia-dsr amphora agent: do not edit.']
    for name, values in sections.items():
        out.append(f'[{name}]')
        out += [f'{k} = {v}' for k, v in values.items()]
        out.append('')
    return '\n'.join(out)


def digest(config_text, env_text, argv):
    """Fingerprint of everything that defines a running ExaBGP: a restarted
    agent adopts the running process only when this is unchanged."""
    h = hashlib.sha256()
    for part in (config_text, env_text, json.dumps(list(argv))):
        h.update(part.encode())
        h.update(b'\0')
    return h.hexdigest()


def route_command(action, peer, prefix, nexthop=None):
    """ExaBGP API command announcing/withdrawing ``prefix`` to one peer."""
    net = host_prefix(prefix)
    if action == 'announce':
        if nexthop is None:
            raise ValueError('announce needs a next hop')
        nh = ipaddress.ip_address(nexthop)
        if nh.version != net.version:
            raise ValueError(f'next hop {nh} is not of the family of {net}')
        return (f'neighbor {peer.address} announce route {net} '
                f'next-hop {nh}')
    if action == 'withdraw':
        return f'neighbor {peer.address} withdraw route {net}'
    raise ValueError(f'unknown action {action!r}')


def parse_adj_rib_out(lines):
    """``show adj-rib out`` text lines -> {peer address: {prefix: next hop}}.

    A line reads ``<peer> <afi> <safi> <prefix> next-hop <nh> [...]``; lines
    of other families (or anything unexpected) are ignored."""
    rib = {}
    for line in lines:
        words = line.split()
        if len(words) < 4 or words[2] != 'unicast' or \
                words[1] not in ('ipv4', 'ipv6'):
            continue
        try:
            peer = str(ipaddress.ip_address(words[0]))
            net = ipaddress.ip_network(words[3], strict=False)
        except ValueError:
            continue
        nh = None
        if 'next-hop' in words:
            i = words.index('next-hop')
            if i + 1 < len(words):
                nh = words[i + 1]
        rib.setdefault(peer, {})[str(net)] = nh
    return rib


def plan_changes(config, desired, rib):
    """What to send so that every peer carries exactly ``desired``.

    ``desired``: iterable of host prefixes (v4 and v6 mixed); each goes to
    the peers of its family with the SE's next hop of that family.
    ``rib``: {peer address: {prefix: next hop}} as ExaBGP reports it.

    Returns ``(announce, withdraw, unroutable)``: lists of (peer, prefix,
    next hop) to announce (missing, or with a wrong next hop), of (peer,
    prefix) to withdraw (extra), and the set of desired prefixes that no
    peer can carry (no peer of their family).
    """
    want = {str(host_prefix(p)) for p in desired}
    announce, withdraw = [], []
    carried = set()
    for peer in config.peers:
        nh = config.nexthop(peer.family)
        have = rib.get(peer.address, {})
        mine = {p for p in want
                if ipaddress.ip_network(p).version == peer.family}
        carried |= mine
        for p in sorted(mine):
            if p not in have or have[p] != nh:
                announce.append((peer, p, nh))
        for p in sorted(set(have) - mine):
            withdraw.append((peer, p))
    return announce, withdraw, want - carried
