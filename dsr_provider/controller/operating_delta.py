"""The operating round after member status reports: only the load
balancers whose members' reports moved are computed again.

A health check flapping on one SE changes that agent's reported member
statuses (its digest, store.statuses_digest) and nothing else the
operating statuses are computed from.  Recomputing every object of the
deployment for it took the leader's whole round -- 0.9 s at 2,000 load
balancers x 16 members on MariaDB (bench/controller_bench.py) -- once per
report, with provisioning statuses waiting behind it.  operating.compute
works load balancer by load balancer, so the statuses outside the load
balancers of the moved members cannot have changed; what else it reads
(the SEs' rejections, serviceability and BGP sessions, the live SEs,
pending reports, Neutron port refusals) must be what the last full
computation read, or the reporter computes everything again.
"""

import collections

from dsr_provider.controller import models
from dsr_provider.controller import operating as operating_mod
from dsr_provider.controller import routing

# What an agent's row contributes, as the last computation read it;
# routed: the VIP families its BGP sessions carry (routing.families).
AgentView = collections.namedtuple(
    'AgentView', 'member_statuses rejected_objects serviceable routed')


def agent_view(row):
    return AgentView(row.member_statuses or {}, row.rejected_objects or {},
                     row.serviceable, routing.families(row.bgp))


def reports_of(live, agents, member_ids=None):
    """{member id: [status reported by each live SE]} (of member_ids, or
    every member).  live: each group's live SE ids, groups by name, SEs
    sorted -- the order is the vote's: ties go to the first report;
    agents: {se_id: AgentView} (a live SE with no row reports nothing).
    The full computation and the member rounds both collect through this."""
    reports = collections.defaultdict(list)
    for se_ids in live:
        for se_id in se_ids:
            agent = agents.get(se_id)
            if agent is None:
                continue
            for mid, st in agent.member_statuses.items():
                if member_ids is None or mid in member_ids:
                    reports[mid].append(st)
    return reports


def compute(rows, reports, agent_rejections, serving, port_refused,
            silent=frozenset()):
    """(statuses, rejected) of the objects in rows ({kind: [row]}):
    rejected holds what an SE or the controller rejected; silent: groups
    whose live SEs all stopped reporting.  The full round and the member
    rounds both compute through this."""
    rejected = set(agent_rejections)
    rejected.update((kind, r.id) for kind, kind_rows in rows.items()
                    for r in kind_rows if r.rejected)
    statuses = operating_mod.compute(
        rows['loadbalancers'], rows['listeners'], rows['pools'],
        rows['members'], rows['healthmonitors'], reports, rejected, serving,
        port_refused, rows['l7policies'], silent)
    return statuses, rejected


def rows_of(session, lb_ids, rules=False):
    """The object rows of these load balancers, by kind (rules: their L7
    rules too, which the operating statuses do not read)."""
    lbs = session.query(models.LoadBalancer).filter(
        models.LoadBalancer.id.in_(lb_ids)).all()
    listeners = session.query(models.Listener).filter(
        models.Listener.loadbalancer_id.in_(lb_ids)).all()
    pools = session.query(models.Pool).filter(
        models.Pool.loadbalancer_id.in_(lb_ids)).all()
    pool_ids = [p.id for p in pools]
    rows = {
        'loadbalancers': lbs, 'listeners': listeners, 'pools': pools,
        'members': session.query(models.Member).filter(
            models.Member.pool_id.in_(pool_ids)).all(),
        'healthmonitors': session.query(models.HealthMonitor).filter(
            models.HealthMonitor.pool_id.in_(pool_ids)).all(),
        'l7policies': session.query(models.L7Policy).filter(
            models.L7Policy.listener_id.in_([lst.id for lst in listeners]))
        .all(),
    }
    if rules:
        rows['l7rules'] = session.query(models.L7Rule).filter(
            models.L7Rule.l7policy_id.in_([p.id for p in rows['l7policies']])
        ).all()
    return rows


def member_reports(session, agents, before, now, agent_rejections, serving,
                   port_refused, silent=frozenset()):
    """(agents, statuses) when only agents' member statuses moved between
    the reporter's inputs `before` and `now` (Reporter._inputs), else None.

    agents: {se_id: AgentView} the last computation read; the answer's is
    updated with the moved agents.  statuses: {(kind, id): operating
    status} of every object of the load balancers whose members moved.
    agent_rejections, serving, port_refused, silent: what the last
    computation read (unchanged when this answers)."""
    groups0, agents0, pending0, refused0, live0 = before
    groups1, agents1, pending1, refused1, live1 = now
    if (groups0, pending0, refused0, live0) != \
            (groups1, pending1, refused1, live1):
        return None
    if [a[:2] for a in agents0] != [a[:2] for a in agents1]:
        return None             # an agent came or went
    moved = [b[0] for a, b in zip(agents0, agents1) if a != b]
    agents = dict(agents)
    changed = set()
    rows = session.query(models.AgentState).filter(
        models.AgentState.se_id.in_(moved)).all()
    if len(rows) != len(moved):
        return None
    for row in rows:
        old, new = agents.get(row.se_id), agent_view(row)
        if old is None or old[1:] != new[1:]:
            return None         # not the member statuses alone
        changed.update(m for m in set(old.member_statuses) |
                       set(new.member_statuses)
                       if old.member_statuses.get(m) !=
                       new.member_statuses.get(m))
        agents[row.se_id] = new
    if not changed:
        return agents, {}
    lb_ids = {lb for (lb,) in session.query(models.Pool.loadbalancer_id)
              .join(models.Member, models.Member.pool_id == models.Pool.id)
              .filter(models.Member.id.in_(changed)).distinct()}
    rows = rows_of(session, lb_ids)
    reports = reports_of(live1, agents, {m.id for m in rows['members']})
    statuses, _ = compute(rows, reports, agent_rejections, serving,
                          port_refused, silent)
    return agents, statuses
