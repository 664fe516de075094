"""Next hops towards members, resolved from the kernel's routes and neighbours.

The SE program reads a cached (ifindex, MACs, MTU) per member instead of
calling bpf_fib_lookup on every packet; this module fills that cache.  It
runs in the SE's network namespace (the caller's).
"""

import dataclasses
import errno
import ipaddress
import logging
import os
import socket
import time


LOG = logging.getLogger(__name__)

# NUD states that carry a usable link-layer address.
_NUD_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80  # REACHABLE..PERMANENT
_DISCARD_PORT = 9
# Route types that send nothing anywhere: a member under one of them has no
# next hop (RTN_BLACKHOLE, RTN_UNREACHABLE, RTN_PROHIBIT).
_REJECT_TYPES = {6: 'blackhole', 7: 'unreachable', 8: 'prohibit'}
# Seconds a next hop that did not answer within resolve_timeout is not
# waited for again: it is probed (the kernel resolves it in the
# background, and the next snapshot finds it when it answers) and left to
# the FIB meanwhile.  Waiting at every apply and refresh stalled the
# agent's worker resolve_timeout per dead member, for every tenant.
UNANSWERED_RETRY = 300.0


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
                reject = _REJECT_TYPES.get(route.get('type'))
                if route.get('type') != 1 and reject is None:
                    continue    # unicast and reject routes only
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
                    # A reject route: no gateway, no interface (the kernel
                    # answers a lookup under it with an error).
                    table[key] = ((None, None, metric, None, reject)
                                  if reject
                                  else (gateway, oif, metric, mtu, None))
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
        """(gateway, oif, metric, mtu, reject) of the longest prefix
        holding address, or None; reject names the route's type if it is
        a blackhole, unreachable or prohibit route (None: unicast)."""
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
        # {address: why it has no next hop} as last logged: each address
        # is logged once per reason, not at every apply or refresh.
        self._unresolvable = {}
        # {address: monotonic time its next hop last failed to answer}.
        self._unanswered = {}

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
            self._no_nexthop(address, 'no route')
            return None
        gateway, oif, _metric, route_mtu, reject = hit
        if reject:
            self._no_nexthop(address, f'a {reject} route')
            return None
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

    def retain(self, addresses):
        """Forget what is noted of every address but these (the members
        now): with members coming and going for good, the notes would
        grow for as long as the agent runs."""
        keep = set(addresses)
        for notes in (self._unresolvable, self._unanswered):
            for address in [a for a in notes if a not in keep]:
                del notes[address]

    def _no_nexthop(self, address, reason):
        """Log, once per address and reason, why address has no next
        hop."""
        if self._unresolvable.get(address) != reason:
            LOG.warning('member %s has no next hop: %s; the program will '
                        'fall back to bpf_fib_lookup for it', address,
                        reason)
            self._unresolvable[address] = reason

    def resolve(self, address):
        """The next hop for a member address, or None if unresolvable (the
        program then asks the kernel's FIB per packet).

        A lookup the kernel refuses for this address alone -- a blackhole
        (EINVAL) or prohibit (EACCES) route, an interface gone meanwhile
        -- leaves this member without a next hop, never the others: the
        error is logged (once per address and error), not raised."""
        from pyroute2.netlink.exceptions import NetlinkError
        try:
            found = self._resolve(address)
        except NetlinkError as exc:
            name = errno.errorcode.get(exc.code, str(exc.code))
            self._no_nexthop(address, f'the route lookup failed: {name} '
                             f'({os.strerror(exc.code)})')
            return None
        if found is not None:
            self._unresolvable.pop(address, None)
            self._unanswered.pop(address, None)
        return found

    def _resolve(self, address):
        if self._snapshot is not None:
            found = self._resolve_from_snapshot(address)
            if found is not False:
                return found
        route = self._route(address)
        if route is None:
            self._no_nexthop(address, 'no route')
            return None
        ifindex = route.get('RTA_OIF')
        gateway = route.get('RTA_GATEWAY') or str(address)
        now = time.monotonic()
        deadline = now + self.resolve_timeout
        mac = self._neighbour_mac(gateway, ifindex)
        if mac is None:
            self._provoke_resolution(address)
            failed_at = self._unanswered.get(address)
            if failed_at is not None and now - failed_at < UNANSWERED_RETRY:
                return None     # logged when it failed; not waited for
        while mac is None and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the neighbour table; bounded above
            mac = self._neighbour_mac(gateway, ifindex)
        if mac is None:
            self._unanswered[address] = time.monotonic()
            self._no_nexthop(address, f'next hop {gateway} did not answer '
                             f'within {self.resolve_timeout} s (not waited '
                             f'for again for {UNANSWERED_RETRY:.0f} s)')
            return None
        link = self._ipr.link('get', index=ifindex)[0]
        mtu = link.get('IFLA_MTU')
        metrics = route.get('RTA_METRICS')
        if metrics and metrics.get('RTAX_MTU'):
            mtu = min(mtu, metrics.get('RTAX_MTU'))
        return ResolvedNexthop(ifindex, link.get('IFLA_ADDRESS'), mac, mtu)
