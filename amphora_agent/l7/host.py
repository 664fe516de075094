"""The L7 SE's host side: the same job as ``dsr-member setup``, done by its
code (amphora_agent/member/host.py) for the VIPs of the L7 document.

* VIPs on loopback (IPv6 without DAD), ARP suppressed (arp_ignore=1,
  arp_announce=2 on all, lo and the uplink) and proxy-NDP entries for them
  dropped: the L7 SE never answers ARP/ND for a VIP, the L4 tier owns it
  ("traffic disabled");
* the L4 SEs' tunnels terminated by the project's decap program (or kernel
  tunnel devices), rp_filter loosened where decapsulated packets enter;
* no auto gateway: nothing here remembers which L4 SE a packet came
  through.  Replies (HAProxy's, from the VIP) follow this host's routing
  table to the client, never back through the L4 tier.

Every change is recorded in a journal (member/state.py) so that teardown
undoes exactly what setup did.
"""

import ipaddress
import os

from amphora_agent.member import host as member_host
from amphora_agent.member import netinfo
from amphora_agent.member import spec as spec_mod
from amphora_agent.member import state
from amphora_agent.member import sysctl as sysctl_mod

SetupError = member_host.SetupError


class Host:
    def __init__(self, state_dir, pin_dir, decap='auto', interface=None,
                 addresses=(), encaps=('ipip', 'gre'), ipr_factory=None,
                 sysctl=None):
        self.journal_path = os.path.join(state_dir, 'host-state.json')
        self.pin_dir, self.decap = pin_dir, decap
        self.interface, self.addresses = interface, list(addresses)
        self.encaps = tuple(encaps)
        self._ipr_factory = ipr_factory or _iproute
        self.sysctl = sysctl or sysctl_mod.Sysctl()
        self.mode = None
        self.tunnel_addresses = {}

    def apply(self, vips, forward=False):
        """Hold exactly ``vips`` (a non-empty iterable of addresses) with
        decap ready; returns the report lines.  Sets tunnel_addresses
        ({4: address, 6: address} this L7 SE is reached at).  ``forward``:
        turn IP forwarding on (UDP listeners DNAT packets to members);
        teardown restores it, an apply without it leaves it on."""
        spec = spec_mod.MemberSpec(
            vips=list(vips), encaps=self.encaps, interface=self.interface,
            addresses=list(self.addresses))
        journal = state.Journal.load(self.journal_path)
        try:
            with self._ipr_factory() as ipr:
                mode, lines = member_host.setup(
                    spec, self.mode or self.decap, ipr, self.sysctl,
                    journal, pin_dir=self.pin_dir)
            if forward:
                lines += member_host.apply_sysctls(
                    forwarding_sysctls(self.sysctl), self.sysctl, journal)
        finally:
            journal.save()
        self.mode = mode
        self.interface = spec.interface
        self.tunnel_addresses = {a.version: a for a in spec.addresses}
        return lines

    def teardown(self):
        journal = state.Journal.load(self.journal_path)
        if not journal.exists:
            return []
        with self._ipr_factory() as ipr:
            lines = member_host.teardown(ipr, self.sysctl, journal)
        journal.remove()
        self.mode = None
        return lines

    def vips_on_loopback(self, vips):
        """True when every VIP is on lo (the readiness half of the host)."""
        with self._ipr_factory() as ipr:
            on_lo = {a.address for a in netinfo.addresses(ipr, 'lo')}
        return all(ipaddress.ip_address(str(v)) in on_lo for v in vips)


def forwarding_sysctls(sysctl):
    """IPv4 and (when the kernel has it) IPv6 forwarding on.  IPv6
    forwarding makes the host a router: it stops taking default routes
    from router advertisements unless accept_ra is 2."""
    want = {'net/ipv4/ip_forward': 1}
    if sysctl.read('net/ipv6/conf/all/forwarding') is not None:
        want['net/ipv6/conf/all/forwarding'] = 1
    return want


def _iproute():
    from pyroute2 import IPRoute
    return IPRoute()
