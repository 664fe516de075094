"""Which VIP families the routers send to an SE, from its BGP sessions.

An SE announces a VIP over the BGP sessions of the VIP's family only (an
IPv4 session for IPv4 VIPs, a native IPv6 one for IPv6 VIPs:
amphora_agent/bgp/exabgp_config.py).  With no session of a family
established -- its ExaBGP dead, the router down or refusing it -- no
router learns that family's VIPs from the SE, and its dataplane serves
none of their traffic, whatever it runs.  The operating statuses count an
SE as serving a VIP only through a session of its family
(operating.py).

An SE is judged only where it has sessions: one that reports no BGP
peers (BGP disabled: its VIPs routed another way, or an L7 SE, reached
through the L4 SEs' tunnels; an agent from before BGP states were
reported), or no peer of a family, serves that family as far as this
can tell.  Nor is a family judged while a session of it is in a state
the agent could not read ('unknown': an ExaBGP API call that timed out
on a busy SE), which would otherwise turn its load balancers OFFLINE
and back within seconds.
"""

import ipaddress

ALL = frozenset((4, 6))
ESTABLISHED = 'established'
UNKNOWN = 'unknown'     # bgp/sessions.py: the state could not be read


def families(bgp):
    """The VIP families routed to an SE: frozenset of 4 and 6.

    bgp: what the agent reported and the controller stored
    (models.AgentState.bgp: {'peers': {address: session state}, ...}).
    """
    peers = bgp.get('peers') if isinstance(bgp, dict) else None
    if not peers or not isinstance(peers, dict):
        return ALL
    judged, routed = set(), set()
    for address, state in peers.items():
        try:
            family = ipaddress.ip_address(address).version
        except ValueError:
            continue        # endpoints.py keeps strings; not an address
        judged.add(family)
        if state in (ESTABLISHED, UNKNOWN):
            routed.add(family)
    return frozenset(routed | (ALL - judged))


def vip_families(addresses):
    """The families of a load balancer's VIP addresses (every family when
    it has none the controller can read: nothing is left out for it)."""
    found = set()
    for address in addresses:
        try:
            found.add(ipaddress.ip_address(address).version)
        except ValueError:
            continue
    return frozenset(found) or ALL
