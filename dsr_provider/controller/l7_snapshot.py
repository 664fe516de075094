"""The two documents of a tier-2 load balancer (docs/tier2.md).

* In its **L4 group's** snapshot (schema v1, dsr_wire/schema.py, agents
  unchanged) it has one L4 listener per Octavia listener -- TCP for HTTP,
  HTTPS, TERMINATED_HTTPS and TCP, UDP for UDP, same port -- whose pool is
  synthetic: ``l7:<listener id>``, SOURCE_IP_PORT, members the ready L7
  service engines of its L7 group (``l7se:<se id>@<listener id>``: the
  agents need member ids unique in the snapshot, and one L7 SE serves
  every listener; their tunnel address of the VIP's family, weight 0
  while one drains).  No health monitor: an
  L7 SE's liveness is its membership (controller/tier2.py).
* Its **L7 group's** document (dsr_wire/l7.py) carries the Octavia
  objects as stored, with octavia-lib's field names.

Both are built from the controller's database in the snapshot's session,
so they match the generation they carry.  The L7 document also speaks the
L7 contract version of the group's live L7 SEs (dsr_wire.l7.group_contract,
read from tooz when it is built): a field an L7 SE of an earlier release
would refuse is left out until every one of them is upgraded, and the
leader gives the group a new generation when that version changes
(controller/tier2.py).
"""

import collections
import copy as copy_mod
import functools
import ipaddress
import json
import re

from oslo_log import log as logging

from dsr_provider.controller import models
from dsr_wire import l7
from dsr_wire import schema

LOG = logging.getLogger(__name__)

ROLE = l7.ROLE
POOL_PREFIX = 'l7:'
MEMBER_PREFIX = 'l7se:'

# contract_of(l7_group) -> the L7 contract version of its live L7 SEs;
# installed by controller/tier2.start (every controller: any of them
# answers get_config).  None (tools, tests without coordination): this
# release's version.
contract_of = None


def group_contract(l7_group):
    if contract_of is None:
        return l7.CONTRACT_VERSION
    return contract_of(l7_group)


def _listeners(session, lb_id):
    return session.query(models.Listener).filter_by(
        loadbalancer_id=lb_id, rejected=None).order_by(models.Listener.id)


# --------------------------------------------------------------- L4 group

# What an L7 SE can leave ERROR alone (its rejected_objects kinds) that its
# L4 pools follow: a load balancer (all its listeners), a listener.
UNSERVED_KINDS = ('loadbalancers', 'listeners')


def l7_se_members(session, l7_group, family):
    """The synthetic pool's members: the ready L7 SEs of l7_group, each at
    its tunnel address of `family` (4 or 6; the other when it has none),
    with the ids of what it does not serve ('unserved', a set: its load
    balancers and listeners left ERROR there alone)."""
    members = []
    other = '6' if family == 4 else '4'
    for row in session.query(models.L7SEMember).filter_by(
            l7_se_group=l7_group).order_by(models.L7SEMember.se_id):
        addresses = row.tunnel_addresses or {}
        address = addresses.get(str(family)) or addresses.get(other)
        if not address:
            continue
        unserved = row.unserved or {}
        members.append({'se_id': row.se_id, 'address': address,
                        'weight': 0 if row.draining else 1,
                        'admin_state_up': True, 'backup': False,
                        'unserved': frozenset(
                            str(object_id) for kind in UNSERVED_KINDS
                            for object_id in unserved.get(kind) or ())})
    return members


def member_id(se_id, listener_id):
    return f'{MEMBER_PREFIX}{se_id}@{listener_id}'


def _l4_member(se_member, listener_id, port):
    item = dict(se_member, protocol_port=port,
                id=member_id(se_member['se_id'], listener_id))
    del item['se_id'], item['unserved']
    return item


