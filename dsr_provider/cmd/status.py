"""dsr-status: the fleet as the controller's database sees it (read-only).

    dsr-status --config-file dsr-controller.conf [--se-group G]
               [--format table|json] [--stale-after SECONDS]

For every SE group: its desired generation, its SEs -- applied generation,
ring ABI, BGP sessions and announced routes, capacity use against the SE's
limits, last error, last report -- and every load balancer whose desired
state differs from what its SEs run (a change not applied by every SE, an
object the controller or an SE left out).  SEs of one group running
different ring ABIs are flagged: their rings differ, so a flow that moves
from one SE to another (ECMP) would change member.

Only reads: no migration, no write.  Exit status 0; 1 when something needs
an operator (an ABI mismatch, an SE behind, in error, stale or not
serviceable, a load balancer not as desired); 2 on a usage or database
error.  docs/observability.md shows an example.
"""

import collections
import json
import sys
import time

from oslo_config import cfg
import sqlalchemy as sa

from dsr_provider.controller import db as db_mod
from dsr_provider.controller import models
from dsr_provider.controller import store as store_mod
from dsr_provider import opts
from dsr_wire import auth

_CLI_OPTS = [
    cfg.StrOpt('se-group', help='Only this SE group.'),
    cfg.StrOpt('format', default='table', choices=['table', 'json'],
               help='Output format.'),
    cfg.FloatOpt('stale-after', default=30.0, min=0.0,
                 help='An SE whose last report is older than this many '
                      'seconds is flagged stale (agents report at least '
                      'every [agent] stats_interval, 10 s by default).'),
]
# Seconds a report may seem stored ahead of this host's clock before the
# skew is shown (the controllers' and this host's clocks on NTP agree
# within milliseconds).
CLOCK_SKEW = 5.0
# (limit key, label): the SE's limits, what it holds against each (its
# report) and what the controller counts of the group's desired state
# against each (none for flows: no object count reaches the flow table).
_CAPACITY = (('max_listeners', 'listeners'), ('max_members', 'members'),
             ('ring_size', 'largest pool'), ('ring_slots', 'ring slots'),
             ('max_cidrs', 'allowed cidrs'), ('conn_table_size', 'flows'))


def _owners(session):
    """{(kind, id): load balancer id} of every stored object."""
    owner = {}
    for lb_id, in session.query(models.LoadBalancer.id):
        owner[('loadbalancers', lb_id)] = lb_id
    pools = {}
    for pid, lb_id in session.query(models.Pool.id,
                                    models.Pool.loadbalancer_id):
        pools[pid] = lb_id
        owner[('pools', pid)] = lb_id
    for lid, lb_id in session.query(models.Listener.id,
                                    models.Listener.loadbalancer_id):
        owner[('listeners', lid)] = lb_id
    for kind, model in (('members', models.Member),
                        ('healthmonitors', models.HealthMonitor)):
        for oid, pid in session.query(model.id, model.pool_id):
            if pid in pools:
                owner[(kind, oid)] = pools[pid]
    policies = {}
    for pid, lid in session.query(models.L7Policy.id,
                                  models.L7Policy.listener_id):
        lb_id = owner.get(('listeners', lid))
        if lb_id is not None:
            policies[pid] = lb_id
            owner[('l7policies', pid)] = lb_id
    for rid, pid in session.query(models.L7Rule.id,
                                  models.L7Rule.l7policy_id):
        if pid in policies:
            owner[('l7rules', rid)] = policies[pid]
    return owner


def _controller_rejections(session):
    """[((kind, id), reason)] the controller left out (capacity)."""
    found = []
    for kind, model in store_mod._MODELS.items():
        for oid, reason in session.query(model.id, model.rejected).filter(
                model.rejected.isnot(None)):
            found.append(((kind, oid), reason))
    return found


def _diverged(session):
    """[((kind, id), {field: value})] of running objects whose update was
    refused: Octavia holds these values, the SEs run the previous ones."""
    found = []
    for kind, model in store_mod._MODELS.items():
        if hasattr(model, 'diverged'):
            found += [((kind, oid), fields) for oid, fields in session.query(
                model.id, model.diverged).filter(model.diverged.isnot(None))]
    return found


