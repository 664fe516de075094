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
import types

from amphora_agent.dataplane import model
from amphora_agent.dataplane import structs
from amphora_agent import gcpause


@dataclasses.dataclass
class Plan:
    state: model.DesiredState
    ready_vips: set
    listener_ids: dict   # ListenerKey -> Octavia listener id
    # (ListenerKey, member address) -> member id; from Planner.plan() a
    # read-only view of the planner's own map, current until its next
    # plan(): a copy of 160,000 entries was 20 ms of a one-member change.
    member_ids: dict


def plan(snapshot, usable, tunnel_source4=None, tunnel_source6=None,
         icmp_echo=True):
    """usable(member_id) -> bool says whether health allows the member."""
    return Planner().plan(snapshot, usable, tunnel_source4, tunnel_source6,
                          icmp_echo)


class Planner:
    """plan() that re-plans only the load balancers that changed.

    A load balancer's part of the plan depends only on its (immutable)
    parsed object and on which of its members are usable; with snapshot
    .Parser handing back the same object for an unchanged load balancer,
    a generation re-plans the load balancers it changed, plus those with
    a member in `health_changed`, and patches the merged plan it keeps.
    """

    def __init__(self):
        self._memo = {}     # load balancer id -> (lb, health, part)
        self._lb_of = {}    # member id -> load balancer id
        # The plan of every part merged: ListenerKey -> ListenerSpec,
        # ListenerKey -> listener id, (key, address) -> member id, and
        # VIP -> number of parts that make it ready.
        self._listeners, self._listener_ids, self._member_ids = {}, {}, {}
        # A plain dict: set() of it reuses the stored hashes (of a Counter
        # it hashes every VIP again, 10,000 ipaddress hashes a plan).
        self._ready = {}

    def plan(self, snapshot, usable, tunnel_source4=None,
             tunnel_source6=None, icmp_echo=True, health_changed=None):
        """health_changed: the ids of the members whose usable() may have
        changed since the last plan; None (the default) asks them all."""
        with gcpause.paused():
            return self._plan(snapshot, usable, tunnel_source4,
                              tunnel_source6, icmp_echo, health_changed)

    def _plan(self, snapshot, usable, tunnel_source4, tunnel_source6,
              icmp_echo, health_changed):
        memo, fresh, replaced = self._memo, {}, []
        recheck = None if health_changed is None else {
            self._lb_of.get(m) for m in health_changed}
        for lb in snapshot.load_balancers:
            hit = memo.get(lb.id)
            if hit is not None and hit[0] is lb and recheck is not None \
                    and lb.id not in recheck:
                fresh[lb.id] = hit
                continue
            health = tuple(usable(m.id) for m in _lb_members(lb))
            if hit is None or hit[0] is not lb or hit[1] != health:
                part = Plan(model.DesiredState(), set(), {}, {})
                _plan_lb(lb, usable, part)
                replaced.append((hit, (lb, health, part)))
                hit = (lb, health, part)
            fresh[lb.id] = hit
        replaced.extend((memo[lb_id], None)
                        for lb_id in memo.keys() - fresh.keys())
        try:
            self._patch(replaced)
        except BaseException:
            # Half patched: start again from nothing next time.
            self.__init__()
            raise
        self._memo = fresh
        state = model.DesiredState(listeners=dict(self._listeners),
                                   tunnel_source4=tunnel_source4,
                                   tunnel_source6=tunnel_source6,
                                   icmp_echo=icmp_echo)
        return Plan(state, set(self._ready), dict(self._listener_ids),
                    types.MappingProxyType(self._member_ids))

    def _patch(self, replaced):
        """Take the old parts out of the merged plan, then put the new ones
        in (a listener may move between load balancers)."""
        ready, lb_of, vips = self._ready, self._lb_of, set()
        for old, _new in replaced:
            if old is None:
                continue
            lb, _health, part = old
            for key in part.state.listeners:
                del self._listeners[key]
                del self._listener_ids[key]
            for key in part.member_ids:
                del self._member_ids[key]
            for vip in part.ready_vips:
                ready[vip] -= 1
            vips |= part.ready_vips
            for member in _lb_members(lb):
                lb_of.pop(member.id, None)
        for _old, new in replaced:
            if new is None:
                continue
            lb, _health, part = new
            self._listeners.update(part.state.listeners)
            self._listener_ids.update(part.listener_ids)
            self._member_ids.update(part.member_ids)
            for vip in part.ready_vips:
                ready[vip] = ready.get(vip, 0) + 1
            lb_of.update((member.id, lb.id) for member in _lb_members(lb))
        for vip in vips:
            if ready.get(vip, 1) <= 0:
                del ready[vip]


def _lb_members(lb):
    for lst in lb.listeners:
        if lst.pool:
            yield from lst.pool.members


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