def l4_load_balancer(session, lb, encap):
    """The tier-2 load balancer in its L4 group's schema v1 document."""
    doc = lb.doc
    vips = models.vip_addresses(doc)
    family = ipaddress.ip_address(vips[0]).version if vips else 4
    se_members = l7_se_members(session, lb.l7_se_group, family)
    listeners = []
    for lst in _listeners(session, lb.id):
        ldoc = lst.doc
        port = ldoc['protocol_port']
        item = {'id': lst.id,
                'protocol': models.l4_protocol(ldoc),
                'port': port,
                'admin_state_up': ldoc.get('admin_state_up', True),
                # Clients outside the allow list are dropped at the L4
                # SEs already; the L7 SEs check again.
                'allowed_cidrs': ldoc.get('allowed_cidrs') or [],
                'pool': {'id': f'{POOL_PREFIX}{lst.id}',
                         'algorithm': 'SOURCE_IP_PORT', 'encap': encap,
                         'admin_state_up': True,
                         # An L7 SE that left this load balancer or
                         # listener ERROR (a port taken there, a crashed
                         # HAProxy) would get 1/N of its new connections
                         # and serve none.
                         'members': [_l4_member(m, lst.id, port)
                                     for m in se_members
                                     if lb.id not in m['unserved']
                                     and lst.id not in m['unserved']]}}
        if ldoc.get('timeout_client_data') is not None:
            item['timeout_client_data'] = ldoc['timeout_client_data']
        listeners.append(item)
    return {'id': lb.id, 'admin_state_up': doc.get('admin_state_up', True),
            'vips': [{'address': a} for a in vips], 'listeners': listeners}


# --------------------------------------------------------------- L7 group

_LISTENER_FIELDS = ('admin_state_up', 'connection_limit', 'default_pool_id',
                    'timeout_client_data', 'timeout_member_connect',
                    'timeout_member_data', 'timeout_tcp_inspect',
                    'allowed_cidrs', 'insert_headers',
                    'default_tls_container_ref', 'sni_container_refs',
                    *l7.LISTENER_TLS_FIELDS)
_POLICY_FIELDS = ('action', 'position', 'redirect_pool_id', 'redirect_url',
                  'redirect_prefix', 'redirect_http_code', 'admin_state_up')
_RULE_FIELDS = ('type', 'compare_type', 'key', 'value', 'invert',
                'admin_state_up')
_POOL_FIELDS = ('protocol', 'lb_algorithm', 'admin_state_up')
_MEMBER_FIELDS = ('address', 'protocol_port', 'weight', 'admin_state_up',
                  'backup', 'monitor_address', 'monitor_port')
_MONITOR_FIELDS = ('type', 'delay', 'timeout', 'max_retries',
                   'max_retries_down', 'http_method', 'url_path',
                   'expected_codes', 'admin_state_up')


def _copy(obj_id, doc, fields):
    """{'id', field: value} for the fields the document has a value for
    (the store keeps no None values)."""
    result = {'id': obj_id}
    result.update((f, doc[f]) for f in fields if doc.get(f) is not None)
    return result


def _policies_by_listener(session, lb_id):
    """{listener id: its policies, each with its rules, in Octavia's
    order}: two queries for the load balancer (one a listener made a
    listener of 300 a pool change's slowest part)."""
    of_lb = session.query(models.Listener.id).filter_by(
        loadbalancer_id=lb_id)
    rules = collections.defaultdict(list)
    for r in session.query(models.L7Rule).join(
            models.L7Policy,
            models.L7Rule.l7policy_id == models.L7Policy.id).filter(
                models.L7Policy.listener_id.in_(of_lb.scalar_subquery()),
                models.L7Rule.rejected.is_(None)).order_by(models.L7Rule.id):
        rules[r.l7policy_id].append(_copy(r.id, r.doc, _RULE_FIELDS))
    policies = collections.defaultdict(list)
    for row in session.query(models.L7Policy).filter(
            models.L7Policy.listener_id.in_(of_lb.scalar_subquery()),
            models.L7Policy.rejected.is_(None)):
        item = _copy(row.id, row.doc, _POLICY_FIELDS)
        item['rules'] = rules.get(row.id, [])
        policies[row.listener_id].append(item)
    for items in policies.values():
        items.sort(key=lambda p: (p.get('position', 2 ** 31), p['id']))
    return policies


def _pools(session, lb_id):
    """The load balancer's pools with their members and monitors, in id
    order: three queries, not three a pool."""
    rows = session.query(models.Pool).filter_by(
        loadbalancer_id=lb_id, rejected=None).order_by(models.Pool.id).all()
    of_lb = session.query(models.Pool.id).filter_by(
        loadbalancer_id=lb_id).scalar_subquery()
    members = collections.defaultdict(list)
    # Columns, not rows: thousands of ORM instances cost more than the
    # documents.
    for member_id, pool_id, doc in session.query(
            models.Member.id, models.Member.pool_id,
            models.Member.doc).filter(
                models.Member.pool_id.in_(of_lb),
                models.Member.rejected.is_(None)).order_by(models.Member.id):
        members[pool_id].append(_copy(member_id, doc, _MEMBER_FIELDS))
    monitors = {}
    for hm in session.query(models.HealthMonitor).filter(
            models.HealthMonitor.pool_id.in_(of_lb),
            models.HealthMonitor.rejected.is_(None)).order_by(
                models.HealthMonitor.id):
        monitors.setdefault(hm.pool_id, hm)
    return [_pool(row, members.get(row.id, []), monitors.get(row.id))
            for row in rows]