def _pending(session):
    """{SE group: {load balancer id: newest generation of that group a
    pending change waits for}} (generation 0: refused whole, waits for no
    SE; a tier-2 change may wait for its L4 group too)."""
    result = collections.defaultdict(dict)
    for p in session.query(models.PendingStatus):
        waits = [(p.se_group, p.generation),
                 (p.also_se_group, p.also_generation)]
        for item in (p.status or {}).get('loadbalancers') or ():
            lb_id = item.get('id')
            for group, generation in waits:
                if lb_id and group and generation:
                    known = result[group].get(lb_id, 0)
                    result[group][lb_id] = max(known, generation)
    return result


def _se_view(row, enrolled, group_generation, usage, now, stale_after):
    """One SE's line: what it runs and what is wrong with it."""
    if row is None:
        return {'se_id': enrolled, 'reported': False,
                'problems': ['enrolled, never reported']}
    bgp = row.bgp or {}
    peers = bgp.get('peers') or {}
    limits = row.limits or {}
    held = row.held or {}
    capacity = {}
    for key, label in _CAPACITY:
        if key in limits:
            capacity[label] = {'held': held.get(key),
                               'used': usage.get(key),
                               'limit': limits[key]}
    age = now - row.updated_at
    view = {
        'se_id': row.se_id, 'reported': True,
        'applied_generation': row.applied_generation,
        'rejected_generation': row.rejected_generation,
        'behind': max(group_generation - (row.applied_generation or 0), 0),
        'ring_abi': row.ring_abi,
        'bgp': {'peers': peers,
                'established': sum(1 for s in peers.values()
                                   if s == 'established'),
                'announced': bgp.get('announced') or []},
        'capacity': capacity,
        'serviceable': row.serviceable,
        'helpers': row.helpers or {},
        'error': row.error,
        'rejected_objects': sum(len(v) for v in
                                (row.rejected_objects or {}).values()),
        'last_report': row.updated_at,
        'last_report_age_s': round(max(age, 0.0), 1),
    }
    problems = []
    if view['behind']:
        problems.append(f'{view["behind"]} generation(s) behind')
    if row.error:
        problems.append('error')
    if row.serviceable is False:
        problems.append('not serviceable')
    if age > stale_after:
        problems.append(f'no report for {age:.0f} s')
    elif age < -CLOCK_SKEW:
        # Stored by a controller whose clock is ahead of this host's (or
        # this one's behind): what "last report" says is then wrong.
        problems.append(f'last report stored {-age:.0f} s ahead of this '
                        'host\'s clock (clock skew: NTP)')
    if peers and view['bgp']['established'] < len(peers):
        problems.append('BGP session down')
    for name, helper in sorted(view['helpers'].items()):
        if isinstance(helper, dict) and helper.get('state') not in (
                None, 'running', 'disabled'):
            problems.append(f'{name} {helper.get("state")}')
    for label, c in capacity.items():
        # The desired state does not fit (the controller's count: what the
        # SE left out is listed under its load balancer), or, whatever it
        # counts, the SE holds more than its limit.
        if (c['used'] or 0) > c['limit']:
            problems.append(f'{label} over capacity (the desired state '
                            f'needs {c["used"]} of {c["limit"]})')
        elif (c['held'] or 0) > c['limit']:
            problems.append(f'{label} over capacity (holds {c["held"]} '
                            f'of {c["limit"]})')
    view['problems'] = problems
    return view


def _needed(session, se_group, pending):
    """{load balancer id: the generation of se_group its SEs must have
    applied to run it as desired}: its last change's
    (LoadBalancer.changed_generation, per tier), else -- a load balancer
    not changed since that was recorded -- what a change of it still
    waiting for its status waits for (the later of the two)."""
    lbs = models.LoadBalancer
    needed = dict(pending.get(se_group, {}))
    for lb_id, l7_group, changed, l4_changed in session.query(
            lbs.id, lbs.l7_se_group, lbs.changed_generation,
            lbs.l4_changed_generation).filter(
                sa.or_(lbs.se_group == se_group,
                       lbs.l7_se_group == se_group)):
        generation = l4_changed if l7_group and l7_group != se_group \
            else changed
        if generation:
            needed[lb_id] = max(generation, needed.get(lb_id, 0))
    return needed


