"""The document an L4 SE group's agents run (the agent contract's schema v1).

Built from the controller's rows in one transaction with one query per
table for the whole group -- listeners, pools, members and health monitors
of its tier-1 load balancers -- then assembled in memory.  Every agent of
the group asks for it after every change (get_config), and at 10,000 load
balancers the former per-object queries (four and more per load balancer)
took seconds per ask.  Tier-2 load balancers steer to their L7 SEs
(l7_snapshot.l4_load_balancer) and are few: they are built one by one.
"""

import collections

import sqlalchemy as sa

from dsr_provider.controller import l7_snapshot
from dsr_provider.controller import models

SCHEMA_VERSION = 1


def document(session, se_group, generation):
    """The schema v1 document of `se_group` at `generation`."""
    lbs = session.query(models.LoadBalancer).filter_by(
        se_group=se_group, rejected=None).order_by(
            models.LoadBalancer.id).all()
    tree = _Tree(session, se_group)
    items = []
    for lb in lbs:
        doc = lb.doc
        dsr = doc.get('dsr') if isinstance(doc.get('dsr'), dict) else {}
        meta = doc.get('flavor') if isinstance(doc.get('flavor'),
                                               dict) else {}
        encap = dsr.get('encapsulation') or meta.get('encapsulation') \
            or 'ipip'
        if lb.l7_se_group:
            items.append(l7_snapshot.l4_load_balancer(session, lb, encap))
        else:
            items.append(_load_balancer(lb.id, doc, encap, tree))
    return {'schema_version': SCHEMA_VERSION, 'se_group': se_group,
            'generation': generation, 'load_balancers': items}


class _Tree:
    """The accepted (not rejected) objects below the group's accepted
    tier-1 load balancers, by parent, each list in id order (as the agents
    have always received them)."""

    def __init__(self, session, se_group):
        lb_ids = sa.select(models.LoadBalancer.id).where(
            models.LoadBalancer.se_group == se_group,
            models.LoadBalancer.rejected.is_(None),
            models.LoadBalancer.l7_se_group.is_(None)).scalar_subquery()
        accepted_pools = sa.select(models.Pool.id).where(
            models.Pool.loadbalancer_id.in_(lb_ids),
            models.Pool.rejected.is_(None)).scalar_subquery()
        self.listeners = _by_parent(session, models.Listener,
                                    models.Listener.loadbalancer_id, lb_ids)
        # {pool id: (load balancer id, doc)}
        self.pools = {
            pid: (lb_id, doc) for pid, lb_id, doc in session.execute(
                sa.select(models.Pool.id, models.Pool.loadbalancer_id,
                          models.Pool.doc).where(
                    models.Pool.id.in_(accepted_pools)))}
        self.members = _by_parent(session, models.Member,
                                  models.Member.pool_id, accepted_pools)
        self.monitors = _by_parent(session, models.HealthMonitor,
                                   models.HealthMonitor.pool_id,
                                   accepted_pools)


def _by_parent(session, model, parent_column, parent_ids):
    """{parent id: [(id, doc), ...] in id order} of the accepted rows of
    `model` whose parent is one of `parent_ids`."""
    grouped = collections.defaultdict(list)
    for oid, parent, doc in session.execute(
            sa.select(model.id, parent_column, model.doc).where(
                parent_column.in_(parent_ids),
                model.rejected.is_(None)).order_by(model.id)):
        grouped[parent].append((oid, doc))
    return grouped


def _load_balancer(lb_id, doc, encap, tree):
    listeners = []
    for lst_id, ldoc in tree.listeners.get(lb_id, ()):
        item = {'id': lst_id, 'protocol': ldoc['protocol'],
                'port': ldoc['protocol_port'],
                'admin_state_up': ldoc.get('admin_state_up', True),
                'allowed_cidrs': ldoc.get('allowed_cidrs') or []}
        limit = ldoc.get('connection_limit')
        if limit is not None and limit != -1:
            # Only when set: an agent that cannot enforce it rejects
            # that listener (unknown field) instead of ignoring it.
            item['connection_limit'] = limit
        idle = ldoc.get('timeout_client_data')
        if idle is not None:
            # Octavia fills in its default (50000): always honoured.
            item['timeout_client_data'] = idle
        pool_id = ldoc.get('default_pool_id')
        owner, pdoc = tree.pools.get(pool_id, (None, None))
        if owner == lb_id:
            item['pool'] = _pool(pool_id, pdoc, encap, tree)
        listeners.append(item)
    return {'id': lb_id, 'admin_state_up': doc.get('admin_state_up', True),
            'vips': [{'address': a}
                     for a in models.vip_addresses(doc)],
            'listeners': listeners}


def _pool(pool_id, pdoc, encap, tree):
    members = []
    for member_id, d in tree.members.get(pool_id, ()):
        item = {'id': member_id, 'address': d['address'],
                'protocol_port': d['protocol_port'],
                'weight': d.get('weight', 1),
                'admin_state_up': d.get('admin_state_up', True),
                'backup': bool(d.get('backup', False))}
        if d.get('monitor_port'):
            item['monitor_port'] = d['monitor_port']
        if d.get('monitor_address'):
            item['monitor_address'] = d['monitor_address']
        members.append(item)
    result = {'id': pool_id, 'algorithm': pdoc['lb_algorithm'],
              'encap': encap,
              'admin_state_up': pdoc.get('admin_state_up', True),
              'members': members}
    monitors = tree.monitors.get(pool_id)
    if monitors:
        # Octavia allows one per pool; the lowest id if ever more.
        hm_id, h = monitors[0]
        monitor = {'id': hm_id, 'type': h['type'], 'delay': h['delay'],
                   'timeout': h['timeout'],
                   'max_retries': h['max_retries'],
                   'max_retries_down': h.get('max_retries_down', 3),
                   'admin_state_up': h.get('admin_state_up', True)}
        for key in ('http_method', 'url_path', 'expected_codes'):
            if h.get(key):
                monitor[key] = h[key]
        if 'expected_codes' in monitor:
            # Octavia accepts "200, 202"; the agent's schema has no
            # spaces.
            monitor['expected_codes'] = monitor[
                'expected_codes'].replace(' ', '')
        result['health_monitor'] = monitor
    return result