def _pool(row, members, hm):
    item = _copy(row.id, row.doc, _POOL_FIELDS)
    persistence = row.doc.get('session_persistence')
    item['session_persistence'] = {
        k: v for k, v in persistence.items()
        if k in ('type', 'cookie_name', 'persistence_timeout',
                 'persistence_granularity') and v is not None
    } if persistence else None
    item['members'] = members
    monitor = None
    if hm is not None:
        monitor = _copy(hm.id, hm.doc, _MONITOR_FIELDS)
        if 'expected_codes' in monitor:
            monitor['expected_codes'] = schema.normalize_expected_codes(
                monitor['expected_codes'])
    item['healthmonitor'] = monitor
    return item


def holds_fields_between(session, l7_group, low, high):
    """Whether a listener of l7_group stores a field a document of
    contract `high` carries and one of contract `low` does not: then the
    two documents differ."""
    fields = set(l7.listener_fields_above(low)) \
        - set(l7.listener_fields_above(high))
    if not fields:
        return False
    for (doc,) in session.query(models.Listener.doc).join(
            models.LoadBalancer,
            models.Listener.loadbalancer_id == models.LoadBalancer.id).filter(
                models.LoadBalancer.l7_se_group == l7_group,
                models.LoadBalancer.rejected.is_(None),
                models.Listener.rejected.is_(None)):
        if any(doc.get(f) is not None for f in fields):
            return True
    return False


def _listener_tls(item):
    """Leave out a TLS setting the L7 SEs cannot apply: stored before the
    driver checked them (it accepted and ignored any), it would otherwise
    keep the whole load balancer out of the document. HAProxy keeps its
    default for it, as before."""
    for name in l7.LISTENER_TLS_FIELDS:
        if name not in item:
            continue
        try:
            l7.check_listener_tls({name: item[name]})
        except schema.Invalid as exc:
            LOG.warning('listener %s: %s left out of the L7 document: %s',
                        item['id'], name, exc)
            del item[name]


def l7_load_balancer(session, lb, contract=l7.CONTRACT_VERSION):
    """A tier-2 load balancer as L7 SEs of L7 contract `contract` run
    it."""
    newer = l7.listener_fields_above(contract)
    pools = _pools(session, lb.id)
    pool_ids = {p['id'] for p in pools}
    policies = _policies_by_listener(session, lb.id)
    listeners = []
    for lst in _listeners(session, lb.id):
        item = _copy(lst.id, lst.doc, _LISTENER_FIELDS)
        for name in newer:
            # Kept for when its L7 SEs are upgraded (they keep HAProxy's
            # default meanwhile, as before the field was carried).
            item.pop(name, None)
        _listener_tls(item)
        item['protocol'] = lst.doc['protocol']
        item['protocol_port'] = lst.doc['protocol_port']
        if item.get('default_pool_id') not in pool_ids:
            item.pop('default_pool_id', None)   # rejected or deleted pool
        item['l7policies'] = policies.get(lst.id, [])
        listeners.append(item)
    return {'id': lb.id,
            'admin_state_up': lb.doc.get('admin_state_up', True),
            'vips': [{'address': a} for a in models.vip_addresses(lb.doc)],
            'listeners': listeners, 'pools': pools}


# What the L7 schema's field paths name, by the store's kinds: an L7
# rule's problem is its policy's (a policy without one of its rules would
# match more than it was written to).
_STEP = re.compile(r'([A-Za-z_0-9]+)(?:\[(\d+)\])?')
_KINDS = {'listeners': 'listeners', 'l7policies': 'l7policies',
          'pools': 'pools', 'members': 'members',
          'healthmonitor': 'healthmonitors'}
# A rejection made here starts so (Store._l7_rejections tells it from the
# capacity and port ones, and takes it back when the object is fixed).
REFUSED = 'the L7 service engines cannot run it: '