def _differing(session, se_group, rows, owners, pending, rejected,
               diverged=()):
    """[{'id': lb, 'reasons': [...]}] of the group's load balancers whose
    desired state is not what its SEs run."""
    reasons = collections.defaultdict(list)
    for lb_id, generation in sorted(_needed(session, se_group,
                                            pending).items()):
        behind = [r.se_id for r in rows
                  if (r.applied_generation or 0) < generation]
        refused = [r.se_id for r in rows
                   if r.rejected_generation is not None and
                   r.rejected_generation >= generation and
                   (r.applied_generation or 0) < generation]
        if refused:
            reasons[lb_id].append(f'generation {generation} refused by '
                                  + ', '.join(refused))
        elif behind:
            reasons[lb_id].append(f'generation {generation} not applied '
                                  'by ' + ', '.join(behind))
    for (kind, oid), reason in rejected:
        lb_id = owners.get((kind, oid))
        if lb_id is not None:
            reasons[lb_id].append(f'{store_mod._GET_RESOURCE[kind]} {oid} '
                                  f'left out by the controller: {reason}')
    for (kind, oid), fields in diverged:
        lb_id = owners.get((kind, oid))
        if lb_id is not None:
            shown = ', '.join(f'{k}={json.dumps(v)}'
                              for k, v in sorted(fields.items()))
            reasons[lb_id].append(f'{store_mod._GET_RESOURCE[kind]} {oid} '
                                  'runs its previous version: its update '
                                  f'was refused ({shown})')
    for r in rows:
        for kind, objects in (r.rejected_objects or {}).items():
            for oid, reason in sorted(objects.items()):
                lb_id = owners.get((kind, oid))
                if lb_id is not None:
                    reasons[lb_id].append(f'{reason} (left out by SE '
                                          f'{r.se_id})')
    lbs = models.LoadBalancer
    in_group = {lb_id for lb_id, in session.query(lbs.id).filter(
        sa.or_(lbs.se_group == se_group, lbs.l7_se_group == se_group))}
    return [{'id': lb_id, 'reasons': reasons[lb_id]}
            for lb_id in sorted(reasons) if lb_id in in_group]


