"""From a controller snapshot and member health to the dataplane's desired
state and the set of VIPs this SE may announce.

Octavia semantics: disabled load balancers, listeners and pools carry no
traffic; admin-down and unhealthy members leave the rings (their established
flows are re-steered); weight 0 drains (no new flows); backup members are
used only when no other member of the pool is usable.
"""

import dataclasses

from amphora_agent.dataplane import model
from amphora_agent.dataplane import structs


@dataclasses.dataclass
class Plan:
    state: model.DesiredState
    ready_vips: set
    listener_ids: dict   # ListenerKey -> Octavia listener id
    member_ids: dict     # (ListenerKey, member address) -> member id


def plan(snapshot, usable, tunnel_source4=None, tunnel_source6=None,
         icmp_echo=True):
    """usable(member_id) -> bool says whether health allows the member."""
    state = model.DesiredState(tunnel_source4=tunnel_source4,
                               tunnel_source6=tunnel_source6,
                               icmp_echo=icmp_echo)
    result = Plan(state, set(), {}, {})
    for lb in snapshot.load_balancers:
        if not lb.admin_state_up:
            continue
        for listener in lb.listeners:
            if not listener.admin_state_up:
                continue
            pool = listener.pool
            members = _members(pool, usable) if pool else []
            for vip in lb.vips:
                key = model.ListenerKey(vip, listener.port,
                                        listener.protocol.lower())
                spec = model.ListenerSpec(
                    key,
                    structs.HashAlgorithm[pool.algorithm] if pool
                    else structs.HashAlgorithm.SOURCE_IP_PORT,
                    structs.Encap[pool.encap.upper()] if pool
                    else structs.Encap.IPIP)
                for member in members:
                    spec.members[member.address] = model.Member(
                        member.address, member.weight, member.backup)
                    result.member_ids[(key, member.address)] = member.id
                state.listeners[key] = spec
                result.listener_ids[key] = listener.id
                if any(m.weight > 0 for m in members):
                    result.ready_vips.add(vip)
    return result


def _members(pool, usable):
    if not pool.admin_state_up:
        return []
    up = [m for m in pool.members if m.admin_state_up and usable(m.id)]
    primary = [m for m in up if not m.backup]
    if any(m.weight > 0 for m in primary):
        return primary
    # Backups take the new flows; draining primaries keep their old ones.
    return [m for m in up if m.backup] + primary