def _culprit(item, field):
    """(kind, id, its container, index) of the deepest object of load
    balancer document `item` on `field` (an Invalid's path relative to
    it), or None: the load balancer itself."""
    found, node = None, item
    for name, index in _STEP.findall(field):
        if not isinstance(node, dict) or name not in node:
            break
        parent, node = node, node[name]
        if index:
            if not isinstance(node, list) or int(index) >= len(node):
                break
            container, node = node, node[int(index)]
            if name in _KINDS and isinstance(node, dict) and node.get('id'):
                found = (_KINDS[name], node['id'], container, int(index))
        elif name in _KINDS and isinstance(node, dict) and node.get('id'):
            found = (_KINDS[name], node['id'], parent, name)
    return found


def runnable(item, copy=True):
    """Split load balancer document `item` (l7_load_balancer's) into what
    the L7 SEs can run and what they cannot, object by object: returns
    (item without the refused objects, [(kind, id, reason)]), or (None,
    reason) when the load balancer itself is refused.  One bad object (a
    policy on a TCP listener, a member at the VIP) no longer takes every
    listener of its load balancer off the L7 SEs.  copy=False: the
    caller's item is taken apart instead of a copy (it has no other use
    for it)."""
    if copy:
        item = copy_mod.deepcopy(item)
    refused = []
    try:
        vips = [v['address'] for v in item['vips']]
    except (KeyError, TypeError):
        vips = []
    # Members first, each alone: the many of a pool are checked in one
    # pass (the loop below re-checks the whole document per object).
    for pool in item.get('pools') or ():
        kept = []
        for member in pool.get('members') or ():
            why = _member_refusal(member, vips)
            if why:
                refused.append(('members', member.get('id'), why))
            else:
                kept.append(member)
        pool['members'] = kept
    # Each round takes one object out; a document has finitely many.
    while True:
        try:
            l7.check_load_balancer(item, members_checked=True)
            return item, refused
        except schema.Invalid as exc:
            found = _culprit(item, exc.field)
            if found is None:
                return None, str(exc)
            kind, obj_id, container, index = found
            refused.append((kind, obj_id, str(exc)))
            if isinstance(index, int):
                del container[index]
            else:
                container[index] = None
            if kind == 'pools':
                # Its listeners serve without it, as with a rejected pool.
                for lst in item['listeners']:
                    if lst.get('default_pool_id') == obj_id:
                        lst.pop('default_pool_id')


# Member checks remembered (by content and VIPs): a tier-2 change other
# than a member's checks its load balancer's whole document, and nearly all
# of its members are those checked the last time (300 listeners x 16
# members: most of a pool change's cost, docs/benchmarks.md).
MEMBER_CHECKS_KEPT = 65536


def _member_refusal(member, vips):
    """Why the L7 SEs cannot run member (an L7 document's item, made of
    a stored JSON document), or None."""
    return _remembered_member_refusal(json.dumps(member, sort_keys=True),
                                      tuple(vips))


@functools.lru_cache(maxsize=MEMBER_CHECKS_KEPT)
def _remembered_member_refusal(text, vips):
    member = json.loads(text)
    try:
        l7._structure('member', member, 'member')
        schema.check_member(member, 'member', vips)
    except schema.Invalid as exc:
        return str(exc)
    return None


def member_refusal(row, vips):
    """Why the L7 SEs cannot run member row `row` of a load balancer with
    VIPs `vips` (addresses), or None."""
    return _member_refusal(_copy(row.id, row.doc, _MEMBER_FIELDS), vips)


def document(session, l7_group, generation, contract=None):
    """The L7 group's document, of L7 contract `contract` (None: that of
    the group's live L7 SEs, group_contract).  An object the L7 schema
    refuses is left out (logged) rather than fail its load balancer or the
    whole group; the store rejects it when it is stored (its status
    ERROR), so this only meets objects stored before it did."""
    if contract is None:
        contract = group_contract(l7_group)
    lbs = []
    for lb in session.query(models.LoadBalancer).filter_by(
            l7_se_group=l7_group, rejected=None).order_by(
                models.LoadBalancer.id):
        item, refused = runnable(l7_load_balancer(session, lb, contract))
        if item is None:
            LOG.error('tier-2 load balancer %s left out of L7 group %s: %s',
                      lb.id, l7_group, refused)
            continue
        for kind, obj_id, reason in refused:
            LOG.error('tier-2 load balancer %s: %s %s left out of L7 group '
                      '%s: %s', lb.id, kind, obj_id, l7_group, reason)
        lbs.append(item)
    return {'schema_version': l7.SCHEMA_VERSION, 'role': ROLE,
            'se_group': l7_group, 'generation': generation,
            'load_balancers': lbs}