def fleet(database, se_group=None, stale_after=30.0, now=None):
    """The fleet view as a JSON-ready dict."""
    now = time.time() if now is None else now
    with database.session() as s:
        groups = {g.name: g for g in s.query(models.SEGroup)}
        agents = collections.defaultdict(list)
        for row in s.query(models.AgentState).order_by(
                models.AgentState.se_id):
            agents[row.se_group].append(row)
        enrolled = collections.defaultdict(list)
        for key in s.query(models.SEKey).order_by(models.SEKey.se_id):
            enrolled[key.se_group].append(key.se_id)
        lb_counts = dict(s.query(models.LoadBalancer.se_group,
                                 sa.func.count()).group_by(
                                     models.LoadBalancer.se_group))
        # Tier 2: load balancers of each L7 group, and the L7 SEs the
        # leader put in the L4 rings (controller/tier2.py).
        l7_lb_counts = dict(s.query(models.LoadBalancer.l7_se_group,
                                    sa.func.count()).group_by(
                                        models.LoadBalancer.l7_se_group))
        l7_ses = collections.defaultdict(list)
        for m in s.query(models.L7SEMember).order_by(
                models.L7SEMember.se_id):
            l7_ses[m.l7_se_group].append({
                'se_id': m.se_id, 'tunnel_addresses': m.tunnel_addresses,
                'draining': m.draining,
                # Left out of these objects' L4 pools (ERROR there).
                'unserved': m.unserved or {}})
        # Why the leader left L7 SEs out of the L4 rings (its last look).
        left_out = {(r.l7_se_group, r.se_id): r for r in s.query(
            models.L7SELeftOut)}
        owners = _owners(s)
        pending = _pending(s)
        rejected = _controller_rejections(s)
        diverged = _diverged(s)
        names = sorted(set(groups) | set(agents) | set(enrolled))
        if se_group is not None:
            names = [n for n in names if n == se_group]
        result = []
        for name in names:
            group = groups.get(name)
            generation = group.generation if group else 0
            rows = agents.get(name, [])
            # store._Usage: what the controller counts against limits,
            # rings sized at the group's (smallest) ring_size.
            ring_sizes = [r.limits['ring_size'] for r in rows
                          if (r.limits or {}).get('ring_size')]
            usage = store_mod._Usage(s, name, {'ring_size': min(
                ring_sizes)} if ring_sizes else None).count()
            reported = {r.se_id for r in rows}
            ses = [_se_view(r, None, generation, usage, now, stale_after)
                   for r in rows]
            ses += [_se_view(None, se_id, generation, usage, now,
                             stale_after)
                    for se_id in enrolled.get(name, ())
                    if se_id not in reported]
            # A silent SE stays in the checks below: its agent may be
            # dead while its XDP program and BGP sessions still forward.
            # A decommissioned one is forgotten by `dsr-manage revoke-se`.
            abis = {r.se_id: r.ring_abi for r in rows
                    if r.ring_abi is not None}
            tier2 = group is not None and group.role == 'tier2'
            if tier2:
                in_rings = {m['se_id'] for m in l7_ses.get(name, ())}
                for se in ses:
                    if se['reported'] and se['se_id'] not in in_rings \
                            and se['last_report_age_s'] <= stale_after:
                        why = left_out.get((name, se['se_id']))
                        se['left_out'] = None if why is None else {
                            'reason': why.reason, 'since': why.since}
                        # The reason may quote a tooz entry: escaped.
                        se['problems'].append(
                            'not in the L4 rings: ' + (
                                'no reason recorded (not in the coordination '
                                'group, or no leader yet)' if why is None
                                else auth.shown(why.reason, 200)))
            result.append({
                'se_group': name,
                'role': 'tier2' if tier2 else 'tier1',
                'generation': generation,
                'published_generation': group.published_generation
                if group else 0,
                'load_balancers': (l7_lb_counts if tier2 else
                                   lb_counts).get(name, 0),
                # L7 groups: the ready L7 SEs in the L4 rings.
                'l7_ses_in_l4_rings': l7_ses.get(name, []) if tier2
                else None,
                # The same for every SE of the group: shown once (an L7
                # group's SEs program no dataplane).
                'desired_use': None if tier2 else {
                    label: usage[key] for key, label in _CAPACITY
                    if key in usage},
                'ring_abis': abis,
                'ring_abi_mismatch': len(set(abis.values())) > 1,
                'ses': ses,
                'load_balancers_not_as_desired': _differing(
                    s, name, rows, owners, pending, rejected, diverged),
            })
    return {'generated_at': now, 'se_groups': result}


def _no_ready_l7_se(group):
    """An L7 group serving load balancers with no L7 SE taking new flows
    in the rings (none, or all draining)."""
    ses = group.get('l7_ses_in_l4_rings')
    return ses is not None and group['load_balancers'] > 0 and \
        not any(not m['draining'] for m in ses)


def needs_attention(view):
    return any(g['ring_abi_mismatch'] or g['load_balancers_not_as_desired']
               or any(se['problems'] for se in g['ses'])
               or _no_ready_l7_se(g)
               for g in view['se_groups'])


def _age(seconds):
    if seconds < 120:
        return f'{seconds:.0f}s ago'
    if seconds < 7200:
        return f'{seconds / 60:.0f}m ago'
    return f'{seconds / 3600:.0f}h ago'


def _table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ['  '.join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
            for r in rows]


def _held(c):
    """One capacity cell: what the SE holds against its limit."""
    if not c:
        return '-'
    return f'{"?" if c["held"] is None else c["held"]}/{c["limit"]}'


