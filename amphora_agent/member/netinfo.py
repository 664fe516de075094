"""Read-only netlink queries (pyroute2 IPRoute) the member tools share."""

import dataclasses
import ipaddress
import socket

from pyroute2.iproute.linux import RequestProcessor
from pyroute2.netlink.rtnl.ndmsg import NTF_PROXY

IFA_F_NODAD = 0x02
IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08
IFF_UP = 0x1
FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
HOST_PREFIX = {4: 32, 6: 128}


@dataclasses.dataclass
class Link:
    index: int
    ifname: str
    kind: str          # '' for devices without IFLA_LINKINFO (lo, eth)
    data: dict         # IFLA_INFO_DATA attributes by their pyroute2 names
    up: bool
    mtu: int
    rx_packets: int


def _link(msg):
    info = msg.get('IFLA_LINKINFO')
    kind, data = '', {}
    if info is not None:
        kind = info.get('IFLA_INFO_KIND') or ''
        nested = info.get('IFLA_INFO_DATA')
        if nested is not None and hasattr(nested, 'get'):
            data = dict(nested.get('attrs') or [])
    stats = msg.get('IFLA_STATS64') or {}
    return Link(index=msg['index'], ifname=msg.get('IFLA_IFNAME'), kind=kind,
                data=data, up=bool(msg['flags'] & IFF_UP),
                mtu=msg.get('IFLA_MTU') or 0,
                rx_packets=int(stats.get('rx_packets') or 0))


def links(ipr):
    return [_link(m) for m in ipr.get_links()]


def link(ipr, ifname):
    found = ipr.get_links(ifname=ifname) if index(ipr, ifname) else []
    return _link(found[0]) if found else None


def index(ipr, ifname):
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def default_route(ipr, family):
    """(interface name, gateway or None) of the default route, or
    (None, None).  With several next hops the first one is taken."""
    for route in ipr.get_default_routes(family=FAMILY[family]):
        oif, gateway = route.get('RTA_OIF'), route.get('RTA_GATEWAY')
        if oif is None and route.get('RTA_MULTIPATH'):
            hop = route.get('RTA_MULTIPATH')[0]
            oif, gateway = hop['oif'], hop.get('RTA_GATEWAY')
        if oif is not None:
            return ipr.get_links(oif)[0].get('IFLA_IFNAME'), gateway
    return None, None


def route_to(ipr, destination):
    """The route the kernel takes to ``destination``: a dict with oif
    (name), gateway, prefsrc, advmss (0 when not set), type."""
    route = ipr.route('get', dst=str(destination))[0]
    metrics = route.get('RTA_METRICS')
    advmss = metrics.get('RTAX_ADVMSS') if metrics is not None else None
    oif = route.get('RTA_OIF')
    return {'oif': ipr.get_links(oif)[0].get('IFLA_IFNAME') if oif else None,
            'gateway': route.get('RTA_GATEWAY'),
            'prefsrc': route.get('RTA_PREFSRC'),
            'advmss': advmss or 0,
            'type': route['type']}


@dataclasses.dataclass(frozen=True)
class Address:
    address: object    # ipaddress.IPv4Address / IPv6Address
    prefixlen: int
    ifname: str
    flags: int

    @property
    def tentative(self):
        return bool(self.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED))


def addresses(ipr, ifname=None):
    """Every address (or those on ``ifname``)."""
    names = {m['index']: m.get('IFLA_IFNAME') for m in ipr.get_links()}
    kwargs = {}
    if ifname is not None:
        kwargs['index'] = index(ipr, ifname)
        if kwargs['index'] is None:
            return []
    result = []
    for msg in ipr.get_addr(**kwargs):
        flags = msg.get('IFA_FLAGS')
        result.append(Address(
            ipaddress.ip_address(msg.get('IFA_ADDRESS')), msg['prefixlen'],
            names.get(msg['index'], str(msg['index'])),
            msg['flags'] if flags is None else flags))
    return result


def global_addresses(ipr, ifname, family):
    """Unicast global addresses of ``family`` on ``ifname``, primary first."""
    return [a.address for a in addresses(ipr, ifname)
            if a.address.version == family and not a.address.is_link_local
            and not a.address.is_loopback]


def where(ipr, address):
    """The Address records holding ``address`` (any interface)."""
    address = ipaddress.ip_address(address)
    return [a for a in addresses(ipr) if a.address == address]


def neigh_proxies(ipr):
    """[(address, ifname)] of the IPv6 proxy-NDP entries."""
    names = {m['index']: m.get('IFLA_IFNAME') for m in ipr.get_links()}
    # A proxy dump needs NTF_PROXY in the request header; pyroute2 puts
    # dump keywords into its filter unless a dump_filter is given.
    found = ipr.neigh('dump', family=socket.AF_INET6, flags=NTF_PROXY,
                      dump_filter=RequestProcessor())
    return [(ipaddress.ip_address(m.get('NDA_DST')),
             names.get(m['ifindex'], str(m['ifindex']))) for m in found]


def neighbour_mac(ipr, address, ifname):
    """The link-layer address of a resolved neighbour, or None."""
    idx = index(ipr, ifname)
    for msg in ipr.get_neighbours(dst=str(address), ifindex=idx):
        lladdr = msg.get('NDA_LLADDR')
        if lladdr and msg['state'] not in (0x20, 0x01):  # FAILED/INCOMPLETE
            return lladdr
    return None


def default_advmss(ipr, family):
    """The advmss metric of the default route (0: none set)."""
    for route in ipr.get_default_routes(family=FAMILY[family]):
        metrics = route.get('RTA_METRICS')
        if metrics is not None:
            return metrics.get('RTAX_ADVMSS') or 0
    return 0


def link_address(ipr, ifname):
    """The link-layer address of ``ifname``."""
    return ipr.get_links(ifname=ifname)[0].get('IFLA_ADDRESS')
