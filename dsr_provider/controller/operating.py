"""Operating status of every object, from what the SEs report.

Octavia's amphora driver derives operating status from HAProxy's view
(octavia/controller/healthmanager/health_drivers/update_db.py): a member
UP -> ONLINE, DOWN -> ERROR, DRAIN (weight 0) -> DRAINING, MAINT (admin
down) -> OFFLINE, no check -> NO_MONITOR; a pool with a DOWN member is
DEGRADED, with no working member ERROR; a load balancer is OFFLINE when
disabled, ERROR when one of its pools is ERROR, DEGRADED when a pool is
DEGRADED, else ONLINE.  The same rules here, with the differences DSR
brings written down:

* A listener has no proxy of its own and the SEs report no FULL state for
  it (HAProxy's DEGRADED listener): it shows its pool's status when that
  says something is wrong (DEGRADED, ERROR).  A served listener with no
  pool, or whose pool has nothing enabled, is ONLINE: the SEs carry it and
  nothing about it is failing -- what the amphora (HAProxy frontend OPEN)
  and ovn-octavia-provider (ONLINE on create) report for it.  Likewise a
  pool with no members at all is ONLINE; one whose members are all
  disabled is OFFLINE (disabled by its administrator, member by member).
* A group with no live, serviceable SE serves nothing: every object of its
  load balancers is OFFLINE (provisioning stays ACTIVE: the desired state
  is stored and applied when an SE joins).  Nor does a group none of
  whose SEs has a BGP session of a load balancer's VIP family established
  serve that load balancer: the routers send its traffic nowhere
  (routing.py).  In the tables, "not served" is either case.  A load
  balancer with VIPs of both families served on one of them only is
  DEGRADED.
* A rejected object (by the controller for capacity, or by a live agent) is
  ERROR, with or without a live SE, so it never flips between ERROR and
  another status; what is below it is not served: OFFLINE.
* A live SE that has not reported for [dsr_controller] agent_ttl is
  silent: its last member reports no longer vote.  A group whose live SEs
  are all silent may or may not forward (their XDP programs and BGP
  sessions may still run) and nobody can tell: as Octavia's health
  manager fails an amphora whose heartbeats stopped, its served load
  balancers and listeners are ERROR, and the health of their pools and
  enabled members is unknown: NO_MONITOR (after what is decided without
  the SEs: rejected, admin down, Neutron port refused).

Members (first matching row wins):

| condition                                              | status     |
|--------------------------------------------------------|------------|
| rejected                                               | ERROR      |
| its load balancer is not served (see above)            | OFFLINE    |
| admin down, or its pool is not served (admin down,     | OFFLINE    |
|   rejected, on no served listener)                     |            |
| its Neutron port refused the VIP pairs (port security  | ERROR      |
|   drops its replies; reason: neutron_ports.py)         |            |
| the group's live SEs are all silent                    | NO_MONITOR |
| no live SE reported it yet                             | (unsent)   |
| more than half of the live SEs' reports say ERROR      | ERROR      |
| weight 0 (drains: no new flows)                        | DRAINING   |
| otherwise the most common report (ONLINE, NO_MONITOR)  | as reported|

Pools:

| condition                                              | status     |
|--------------------------------------------------------|------------|
| rejected                                               | ERROR      |
| its load balancer is not served (see above)            | OFFLINE    |
| admin down, or neither the default pool of a served    | OFFLINE    |
|   listener nor the pool an enabled REDIRECT_TO_POOL    |            |
|   policy of one names (tier 2)                         |            |
| members, none of them enabled (admin-up)               | OFFLINE    |
| the group's live SEs are all silent                    | NO_MONITOR |
| no member at all                                       | ONLINE     |
| no enabled member's status known yet                   | (unsent)   |
| every known enabled member ERROR (rejected counts)     | ERROR      |
| some ERROR                                             | DEGRADED   |
| none ERROR (ONLINE, NO_MONITOR, DRAINING)              | ONLINE     |

Listeners:

| condition                                              | status     |
|--------------------------------------------------------|------------|
| rejected                                               | ERROR      |
| its load balancer is not served (see above)            | OFFLINE    |
| admin down, or its load balancer admin down / rejected | OFFLINE    |
| the group's live SEs are all silent                    | ERROR      |
| no default pool, or the pool OFFLINE (nothing enabled) | ONLINE     |
| otherwise its pool's status (ONLINE, DEGRADED, ERROR)  | the pool's |

Load balancers:

| condition                                              | status     |
|--------------------------------------------------------|------------|
| rejected                                               | ERROR      |
| not served (see above)                                 | OFFLINE    |
| admin down                                             | OFFLINE    |
| the group's live SEs are all silent                    | ERROR      |
| a listener's status not known yet                      | (unsent)   |
| a listener ERROR                                       | ERROR      |
| a listener DEGRADED (e.g. one member of two down), or  | DEGRADED   |
|   a VIP family of its routed by no SE (dual stack)     |            |
| otherwise                                              | ONLINE     |

Health monitors:

| condition                                              | status     |
|--------------------------------------------------------|------------|
| rejected                                               | ERROR      |
| its load balancer is not served (see above)            | OFFLINE    |
| its pool or load balancer rejected, its load balancer  | OFFLINE    |
|   admin down (the SEs run no check of it)              |            |
| admin down                                             | OFFLINE    |
| otherwise                                              | ONLINE     |
"""