def render_table(view):
    lines = []
    for g in view['se_groups']:
        lines.append(f'SE group {g["se_group"]}'
                     f'{" (tier-2 L7 group)" if g["role"] == "tier2" else ""}'
                     f': generation {g["generation"]} (published '
                     f'{g["published_generation"]}), '
                     f'{g["load_balancers"]} load balancer(s)')
        if g['l7_ses_in_l4_rings'] is not None:
            ready = ', '.join(
                f'{m["se_id"]} ' + '/'.join(
                    a for _f, a in sorted(m['tunnel_addresses'].items()))
                + (' (draining)' if m['draining'] else '')
                + ''.join(f' (not in the pools of {kind} '
                          f'{", ".join(ids)})' for kind, ids in sorted(
                              m.get('unserved', {}).items()))
                for m in g['l7_ses_in_l4_rings'])
            if _no_ready_l7_se(g):
                ready += (' ' if ready else '') + \
                    '!! none taking new flows (tier-2 VIPs have no L7 SE)'
            lines.append('  L7 SEs in the L4 rings: ' + (ready or 'none'))
        if g['ring_abi_mismatch']:
            lines.append('  !! RING ABI MISMATCH: ' + ', '.join(
                f'{se} runs {abi}' for se, abi in sorted(
                    g['ring_abis'].items()))
                + ' (flows would map to different members on different '
                'SEs)')
        rows = [('SE', 'APPLIED', 'RING ABI', 'BGP', 'ROUTES', 'CAPACITY',
                 'LAST REPORT', 'ERROR / PROBLEMS')]
        for se in g['ses']:
            if not se['reported']:
                rows.append((se['se_id'], '-', '-', '-', '-', '-', 'never',
                             '; '.join(se['problems'])))
                continue
            peers = se['bgp']['peers']
            bgp = (f'{se["bgp"]["established"]}/{len(peers)} up'
                   if peers else 'no peers')
            # One column per limit, in the legend's order ('-': a limit
            # this SE does not report), so that no value shifts under
            # another's name.
            capacity = ' '.join(
                _held(c) for c in (se['capacity'].get(label)
                                   for _key, label in _CAPACITY)) \
                if se['capacity'] else '-'
            # What an SE reported is shown escaped (auth.shown): no
            # terminal control sequences from a report.
            issues = '; '.join(([auth.shown(se['error'], 300)]
                                if se['error'] else []) +
                               [p for p in se['problems'] if p != 'error'])
            # '?': an older agent; '-': an L7 SE, which builds no ring.
            abi = '-' if g['role'] == 'tier2' else se['ring_abi'] or '?'
            rows.append((se['se_id'], se['applied_generation'], abi, bgp,
                         len(se['bgp']['announced']), capacity,
                         _age(se['last_report_age_s']), issues or '-'))
        if len(rows) > 1:
            lines += ['  ' + line for line in _table(rows)]
        else:
            lines.append('  no SE')
        counted = g.get('desired_use')
        if counted:
            lines.append('  desired state, as the controller counts it: '
                         + ', '.join(f'{counted[label]} {label}'
                                     for _key, label in _CAPACITY
                                     if label in counted))
        if g['ses']:
            lines.append('  (capacity: ' + ' '.join(
                label.replace(' ', '-') for _key, label in _CAPACITY)
                + ': what each SE holds/its limit; ? not reported, - no '
                'such limit)')
        differing = g['load_balancers_not_as_desired']
        if differing:
            lines.append('  load balancers not as desired:')
            for lb in differing:
                lines.append(f'    {lb["id"]}')
                lines += [f'      - {reason}' for reason in lb['reasons']]
    return '\n'.join(lines) if lines else 'no SE group'


def main(argv=None):
    conf = cfg.ConfigOpts()
    opts.register_controller_opts(conf)
    conf.register_cli_opts(_CLI_OPTS)
    conf(argv if argv is not None else sys.argv[1:], project='octavia-dsr',
         prog='dsr-status', default_config_files=[])
    url = conf.dsr_controller.database_connection
    if not url:
        print('dsr-status: no [dsr_controller] database_connection (give '
              '--config-file)', file=sys.stderr)
        return 2
    database = db_mod.Database(url)
    try:
        view = fleet(database, conf.se_group, conf.stale_after)
    except sa.exc.SQLAlchemyError as exc:
        print(f'dsr-status: database: {exc.__class__.__name__}: '
              f'{str(exc).splitlines()[0]} (schema not upgraded? '
              '"dsr-db-manage upgrade")', file=sys.stderr)
        return 2
    finally:
        database.engine.dispose()
    if conf.format == 'json':
        print(json.dumps(view, indent=2, sort_keys=True))
    else:
        print(render_table(view))
    return 1 if needs_attention(view) else 0


if __name__ == '__main__':
    sys.exit(main())
