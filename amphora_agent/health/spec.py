"""What to probe: health monitor specifications and probe targets.

A monitor is validated by dsr_wire.schema, the definition the provider
and the snapshot parser use too; every error is an :class:`InvalidMonitor`
naming the bad field, the bad value and what is allowed.  Nothing here does
I/O.
"""

import dataclasses
import ipaddress
from typing import Optional

from dsr_wire import schema

# Monitor types (octavia.common.constants HEALTH_MONITOR_*).
TCP = 'TCP'
HTTP = 'HTTP'
HTTPS = 'HTTPS'
PING = 'PING'
TLS_HELLO = 'TLS-HELLO'
UDP_CONNECT = 'UDP-CONNECT'
# One definition, shared with the provider and the snapshot parser.
MONITOR_TYPES = schema.MONITOR_TYPES
HTTP_TYPES = schema.HTTP_MONITOR_TYPES
HTTP_METHODS = schema.HTTP_METHODS
HTTP_VERSIONS = schema.HTTP_VERSIONS
MIN_RETRIES = schema.MIN_RETRIES
MAX_RETRIES = schema.MAX_RETRIES
DEFAULT_MAX_RETRIES_DOWN = schema.DEFAULT_MAX_RETRIES_DOWN
DEFAULT_HTTP_METHOD = schema.DEFAULT_HTTP_METHOD
DEFAULT_URL_PATH = schema.DEFAULT_URL_PATH
DEFAULT_EXPECTED_CODES = schema.DEFAULT_EXPECTED_CODES
MAX_DELAY = schema.MAX_DELAY


class InvalidMonitor(ValueError):
    """A monitor or target the checker cannot accept; the message names the
    field, the value and what is allowed."""


def _fail(field, value, allowed):
    raise InvalidMonitor(f'{field} {value!r} is invalid: {allowed}')


def parse_expected_codes(text):
    """``"200"``, ``"200,202"``, ``"200-204"`` (and mixes such as
    ``"200,202-204"``; spaces around commas as Octavia allows them) ->
    frozenset of HTTP status codes in 100..599 (dsr_wire.schema)."""
    try:
        return schema.parse_expected_codes(
            schema.normalize_expected_codes(text))
    except schema.Invalid as exc:
        raise InvalidMonitor(str(exc)) from None


@dataclasses.dataclass(frozen=True)
class MonitorSpec:
    """One Octavia health monitor.

    ``delay``: seconds between the starts of two probes of a member (or
    from the end of a probe that ran past the next start to the next);
    ``timeout``: seconds one probe may take (may exceed ``delay``, as in
    Octavia);
    ``max_retries``: consecutive successes that bring an ERROR member back
    ONLINE (Octavia's rise threshold); ``max_retries_down``: consecutive
    failures that take an ONLINE member to ERROR (fall threshold).
    ``http_method``, ``url_path``, ``expected_codes``, ``http_version`` and
    ``domain_name`` matter for HTTP and HTTPS only (None -> the Octavia
    default) and are ignored for other types.  Delay and timeout may be
    fractions of a second (Octavia sends integers).
    """

    type: str
    delay: float
    timeout: float
    max_retries: int
    max_retries_down: int = DEFAULT_MAX_RETRIES_DOWN
    http_method: Optional[str] = DEFAULT_HTTP_METHOD
    url_path: Optional[str] = DEFAULT_URL_PATH
    expected_codes: Optional[str] = DEFAULT_EXPECTED_CODES
    http_version: Optional[float] = None
    domain_name: Optional[str] = None
    codes: frozenset = dataclasses.field(init=False, repr=False,
                                         compare=False, default=frozenset())

    def __post_init__(self):
        set_ = object.__setattr__

        def upper(value):
            return value.upper() if isinstance(value, str) else value
        set_(self, 'type', upper(self.type))
        set_(self, 'http_method', upper(self.http_method
                                        or DEFAULT_HTTP_METHOD))
        set_(self, 'url_path', self.url_path or DEFAULT_URL_PATH)
        set_(self, 'expected_codes', schema.normalize_expected_codes(
            self.expected_codes or DEFAULT_EXPECTED_CODES))
        values = {name: getattr(self, name) for name in (
            'type', 'delay', 'timeout', 'max_retries', 'max_retries_down',
            'http_method', 'url_path', 'expected_codes', 'http_version',
            'domain_name')}
        for optional in ('http_version', 'domain_name'):
            if values[optional] is None:
                del values[optional]
        try:
            schema.check_monitor_spec(values)
        except schema.Invalid as exc:
            raise InvalidMonitor(str(exc)) from None
        set_(self, 'codes', schema.parse_expected_codes(self.expected_codes))
        if self.http_version is not None:
            set_(self, 'http_version', float(self.http_version))

    @classmethod
    def from_octavia(cls, monitor):
        """A MonitorSpec from an Octavia / octavia-lib health monitor (a
        dict or an object with the same attribute names), or None when the
        monitor is absent or admin-down (its members are NO_MONITOR, as with
        Octavia's amphora driver)."""
        if monitor is None:
            return None

        def get(name, default=None):
            if isinstance(monitor, dict):
                value = monitor.get(name, default)
            else:
                value = getattr(monitor, name, default)
            # octavia-lib marks unset attributes with an Unset object.
            if type(value).__name__ == 'UnsetType':
                return default
            return value
        if get('admin_state_up', True) is False:
            return None
        retries_down = get('max_retries_down')
        return cls(type=get('type'), delay=get('delay'),
                   timeout=get('timeout'), max_retries=get('max_retries'),
                   max_retries_down=(DEFAULT_MAX_RETRIES_DOWN
                                     if retries_down is None
                                     else retries_down),
                   http_method=get('http_method'), url_path=get('url_path'),
                   expected_codes=get('expected_codes'),
                   http_version=get('http_version'),
                   domain_name=get('domain_name'))


def _address(value, field='address'):
    try:
        return ipaddress.ip_address(
            value if isinstance(value, (ipaddress.IPv4Address,
                                        ipaddress.IPv6Address))
            else str(value).strip('[]'))
    except ValueError:
        _fail(field, value, 'an IPv4 or IPv6 address')


@dataclasses.dataclass(frozen=True)
class Target:
    """One member to probe: its address and port (the caller passes the
    member's monitor_address / monitor_port when set, else its address /
    protocol_port), the pool's monitor (None: NO_MONITOR) and the member's
    effective admin state (False: OFFLINE, never probed).

    ``address`` is normalised to its canonical text form; ``port`` must be
    1..65535 when the monitor needs one (every type but PING).
    """

    address: str
    port: Optional[int] = None
    monitor: Optional[MonitorSpec] = None
    admin_state_up: bool = True

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, 'address', str(_address(self.address)))
        if self.monitor is not None and \
                not isinstance(self.monitor, MonitorSpec):
            _fail('monitor', self.monitor, 'a MonitorSpec or None')
        if not isinstance(self.admin_state_up, bool):
            _fail('admin_state_up', self.admin_state_up, 'true or false')
        port = self.port
        if port is not None:
            if isinstance(port, bool) or not isinstance(port, int) \
                    or not 1 <= port <= 65535:
                _fail('port', port, 'an integer in 1..65535')
        elif self.monitor is not None and self.monitor.type != PING:
            _fail('port', port, f'an integer in 1..65535 (a '
                                f'{self.monitor.type} monitor needs a port)')

    @property
    def family(self):
        return 6 if ':' in self.address else 4

    @property
    def probed(self):
        """True when the checker sends probes for this target."""
        return self.admin_state_up and self.monitor is not None