import collections

from octavia_lib.common.constants import DEGRADED
from octavia_lib.common.constants import DRAINING
from octavia_lib.common.constants import ERROR
from octavia_lib.common.constants import NO_MONITOR
from octavia_lib.common.constants import OFFLINE
from octavia_lib.common.constants import ONLINE

from dsr_provider.controller import models
from dsr_provider.controller import routing

_MEMBER_REPORTS = (ONLINE, ERROR, NO_MONITOR)


def _up(row):
    return row.doc.get('admin_state_up', True) is not False


def member_vote(reports):
    """One status from the live SEs' reports of a member: ERROR only when
    most of them see it failing (a member is reached from every SE), else
    the most common of the others."""
    reports = [r for r in reports if r in _MEMBER_REPORTS]
    if not reports:
        return None
    errors = reports.count(ERROR)
    if errors * 2 > len(reports):
        return ERROR
    others = [r for r in reports if r != ERROR]
    return collections.Counter(others).most_common(1)[0][0]


def compute(lbs, listeners, pools, members, healthmonitors, reports,
            rejected, serving_groups, port_refused=frozenset(),
            l7policies=(), silent_groups=frozenset()):
    """{(kind, id): operating status} for every object whose status is
    known (see the tables above).

    Rows are the store's models (doc, parent links); reports: {member_id:
    [status reported by each live SE]}; rejected: set of (kind, id);
    serving_groups: {SE group: the VIP families (4, 6) it serves} of the
    groups with at least one live, serviceable SE; such an SE serves a
    family with a BGP session of that family established, or without BGP
    (routing.families);
    port_refused: ids of members whose Neutron port refused the VIPs;
    l7policies: L7 policy rows (tier 2): the pool an enabled
    REDIRECT_TO_POOL policy of a served listener names is served too;
    silent_groups: SE groups whose live SEs all stopped reporting.
    """
    out = {}
    lb_served = {}
    unrouted = set()    # served on some of their VIP families only
    for lb in lbs:
        vips = routing.vip_families(models.vip_addresses(lb.doc))
        routed = vips & serving_groups.get(lb.se_group, frozenset())
        # A tier-2 load balancer needs its L4 and its L7 group serving.
        l7_group = getattr(lb, 'l7_se_group', None)
        lb_served[lb.id] = bool(routed) and (
            l7_group is None or bool(serving_groups.get(l7_group)))
        if routed != vips:
            unrouted.add(lb.id)
    served_lbs = set()
    for lb in lbs:
        key = ('loadbalancers', lb.id)
        if key in rejected:
            out[key] = ERROR
        elif not lb_served[lb.id] or not _up(lb):
            out[key] = OFFLINE
        else:
            served_lbs.add(lb.id)

    def serving(lb_id):
        return lb_served.get(lb_id, False)

    served_listeners = {}          # pool id -> [listener ids]
    for lst in listeners:
        key = ('listeners', lst.id)
        if key in rejected:
            out[key] = ERROR
        elif not serving(lst.loadbalancer_id):
            out[key] = OFFLINE
        elif lst.loadbalancer_id not in served_lbs or not _up(lst):
            out[key] = OFFLINE
        else:
            served_listeners.setdefault(lst.doc.get('default_pool_id'),
                                        []).append(lst.id)

    served_lids = {lid for lids in served_listeners.values() for lid in lids}
    policy_pools = {p.doc.get('redirect_pool_id') for p in l7policies
                    if not p.rejected and p.listener_id in served_lids
                    and p.doc.get('action') == 'REDIRECT_TO_POOL'
                    and _up(p)}
    pool_rows = {p.id: p for p in pools}
    by_pool = collections.defaultdict(list)
    for m in members:
        by_pool[m.pool_id].append(m)
    served_pools = set()
    for pool in pools:
        key = ('pools', pool.id)
        if key in rejected:
            out[key] = ERROR
        elif not serving(pool.loadbalancer_id):
            out[key] = OFFLINE
        elif not _up(pool) or (pool.id not in served_listeners and
                               pool.id not in policy_pools):
            out[key] = OFFLINE
        else:
            served_pools.add(pool.id)

    for m in members:
        key = ('members', m.id)
        pool = pool_rows.get(m.pool_id)
        if key in rejected:
            out[key] = ERROR
        elif pool is None or not serving(pool.loadbalancer_id):
            out[key] = OFFLINE
        elif not _up(m) or m.pool_id not in served_pools:
            out[key] = OFFLINE
        elif m.id in port_refused:
            out[key] = ERROR
        else:
            st = member_vote(reports.get(m.id) or ())
            if st is None:
                continue
            if st != ERROR and m.doc.get('weight', 1) == 0:
                st = DRAINING
            out[key] = st

    for pid in served_pools:
        enabled = [m for m in by_pool[pid] if _up(m)]
        if not enabled:
            out[('pools', pid)] = OFFLINE if by_pool[pid] else ONLINE
            continue
        known = [out[('members', m.id)] for m in enabled
                 if ('members', m.id) in out]
        if not known:
            continue
        errors = known.count(ERROR)
        out[('pools', pid)] = ERROR if errors == len(known) else (
            DEGRADED if errors else ONLINE)

    lb_listeners = collections.defaultdict(list)
    for pool_id, lids in served_listeners.items():
        if pool_id not in pool_rows:
            st = ONLINE                             # no default pool
        else:
            st = out.get(('pools', pool_id))        # None: not known yet
            if st == OFFLINE:                       # nothing enabled
                st = ONLINE
        if st is not None:
            for lid in lids:
                out[('listeners', lid)] = st
    for lst in listeners:
        if lst.loadbalancer_id in served_lbs:
            lb_listeners[lst.loadbalancer_id].append(
                out.get(('listeners', lst.id)))

    for lb_id in served_lbs:
        sts = lb_listeners.get(lb_id, [])
        if any(st is None for st in sts):
            continue
        out[('loadbalancers', lb_id)] = ERROR if ERROR in sts else (
            DEGRADED if DEGRADED in sts or lb_id in unrouted else ONLINE)

    for hm in healthmonitors:
        key = ('healthmonitors', hm.id)
        pool = pool_rows.get(hm.pool_id)
        if key in rejected:
            out[key] = ERROR
        elif pool is None or pool.loadbalancer_id not in served_lbs or \
                ('pools', pool.id) in rejected:
            # Its pool or load balancer is rejected (or not served): the
            # SEs run no check of it.
            out[key] = OFFLINE
        else:
            out[key] = ONLINE if _up(hm) else OFFLINE
    silent = {lb.id for lb in lbs if lb.id in served_lbs and (
        {lb.se_group, getattr(lb, 'l7_se_group', None)} & silent_groups)}
    if silent:
        _unheard(out, silent, listeners, pools, members, served_pools)
    return out


def _unheard(out, lb_ids, listeners, pools, members, served_pools):
    """The served objects of load balancers no SE can be heard from:
    load balancers and listeners ERROR, the health of pools and members
    not decided without the SEs unknown (see the module's docstring)."""
    for lb_id in lb_ids:
        out[('loadbalancers', lb_id)] = ERROR
    for lst in listeners:
        if lst.loadbalancer_id in lb_ids and \
                out.get(('listeners', lst.id)) != OFFLINE:
            out[('listeners', lst.id)] = ERROR
    pools = {p.id for p in pools
             if p.loadbalancer_id in lb_ids and p.id in served_pools}
    for pid in pools:
        if out.get(('pools', pid)) != OFFLINE:      # members all disabled
            out[('pools', pid)] = NO_MONITOR
    for m in members:
        if m.pool_id in pools and ('members', m.id) not in out:
            out[('members', m.id)] = NO_MONITOR
