"""Can this SE forward? Netlink events of its namespace and the answer.

    watch = NetWatch(uplink='eth0', sources=['198.18.1.2', '2001:db8:1:1::2'],
                     on_change=agent_wake)
    watch.start()        # in the SE's network namespace (the worker thread)
    watch.changed()      # True once per burst of link/address/route events
    verdict = watch.assess({vip: {member addresses}})
    verdict.serviceable  # the SE can forward at all
    verdict.vips         # the VIPs it may announce
    verdict.problems     # why not, for the log
    watch.stop()

Rules (docs/agent-protocol.md, "Reports"):

* the uplink ([dataplane] interface) is administratively up and has its
  carrier (operstate UP, or UNKNOWN for devices that report none);
* every tunnel source address is configured, on an interface that is up,
  and usable: an IPv6 address still doing duplicate address detection
  (tentative) or that failed it (dadfailed) is not;
* the kernel has a route to the members: a unicast route through an
  interface that is up, not marked linkdown.  One route lookup is made per
  member *group* (IPv4 /24, IPv6 /64: the subnets members live in), with a
  real member address of the group, and cached until the next event.

``serviceable`` is false when the uplink or a tunnel source is unusable, or
when members exist and no group of them is routable.  A VIP is announced
when the SE is serviceable and at least one of its members is routable (a
VIP whose members are unknown -- adopted from a previous agent before the
first snapshot -- needs serviceability only).  One unroutable member does
not withdraw its VIP: the other members still serve, and a health monitor
takes it out of the rings.

Events, not polling: a socket bound to the link, IPv4/IPv6 address and
route multicast groups is read by a thread; any message invalidates the
cache and calls ``on_change`` (the agent's wake), and the agent re-assesses
in its worker thread.  Both netlink sockets are opened in the SE's
namespace: the query socket by start()'s caller, the event socket by the
reader thread it starts (pyroute2's sync sockets stay with the thread that
opened them; new threads inherit the creating thread's namespace).
"""

import dataclasses
import ipaddress
import os
import select
import threading

from oslo_log import log as logging
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR
from pyroute2.netlink.rtnl import RTMGRP_IPV4_ROUTE
from pyroute2.netlink.rtnl import RTMGRP_IPV6_IFADDR
from pyroute2.netlink.rtnl import RTMGRP_IPV6_ROUTE
from pyroute2.netlink.rtnl import RTMGRP_LINK

LOG = logging.getLogger(__name__)

GROUPS = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR |
          RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE)
GROUP_PREFIX = {4: 24, 6: 64}

IFF_UP = 0x1
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
RTNH_F_DEAD = 0x01
RTNH_F_LINKDOWN = 0x10
RTN_UNICAST = 1
# Operational states that forward: UP, and UNKNOWN for devices without a
# carrier notion (tun, some virtual devices).
_OPER_OK = ('UP', 'UNKNOWN')


@dataclasses.dataclass(frozen=True)
class Link:
    index: int
    name: str
    admin_up: bool
    operstate: str

    @property
    def up(self):
        return self.admin_up and self.operstate in _OPER_OK


@dataclasses.dataclass(frozen=True)
class Address:
    address: object     # ipaddress.IPv4Address / IPv6Address
    index: int
    flags: int


@dataclasses.dataclass(frozen=True)
class Route:
    """A route lookup's answer: None fields when there is no route."""
    oif: int = None
    type: int = RTN_UNICAST
    flags: int = 0
    error: str = None


@dataclasses.dataclass
class Verdict:
    serviceable: bool
    vips: set
    problems: list


def group_of(address):
    address = ipaddress.ip_address(address)
    return ipaddress.ip_network(
        f'{address}/{GROUP_PREFIX[address.version]}', strict=False)


def link_problems(links, uplink):
    """Problems of the uplink (by name); [] when it is usable or none is
    configured."""
    if not uplink:
        return []
    found = [lk for lk in links.values() if lk.name == uplink]
    if not found:
        return [f'uplink {uplink} does not exist']
    link = found[0]
    if not link.admin_up:
        return [f'uplink {uplink} is down']
    if link.operstate not in _OPER_OK:
        return [f'uplink {uplink} has no carrier ({link.operstate})']
    return []


def source_problems(links, addresses, sources):
    """Problems of the tunnel source addresses."""
    problems = []
    by_address = {a.address: a for a in addresses}
    for source in sources:
        source = ipaddress.ip_address(source)
        addr = by_address.get(source)
        if addr is None:
            problems.append(f'tunnel source {source} is not configured')
            continue
        link = links.get(addr.index)
        name = link.name if link else f'#{addr.index}'
        if link is None or not link.up:
            problems.append(f'tunnel source {source}: interface {name} is '
                            'down')
        elif addr.flags & IFA_F_DADFAILED:
            problems.append(f'tunnel source {source}: duplicate address '
                            'detection failed')
        elif addr.flags & IFA_F_TENTATIVE:
            problems.append(f'tunnel source {source}: tentative (duplicate '
                            'address detection running)')
    return problems


