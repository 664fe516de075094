"""What a port's allowed_address_pairs and security groups become: pure
merge logic, no Neutron calls.

The controller owns only what it added (recorded in its database, table
neutron_owned): a pair or group the port already had -- the operator's --
is never removed and never taken over, even when it equals one the
controller wants.  A wanted VIP already allowed by one of the port's pairs
(the same address, or a CIDR of the operator's that contains it, with the
port's MAC) is not added again: Neutron caps the number of pairs per port
([DEFAULT] max_allowed_address_pair, 10 by default).
"""

import collections
import ipaddress

Plan = collections.namedtuple('Plan', 'values owned added removed')


def normalise(address):
    """'192.0.2.10', '192.0.2.10/32' and '2001:DB8::A' in one spelling;
    a CIDR stays a CIDR."""
    net = ipaddress.ip_network(str(address), strict=False)
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


def _network(address):
    return ipaddress.ip_network(str(address), strict=False)


def _mac(pair, port_mac):
    return (pair.get('mac_address') or port_mac or '').lower()


def plan_pairs(current, port_mac, owned, wanted):
    """The port's new allowed_address_pairs.

    current: the port's pairs ([{'ip_address', 'mac_address'}]); owned:
    addresses the controller added earlier; wanted: addresses it wants now.
    Returns Plan(values=the new pair list (None: unchanged), owned=what the
    controller owns afterwards, added, removed).
    """
    owned = {normalise(a) for a in owned}
    wanted = {normalise(a) for a in wanted}
    kept, removed = [], set()
    for pair in current:
        ip = normalise(pair['ip_address'])
        if ip in owned and ip not in wanted and \
                _mac(pair, port_mac) == (port_mac or '').lower():
            removed.add(ip)
            continue
        kept.append(pair)
    mine = [p for p in kept if _mac(p, port_mac) == (port_mac or '').lower()]
    allowed = [_network(p['ip_address']) for p in mine]
    present = {normalise(p['ip_address']) for p in mine}
    added = set()
    for ip in sorted(wanted):
        address = ipaddress.ip_address(ip)
        if ip in present or any(address in net for net in allowed
                                if net.version == address.version):
            continue
        added.add(ip)
    values = None
    if added or removed:
        values = [dict(p) for p in kept] + [{'ip_address': ip}
                                            for ip in sorted(added)]
    # Still ours: what we added now, and what we added earlier, still want
    # and is still there (an owned pair somebody removed is re-added above,
    # so it is in `added`).
    still = {ip for ip in owned & wanted if ip in present}
    return Plan(values, still | added, added, removed)


def plan_groups(current, owned, wanted):
    """The port's new security_groups (ids), same rules as plan_pairs."""
    current, owned, wanted = list(current), set(owned), set(wanted)
    removed = {g for g in current if g in owned and g not in wanted}
    kept = [g for g in current if g not in removed]
    added = {g for g in wanted if g not in kept}
    values = None
    if added or removed:
        values = kept + sorted(added)
    still = {g for g in owned & wanted if g in kept}
    return Plan(values, still | added, added, removed)
