"""What a member is prepared for: VIPs, encapsulations, tunnel addresses,
service ports, and the bytes each encapsulation adds."""

import dataclasses
import ipaddress

ENCAPS = ('ipip', 'gre')
DECAP_MODES = ('auto', 'kernel', 'ebpf')
PROTOCOLS = ('tcp', 'udp')

# The SE's outer header, plus GRE's 4-byte base header (no key, checksum or
# sequence number: see dataplane/bpf/decap.h).
OUTER_HEADER = {4: 20, 6: 40}
GRE_HEADER = 4
DEFAULT_CLIENT_MTU = 1500


class SpecError(ValueError):
    pass


def overhead(encap, outer_family):
    """Bytes an SE adds in front of a client packet."""
    return OUTER_HEADER[outer_family] + (GRE_HEADER if encap == 'gre' else 0)


def _unicast(text, what):
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise SpecError(f'{what} {text!r} is not an IP address')
    if (address.is_loopback or address.is_multicast or address.is_unspecified
            or address.is_link_local):
        raise SpecError(f'{what} {address} is not a unicast address')
    return address


def parse_vip(text):
    return _unicast(text, 'VIP')


def parse_source(text):
    return _unicast(text, 'SE source')


@dataclasses.dataclass(frozen=True, order=True)
class Port:
    number: int
    protocol: str = 'tcp'

    @classmethod
    def parse(cls, text):
        """'80', '80/tcp' or '53/udp'."""
        number, _, protocol = str(text).partition('/')
        protocol = (protocol or 'tcp').lower()
        try:
            value = int(number)
        except ValueError:
            value = 0
        if not 1 <= value <= 65535 or protocol not in PROTOCOLS:
            raise SpecError(f'port {text!r}: give PORT or PORT/tcp|udp '
                            '(1..65535)')
        return cls(value, protocol)

    def __str__(self):
        return f'{self.number}/{self.protocol}'


@dataclasses.dataclass
class MemberSpec:
    """The inputs of setup and check (also recorded in the state file)."""

    vips: list
    encaps: tuple = ('ipip',)
    interface: str = None        # where the SEs' packets arrive (uplink)
    addresses: list = dataclasses.field(default_factory=list)  # tunnel dsts
    ports: list = dataclasses.field(default_factory=list)
    client_mtu: int = DEFAULT_CLIENT_MTU
    # The SEs' tunnel sources: only their packets are decapsulated (eBPF
    # decap); empty: from any source.
    sources: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.vips = sorted({parse_vip(str(v)) for v in self.vips},
                           key=lambda a: (a.version, a))
        if not self.vips:
            raise SpecError('give at least one --vip')
        encaps = tuple(dict.fromkeys(self.encaps or ('ipip',)))
        for encap in encaps:
            if encap not in ENCAPS:
                raise SpecError(f'encapsulation {encap!r}: allowed '
                                f'{", ".join(ENCAPS)}')
        self.encaps = encaps
        self.addresses = [ipaddress.ip_address(str(a))
                          for a in self.addresses]
        self.ports = sorted({p if isinstance(p, Port) else Port.parse(p)
                             for p in self.ports})
        self.sources = sorted({parse_source(str(a)) for a in self.sources},
                              key=lambda a: (a.version, a))

    def vips_of(self, family):
        return [v for v in self.vips if v.version == family]

    @property
    def families(self):
        return sorted({v.version for v in self.vips})

    def address_of(self, family):
        for address in self.addresses:
            if address.version == family:
                return address
        return None

    def max_overhead(self, outer_family):
        return max(overhead(e, outer_family) for e in self.encaps)

    def to_dict(self):
        return {'vips': [str(v) for v in self.vips],
                'encaps': list(self.encaps),
                'interface': self.interface,
                'addresses': [str(a) for a in self.addresses],
                'ports': [str(p) for p in self.ports],
                'client_mtu': self.client_mtu,
                'sources': [str(a) for a in self.sources]}

    @classmethod
    def from_dict(cls, data):
        return cls(vips=data['vips'], encaps=tuple(data.get('encaps') or ()),
                   interface=data.get('interface'),
                   addresses=data.get('addresses') or [],
                   ports=data.get('ports') or [],
                   client_mtu=data.get('client_mtu', DEFAULT_CLIENT_MTU),
                   sources=data.get('sources') or [])
