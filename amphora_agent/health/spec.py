"""What to probe: health monitor specifications and probe targets.

Validation follows the Octavia API (octavia/api/v2/types/health_monitor.py)
and the agent protocol (docs/agent-protocol.md): every error is an
:class:`InvalidMonitor` naming the bad field, the bad value and what is
allowed.  Nothing here does I/O.
"""

import dataclasses
import ipaddress
import re
from typing import Optional

# Monitor types (octavia.common.constants HEALTH_MONITOR_*).
TCP = 'TCP'
HTTP = 'HTTP'
HTTPS = 'HTTPS'
PING = 'PING'
TLS_HELLO = 'TLS-HELLO'
UDP_CONNECT = 'UDP-CONNECT'
MONITOR_TYPES = (HTTP, HTTPS, PING, TCP, TLS_HELLO, UDP_CONNECT)
HTTP_TYPES = (HTTP, HTTPS)

# octavia.common.constants.SUPPORTED_HEALTH_MONITOR_HTTP_METHODS
HTTP_METHODS = ('CONNECT', 'DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH',
                'POST', 'PUT', 'TRACE')
HTTP_VERSIONS = (1.0, 1.1)
# octavia.common.constants MIN_HM_RETRIES / MAX_HM_RETRIES
MIN_RETRIES = 1
MAX_RETRIES = 10
DEFAULT_MAX_RETRIES_DOWN = 3
DEFAULT_HTTP_METHOD = 'GET'
DEFAULT_URL_PATH = '/'
DEFAULT_EXPECTED_CODES = '200'
MAX_DELAY = 86400

_CODE_ITEM_RE = re.compile(r'^(\d{3})(?:-(\d{3}))?$')
_DOMAIN_RE = re.compile(
    r'^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)'
    r'(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$')


class InvalidMonitor(ValueError):
    """A monitor or target the checker cannot accept; the message names the
    field, the value and what is allowed."""


def _fail(field, value, allowed):
    raise InvalidMonitor(f'{field} {value!r} is invalid: {allowed}')


def parse_expected_codes(text):
    """``"200"``, ``"200,202"``, ``"200-204"`` (and mixes such as
    ``"200,202-204"``) -> frozenset of HTTP status codes.

    Octavia's API accepts a comma list of codes or one range; the agent
    protocol also allows ranges inside a list, so both are accepted here.
    Codes must be in 100..599 and a range must not be reversed.
    """
    allowed = ('a status code, a comma list or a range of codes in '
               '100..599, e.g. "200", "200,202", "200-204"')
    if not isinstance(text, str) or not text.strip():
        _fail('expected_codes', text, allowed)
    codes = set()
    for item in text.split(','):
        m = _CODE_ITEM_RE.match(item.strip())
        if not m:
            _fail('expected_codes', text, allowed)
        low = int(m.group(1))
        high = int(m.group(2) or low)
        if not (100 <= low <= 599 and 100 <= high <= 599) or high < low:
            _fail('expected_codes', text, allowed)
        codes.update(range(low, high + 1))
    return frozenset(codes)


def _number(field, value, low_exclusive, high):
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or value != value or not low_exclusive < value <= high:
        _fail(field, value, f'a number of seconds > {low_exclusive} and '
                            f'<= {high}')
    return value


def _retries(field, value):
    if isinstance(value, bool) or not isinstance(value, int) \
            or not MIN_RETRIES <= value <= MAX_RETRIES:
        _fail(field, value,
              f'an integer in {MIN_RETRIES}..{MAX_RETRIES}')
    return value


@dataclasses.dataclass(frozen=True)
class MonitorSpec:
    """One Octavia health monitor.

    ``delay``: seconds between the starts of two probes of a member;
    ``timeout``: seconds one probe may take (<= delay);
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
        kind = self.type.upper() if isinstance(self.type, str) else self.type
        if kind not in MONITOR_TYPES:
            _fail('type', self.type,
                  f'one of {", ".join(MONITOR_TYPES)}')
        set_(self, 'type', kind)
        _number('delay', self.delay, 0, MAX_DELAY)
        _number('timeout', self.timeout, 0, MAX_DELAY)
        if self.timeout > self.delay:
            _fail('timeout', self.timeout,
                  f'must not exceed delay ({self.delay})')
        _retries('max_retries', self.max_retries)
        _retries('max_retries_down', self.max_retries_down)

        method = self.http_method or DEFAULT_HTTP_METHOD
        if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
            _fail('http_method', self.http_method,
                  f'one of {", ".join(HTTP_METHODS)}')
        set_(self, 'http_method', method.upper())

        path = self.url_path or DEFAULT_URL_PATH
        if not isinstance(path, str) or not path.startswith('/') or \
                any(c.isspace() or ord(c) < 0x21 or ord(c) == 0x7f
                    for c in path):
            _fail('url_path', self.url_path,
                  'a path starting with "/" without spaces or control '
                  'characters')
        set_(self, 'url_path', path)

        codes = self.expected_codes or DEFAULT_EXPECTED_CODES
        set_(self, 'codes', parse_expected_codes(codes))
        set_(self, 'expected_codes', codes)

        if self.http_version is not None:
            if isinstance(self.http_version, bool) or \
                    self.http_version not in HTTP_VERSIONS:
                _fail('http_version', self.http_version,
                      'one of 1.0, 1.1 or None (1.0)')
            set_(self, 'http_version', float(self.http_version))
        if self.domain_name is not None and (
                not isinstance(self.domain_name, str) or
                not _DOMAIN_RE.match(self.domain_name)):
            _fail('domain_name', self.domain_name, 'a DNS host name')

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
