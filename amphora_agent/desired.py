"""From a controller snapshot and member health to the dataplane's desired
state and the set of VIPs this SE may announce.

Octavia semantics: disabled load balancers, listeners and pools carry no
traffic; admin-down and unhealthy members leave the rings (their established
flows are re-steered); weight 0 drains (no new flows); backup members are
used only when no other member of the pool is usable.  A listener's
connection_limit (-1: none), allowed_cidrs (empty: anyone) and
timeout_client_data (the flows' idle timeout; 0: none) go to every
dataplane listener of it, one per VIP address.
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
    return Planner().plan(snapshot, usable, tunnel_source4, tunnel_source6,
                          icmp_echo)


class Planner:
    """plan() reusing the result for load balancers that did not change.

    A load balancer's part of the plan depends only on its (immutable)
    parsed object and on which of its members are usable; with snapshot
    .Parser handing back the same object for an unchanged load balancer,
    thousands of them cost a dictionary merge instead of a rebuild.
    """

    def __init__(self):
        self._memo = {}

    def plan(self, snapshot, usable, tunnel_source4=None,
             tunnel_source6=None, icmp_echo=True):
        state = model.DesiredState(tunnel_source4=tunnel_source4,
                                   tunnel_source6=tunnel_source6,
                                   icmp_echo=icmp_echo)
        result = Plan(state, set(), {}, {})
        memo, fresh = self._memo, {}
        for lb in snapshot.load_balancers:
            health = tuple(usable(m.id) for lst in lb.listeners
                           if lst.pool for m in lst.pool.members)
            hit = memo.get(lb.id)
            if hit is None or hit[0] is not lb or hit[1] != health:
                part = Plan(model.DesiredState(), set(), {}, {})
                _plan_lb(lb, usable, part)
                hit = (lb, health, part)
            fresh[lb.id] = hit
            part = hit[2]
            state.listeners.update(part.state.listeners)
            result.ready_vips |= part.ready_vips
            result.listener_ids.update(part.listener_ids)
            result.member_ids.update(part.member_ids)
        self._memo = fresh
        return result


def _plan_lb(lb, usable, result):
    state = result.state
    if lb.admin_state_up:
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
                    else structs.Encap.IPIP,
                    # Per SE (docs/dataplane.md, connection_limit).
                    conn_limit=max(listener.connection_limit, 0),
                    allowed_cidrs=listener.allowed_cidrs,
                    idle_timeout_ms=listener.timeout_client_data,
                    # Sized by the pool, not by its healthy members: the
                    # same on every SE, and health does not resize it.
                    pool_members=len(pool.members) if pool else 0)
                for member in members:
                    spec.members[member.address] = model.Member(
                        member.address, member.weight, member.backup)
                    result.member_ids[(key, member.address)] = member.id
                state.listeners[key] = spec
                result.listener_ids[key] = listener.id
                if any(m.weight > 0 for m in members):
                    result.ready_vips.add(vip)


def _members(pool, usable):
    if not pool.admin_state_up:
        return []
    up = [m for m in pool.members if m.admin_state_up and usable(m.id)]
    primary = [m for m in up if not m.backup]
    if any(m.weight > 0 for m in primary):
        return primary
    # Backups take the new flows; draining primaries keep their old ones.
    return [m for m in up if m.backup] + primary