def route_problem(route, links):
    """None when ``route`` forwards, else why not."""
    if route.error:
        return route.error
    if route.type != RTN_UNICAST:
        return f'route of type {route.type}, not unicast'
    if route.flags & (RTNH_F_DEAD | RTNH_F_LINKDOWN):
        return 'route is linkdown'
    link = links.get(route.oif)
    if link is None or not link.up:
        name = link.name if link else f'#{route.oif}'
        return f'route through {name}, which is down'
    return None


def decide(se_problems, vip_members, group_ok):
    """The verdict from the SE's problems, {vip: member addresses} and
    {member group: None | problem}."""
    problems = list(se_problems)
    routable = {g for g, p in group_ok.items() if p is None}
    if group_ok and not routable:
        problems.append('no route to any member: ' + '; '.join(
            f'{g}: {p}' for g, p in sorted(group_ok.items(), key=str)))
    if problems:
        return Verdict(False, set(), problems)
    vips = set()
    for vip, members in vip_members.items():
        if not members or any(group_of(m) in routable for m in members):
            vips.add(vip)
        else:
            problems.append(f'VIP {vip}: no route to any of its members')
    return Verdict(True, vips, problems)


class NetWatch:
    """See the module doc."""

    def __init__(self, uplink=None, sources=(), on_change=None):
        self.uplink = uplink
        self.sources = [ipaddress.ip_address(s) for s in sources if s]
        self.on_change = on_change
        self._ipr = None
        self._reader = None
        self._stop_r = self._stop_w = None
        self._events = 0          # bumped by the reader per message batch
        self._seen = -1           # _events the caches reflect
        self._handled = 0         # _events changed() has reported
        self._links = {}
        self._addresses = []
        self._routes = {}         # member group -> problem or None
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------

    def start(self, timeout=10.0):
        """Open the sockets in the caller's namespace and start reading
        events."""
        self._ipr = IPRoute()
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        ready = threading.Event()
        errors = []
        self._reader = threading.Thread(target=self._read,
                                        args=(ready, errors),
                                        name='netwatch', daemon=True)
        self._reader.start()
        if not ready.wait(timeout) or errors:
            self.stop()
            raise RuntimeError(f'netlink event socket: {errors or "timeout"}')

    def stop(self):
        if self._stop_w is not None:
            os.write(self._stop_w, b'x')
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None
        for fd in (self._stop_r, self._stop_w):
            if fd is not None:
                os.close(fd)
        self._stop_r = self._stop_w = None
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def _read(self, ready, errors):
        try:
            events = IPRoute()
            events.bind(groups=GROUPS)
        except Exception as exc:  # noqa: BLE001 -- to start()
            errors.append(exc)
            ready.set()
            return
        ready.set()
        try:
            while True:
                r, _, _ = select.select([events.fileno(), self._stop_r],
                                        [], [])
                if self._stop_r in r:
                    return
                try:
                    msgs = events.get()
                except NetlinkError as exc:
                    # ENOBUFS: events were lost; treat it as a change.
                    LOG.warning('netlink events: %s', exc)
                    msgs = [None]
                if msgs:
                    with self._lock:
                        self._events += 1
                    if self.on_change is not None:
                        self.on_change()
        except Exception:  # noqa: BLE001
            LOG.exception('netlink event reader died; changes are seen at '
                          'the next periodic check only')
        finally:
            events.close()

    # -- the agent's side ---------------------------------------------------

    def changed(self):
        """True when events came since the last call."""
        with self._lock:
            events = self._events
        if events != self._handled:
            self._handled = events
            return True
        return False

    def invalidate(self):
        """Forget cached state (the next assess() asks the kernel)."""
        self._seen = -1

    def _refresh(self):
        with self._lock:
            events = self._events
        if events == self._seen:
            return
        self._links = {}
        for msg in self._ipr.get_links():
            self._links[msg['index']] = Link(
                msg['index'], msg.get('IFLA_IFNAME'),
                bool(msg['flags'] & IFF_UP), msg.get('IFLA_OPERSTATE'))
        self._addresses = []
        for msg in self._ipr.get_addr():
            value = msg.get('IFA_LOCAL') or msg.get('IFA_ADDRESS')
            if value is None:
                continue
            flags = msg.get('IFA_FLAGS')
            self._addresses.append(Address(
                ipaddress.ip_address(value), msg['index'],
                msg['flags'] if flags is None else flags))
        self._routes = {}
        self._seen = events

    def _lookup(self, address):
        try:
            answer = self._ipr.route('get', dst=str(address))
        except NetlinkError as exc:
            return Route(error=os.strerror(exc.code) if exc.code else
                         str(exc))
        if not answer:
            return Route(error='no route')
        msg = answer[0]
        return Route(oif=msg.get('RTA_OIF'), type=msg['type'],
                     flags=msg['flags'])

    def assess(self, vip_members):
        """Verdict for {vip: iterable of member addresses} (module doc)."""
        self._refresh()
        problems = link_problems(self._links, self.uplink)
        problems += source_problems(self._links, self._addresses,
                                    self.sources)
        group_ok = {}
        representative = {}
        for members in vip_members.values():
            for m in members:
                g = group_of(m)
                if g not in representative or m < representative[g]:
                    representative[g] = m
        for g, m in representative.items():
            if g not in self._routes:
                self._routes[g] = route_problem(self._lookup(m), self._links)
            group_ok[g] = self._routes[g]
        return decide(problems, vip_members, group_ok)
