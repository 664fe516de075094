"""Next hops towards members, resolved from the kernel's routes and neighbours.

The SE program reads a cached (ifindex, MACs, MTU) per member instead of
calling bpf_fib_lookup on every packet; this module fills that cache.  It
runs in the SE's network namespace (the caller's).
"""

import dataclasses
import errno
import ipaddress
import logging
import socket
import time


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


def mac_bytes(mac):
    return bytes(int(part, 16) for part in mac.split(':'))


class _RoutingSnapshot:
    """The main table, neighbours and links, read once for many lookups.

    Resolving thousands of members one netlink `route get` at a time costs
    ~1 ms each; one dump plus a longest-prefix match in memory costs
    microseconds.  Only valid while policy routing is the default (rules
    local, main, default): otherwise the resolver asks the kernel per
    address.
    """

    def __init__(self, ipr):
        self.by_len = {4: {}, 6: {}}
        for family, af in ((4, socket.AF_INET), (6, socket.AF_INET6)):
            for route in ipr.get_routes(family=af, table=254):
                if route.get('type') != 1:  # unicast only
                    continue
                dst = route.get('RTA_DST') or ('0.0.0.0' if family == 4
                                               else '::')
                net = ipaddress.ip_network(f"{dst}/{route['dst_len']}",
                                           strict=False)
                gateway = route.get('RTA_GATEWAY')
                oif = route.get('RTA_OIF')
                for hop in route.get('RTA_MULTIPATH') or ():
                    # A multipath route: the first next hop, always the
                    # same one, so every apply agrees.
                    gateway = gateway or hop.get('RTA_GATEWAY')
                    oif = oif or hop.get('oif')
                    break
                metric = route.get('RTA_PRIORITY') or 0
                table = self.by_len[family].setdefault(net.prefixlen, {})
                key = _prefix_key(net.network_address, net.prefixlen)
                current = table.get(key)
                if current is None or metric < current[2]:
                    mtu = (route.get('RTA_METRICS') or {}).get('RTAX_MTU')
                    table[key] = (gateway, oif, metric, mtu)
        self.lengths = {f: sorted(t, reverse=True)
                        for f, t in self.by_len.items()}
        self.neighbours = {}
        for neigh in ipr.get_neighbours():
            mac = neigh.get('NDA_LLADDR')
            if mac and neigh['state'] & _NUD_USABLE:
                self.neighbours[(neigh['ifindex'], neigh.get('NDA_DST'))] = \
                    mac
        self.links = {link['index']: (link.get('IFLA_ADDRESS'),
                                      link.get('IFLA_MTU'))
                      for link in ipr.get_links()}

    def route(self, address):
        """(gateway, oif, metric, mtu) of the longest prefix holding
        address, or None."""
        tables = self.by_len[address.version]
        for plen in self.lengths[address.version]:
            hit = tables[plen].get(_prefix_key(address, plen))
            if hit is not None:
                return hit
        return None


def _prefix_key(address, prefixlen):
    """The first prefixlen bits of address as an int: the routing
    snapshot's key.  Building an ip_network per prefix length tried cost
    26 us each, 10,000 listeners x 16 members a minute on a loaded host;
    a lookup is now 2.8 us (bench/scale_bench.py)."""
    return int(address) >> (address.max_prefixlen - prefixlen)


def _default_rules_only(ipr):
    for af in (socket.AF_INET, socket.AF_INET6):
        for rule in ipr.get_rules(family=af):
            if rule.get('FRA_TABLE', rule.get('table')) not in (
                    253, 254, 255):
                return False
    return True


class NexthopResolver:
    """Resolves member addresses to next hops; cheap to call repeatedly.

    snapshot() reads the routing state once so that resolving many
    addresses (a large apply) needs no netlink round trip per address.
    """

    def __init__(self, resolve_timeout=1.0):
        # pyroute2 is imported here, not at module level: it costs ~0.25 s
        # and read-only dsrctl calls import this module without resolving.
        from pyroute2 import IPRoute
        self.resolve_timeout = resolve_timeout
        self._ipr = IPRoute()
        self._snapshot = None

    def close(self):
        self._ipr.close()

    def snapshot(self):
        """Take a routing snapshot for the resolutions that follow."""
        self._snapshot = (_RoutingSnapshot(self._ipr)
                          if _default_rules_only(self._ipr) else None)

    def forget(self):
        self._snapshot = None

    def _resolve_from_snapshot(self, address):
        hit = self._snapshot.route(address)
        if hit is None:
            return None
        gateway, oif, _metric, route_mtu = hit
        gateway = gateway or str(address)
        mac = self._snapshot.neighbours.get((oif, gateway))
        link = self._snapshot.links.get(oif)
        if mac is None or link is None:
            return False  # not resolved yet: take the slow path
        mtu = link[1] if not route_mtu else min(link[1], route_mtu)
        return ResolvedNexthop(oif, link[0], mac, mtu)

    def _route(self, address):
        from pyroute2.netlink.exceptions import NetlinkError
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
        if self._snapshot is not None:
            found = self._resolve_from_snapshot(address)
            if found is not False:
                if found is None:
                    LOG.warning('no route to member %s', address)
                return found
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
