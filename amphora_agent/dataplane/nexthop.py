"""Next hops towards members, resolved from the kernel's routes and neighbours.

The SE program reads a cached (ifindex, MACs, MTU) per member instead of
calling bpf_fib_lookup on every packet; this module fills that cache.  It
runs in the SE's network namespace (the caller's).
"""

import dataclasses
import errno
import logging
import socket
import time

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

LOG = logging.getLogger(__name__)

# NUD states that carry a usable link-layer address.
_NUD_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80  # REACHABLE..PERMANENT
_DISCARD_PORT = 9


@dataclasses.dataclass(frozen=True)
class ResolvedNexthop:
    ifindex: int
    smac: str
    dmac: str
    mtu: int


def _mac_bytes(mac):
    return bytes(int(part, 16) for part in mac.split(':'))


class NexthopResolver:
    """Resolves member addresses to next hops; cheap to call repeatedly."""

    def __init__(self, resolve_timeout=1.0):
        self.resolve_timeout = resolve_timeout
        self._ipr = IPRoute()

    def close(self):
        self._ipr.close()

    def _route(self, address):
        try:
            routes = self._ipr.route('get', dst=str(address))
        except NetlinkError as exc:
            if exc.code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                return None
            raise
        return routes[0] if routes else None

    def _neighbour_mac(self, gateway, ifindex):
        for neigh in self._ipr.get_neighbours(dst=gateway, ifindex=ifindex):
            mac = neigh.get('NDA_LLADDR')
            if mac and neigh['state'] & _NUD_USABLE:
                return mac
        return None

    @staticmethod
    def _provoke_resolution(address):
        """Make the kernel resolve the next hop by sending it one datagram."""
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(b'', (str(address), _DISCARD_PORT))
            except OSError as exc:
                LOG.debug('probe to %s failed: %s', address, exc)

    def resolve(self, address):
        """The next hop for a member address, or None if unresolvable."""
        route = self._route(address)
        if route is None:
            LOG.warning('no route to member %s', address)
            return None
        ifindex = route.get('RTA_OIF')
        gateway = route.get('RTA_GATEWAY') or str(address)
        deadline = time.monotonic() + self.resolve_timeout
        mac = self._neighbour_mac(gateway, ifindex)
        if mac is None:
            self._provoke_resolution(address)
        while mac is None and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the neighbour table; bounded above
            mac = self._neighbour_mac(gateway, ifindex)
        if mac is None:
            LOG.warning('next hop %s for member %s did not resolve; the '
                        'program will fall back to bpf_fib_lookup',
                        gateway, address)
            return None
        link = self._ipr.link('get', index=ifindex)[0]
        mtu = link.get('IFLA_MTU')
        metrics = route.get('RTA_METRICS')
        if metrics and metrics.get('RTAX_MTU'):
            mtu = min(mtu, metrics.get('RTAX_MTU'))
        return ResolvedNexthop(ifindex, link.get('IFLA_ADDRESS'), mac, mtu)


def mac_bytes(mac):
    return _mac_bytes(mac)
