"""Desired state operations, snapshot building and owed statuses.

Every change runs in one transaction that also bumps the SE group's
generation and records the provisioning statuses owed to Octavia once the
agents have applied that generation.  Octavia locks an object's parents
(PENDING_UPDATE) while it changes, so a status names the object and every
parent; siblings are left alone.

Capacity: the agents report their limits; a change that would take the
group over the smallest limit of its live agents is stored with its object
marked rejected (reason in the row), left out of the snapshot and reported
ERROR at once, while the rest of the change converges.  Counting happens
under the SE group's row lock, so concurrent changes cannot both take the
last slot.  See _Usage for what is counted.

Ports (tier 1): a DSR member receives the client's packet unchanged, on
the VIP's port, so a member whose protocol_port differs from that of a
listener its pool serves is rejected alone the same way, and a listener
that would take a pool with such members is refused (_port_refusal,
Store._listener_refusal).  The
driver refuses both at the API when it can look the listener up; this is
the backstop for when it cannot.  Tier 2 is exempt: the L7 SEs proxy.

VIPs: the SEs of a group steer a packet by (VIP address, transport
protocol, port), so two listeners of the group with one of these in common
(load balancers of two projects given the same address on overlapping
networks, or a tier-2 HTTP and TCP listener on one port) cannot both run.
The agents would reject one of them by their own order, possibly the one
already running; the controller refuses the newcomer instead, alone and
the same way (Store._vip_clash): what runs is never displaced.  Tier 2:
the same holds for the listeners of the load balancers sharing an L7
group, whatever their L4 groups -- the L7 SEs bind every one of them on
its VIPs, and two on one address and port would split its connections.
"""

import collections
import contextlib
import contextvars
import functools
import hashlib
import ipaddress
import json
import time

from octavia_lib.common.constants import ACTIVE
from octavia_lib.common.constants import DELETED
from octavia_lib.common.constants import ERROR
from octavia_lib.common.constants import OFFLINE
from octavia_lib.common.constants import ONLINE
from oslo_log import log as logging
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from dsr_provider.controller import db as db_mod
from dsr_provider.controller import l4_snapshot
from dsr_provider.controller import l7_snapshot
from dsr_provider.controller import listener_totals
from dsr_provider.controller import models
from dsr_provider.controller import operating_delta
from dsr_provider.controller import routing
from dsr_wire import rings as wire_rings

LOG = logging.getLogger(__name__)

_ID_KEYS = {'loadbalancers': 'loadbalancer_id', 'listeners': 'listener_id',
            'pools': 'pool_id', 'members': 'member_id',
            'healthmonitors': 'healthmonitor_id',
            'l7policies': 'l7policy_id', 'l7rules': 'l7rule_id'}
_MODELS = {'loadbalancers': models.LoadBalancer,
           'listeners': models.Listener, 'pools': models.Pool,
           'members': models.Member, 'healthmonitors': models.HealthMonitor,
           'l7policies': models.L7Policy, 'l7rules': models.L7Rule}
_GET_RESOURCE = {'loadbalancers': 'loadbalancer', 'listeners': 'listener',
                 'pools': 'pool', 'members': 'member',
                 'healthmonitors': 'healthmonitor', 'l7policies': 'l7policy',
                 'l7rules': 'l7rule'}
# session.info key: {(kind, id): its `rejected` before the change, or
# _CREATED} of the objects a change stored (Store._put).
_BEFORE = 'dsr_before'
_CREATED = 'created by this change'
# Kinds the SEs have no health view of: ONLINE once applied, OFFLINE when
# administratively down, as Octavia's amphora driver reports them
# (MarkL7PolicyActiveInDB / MarkL7RuleActiveInDB).
_ONLINE_WHEN_ACTIVE = ('l7policies', 'l7rules')
# kind -> (its parent's kind, the row's and the document's link to it).
_PARENT = {'listeners': ('loadbalancers', 'loadbalancer_id'),
           'pools': ('loadbalancers', 'loadbalancer_id'),
           'members': ('pools', 'pool_id'),
           'healthmonitors': ('pools', 'pool_id'),
           'l7policies': ('listeners', 'listener_id'),
           'l7rules': ('l7policies', 'l7policy_id')}
# {kind: the kinds whose parent it is}
_CHILDREN = {kind: tuple(c for c, (p, _) in _PARENT.items() if p == kind)
             for kind in {p for p, _ in _PARENT.values()}}


KINDS = tuple(_ID_KEYS)
# What an agent may report in `limits` (docs/agent-protocol.md).
LIMIT_KEYS = ('max_listeners', 'max_members', 'ring_size', 'conn_table_size',
              'ring_slots', 'max_cidrs')
# The ones a change can exceed, and what each counts (conn_table_size
# sizes the flow table: no object count reaches it).
COUNTED_LIMITS = {'max_listeners': 'listeners (VIP addresses x listeners)',
                  'max_members': 'members (per VIP address and listener)',
                  'ring_size': 'members in one pool (ring slots)',
                  'ring_slots': 'ring slots (per VIP address and listener, '
                                'each ring sized by its pool)',
                  'max_cidrs': 'allowed_cidrs prefixes of one IP family '
                               '(per VIP address of that family and '
                               'listener)'}


class _NotRunning(Exception):
    """A change of a tier-2 load balancer met objects its L7 SEs cannot
    run that are not rejected: Store._sweep_not_running, then again."""

    def __init__(self, lb_id):
        super().__init__(lb_id)
        self.lb_id = lb_id


def _sweeping(method):
    """A tier-2 change that met objects stored before the L7 check (not
    rejected, running nowhere): rejected on their own, then the change
    again, once."""
    @functools.wraps(method)
    def change(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except _NotRunning as exc:
            self._sweep_not_running(exc.lb_id)
        return method(self, *args, **kwargs)
    return change


def object_id(kind, doc):
    return doc.get(_ID_KEYS[kind]) or doc.get('id')


class Unknown(LookupError):
    """A change names an object the controller does not have."""

    def __init__(self, kind, obj_id, message=None):
        super().__init__(message or f'{_GET_RESOURCE[kind]} {obj_id} is '
                                    f'unknown')
        self.kind = kind
        self.obj_id = obj_id


# The message_id of the change message being handled in this thread
# (endpoints.ChangeEndpoint): the first transaction of the change records
# it, and refuses it if it was recorded already.
CHANGE_MESSAGE = contextvars.ContextVar('dsr_change_message', default=None)


class Redelivered(Exception):
    """This change message was committed already (models.ProcessedChange):
    RabbitMQ delivered it again."""

    def __init__(self, message_id):
        super().__init__(f'message {message_id} was applied already')


class Tombstoned(Unknown):
    """The object was deleted here (models.Tombstone).  failed: its
    delete was reported ERROR (Octavia still has it)."""

    def __init__(self, kind, obj_id, failed=False):
        super().__init__(kind, obj_id,
                         f'{_GET_RESOURCE[kind]} {obj_id} was deleted')
        self.failed = failed


def _check_tombstone(session, kind, obj_id):
    """Raise Tombstoned if the object was deleted here."""
    tomb = session.get(models.Tombstone, (kind, obj_id))
    if tomb is not None:
        raise Tombstoned(kind, obj_id, failed=tomb.outcome == ERROR)


def _clean(doc):
    """Drop None values and nested object lists (stored on their own)."""
    return {k: v for k, v in doc.items()
            if v is not None and k not in ('listeners', 'pools', 'members',
                                           'healthmonitor', 'l7policies',
                                           'rules')}


class Status:
    """An Octavia status document under construction."""

    def __init__(self):
        self.doc = {}

    def add(self, kind, obj_id, provisioning=ACTIVE, changed=True,
            enabled=None):
        """The object itself (changed) or a parent Octavia locked.
        enabled: its admin_state_up, for the kinds whose operating status
        follows it (_ONLINE_WHEN_ACTIVE)."""
        items = self.doc.setdefault(kind, [])
        for item in items:
            if item['id'] == obj_id:
                # The object's own status beats ACTIVE as somebody's parent.
                if changed:
                    item['provisioning_status'] = provisioning
                    item['changed'] = True
                if enabled is not None:
                    item['enabled'] = bool(enabled)
                return
        item = {'id': obj_id, 'provisioning_status': provisioning,
                'changed': changed}
        if enabled is not None:
            item['enabled'] = bool(enabled)
        items.append(item)

    def parent(self, kind, obj_id, enabled=None):
        self.add(kind, obj_id, ACTIVE, changed=False, enabled=enabled)

    def reject(self, kind, obj_id, reason, kept=False):
        """The controller refused the object: ERROR without the agents.
        kept: a refused change of a running object, which goes on running
        its previous version (its operating status is still computed)."""
        self.add(kind, obj_id, ERROR)
        for item in self.doc[kind]:
            if item['id'] == obj_id:
                item['rejected'] = reason
                if kept:
                    item['kept'] = True
                else:
                    item.pop('kept', None)

    def refused(self, kind, obj_id):
        """Whether the change refused the object."""
        return any(item['id'] == obj_id and item.get('rejected')
                   for item in self.doc.get(kind, ()))

    def settled(self):
        """True when every changed object was refused: nothing waits for
        the agents (a delete waits for them: they may still run it)."""
        changed = [item for items in self.doc.values() for item in items
                   if item.get('changed')]
        return bool(changed) and all(item.get('rejected')
                                     for item in changed)


def below(rows, keys):
    """(kind, id) of the rows ({kind: [row]}) that are descendants of the
    objects `keys` ((kind, id)), by their parent links."""
    found = set()
    if not keys:
        return found        # the usual case: nothing is rejected
    for kind in ('listeners', 'pools', 'members', 'healthmonitors',
                 'l7policies', 'l7rules'):
        parent_kind, link = _PARENT[kind]
        for row in rows.get(kind, ()):
            parent = (parent_kind, getattr(row, link))
            if parent in keys or parent in found:
                found.add((kind, row.id))
    return found


def octavia_status(doc, failed=False, rejected=(), operating=None,
                   held=()):
    """The status for Octavia.

    failed: the SEs did not apply the change (whole snapshot rejected,
    timeout): changed objects ERROR, deleted ones too -- the SEs may
    still run them (a failed delete leaves the object in ERROR, as
    Octavia's own drivers do, and the user deletes it again).
    rejected: (kind, id) of objects the controller or a live agent leaves
    out now: ERROR whether changed or a parent (a later change must not
    make a rejected object ACTIVE); a refused change of a running object
    ('kept') keeps its operating status.
    operating: {(kind, id): operating status} known now, sent in the same
    update as the provisioning status.
    held: (kind, id) of objects that are not what Octavia shows: ERROR
    whether changed or a parent, with the operating status the SEs give
    them -- running objects whose last update was refused (models:
    diverged; the SEs run the previous values) and objects below a
    rejected one (below(): the SEs run none of them, OFFLINE).
    """
    operating = operating or {}
    result = {}
    for kind, items in doc.items():
        result[kind] = []
        for item in items:
            st = item['provisioning_status']
            key = (kind, item['id'])
            entry = {'id': item['id']}
            if st == DELETED and failed and item.get('changed'):
                st = ERROR
            elif st != DELETED:
                if item.get('rejected') or key in rejected or (
                        failed and item.get('changed')):
                    st = ERROR
                if key in held:
                    st = ERROR
                op = operating.get(key) if item.get('kept') or \
                    key in held or st != ERROR else ERROR
                if op is None and st == ACTIVE and \
                        kind in _ONLINE_WHEN_ACTIVE:
                    op = ONLINE if item.get('enabled', True) else OFFLINE
                if op is not None:
                    entry['operating_status'] = op
            entry['provisioning_status'] = st
            result[kind].append(entry)
    return result


def _enabled(row):
    """A stored object's admin_state_up (Octavia's default: up)."""
    return row.doc.get('admin_state_up', True) is not False


# Where a change's document nests the objects created with it.
_NESTED = {'loadbalancers': (('listeners', 'listeners'), ('pools', 'pools')),
           'listeners': (('pools', 'default_pool'),
                         ('l7policies', 'l7policies')),
           'pools': (('members', 'members'),
                     ('healthmonitors', 'healthmonitor')),
           'l7policies': (('l7rules', 'rules'),)}


def _nested(kind, doc):
    """(kind, id) of the objects a create's (or a delete's) document nests
    (a graph)."""
    for child_kind, key in _NESTED.get(kind, ()):
        children = doc.get(key) or []
        for child in [children] if isinstance(children, dict) else children:
            if isinstance(child, dict) and object_id(child_kind, child):
                yield child_kind, object_id(child_kind, child)
                yield from _nested(child_kind, child)


def _parent_link(kind, doc):
    """The id of the parent a change's document names (None: none)."""
    return doc.get(_PARENT[kind][1]) if kind in _PARENT else None


def _tier1(lb):
    """Tier 1: members receive the client's packet as sent, on the VIP's
    port (tier 2's L7 SEs proxy, any member port goes)."""
    return not lb.l7_se_group


def _port_refusal(member_doc, listeners):
    """Why a tier-1 member cannot serve `listeners` (the accepted listener
    rows its pool is the default pool of), or None."""
    port = member_doc.get('protocol_port')
    for lst in listeners:
        wanted = lst.doc.get('protocol_port')
        if port is not None and wanted is not None and port != wanted:
            return (f'protocol_port {port} differs from protocol_port '
                    f'{wanted} of listener {lst.id} (its pool\'s listener):'
                    ' DSR cannot translate ports, the member receives the '
                    'client\'s packet unchanged, on the VIP\'s port')
    return None


def _diverge(row, sent):
    """A refused update of running object `row` (rolled back): remember the
    fields it sent that differ from what the SEs run -- Octavia keeps the
    update's values -- so the object stays ERROR, also as a parent of a
    later change, until an accepted update sends them again."""
    if sent is None or not hasattr(row, 'diverged'):
        return
    differing = {k: v for k, v in _clean(sent).items()
                 if row.doc.get(k) != v}
    if differing:
        row.diverged = dict(row.diverged or {}, **differing)


def _converge(row, sent):
    """An accepted change of `row`: the diverged fields it sends again
    are decided anew."""
    if sent is None or not getattr(row, 'diverged', None):
        return
    left = {k: v for k, v in row.diverged.items() if k not in sent}
    row.diverged = left or None


def _below(rows, kind, obj_id):
    """(kind, id) of the objects of rows ({kind: [row]}) below the object
    (kind, obj_id)."""
    return sorted(below(rows, {(kind, obj_id)}))


def _policy_children(listener_doc):
    """(kind, id) of the L7 policies and rules sent with a listener: what
    a refusal of the listener takes with it."""
    children = []
    for policy in listener_doc.get('l7policies') or []:
        children.append(('l7policies', object_id('l7policies', policy)))
        children += [('l7rules', object_id('l7rules', rule))
                     for rule in policy.get('rules') or []]
    return children


def _groups_of(lb):
    """The SE groups whose agents a change of load balancer row `lb`
    waits for, the group owing its status first (Store._bump_lb)."""
    if lb.l7_se_group and not lb.rejected:
        return [lb.l7_se_group, lb.se_group]
    return [lb.se_group]


class Store:
    def __init__(self, database, default_se_group='default',
                 live_agents=None, agent_ttl=30.0):
        """live_agents(se_group) -> SE ids alive in the group (tooz); None:
        no capacity enforcement (the agents' own check still applies).
        agent_ttl: when live_agents fails (coordination backend down),
        agents that reported within that many seconds count as live."""
        self.db = database
        self.default_se_group = default_se_group
        self.live_agents = live_agents
        self.agent_ttl = agent_ttl

    @contextlib.contextmanager
    def _change(self):
        """A change's transaction.  On MariaDB/MySQL it reads committed
        rows: under REPEATABLE READ the first plain read fixes the view, so
        counting after waiting for the group's lock would miss what the
        transaction that held the lock just committed."""
        message_id = CHANGE_MESSAGE.get()
        with self.db.session() as s:
            if db_mod.is_mysql(self.db.engine.dialect.name):
                s.connection(execution_options={
                    'isolation_level': 'READ COMMITTED'})
            if message_id:
                self._record_message(s, message_id)
            yield s
        if message_id:
            # Committed: the change's other transactions, if any, are its.
            CHANGE_MESSAGE.set(None)

    @staticmethod
    def _record_message(session, message_id):
        """Record a change message in its change's transaction; Redelivered
        if it was committed before.  Inserted first: a second delivery
        handled at the same time waits on the row and then finds it."""
        if session.get(models.ProcessedChange, message_id) is not None:
            raise Redelivered(message_id)
        session.add(models.ProcessedChange(message_id=message_id,
                                           processed_at=time.time()))
        try:
            session.flush()
        except sa_exc.IntegrityError:
            # The whole transaction is rolled back with it.
            raise Redelivered(message_id) from None

    # ------------------------------------------------------------ helpers
    def se_group_of(self, lb_doc):
        # The driver resolves flavor / availability zone into lb['dsr'].
        dsr = lb_doc.get('dsr')
        if isinstance(dsr, dict) and dsr.get('se_group'):
            return dsr['se_group']
        for key in ('flavor', 'availability_zone'):
            meta = lb_doc.get(key)
            if isinstance(meta, dict) and meta.get('se_group'):
                return meta['se_group']
        return lb_doc.get('se_group') or self.default_se_group

    @staticmethod
    def l7_group_of(lb_doc):
        """Tier 2: the SE group of its L7 service engines; else None."""
        dsr = lb_doc.get('dsr')
        if isinstance(dsr, dict) and dsr.get('tier') == 2:
            return dsr.get('l7_se_group')
        return None

    @staticmethod
    def _locked_group(session, se_group):
        """The group's row, locked until the transaction ends: concurrent
        changes (the controllers' listener threads) must not both read
        generation N and write N+1 -- an agent could then report a
        generation that lacks a change, or the counter could go back."""
        group = session.get(models.SEGroup, se_group, with_for_update=True,
                            populate_existing=True)
        if group is not None:
            return group
        try:
            with session.begin_nested():
                session.add(models.SEGroup(name=se_group, generation=0,
                                           published_generation=0))
        except sa_exc.IntegrityError:
            pass    # created by a concurrent transaction meanwhile
        return session.get(models.SEGroup, se_group, with_for_update=True,
                           populate_existing=True)

    def _bump(self, session, se_group, status, wait_for=None, also=None):
        """also: (SE group, generation) the status waits for as well."""
        group = self._locked_group(session, se_group)
        group.generation += 1
        if status is None:
            # A change no Octavia object waits for (L7 SE membership).
            return group.generation
        # A change refused whole waits for no agent (generation 0 is
        # applied by every agent).
        settled = status.settled()
        also_group, also_generation = also or (None, None)
        session.add(models.PendingStatus(
            se_group=se_group,
            generation=0 if settled else group.generation,
            also_se_group=also_group,
            also_generation=0 if settled and also else also_generation,
            status=status.doc, wait_for=wait_for, created_at=time.time()))
        return group.generation

    def _bump_lb(self, session, lb, status, wait_for=None, l4=True,
                 keep=None):
        """Bump what serves load balancer row `lb`.  Tier 1: its SE group,
        which owes the status.  Tier 2: the L7 group, which runs every
        object and owes the status, and (l4: the change touches what the
        L4 SEs run -- VIPs, listeners) its L4 group too, whose agents the
        status then also waits for.  keep: _l7_savepoint's, for a change
        of a running tier-2 object."""
        if not lb.l7_se_group:
            generation = self._bump(session, lb.se_group, status, wait_for)
            _changed(session, lb, status, generation)
            return generation
        also = None
        if not lb.rejected:
            self._l7_rejections(session, lb, status, wait_for, keep)
        if lb.rejected:
            # Refused whole: nothing runs it, and its L7 group must not
            # become one (it may be somebody's L4 group).
            return self._bump(session, lb.se_group, status, wait_for)
        if l4:
            # Traffic flows once both tiers run it: the status waits for
            # the L4 SEs too.
            also = (lb.se_group, self._bump(session, lb.se_group, None))
        group = self._locked_group(session, lb.l7_se_group)
        group.role = l7_snapshot.ROLE
        generation = self._bump(session, lb.l7_se_group, status, wait_for,
                                also)
        _changed(session, lb, status, generation, also and also[1])
        return generation

    @staticmethod
    def _l7_savepoint(session, lb, kind, obj_id, sent, parent=None,
                      store_alone=None):
        """Tier 2: a savepoint before a change of running object (kind,
        obj_id) of load balancer row `lb` (stored, neither it nor what it
        is below rejected), else None.  Should the change leave its L7 SEs
        unable to run something that runs (_l7_rejections), it is rolled
        back to it: what runs goes on running its previous version and the
        change is ERROR, as for capacity.

        parent, store_alone: for an object that does not run (new, or
        rejected) whose problem may be its running parent's ((kind, row):
        a rule's policy, which would match more without it): a savepoint
        all the same, and store_alone(reason) stores it alone, rejected,
        after the rollback."""
        if not lb.l7_se_group or lb.rejected is not None:
            return None
        row = session.get(_MODELS[kind], obj_id)
        if row is not None and _runs(session, kind, row):
            return _Keep(session.begin_nested(), kind, obj_id, sent, None)
        if store_alone is not None and _runs(session, *parent):
            return _Keep(session.begin_nested(), kind, obj_id, sent,
                         store_alone)
        return None

    def _l7_rejections(self, session, lb, status, changed, keep=None):
        """Tier 2: reject alone each new object of load balancer row `lb`
        that its L7 SEs cannot run (l7_snapshot.runnable: the L7 schema,
        which the driver's checks may miss -- an object stored before they
        existed, a member at the VIP while the VIPs could not be looked
        up), with what is below it; and take back such a rejection of an
        object that runs now (fixed, or what it needed came back).  Before,
        one such object left the whole load balancer off the L7 SEs while
        Octavia showed it ACTIVE.  A change (keep: _l7_savepoint's) that
        would leave something that runs unable to run changes nothing
        instead: rolled back, ERROR, its fields diverged (_diverge).  A
        load balancer refused whole is rejected (nothing runs it).

        changed: [kind, id] of the object the change is about.  A member
        is checked alone (a pool's many members change one by one); a
        delete or a load balancer update (None) makes nothing new to
        check; anything else checks the load balancer's document."""
        if changed is None:
            return
        if changed[0] == 'members':
            self._l7_member_rejections(session, lb, status, [
                session.get(models.Member, changed[1])], keep)
            return
        cleared, refused = _l7_check(session, lb)
        if keep is not None:
            ran = [r for r in refused
                   if _ran_before(session, r[0], r[1], cleared)]
            if not ran:
                keep.savepoint.commit()
            else:
                keep.savepoint.rollback()
                # Refused in the document before the change too (stored
                # before the check, by an earlier release): it did not run
                # either.
                _, before = _l7_check(session, lb, clear=False)
                displaced = [r for r in ran if r[:2] not in
                             {b[:2] for b in before}]
                if not displaced:
                    raise _NotRunning(lb.id)
                self._keep_previous(session, status, keep, displaced)
                cleared, refused = set(), before
        if refused and refused[0][0] == 'loadbalancers':
            reason = l7_snapshot.REFUSED + refused[0][2]
            LOG.error('loadbalancer %s rejected: %s', lb.id, reason)
            lb.rejected = reason
            status.reject('loadbalancers', lb.id, reason)
            for kind, items in status.doc.items():
                for entry in items:
                    if kind != 'loadbalancers' and entry.get('changed'):
                        status.reject(kind, entry['id'], f'loadbalancer '
                                      f'{lb.id} rejected: {reason}')
            return
        if not refused:
            return
        # Read whole only when something is refused (what is below it).
        rows = operating_delta.rows_of(session, [lb.id], rules=True)
        for kind, obj_id, why in refused:
            row = session.get(_MODELS[kind], obj_id)
            if row is None or row.rejected is not None:
                continue
            self._refuse(status, kind, row, _below(rows, kind, obj_id),
                         l7_snapshot.REFUSED + why, (), set())

    @staticmethod
    def _keep_previous(session, status, keep, displaced):
        """Roll back (done) a change that would leave `displaced` ([(kind,
        id, why)]: objects that ran before it) unable to run on the L7
        SEs: the change is ERROR, what it sent diverged (_diverge); an
        object that did not run is stored alone, rejected
        (keep.store_alone).  What else the change stored is gone with it:
        ERROR, or kept where it ran before."""
        reason = l7_snapshot.REFUSED + '; '.join(
            why if (kind, obj_id) == (keep.kind, keep.obj_id)
            else f'{_GET_RESOURCE[kind]} {obj_id} would not run: {why}'
            for kind, obj_id, why in displaced)
        before = session.info.get(_BEFORE, {})
        resource = _GET_RESOURCE[keep.kind]
        for kind, items in status.doc.items():
            for item in items:
                key = (kind, item['id'])
                if item.get('changed') and key != (keep.kind, keep.obj_id):
                    status.reject(kind, item['id'], f'{resource} '
                                  f'{keep.obj_id} refused: {reason}',
                                  kept=before.get(key, _CREATED) is None)
        if keep.store_alone is not None:
            LOG.error('%s %s rejected: %s', _GET_RESOURCE[keep.kind],
                      keep.obj_id, reason)
            keep.store_alone(reason)
            status.reject(keep.kind, keep.obj_id, reason)
            return
        LOG.error('%s %s: update refused, its previous version runs: %s',
                  _GET_RESOURCE[keep.kind], keep.obj_id, reason)
        status.reject(keep.kind, keep.obj_id, reason, kept=True)
        _diverge(session.get(_MODELS[keep.kind], keep.obj_id), keep.sent)

    def _l7_member_rejections(self, session, lb, status, rows, keep=None):
        """_l7_rejections of member rows `rows` of load balancer `lb`;
        keep: _l7_savepoint's, for a change of the running member of
        `rows` (one)."""
        vips = models.vip_addresses(lb.doc)
        for row in rows:
            if row is None:
                continue
            if (row.rejected or '').startswith(l7_snapshot.REFUSED):
                row.rejected = None
            if row.rejected is not None:
                continue        # capacity, ports: not ours to take back
            why = l7_snapshot.member_refusal(row, vips)
            if why and keep is not None:
                keep.savepoint.rollback()
                self._keep_previous(session, status, keep,
                                    [('members', row.id, why)])
                return
            if why:
                self._refuse(status, 'members', row, (),
                             l7_snapshot.REFUSED + why, (), set())
        if keep is not None:
            keep.savepoint.commit()

    def _sweep_not_running(self, lb_id):
        """Mark REFUSED the objects of tier-2 load balancer `lb_id` its L7
        SEs cannot run and that are not rejected (stored before the check,
        or by an earlier release): left out of the L7 document already,
        they run nowhere, and an update of something else must not be
        refused for them (_NotRunning).  The change made again reports
        them ERROR with its own status, as every tier-2 change reports
        what the L7 check refuses."""
        with self.db.session() as s:
            lb = s.get(models.LoadBalancer, lb_id)
            if lb is None or lb.rejected is not None:
                return
            status = Status()
            self._l7_rejections(s, lb, status, ['loadbalancers', lb_id])
            LOG.warning('tier-2 load balancer %s: rejected what its L7 SEs '
                        'cannot run, stored before: %s', lb_id, ', '.join(
                            f'{_GET_RESOURCE[kind]} {item["id"]}'
                            for kind, items in status.doc.items()
                            for item in items if item.get('rejected')))

    # ---------------------------------------------------------- capacity
    def limits(self, session, se_group):
        """({limit: smallest value over the group's live agents},
        {limit: SE id that has it}); ({}, {}) when none reported any."""
        rows = session.query(models.AgentState).filter_by(se_group=se_group)
        alive = None
        if self.live_agents is None:
            return {}, {}
        try:
            alive = set(self.live_agents(se_group))
        except Exception:  # noqa: BLE001 -- coordination backend down
            LOG.warning('SE group %s: membership unknown; agents that '
                        'reported in the last %s s count as live', se_group,
                        self.agent_ttl, exc_info=True)
        limits, source = {}, {}
        for row in rows:
            if alive is not None and row.se_id not in alive:
                continue
            if alive is None and row.updated_at < time.time() - \
                    self.agent_ttl:
                continue
            for key in COUNTED_LIMITS:
                value = (row.limits or {}).get(key)
                if value and (key not in limits or value < limits[key]):
                    limits[key], source[key] = value, row.se_id
        return limits, source

    def _guard(self, session, se_group):
        """Lock the group and take its usage before the change."""
        self._locked_group(session, se_group)
        limits, source = self.limits(session, se_group)
        before = _Usage(session, se_group, limits).count() \
            if limits else None
        return _Guard(se_group, limits, source, before)

    def _admit(self, session, guard, status, candidates, running=(),
               refusals=None):
        """Accept or refuse the changed objects, in order; returns the
        refused ones of `running` ((kind, id) of objects served before the
        change: they are not marked rejected, the caller rolls their
        change back -- see _admit_change).

        candidates: [(kind, row, children)] -- children are (kind, id) in
        `status` that go with the object (a graph created with it).
        refusals: {(kind, id): reason} of candidates refused whatever the
        capacity (ports); they count nothing.  Any other object is refused
        when accepting it takes a counted limit over its value and above
        the usage before the change: objects already running are never
        displaced, and a group already over a limit (an agent with smaller
        limits joined) still takes changes that add nothing.
        """
        refusals = refusals or {}
        for _, row, _ in candidates:
            row.rejected = None
        refused_running = set()
        for kind, row, children in candidates:
            reason = refusals.get((kind, row.id))
            if reason:
                self._refuse(status, kind, row, children, reason, running,
                             refused_running)
        counted = [c for c in candidates if (c[0], c[1].id) not in refusals]
        if not guard.limits or not counted:
            return refused_running
        session.flush()
        usage = _Usage(session, guard.se_group, guard.limits)
        excluded = {(kind, row.id) for kind, row, _ in candidates}
        for kind, row, children in counted:
            excluded.discard((kind, row.id))
            counts = usage.count(excluded)
            over = [key for key in COUNTED_LIMITS if key in guard.limits
                    and counts[key] > guard.limits[key]
                    and counts[key] > guard.before[key]]
            if not over:
                continue
            key = over[0]
            reason = (f'SE group {guard.se_group}: {counts[key]} '
                      f'{COUNTED_LIMITS[key]} would exceed {key} '
                      f'{guard.limits[key]} (SE {guard.source[key]})')
            excluded.add((kind, row.id))
            self._refuse(status, kind, row, children, reason, running,
                         refused_running)
        return refused_running

    @staticmethod
    def _refuse(status, kind, row, children, reason, running,
                refused_running):
        """_admit's refusal of one candidate: a running one is left to the
        caller's rollback (refused_running), any other is rejected."""
        LOG.error('%s %s rejected: %s', _GET_RESOURCE[kind], row.id, reason)
        kept = (kind, row.id) in running
        if kept:
            refused_running.add((kind, row.id))
        else:
            row.rejected = reason
        status.reject(kind, row.id, reason, kept=kept)
        for child_kind, child_id in children:
            status.reject(child_kind, child_id,
                          f'{_GET_RESOURCE[kind]} {row.id} rejected: '
                          f'{reason}')

    @staticmethod
    def _savepoint_if_running(session, guard, kind, obj_id, checked=False):
        """A savepoint before a change of a running object (stored and
        not rejected) that capacity (or, checked, the port check) may
        refuse, else None: a refused change is rolled back to it, so the
        SEs go on serving the previous version."""
        if not guard.limits and not checked:
            return None
        row = session.get(_MODELS[kind], obj_id)
        if row is None or row.rejected is not None:
            return None
        return session.begin_nested()

    def _admit_change(self, session, guard, status, savepoint, candidate,
                      refusal=None, sent=None):
        """_admit one changed object; savepoint: _savepoint_if_running's;
        refusal: why it is refused whatever the capacity (ports), or None;
        sent: the change's document.  A refused update changes nothing, is
        reported ERROR and leaves the object diverged (_diverge); only a
        new (or already rejected) object becomes rejected."""
        kind, row, _ = candidate
        running = () if savepoint is None else {(kind, row.id)}
        refused = self._admit(
            session, guard, status, [candidate], running,
            {(kind, row.id): refusal} if refusal else None)
        if refused:
            savepoint.rollback()
            _diverge(row, sent)
            return
        if savepoint is not None:
            savepoint.commit()
        _converge(row, sent)

    @staticmethod
    def _served_listeners(session, pool):
        """The accepted listeners pool row `pool` is the default pool of
        (what its members serve)."""
        return [lst for lst in session.query(models.Listener).filter_by(
                    loadbalancer_id=pool.loadbalancer_id, rejected=None)
                if lst.doc.get('default_pool_id') == pool.id]

    def _reject_misported(self, session, lb, pool_ids, status):
        """Tier 1: reject alone the accepted members of `pool_ids` on
        another port than a listener of their pool (a graph stored with
        its listeners, or a pool becoming a listener's default)."""
        if not _tier1(lb):
            return
        for pool_id in pool_ids:
            pool = session.get(models.Pool, pool_id)
            listeners = self._served_listeners(session, pool)
            if not listeners:
                continue    # serves nothing: checked when a listener takes it
            for row in session.query(models.Member).filter_by(
                    pool_id=pool_id, rejected=None):
                reason = _port_refusal(row.doc, listeners)
                if reason:
                    self._refuse(status, 'members', row, (), reason, (),
                                 set())

    @staticmethod
    def _listener_refusal(session, lb, listener):
        """Tier 1: why listener row `listener` cannot take its default
        pool (accepted members on another port), or None."""
        pool_id = listener.doc.get('default_pool_id')
        port = listener.doc.get('protocol_port')
        if not _tier1(lb) or not pool_id or port is None:
            return None
        ports = sorted({m.doc['protocol_port'] for m in session.query(
            models.Member).filter_by(pool_id=pool_id, rejected=None)
            if m.doc.get('protocol_port') not in (None, port)})
        if not ports:
            return None
        return (f'protocol_port {port} differs from the protocol_port '
                f'{", ".join(map(str, ports))} of members of its default '
                f'pool {pool_id}: DSR cannot translate ports, members '
                'receive the client\'s packet unchanged, on the VIP\'s '
                'port (change the members\' port or use another pool)')

    @staticmethod
    def _vip_clash(session, lb, listener, ignored=()):
        """Why listener row `listener` of load balancer row `lb` cannot be
        served: another accepted listener (not in `ignored`) is served on
        one of its VIP addresses with the same transport protocol and port
        by the SEs of its SE group or, tier 2, of its L7 SE group (load
        balancers of other L4 groups may share it: their HAProxies all
        bind their VIPs there); or None."""
        port = listener.doc.get('protocol_port')
        given = {a: ipaddress.ip_address(a)
                 for a in models.vip_addresses(lb.doc)}
        if port is None or not given or lb.rejected is not None:
            return None
        vips = set(given.values())
        protocol = models.l4_protocol(listener.doc)
        lbs = models.LoadBalancer
        groups = lbs.se_group == lb.se_group
        if lb.l7_se_group:
            # A change locks its L4 group: the L7 group's lock keeps two
            # load balancers of other L4 groups from both passing.
            Store._locked_group(session, lb.l7_se_group)
            groups = sa.or_(groups, lbs.l7_se_group == lb.l7_se_group)
        # This runs on every listener change: the database picks the load
        # balancers whose document holds one of the addresses (as stored,
        # or in the canonical form Neutron gives), the check is exact.
        text = sa.type_coerce(lbs.doc, sa.Text)
        found = {f'%"{form}"%' for a, vip in given.items()
                 for form in (a, str(vip))}
        sharing = {}
        for other_id, se_group, doc in session.query(
                lbs.id, lbs.se_group, lbs.doc).filter(
                    groups, lbs.rejected.is_(None),
                    sa.or_(*(text.like(p) for p in sorted(found)))):
            shared = vips & {ipaddress.ip_address(a) for a in
                             models.vip_addresses(doc)}
            if shared:
                sharing[other_id] = (shared, se_group == lb.se_group)
        if not sharing:
            return None
        for other_id, other_lb, doc in session.query(
                models.Listener.id, models.Listener.loadbalancer_id,
                models.Listener.doc).filter(
                    models.Listener.loadbalancer_id.in_(sharing),
                    models.Listener.rejected.is_(None)).order_by(
                        models.Listener.id):
            if other_id == listener.id or other_id in ignored or \
                    doc.get('protocol_port') != port or \
                    models.l4_protocol(doc) != protocol:
                continue
            shared, l4 = sharing[other_lb]
            where = (f'SE group {lb.se_group}: the SEs steer by VIP '
                     'address, protocol and port' if l4 else
                     f'L7 SE group {lb.l7_se_group}: its SEs serve every '
                     'load balancer of the group on its VIP addresses, a '
                     'second one on the address, protocol and port would '
                     'take a share of the connections')
            shown = min(shared, key=lambda a: (a.version, a))
            return (f'{protocol} {shown} port {port} is '
                    f'already served by listener {other_id} of load '
                    f'balancer {other_lb} in {where} (use another port or '
                    'VIP address)')
        return None

    @staticmethod
    def _get(session, kind, obj_id):
        row = session.get(_MODELS[kind], obj_id)
        if row is None:
            _check_tombstone(session, kind, obj_id)
            raise Unknown(kind, obj_id)
        return row

    def _lb(self, session, lb_id):
        return self._get(session, 'loadbalancers', lb_id)

    def _pool_parents(self, session, pool_row, status):
        status.parent('loadbalancers', pool_row.loadbalancer_id)
        for lst in session.query(models.Listener).filter_by(
                loadbalancer_id=pool_row.loadbalancer_id):
            if lst.doc.get('default_pool_id') == pool_row.id or \
                    pool_row.doc.get('listener_id') == lst.id:
                status.parent('listeners', lst.id)

    def _put(self, session, kind, doc, update=False, **links):
        """Store an object's document.  update: it must exist already
        (an update never creates one)."""
        model = _MODELS[kind]
        obj_id = object_id(kind, doc)
        row = session.get(model, obj_id)
        # What the object was before the change (_ran_before).
        session.info.setdefault(_BEFORE, {}).setdefault(
            (kind, obj_id), _CREATED if row is None else row.rejected)
        if row is None:
            # A redelivered create (or update) of a deleted object must
            # not bring it back onto the SEs.
            _check_tombstone(session, kind, obj_id)
            if update:
                raise Unknown(kind, obj_id)
            row = model(id=obj_id, **links)
            session.add(row)
        else:
            for k, v in links.items():
                setattr(row, k, v)
        row.doc = _clean(doc)
        return row

    def _put_pool_graph(self, session, lb_id, pool, status, update=False):
        """The pool with its members and health monitor; returns the row
        and the (kind, id) of the children stored with it."""
        row = self._put(session, 'pools', pool, update,
                        loadbalancer_id=lb_id)
        status.add('pools', row.id)
        children = []
        for member in pool.get('members') or []:
            m = self._put(session, 'members', member, pool_id=row.id)
            status.add('members', m.id)
            children.append(('members', m.id))
        hm = pool.get('healthmonitor')
        if hm:
            h = self._put(session, 'healthmonitors', hm, pool_id=row.id)
            status.add('healthmonitors', h.id)
            children.append(('healthmonitors', h.id))
        return row, children

    # --------------------------------------------------- load balancers
    def create_loadbalancer(self, lb):
        """Full graph: listeners, pools, members, health monitors.  Over
        capacity the load balancer is refused with its whole graph."""
        status = Status()
        with self._change() as s:
            group = self.se_group_of(lb)
            guard = self._guard(s, group)
            row = self._put(s, 'loadbalancers', lb, se_group=group,
                            l7_se_group=self.l7_group_of(lb))
            status.add('loadbalancers', row.id)
            for pool in lb.get('pools') or []:
                self._put_pool_graph(s, row.id, pool, status)
            for listener in lb.get('listeners') or []:
                lst = self._put(s, 'listeners', listener,
                                loadbalancer_id=row.id)
                status.add('listeners', lst.id)
                default_pool = listener.get('default_pool')
                if isinstance(default_pool, dict):
                    self._put_pool_graph(s, row.id, default_pool, status)
                for policy in listener.get('l7policies') or []:
                    self._put_policy_graph(s, lst.id, policy, status)
            children = [(kind, item['id']) for kind, items in
                        status.doc.items() if kind != 'loadbalancers'
                        for item in items]
            # Its listeners in the order given: the first of two with a
            # VIP, protocol and port in common is served.
            unchecked = {object_id('listeners', d)
                         for d in lb.get('listeners') or []}
            for listener in lb.get('listeners') or []:
                lst = s.get(models.Listener, object_id('listeners', listener))
                unchecked.discard(lst.id)
                clash = self._vip_clash(s, row, lst, unchecked)
                if clash:
                    self._refuse(status, 'listeners', lst,
                                 _policy_children(listener), clash, (),
                                 set())
            # Everything is new: a member on another port than its
            # pool's listener is rejected alone, the rest is served.
            self._reject_misported(s, row, [
                pool_id for kind, pool_id in children if kind == 'pools'],
                status)
            self._admit(s, guard, status,
                        [('loadbalancers', row, children)])
            conflict = self._role_conflict(s, row)
            if conflict and row.rejected is None:
                LOG.error('loadbalancer %s rejected: %s', row.id, conflict)
                row.rejected = conflict
                status.reject('loadbalancers', row.id, conflict)
                for kind, child_id in children:
                    status.reject(kind, child_id, f'loadbalancer {row.id} '
                                  f'rejected: {conflict}')
            return self._bump_lb(s, row, status, ['loadbalancers', row.id])

    @staticmethod
    def _role_conflict(session, row):
        """Why load balancer row cannot be served (an SE group is an L4
        group or an L7 group, never both), or None."""
        lbs = models.LoadBalancer
        others = session.query(lbs).filter(lbs.id != row.id,
                                           lbs.rejected.is_(None))
        if row.l7_se_group:
            if others.filter(lbs.se_group == row.l7_se_group).first():
                return (f'l7_se_group {row.l7_se_group} serves load '
                        'balancers as their L4 SE group; an SE group is '
                        'either L4 or L7 (use another l7_se_group)')
        l4_group = session.get(models.SEGroup, row.se_group)
        if (l4_group is not None and l4_group.role == l7_snapshot.ROLE) \
                or others.filter(lbs.l7_se_group == row.se_group).first():
            return (f'se_group {row.se_group} is the L7 SE group of tier-2 '
                    'load balancers; an SE group is either L4 or L7 (use '
                    'another se_group)')
        return None

    def update_loadbalancer(self, lb):
        status = Status()
        with self._change() as s:
            row = self._lb(s, object_id('loadbalancers', lb))
            guard = self._guard(s, row.se_group)
            savepoint = self._savepoint_if_running(s, guard, 'loadbalancers',
                                                   row.id)
            merged = dict(row.doc)
            merged.update(_clean(lb))
            row.doc = merged
            status.add('loadbalancers', row.id)
            refused = row.rejected
            # More VIPs multiply its listeners and members.
            self._admit_change(s, guard, status, savepoint,
                               ('loadbalancers', row, []), sent=lb)
            if refused is not None:
                # Refused whole when created (its groups' roles, capacity,
                # with its listeners unchecked against what was accepted
                # since): an update (a rename) does not bring it back.
                row.rejected = refused
                status.reject('loadbalancers', row.id, refused)
            return self._bump_lb(s, row, status)

    def delete_loadbalancer(self, lb_id, cascade=True):
        status = Status()
        with self._change() as s:
            row = self._lb(s, lb_id)
            for pool in s.query(models.Pool).filter_by(loadbalancer_id=lb_id):
                self._delete_pool_rows(s, pool, status, row)
            for lst in s.query(models.Listener).filter_by(
                    loadbalancer_id=lb_id):
                self._delete_listener_rows(s, lst, status, row)
            self._delete_row(s, 'loadbalancers', row, status, row)
            return self._bump_lb(s, row, status)

    # --------------------------------------------------------- listeners
    @_sweeping
    def put_listener(self, listener, update=False):
        status = Status()
        with self._change() as s:
            lb = self._lb(s, listener['loadbalancer_id'])
            guard = self._guard(s, lb.se_group)
            listener_id = object_id('listeners', listener)
            old = s.get(models.Listener, listener_id)
            # What a running listener serves, before the change.
            before = None if old is None or old.rejected is not None else (
                old.doc.get('default_pool_id'), old.doc.get('protocol_port'))
            steered_by = None if before is None else (
                before[1], models.l4_protocol(old.doc))
            keep = self._l7_savepoint(s, lb, 'listeners', listener_id,
                                      listener)
            savepoint = self._savepoint_if_running(
                s, guard, 'listeners', listener_id, checked=True)
            row = self._put(s, 'listeners', listener, update,
                            loadbalancer_id=lb.id)
            status.add('listeners', row.id)
            status.parent('loadbalancers', lb.id)
            for policy in listener.get('l7policies') or []:
                self._put_policy_graph(s, row.id, policy, status)
            # Its pool's members on another port: the listener is refused
            # (as the driver does), not the members -- they may serve
            # another listener, and a refused update changes nothing.
            # Checked when what it serves changes: an update of a running
            # listener that keeps its pool is never refused for ports.
            refusal = None
            if before != (row.doc.get('default_pool_id'),
                          row.doc.get('protocol_port')):
                refusal = self._listener_refusal(s, lb, row)
            if steered_by != (row.doc.get('protocol_port'),
                              models.l4_protocol(row.doc)):
                refusal = refusal or self._vip_clash(s, lb, row)
            # A refused new listener takes its policies with it; a refused
            # update leaves the running ones be.
            children = _policy_children(listener) if savepoint is None \
                else []
            self._admit_change(s, guard, status, savepoint,
                               ('listeners', row, children), refusal,
                               sent=listener)
            return self._bump_lb(s, lb, status, ['listeners', row.id],
                                 keep=keep)

    def delete_listener(self, listener_id):
        status = Status()
        with self._change() as s:
            row = self._get(s, 'listeners', listener_id)
            lb = self._lb(s, row.loadbalancer_id)
            self._delete_listener_rows(s, row, status, lb)
            status.parent('loadbalancers', lb.id)
            return self._bump_lb(s, lb, status)

    def _delete_listener_rows(self, session, listener, status, lb):
        """The listener with its L7 policies and their rules."""
        for policy in session.query(models.L7Policy).filter_by(
                listener_id=listener.id):
            self._delete_policy_rows(session, policy, status, lb)
        self._delete_row(session, 'listeners', listener, status, lb)

    # ------------------------------------------------------------- pools
    @_sweeping
    def put_pool(self, pool, update=False):
        status = Status()
        with self._change() as s:
            lb = self._lb(s, pool['loadbalancer_id'])
            guard = self._guard(s, lb.se_group)
            keep = self._l7_savepoint(s, lb, 'pools',
                                      object_id('pools', pool), pool)
            savepoint = self._savepoint_if_running(
                s, guard, 'pools', object_id('pools', pool))
            row, children = self._put_pool_graph(s, lb.id, pool, status,
                                                 update)
            listener_id = pool.get('listener_id')
            if listener_id:
                lst = s.get(models.Listener, listener_id)
                if lst is not None and not lst.doc.get('default_pool_id'):
                    doc = dict(lst.doc)
                    doc['default_pool_id'] = row.id
                    lst.doc = doc
            self._pool_parents(s, row, status)
            # Its members (nested in a create) against the listener it
            # serves: each one on another port is rejected alone.
            self._reject_misported(s, lb, [row.id], status)
            self._admit_change(s, guard, status, savepoint,
                               ('pools', row, children), sent=pool)
            return self._bump_lb(s, lb, status, ['pools', row.id], l4=False,
                                 keep=keep)

    def delete_pool(self, pool_id):
        status = Status()
        with self._change() as s:
            row = self._get(s, 'pools', pool_id)
            lb = self._lb(s, row.loadbalancer_id)
            self._pool_parents(s, row, status)
            for lst in s.query(models.Listener).filter_by(
                    loadbalancer_id=lb.id):
                if lst.doc.get('default_pool_id') == pool_id:
                    doc = dict(lst.doc)
                    doc.pop('default_pool_id')
                    lst.doc = doc
            self._delete_pool_rows(s, row, status, lb)
            return self._bump_lb(s, lb, status)

    def _delete_pool_rows(self, session, pool, status, lb):
        """The pool, its members and its health monitor."""
        for kind in ('members', 'healthmonitors'):
            for row in session.query(_MODELS[kind]).filter_by(
                    pool_id=pool.id):
                self._delete_row(session, kind, row, status, lb)
        self._delete_row(session, 'pools', pool, status, lb)

    @staticmethod
    def _delete_row(session, kind, row, status, lb):
        """Delete a stored object of load balancer row `lb`, reported
        DELETED once the SEs apply the change; its tombstone keeps a
        redelivered create from bringing it back and lets a second delete
        (after a failed one) wait for the SEs again."""
        status.add(kind, row.id, DELETED)
        link = _PARENT.get(kind)
        session.merge(models.Tombstone(
            kind=kind, id=row.id,
            parent_id=getattr(row, link[1]) if link else None,
            se_groups=_groups_of(lb), outcome=None, deleted_at=time.time()))
        session.delete(row)

    # ------------------------------------- members and health monitors
    def _bump_pool(self, session, pool, status, wait_for=None, keep=None):
        """A change below a pool: the pool, its listeners and its load
        balancer are the parents Octavia locked."""
        status.parent('pools', pool.id)
        self._pool_parents(session, pool, status)
        lb = self._lb(session, pool.loadbalancer_id)
        return self._bump_lb(session, lb, status, wait_for, l4=False,
                             keep=keep)

    def _pool_guard(self, session, pool):
        return self._guard(session, self._lb(session,
                                             pool.loadbalancer_id).se_group)

    @_sweeping
    def _put_pool_child(self, kind, doc, update):
        status = Status()
        with self._change() as s:
            pool = self._get(s, 'pools', doc['pool_id'])
            guard = self._pool_guard(s, pool)
            keep = self._l7_savepoint(s, self._lb(s, pool.loadbalancer_id),
                                      kind, object_id(kind, doc), doc)
            savepoint = listeners = None
            if kind == 'members':
                listeners = self._served_listeners(s, pool) if _tier1(
                    self._lb(s, pool.loadbalancer_id)) else []
                old = s.get(models.Member, object_id(kind, doc))
                # One already on a wrong port (stored before the
                # controller checked ports) is not running right: not
                # kept, rejected below.
                if old is None or _port_refusal(old.doc, listeners) is None:
                    savepoint = self._savepoint_if_running(
                        s, guard, kind, object_id(kind, doc),
                        checked=bool(listeners))
            row = self._put(s, kind, doc, update, pool_id=pool.id)
            status.add(kind, row.id)
            if kind == 'members':
                self._admit_change(s, guard, status, savepoint,
                                   (kind, row, []),
                                   _port_refusal(row.doc, listeners))
            return self._bump_pool(s, pool, status, [kind, row.id], keep)

    def _delete_pool_child(self, kind, obj_id):
        status = Status()
        with self._change() as s:
            row = self._get(s, kind, obj_id)
            pool = self._get(s, 'pools', row.pool_id)
            self._delete_row(s, kind, row, status,
                             self._lb(s, pool.loadbalancer_id))
            return self._bump_pool(s, pool, status)

    def put_member(self, member, update=False):
        return self._put_pool_child('members', member, update)

    def delete_member(self, member_id):
        return self._delete_pool_child('members', member_id)

    def put_healthmonitor(self, hm, update=False):
        return self._put_pool_child('healthmonitors', hm, update)

    def delete_healthmonitor(self, hm_id):
        return self._delete_pool_child('healthmonitors', hm_id)

    def batch_update_members(self, pool_id, members):
        """Make the pool's members exactly `members` (Octavia batch).  Over
        capacity, new members are accepted in the order given until the
        group is full; members already running stay.

        A member whose delete failed (reported ERROR: Octavia still has
        it, no row here, a tombstone) is in Octavia's batch too.  Left
        out, Octavia marks it PENDING_DELETE without passing it: its
        DELETED is owed with this change, once the SEs apply it (as
        _delete_again).  Listed (always so with additive_only), Octavia
        keeps it and the user asks for it to exist: it is stored again, a
        new member (port and capacity checked), not a stale message that
        would refuse the whole batch."""
        status = Status()
        with self._change() as s:
            pool = self._get(s, 'pools', pool_id)
            guard = self._pool_guard(s, pool)
            lb = self._lb(s, pool.loadbalancer_id)
            wanted = {object_id('members', m): m for m in members}
            listeners = self._served_listeners(s, pool) if _tier1(lb) \
                else []
            for tomb in s.query(models.Tombstone).filter_by(
                    kind='members', parent_id=pool_id, outcome=ERROR):
                if tomb.id in wanted:
                    s.delete(tomb)
                else:
                    for kind, obj_id in self._failed_subtree(
                            s, tomb.kind, tomb.id):
                        status.add(kind, obj_id, DELETED)
            s.flush()
            accepted = {}       # running member id -> its stored doc
            updated = []        # rows of running members the batch changes
            for row in s.query(models.Member).filter_by(pool_id=pool_id):
                if row.id not in wanted:
                    self._delete_row(s, 'members', row, status, lb)
                elif row.rejected is None and \
                        _port_refusal(row.doc, listeners) is None:
                    # (One on a wrong port, stored before the controller
                    # checked ports, is not running right: a candidate.)
                    accepted[row.id] = row.doc
            candidates, refusals = [], {}
            for member_id, doc in wanted.items():
                refusal = _port_refusal(doc, listeners)
                if refusal and member_id in accepted:
                    # A refused change of a running member changes
                    # nothing: its stored document stays.
                    LOG.error('member %s rejected: %s', member_id, refusal)
                    status.reject('members', member_id, refusal, kept=True)
                    continue
                if accepted.get(member_id) == _clean(doc):
                    # Untouched (additive_only passes every member, and
                    # Octavia leaves their status be) or sent again as it
                    # runs: it runs as asked whatever becomes of the batch,
                    # never ERROR for it.
                    status.add('members', member_id, changed=False)
                    continue
                row = self._put(s, 'members', doc, pool_id=pool_id)
                status.add('members', member_id)
                if member_id not in accepted:
                    candidates.append(('members', row, []))
                    if refusal:
                        refusals[('members', member_id)] = refusal
                else:
                    updated.append(row)
            self._admit(s, guard, status, candidates, refusals=refusals)
            if lb.l7_se_group and lb.rejected is None:
                self._l7_member_rejections(
                    s, lb, status, [row for _, row, _ in candidates])
                vips = models.vip_addresses(lb.doc)
                for row in updated:
                    why = l7_snapshot.member_refusal(row, vips)
                    if why:
                        # A running member the change would take off the
                        # L7 SEs keeps its document, as for ports.
                        reason = l7_snapshot.REFUSED + why
                        LOG.error('member %s rejected: %s', row.id, reason)
                        row.doc = accepted[row.id]
                        status.reject('members', row.id, reason, kept=True)
            return self._bump_pool(s, pool, status)

    # ------------------------------------------- L7 policies and rules
    # Tier 2 only (the driver refuses them on tier 1).  Positions follow
    # Octavia's: a policy put at position p moves the listener's others
    # down, and the positions stay 1..n.
    def _put_policy_graph(self, session, listener_id, policy, status,
                          update=False):
        row = self._put(session, 'l7policies', policy, update,
                        listener_id=listener_id)
        status.add('l7policies', row.id, enabled=_enabled(row))
        for rule in policy.get('rules') or []:
            r = self._put(session, 'l7rules', rule, l7policy_id=row.id)
            status.add('l7rules', r.id, enabled=_enabled(r))
        self._renumber(session, listener_id, row)
        return row

    @staticmethod
    def _renumber(session, listener_id, moved=None):
        others = sorted(
            (p for p in session.query(models.L7Policy).filter_by(
                listener_id=listener_id)
             if moved is None or p.id != moved.id),
            key=lambda p: (p.doc.get('position') or 2 ** 31, p.id))
        if moved is not None:
            at = moved.doc.get('position') or len(others) + 1
            others.insert(max(0, min(at - 1, len(others))), moved)
        for position, policy in enumerate(others, 1):
            if policy.doc.get('position') != position:
                policy.doc = dict(policy.doc, position=position)

    def _policy_parents(self, session, policy, status):
        """The listener and load balancer rows of a policy row, marked as
        the parents Octavia locked."""
        listener = self._get(session, 'listeners', policy.listener_id)
        lb = self._lb(session, listener.loadbalancer_id)
        status.parent('listeners', listener.id)
        status.parent('loadbalancers', lb.id)
        return lb

    @_sweeping
    def put_l7policy(self, policy, update=False):
        status = Status()
        with self._change() as s:
            listener = self._get(s, 'listeners', policy['listener_id'])
            keep = self._l7_savepoint(
                s, self._lb(s, listener.loadbalancer_id), 'l7policies',
                object_id('l7policies', policy), policy)
            row = self._put_policy_graph(s, listener.id, policy, status,
                                         update)
            lb = self._policy_parents(s, row, status)
            generation = self._bump_lb(s, lb, status,
                                       ['l7policies', row.id], l4=False,
                                       keep=keep)
            if not status.refused('l7policies', row.id):
                # An accepted change takes back what it sends again (the
                # L7 policy's diverged fields: _keep_previous).
                _converge(s.get(models.L7Policy, row.id), policy)
            return generation

    def delete_l7policy(self, policy_id):
        status = Status()
        with self._change() as s:
            row = self._get(s, 'l7policies', policy_id)
            lb = self._policy_parents(s, row, status)
            self._delete_policy_rows(s, row, status, lb)
            s.flush()
            self._renumber(s, row.listener_id)
            return self._bump_lb(s, lb, status, l4=False)

    def _delete_policy_rows(self, session, policy, status, lb):
        for rule in session.query(models.L7Rule).filter_by(
                l7policy_id=policy.id):
            self._delete_row(session, 'l7rules', rule, status, lb)
        self._delete_row(session, 'l7policies', policy, status, lb)

    @_sweeping
    def put_l7rule(self, rule, update=False):
        status = Status()
        with self._change() as s:
            policy = self._get(s, 'l7policies', rule['l7policy_id'])
            lb = self._policy_parents(s, policy, status)

            def alone(reason):
                # The running policy stays as it was; the rule is Octavia's.
                row = self._put(s, 'l7rules', rule, update,
                                l7policy_id=policy.id)
                row.rejected = reason
            keep = self._l7_savepoint(
                s, lb, 'l7rules', object_id('l7rules', rule), rule,
                parent=('l7policies', policy), store_alone=alone)
            row = self._put(s, 'l7rules', rule, update,
                            l7policy_id=policy.id)
            status.add('l7rules', row.id, enabled=_enabled(row))
            status.parent('l7policies', policy.id, enabled=_enabled(policy))
            return self._bump_lb(s, lb, status, ['l7rules', row.id],
                                 l4=False, keep=keep)

    def delete_l7rule(self, rule_id):
        status = Status()
        with self._change() as s:
            row = self._get(s, 'l7rules', rule_id)
            policy = self._get(s, 'l7policies', row.l7policy_id)
            status.parent('l7policies', policy.id, enabled=_enabled(policy))
            lb = self._policy_parents(s, policy, status)
            self._delete_row(s, 'l7rules', row, status, lb)
            return self._bump_lb(s, lb, status, l4=False)

    # ------------------------------- objects the controller does not have
    def delete_missing(self, kind, doc):
        """A delete of an object not stored here.  Never known: DELETED at
        once (nothing to remove).  Deleted before and its delete failed
        (reported ERROR): DELETED once the live SEs apply the current
        generation of its groups, ERROR again otherwise.  Deleted and the
        delete reported or still owed: a redelivered message, ignored.
        Returns the generation the status waits for, or None."""
        obj_id = object_id(kind, doc)
        if obj_id is None:
            return None             # nothing Octavia could be told
        with self._change() as s:
            tomb = s.get(models.Tombstone, (kind, obj_id))
            status = Status()
            if tomb is None:
                status.add(kind, obj_id, DELETED)
                # What Octavia deletes with it (a cascade, a pool's members
                # and monitor): DELETED too, or Octavia keeps their rows
                # and their quota.
                for child_kind, child_id in _nested(kind, doc):
                    status.add(child_kind, child_id, DELETED)
                self._mark_parents(s, kind, _parent_link(kind, doc), status)
                return self._owe(s, status)
            if tomb.outcome != ERROR:
                LOG.info('%s %s delete ignored: already deleted (a '
                         'redelivered message)', _GET_RESOURCE[kind], obj_id)
                return None
            return self._delete_again(s, tomb, status)

    def _delete_again(self, session, tomb, status):
        """A second delete of an object whose delete failed: it and its
        descendants whose delete failed with it."""
        for kind, obj_id in self._failed_subtree(session, tomb.kind,
                                                 tomb.id):
            status.add(kind, obj_id, DELETED)
        self._mark_parents(session, tomb.kind, tomb.parent_id, status)
        return self._owe(session, status, tomb.se_groups)

    def refuse(self, kind, docs, reason):
        """ERROR for objects of a change that cannot be applied (unknown
        object or parent, data the database refuses): nothing changes on
        the SEs, and Octavia does not leave them PENDING_*."""
        with self._change() as s:
            status = Status()
            for doc in docs:
                obj_id = object_id(kind, doc)
                if obj_id is None:
                    continue        # nothing Octavia could be told
                LOG.error('%s %s: ERROR: %s', _GET_RESOURCE[kind], obj_id,
                          reason)
                status.reject(kind, obj_id, reason,
                              kept=s.get(_MODELS[kind], obj_id) is not None)
                for child_kind, child_id in _nested(kind, doc):
                    status.reject(child_kind, child_id, reason)
                self._mark_parents(s, kind, _parent_link(kind, doc), status)
            if status.doc:
                self._owe(s, status)

    def _owe(self, session, status, groups=None):
        """Record a status owed once the live SEs of `groups` (the group
        owing it, then at most one more) apply their current generation --
        no new one: nothing changes.  None: it waits for nothing.  Returns
        the generation of the first group."""
        def current(group):
            row = session.get(models.SEGroup, group)
            return row.generation if row is not None else 0
        first = current(groups[0]) if groups else 0
        also = groups[1] if groups and len(groups) > 1 else None
        session.add(models.PendingStatus(
            se_group=groups[0] if groups else self.default_se_group,
            generation=first, also_se_group=also,
            also_generation=None if also is None else current(also),
            status=status.doc, created_at=time.time()))
        return first

    @staticmethod
    def _failed_subtree(session, kind, obj_id):
        """(kind, id) of a tombstoned object and of its descendants whose
        delete failed too (Octavia still has them, in ERROR); their
        outcome is owed again."""
        todo, found = [session.get(models.Tombstone, (kind, obj_id))], []
        while todo:
            tomb = todo.pop()
            tomb.outcome = None
            found.append((tomb.kind, tomb.id))
            for child in _CHILDREN.get(tomb.kind, ()):
                todo.extend(session.query(models.Tombstone).filter_by(
                    kind=child, parent_id=tomb.id, outcome=ERROR))
        return found

    def _mark_parents(self, session, kind, parent_id, status):
        """The parents Octavia locked for a change of a `kind` object whose
        parent is parent_id: stored ones ACTIVE, deleted ones ERROR (their
        delete failed, or Octavia would not have let the change through);
        the walk stops at one the controller never had."""
        while kind in _PARENT and parent_id:
            kind = _PARENT[kind][0]
            row = session.get(_MODELS[kind], parent_id)
            if row is not None:
                status.parent(kind, row.id, enabled=_enabled(row) if kind
                              in _ONLINE_WHEN_ACTIVE else None)
                if kind == 'pools':
                    self._pool_parents(session, row, status)
                parent_id = getattr(row, _PARENT[kind][1], None) \
                    if kind in _PARENT else None
                continue
            tomb = session.get(models.Tombstone, (kind, parent_id))
            if tomb is None:
                return
            status.add(kind, parent_id, ERROR, changed=False)
            parent_id = tomb.parent_id

    def record_outcomes(self, session, status_doc, verdict):
        """The reporter told Octavia a change's verdict: remember what the
        deletes in it became (DELETED, or ERROR when the SEs did not apply
        it), so a second delete knows whether it is a retry."""
        outcome = ERROR if verdict == ERROR else DELETED
        for kind, items in status_doc.items():
            ids = [item['id'] for item in items
                   if item['provisioning_status'] == DELETED
                   and item.get('changed')]
            if ids:
                session.query(models.Tombstone).filter(
                    models.Tombstone.kind == kind,
                    models.Tombstone.id.in_(ids)).update(
                        {'outcome': outcome}, synchronize_session=False)

    def parent(self, kind, obj_id):
        """(kind, id) of a stored object's parent; None for a load
        balancer or an object not stored."""
        if kind not in _PARENT:
            return None
        parent_kind, link = _PARENT[kind]
        with self.db.session() as s:
            row = s.get(_MODELS[kind], obj_id)
            parent = row is not None and getattr(row, link)
        return (parent_kind, parent) if parent else None

    def descendants(self, kind, obj_id):
        """{(kind, id)} of the stored objects below a stored object."""
        found = set()
        todo = [(kind, obj_id)]
        with self.db.session() as s:
            while todo:
                parent_kind, parent_id = todo.pop()
                for child in _CHILDREN.get(parent_kind, ()):
                    model = _MODELS[child]
                    for (child_id,) in s.query(model.id).filter(
                            getattr(model, _PARENT[child][1]) == parent_id):
                        found.add((child, child_id))
                        todo.append((child, child_id))
        return found

    def purge_tombstones(self, max_age):
        """Forget objects deleted, and change messages committed, more than
        max_age seconds ago; returns how many objects."""
        before = time.time() - max_age
        with self.db.session() as s:
            s.query(models.ProcessedChange).filter(
                models.ProcessedChange.processed_at < before).delete(
                    synchronize_session=False)
            return s.query(models.Tombstone).filter(
                models.Tombstone.deleted_at < before).delete(
                    synchronize_session=False)

    # ------------------------------------------------ L7 SE membership
    def l7_groups(self):
        """The L7 SE groups: named by tier-2 load balancers, or once were
        (their members are kept current for the next one)."""
        with self.db.session() as s:
            named = {g for (g,) in s.query(
                models.LoadBalancer.l7_se_group).filter(
                    models.LoadBalancer.l7_se_group.isnot(None),
                    models.LoadBalancer.rejected.is_(None))}
            named.update(g for (g,) in s.query(models.SEGroup.name).filter_by(
                role=l7_snapshot.ROLE))
            return sorted(named)

    def set_l7_left_out(self, l7_group, reasons):
        """Record why the leader left L7 SEs of l7_group out of the L4
        pools ({se_id: reason}, replacing the group's): a reason kept
        keeps its time."""
        now = time.time()
        with self.db.session() as s:
            rows = {r.se_id: r for r in s.query(
                models.L7SELeftOut).filter_by(l7_se_group=l7_group)}
            for se_id, row in rows.items():
                if se_id not in reasons:
                    s.delete(row)
                elif reasons[se_id] != row.reason:
                    row.reason, row.since = reasons[se_id], now
            for se_id, reason in reasons.items():
                if se_id not in rows:
                    s.add(models.L7SELeftOut(l7_se_group=l7_group,
                                             se_id=se_id, reason=reason,
                                             since=now))

    def flap_penalties(self):
        """[(l7 group, se_id, penalty, at, suppressed)] kept by leaders
        (l7_damping.StoreKeep)."""
        with self.db.session() as s:
            return [(r.l7_se_group, r.se_id, r.penalty, r.at, r.suppressed)
                    for r in s.query(models.L7FlapPenalty)]

    def set_flap_penalties(self, rows):
        """Keep L7 SEs' flap penalties: [(l7 group, se_id, penalty, at,
        suppressed)], in one transaction (penalty None: forget it)."""
        with self.db.session() as s:
            for l7_group, se_id, penalty, at, suppressed in rows:
                row = s.get(models.L7FlapPenalty, (l7_group, se_id))
                if penalty is None:
                    if row is not None:
                        s.delete(row)
                    continue
                if row is None:
                    row = models.L7FlapPenalty(l7_se_group=l7_group,
                                               se_id=se_id)
                    s.add(row)
                row.penalty, row.at, row.suppressed = (penalty, at,
                                                       suppressed)

    def l7_members(self, l7_group):
        """{se_id: {'tunnel_addresses': {...}, 'draining': bool}} as
        stored (what the L4 snapshots steer to)."""
        with self.db.session() as s:
            return {m.se_id: _l7_member(m) for m in s.query(
                models.L7SEMember).filter_by(l7_se_group=l7_group)}

    def l7_reports(self, l7_group, se_ids=None):
        """{se_id: {'unserved': {'loadbalancers': [id, ...], 'listeners':
        [id, ...]}, 'tunnel_addresses': {"4": ..., "6": ...} or None,
        'seal_boot': the boot id of its seals or None, 'state_lag':
        report_lag of its report_state, 'state_stored': report_stored of
        it, 'stated': bool}} of
        the L7 SEs of l7_group that reported (those in `se_ids` only, when
        given): what each does not serve -- left ERROR alone
        (rejected_objects), or whose HAProxy waits for its restart
        (helpers.haproxy.not_running) -- and its tunnel addresses, from
        its last report (signed when authentication is on)."""
        with self.db.session() as s:
            query = s.query(models.AgentState.se_id,
                            models.AgentState.rejected_objects,
                            models.AgentState.helpers,
                            models.AgentState.tunnel_addresses,
                            models.AgentState.seal_boot,
                            models.AgentState.report_times).filter_by(
                se_group=l7_group)
            if se_ids is not None:
                if not se_ids:
                    return {}
                query = query.filter(
                    models.AgentState.se_id.in_(sorted(se_ids)))
            # stated: a signed report_state of it is stored (another kind
            # of report may have made the row first).
            return {se_id: {'unserved': _unserved(rejected, helpers),
                            'tunnel_addresses': addresses,
                            'seal_boot': boot,
                            'state_lag': report_lag(times, 'report_state'),
                            'state_stored': report_stored(times,
                                                          'report_state'),
                            'stated': isinstance(times, dict)
                            and 'report_state' in times}
                    for se_id, rejected, helpers, addresses, boot, times
                    in query}

    def heard_since(self, se_group, since):
        """The SEs of se_group whose last report (any kind) was stored at
        or after `since` (epoch seconds)."""
        with self.db.session() as s:
            return set(s.execute(sa.select(models.AgentState.se_id).where(
                models.AgentState.se_group == se_group,
                models.AgentState.updated_at >= since)).scalars())

    def set_l7_members(self, l7_group, members):
        """Make the ready L7 SEs of l7_group exactly `members` ({se_id:
        {'tunnel_addresses', 'draining'[, 'unserved']}}).  When that
        changes the set, an address, a draining flag or what an SE does
        not serve, every L4 group serving a tier-2
        load balancer on l7_group gets a new generation, in the same
        transaction.  Returns the L4 groups bumped ([] when unchanged).

        The tier-2 watcher asks four times a second and the answer is
        nearly always "unchanged": that is found by a plain read, without
        the L4 groups' locks, so it never waits for (or holds up) a change
        of those groups.  Only a difference takes the locks and reads
        again under them."""
        if self.l7_members(l7_group) == members:
            return []
        with self._change() as s:
            l4_groups = sorted(g for (g,) in s.query(
                models.LoadBalancer.se_group).filter_by(
                    l7_se_group=l7_group).distinct())
            # Lock order: the L4 groups (as every change does), then rows.
            for group in l4_groups:
                self._locked_group(s, group)
            rows = {m.se_id: m for m in s.query(models.L7SEMember)
                    .filter_by(l7_se_group=l7_group)}
            if {se_id: _l7_member(m) for se_id, m in rows.items()} == \
                    members:
                return []
            for se_id, row in rows.items():
                if se_id not in members:
                    s.delete(row)
            for se_id, member in members.items():
                row = rows.get(se_id)
                if row is None:
                    row = models.L7SEMember(l7_se_group=l7_group,
                                            se_id=se_id)
                    s.add(row)
                row.tunnel_addresses = member['tunnel_addresses']
                row.draining = bool(member['draining'])
                row.unserved = member.get('unserved') or None
            for group in l4_groups:
                self._bump(s, group, None)
            return l4_groups

    # ---------------------------------------------------------- snapshot
    def snapshot(self, se_group):
        """The document an SE group's agents run: an L7 group's is the L7
        document (dsr_wire/l7.py), any other the agent contract's schema
        v1 (l4_snapshot), where tier-2 load balancers steer to their L7
        SEs.  Rejected objects are left out with everything below them."""
        with self.db.session() as s:
            group = s.get(models.SEGroup, se_group)
            generation = group.generation if group else 0
            if group is not None and group.role == l7_snapshot.ROLE:
                return l7_snapshot.document(s, se_group, generation)
            return l4_snapshot.document(s, se_group, generation)

    # ------------------------------------------------------------ agents
    def record_agent(self, se_id, se_group, sent=None, **fields):
        """Record what an agent reported; True when it is news to the
        leader's round (NEWS_FIELDS moved, or the SE is new here, changed
        group or was silent): the caller wakes the leader.  Its first
        reports may arrive together (report_state and
        report_member_status, on two RPC threads) and both try to create
        its row: the one whose insert loses updates the winner's row.

        sent: (report kind, signing time) of a signed report.  Two reports
        of one kind may be stored in the other order (the controllers' RPC
        threads handle casts at once): one signed before the last stored
        of its kind is dropped (only the SE's sign of life is kept), unless
        that last one was signed ahead of this controller's clock by more
        than CLOCK_SKEW -- the SE's clock went back, and its reports from
        now on are the newer ones (else they would wait for its clock).
        Each report is a whole state, so the newer one loses nothing."""
        try:
            return self._record_agent(se_id, se_group, fields, sent)
        except sa_exc.IntegrityError:
            return self._record_agent(se_id, se_group, fields, sent)

    def _record_agent(self, se_id, se_group, fields, sent=None):
        now = time.time()
        # Not stored: the oldest generation the SE accepts, for _catch_up.
        fields = dict(fields)
        floor = fields.pop('generation_floor', None)
        with self.db.session() as s:
            # Locked when its stats are replaced (or carried, below):
            # listener_totals.carry sees each report exactly once; and to
            # order signed reports (compare and set).
            lock = 'stats' in fields or sent is not None
            dialect = s.get_bind().dialect.name
            if lock and dialect == 'sqlite':
                # FOR UPDATE means nothing there, and pysqlite begins a
                # transaction at the first write only: the read would see
                # what a concurrent report is about to replace.
                s.execute(sa.text('BEGIN IMMEDIATE'))
            elif lock and db_mod.is_mysql(dialect):
                # No gap lock for the row of an SE not seen yet: under
                # REPEATABLE READ two first reports of new SEs locked the
                # same gap and deadlocked (retried, with a WARNING); under
                # READ COMMITTED the second insert is a duplicate, which
                # record_agent takes as "update the winner's row".
                s.connection(execution_options={
                    'isolation_level': 'READ COMMITTED'})
            row = s.get(models.AgentState, se_id,
                        with_for_update=lock or None)
            if sent is not None and row is not None and \
                    _overtaken(row.report_times, *sent, now):
                LOG.info('SE %s: a %s signed %.3f s before the last one '
                         'stored arrived after it; dropped', se_id, sent[0],
                         row.report_times[sent[0]] - sent[1])
                # Still a sign of life (agent_ttl).
                back = row.updated_at < now - self.agent_ttl
                row.updated_at = now
                return back
            news = row is None or row.se_group != se_group or \
                row.updated_at < now - self.agent_ttl
            if row is None:
                row = models.AgentState(se_id=se_id, se_group=se_group,
                                        updated_at=now)
                s.add(row)
            elif row.se_group != se_group:
                # Moved: what it counted in its old group stays there.
                if 'stats' not in fields:
                    s.refresh(row, with_for_update=True)
                listener_totals.carry(s, se_id, row.se_group, row.stats)
                row.stats = None
            elif 'stats' in fields:
                listener_totals.carry(s, se_id, se_group, row.stats,
                                      fields['stats'])
            row.se_group = se_group
            applied = fields.get('applied_generation')
            # Only what moved (a restarted SE: its floor above what the
            # store has of it) costs a look at the group.
            known = row.applied_generation
            top = max((g for g in (applied, floor) if _generation(g)),
                      default=None)
            if top is not None and (applied != known or known is None or
                                    top > known) and \
                    self._catch_up(s, se_id, se_group, top):
                news = True
            routed = routing.families(row.bgp)
            for key, value in fields.items():
                if key in NEWS_FIELDS and getattr(row, key) != value:
                    news = True
                setattr(row, key, value)
            # A BGP session coming or going moves what the SE serves; its
            # other BGP news (routes announced) wakes nobody.
            if 'bgp' in fields and routing.families(row.bgp) != routed:
                news = True
            if STATUS_FIELDS.intersection(fields) or 'bgp' in fields:
                row.statuses_digest = statuses_digest(row)
            if sent is not None:
                times = dict(row.report_times or {}, **{sent[0]: sent[1]})
                # With how late it is stored (report_lag).
                times[LAGS] = dict(times.get(LAGS) or {},
                                   **{sent[0]: [sent[1], now - sent[1]]})
                row.report_times = times
            row.updated_at = now
        return news

    def _catch_up(self, session, se_id, se_group, applied):
        """An SE applied a generation above its group's: the database went
        back (restored from a backup; the group's row recreated).  Its
        agents refuse every older generation (replay protection) and, as
        they report that newer one applied, every change stored since
        would count as applied by them: the group continues from above it,
        and what is owed waits for that generation.  True when it did."""
        group = session.get(models.SEGroup, se_group)
        if group is None or group.generation >= applied:
            return False
        group = self._locked_group(session, se_group)
        if group.generation >= applied:
            return False
        LOG.warning('SE %s of group %s applied generation %d, above the '
                    'group\'s %d (its database restored from a backup?): '
                    'the group continues from generation %d, which every '
                    'change owed to Octavia now waits for', se_id, se_group,
                    applied, group.generation, applied + 1)
        group.generation = applied + 1
        owed = session.query(models.PendingStatus).filter(
            sa.or_(models.PendingStatus.se_group == se_group,
                   models.PendingStatus.also_se_group == se_group))
        for p in owed:
            if p.se_group == se_group and p.generation:
                p.generation = group.generation
            if p.also_se_group == se_group and p.also_generation:
                p.also_generation = group.generation
        # What the SEs run is not the restored desired state: each load
        # balancer it serves is as desired once they apply the new one
        # (dsr-status).
        lbs = models.LoadBalancer
        session.query(lbs).filter(lbs.rejected.is_(None), sa.or_(
            sa.and_(lbs.l7_se_group.is_(None), lbs.se_group == se_group),
            lbs.l7_se_group == se_group)).update(
                {lbs.changed_generation: group.generation},
                synchronize_session=False)
        session.query(lbs).filter(lbs.rejected.is_(None),
                                  lbs.l7_se_group.isnot(None),
                                  lbs.se_group == se_group).update(
            {lbs.l4_changed_generation: group.generation},
            synchronize_session=False)
        return True


# What an agent reports that the operating statuses are computed from.
STATUS_FIELDS = frozenset(('member_statuses', 'rejected_objects',
                           'serviceable'))
# What the leader's round reads of an agent's report: the provisioning
# verdicts (generations applied or rejected) and the operating statuses.
# Statistics, BGP and helper states, limits and errors are read elsewhere
# (dsr-status, the next change): a heartbeat repeating them wakes nobody.
NEWS_FIELDS = STATUS_FIELDS | {'applied_generation', 'rejected_generation'}


def _generation(value):
    """Whether value is a generation an SE may report: an int >= 0, far
    below the column's 2**63 (the group continues from one above it)."""
    return isinstance(value, int) and not isinstance(value, bool) \
        and 0 <= value < 2 ** 62


# Seconds an SE's clock may run ahead of this controller's and its reports
# still be ordered (Store.record_agent): a last report signed further ahead
# means the SE's clock has gone back since.
CLOCK_SKEW = 2.0


# report_times[LAGS]: {report kind: [signing time, lag]} of the last stored
# of each kind (report_lag).
LAGS = 'lags'


def report_lag(report_times, kind):
    """How late the last stored signed report of `kind` was stored: the
    storing controller's clock minus its signing time -- the SE's clock
    offset plus the way here, as a seal's lag (tier2.SealClock).  None:
    none signed, or its time stored by a controller of an earlier release
    (which keeps the lag of an earlier report)."""
    entry = (report_times.get(LAGS) or {}).get(kind) \
        if isinstance(report_times, dict) else None
    if isinstance(entry, list) and len(entry) == 2 and \
            entry[0] == report_times.get(kind):
        return entry[1]
    return None


def _changed(session, lb, status, generation, l4_generation=None):
    """Record on load balancer row `lb` the generation(s) its SEs must
    apply to run this change (LoadBalancer.changed_generation): not for a
    change refused whole (nothing changed), nor a row being deleted."""
    if status is None or status.settled() or lb in session.deleted or \
            sa.inspect(lb).deleted:
        return
    lb.changed_generation = generation
    if l4_generation:
        lb.l4_changed_generation = l4_generation


def report_stored(report_times, kind):
    """When the last stored signed report of `kind` was stored, on the
    storing controller's clock (its signing time plus report_lag), or
    None as for report_lag."""
    lag = report_lag(report_times, kind)
    return None if lag is None else report_times[kind] + lag


def _overtaken(report_times, kind, signed, now):
    """A report signed before the last one stored of its kind, which was
    not signed ahead of `now` (this controller's clock) by more than
    CLOCK_SKEW."""
    last = report_times.get(kind) if isinstance(report_times, dict) \
        else None
    return isinstance(last, (int, float)) and \
        signed < last <= now + CLOCK_SKEW


def _clear_l7_refusals(session, lb_id):
    """Take back every L7 refusal (l7_snapshot.REFUSED) of the objects of
    load balancer `lb_id`, a statement or two a kind: the check that
    follows makes again those that still hold.  (Reading every row of a
    load balancer of 300 listeners x 16 members for it cost a third of a
    pool change.)  Returns the (kind, id) taken back."""
    listeners = session.query(models.Listener.id).filter_by(
        loadbalancer_id=lb_id).scalar_subquery()
    pools = session.query(models.Pool.id).filter_by(
        loadbalancer_id=lb_id).scalar_subquery()
    policies = session.query(models.L7Policy.id).filter(
        models.L7Policy.listener_id.in_(listeners)).scalar_subquery()
    cleared = set()
    for kind, owned in (
            ('listeners', models.Listener.loadbalancer_id == lb_id),
            ('pools', models.Pool.loadbalancer_id == lb_id),
            ('members', models.Member.pool_id.in_(pools)),
            ('healthmonitors', models.HealthMonitor.pool_id.in_(pools)),
            ('l7policies', models.L7Policy.listener_id.in_(listeners)),
            ('l7rules', models.L7Rule.l7policy_id.in_(policies))):
        model = _MODELS[kind]
        ids = [obj_id for (obj_id,) in session.query(model.id).filter(
            owned, model.rejected.startswith(l7_snapshot.REFUSED,
                                             autoescape=True))]
        if ids:
            session.query(model).filter(
                model.id.in_(ids),
                model.rejected.startswith(l7_snapshot.REFUSED,
                                          autoescape=True)).update(
                {'rejected': None}, synchronize_session='fetch')
            cleared.update((kind, obj_id) for obj_id in ids)
    return cleared


def _ran_before(session, kind, obj_id, cleared):
    """Whether object (kind, obj_id), not rejected now, ran before the
    change in `session`: stored and not rejected then.  cleared:
    _clear_l7_refusals' (L7 refusals it took back, which the check then
    made again)."""
    before = session.info.get(_BEFORE, {})
    if (kind, obj_id) in before:
        return before[(kind, obj_id)] is None       # the change stored it
    return (kind, obj_id) not in cleared


class _Keep(collections.namedtuple(
        '_Keep', 'savepoint kind obj_id sent store_alone')):
    """Store._l7_savepoint's: the savepoint before a change of object
    (kind, obj_id) of a tier-2 load balancer, the change's document
    (_diverge), and None or how to store the object alone, rejected."""


def _l7_check(session, lb, clear=True):
    """(the L7 refusals taken back, [(kind, id, reason)] the L7 SEs
    cannot run now) of tier-2 load balancer row `lb`; the load balancer
    itself first and alone when it is refused whole.  clear=False: what
    its L7 document holds (the rejected left out) -- what runs."""
    cleared = _clear_l7_refusals(session, lb.id) if clear else set()
    item, refused = l7_snapshot.runnable(
        l7_snapshot.l7_load_balancer(session, lb), copy=False)
    if item is None:
        return cleared, [('loadbalancers', lb.id, refused)]
    return cleared, refused


def _runs(session, kind, row):
    """Whether stored object `row` runs: neither it nor anything it is
    below is rejected (its load balancer is checked by the caller)."""
    while row is not None and row.rejected is None:
        if kind in ('listeners', 'pools'):
            return True     # right below the load balancer
        kind, link = _PARENT[kind]
        row = session.get(_MODELS[kind], getattr(row, link))
    return False


def _l7_member(row):
    """An L7SEMember row as set_l7_members takes and l7_members gives it."""
    member = {'tunnel_addresses': row.tunnel_addresses,
              'draining': row.draining}
    if row.unserved:
        member['unserved'] = row.unserved
    return member


def _unserved(rejected, helpers):
    """{kind: sorted ids} an L7 SE does not serve, from its report."""
    found = {kind: set(rejected[kind])
             for kind in l7_snapshot.UNSERVED_KINDS
             if isinstance(rejected, dict)
             and isinstance(rejected.get(kind), dict) and rejected[kind]}
    haproxy = helpers.get('haproxy') if isinstance(helpers, dict) else None
    dead = haproxy.get('not_running') if isinstance(haproxy, dict) else None
    if isinstance(dead, list) and dead:
        found.setdefault('loadbalancers', set()).update(
            str(lb_id) for lb_id in dead)
    return {kind: sorted(ids) for kind, ids in found.items()}


def statuses_digest(row):
    """Digest of an agent's STATUS_FIELDS and of the VIP families its BGP
    sessions carry: equal digests, equal inputs."""
    canonical = json.dumps([getattr(row, key) for key in sorted(
        STATUS_FIELDS)] + [sorted(routing.families(row.bgp))],
        sort_keys=True, separators=(',', ':'))
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


_Guard = collections.namedtuple('_Guard', 'se_group limits source before')


def _cidrs_per_family(allowed_cidrs):
    """{family: distinct prefixes} of a listener's allowed_cidrs, as the
    agents program them (amphora_agent.dataplane.model.ListenerSpec.acl:
    one set per VIP family); a malformed entry counts nothing (the agent
    rejects it)."""
    nets = set()
    for text in allowed_cidrs or ():
        try:
            nets.add(ipaddress.ip_network(str(text), strict=False))
        except ValueError:
            continue
    return collections.Counter(n.version for n in nets)


class _Usage:
    """An SE group's dataplane usage as its agents count it.

    An agent programs one dataplane listener per (VIP address, Octavia
    listener) and, in each, the members of the listener's default pool
    (amphora_agent/desired.py): 'max_listeners' counts VIPs x listeners,
    'max_members' counts VIPs x the members of each listener's pool, and a
    pool cannot have more members than its ring has slots.  The
    agents count only what they program now (enabled and healthy); the
    controller counts every accepted object, enabled or not, so enabling
    one or a member coming back never takes an SE over its limit.
    Rejected objects count nothing, nor does anything below them.
    A tier-2 load balancer's L4 listeners have the ready L7 SEs of its L7
    group as members, whatever its pools hold (those are the L7 SEs').
    'ring_slots' counts each dataplane listener's ring as the agents size
    it (dsr_wire.rings.ring_size_for of its pool, at most the group's
    ring_size: the SEs of a group must share it, or their rings differ).
    """

    def __init__(self, session, se_group, limits=None):
        self.ring_ceiling = (limits or {}).get(
            'ring_size', wire_rings.DEFAULT_RING_SIZE)
        # Columns, not ORM objects: this runs twice on every change, over
        # the whole group.
        lb_model = models.LoadBalancer
        lbs = session.query(lb_model.id, lb_model.l7_se_group,
                            lb_model.doc).filter_by(
            se_group=se_group, rejected=None).all()
        # {lb id: {family: VIP addresses}}: a listener's allowed_cidrs of a
        # family are enforced on each VIP address of that family.  The
        # family from the stored text: ipaddress parses 10,000 addresses
        # in about 15 ms, and this runs twice on every change.
        self.vip_families = {
            lb_id: collections.Counter(6 if ':' in a else 4
                                       for a in models.vip_addresses(doc))
            for lb_id, _, doc in lbs}
        self.vips = {lb_id: sum(families.values())
                     for lb_id, families in self.vip_families.items()}
        l7_sizes = collections.Counter(
            g for (g,) in session.query(models.L7SEMember.l7_se_group))
        self.tier2 = {lb_id: l7_sizes[l7_group]
                      for lb_id, l7_group, _ in lbs if l7_group}
        in_group = (lb_model.se_group == se_group)
        self.listeners = {}
        self.cidrs = {}     # listener id -> {family: distinct prefixes}
        for lid, lb_id, doc in session.query(
                models.Listener.id, models.Listener.loadbalancer_id,
                models.Listener.doc).join(
                    lb_model, models.Listener.loadbalancer_id == lb_model.id
        ).filter(in_group, models.Listener.rejected.is_(None)):
            self.listeners[lid] = (lb_id, doc.get('default_pool_id'))
            self.cidrs[lid] = _cidrs_per_family(doc.get('allowed_cidrs'))
        self.pools = {pid for (pid,) in session.query(models.Pool.id).join(
            lb_model, models.Pool.loadbalancer_id == lb_model.id).filter(
                in_group, models.Pool.rejected.is_(None))}
        # Accepted members per pool, counted by the database: a row per
        # pool, not per member (160,000 members at 10,000 load
        # balancers, read twice on every change).
        self.members = dict(session.query(
            models.Member.pool_id, sa.func.count(models.Member.id)).join(
                models.Pool, models.Member.pool_id == models.Pool.id
            ).join(lb_model, models.Pool.loadbalancer_id == lb_model.id
                   ).filter(in_group, models.Member.rejected.is_(None)
                            ).group_by(models.Member.pool_id))
        self._session = session
        self._member_pools = {}     # member id -> pool id, of excluded ones

    def _excluded_per_pool(self, excluded):
        """{pool id: members of it in excluded that are in its count}.
        No autoflush: the rows as they were when the counts were read (a
        candidate Store._admit refuses meanwhile is still in them)."""
        ids = [mid for kind, mid in excluded if kind == 'members']
        unknown = [mid for mid in ids if mid not in self._member_pools]
        if unknown:
            with self._session.no_autoflush:
                self._member_pools.update(self._session.query(
                    models.Member.id, models.Member.pool_id).filter(
                        models.Member.id.in_(unknown),
                        models.Member.rejected.is_(None)))
            # Rejected or gone: in no count.
            self._member_pools.update(
                (mid, None) for mid in unknown
                if mid not in self._member_pools)
        return collections.Counter(self._member_pools[mid] for mid in ids)

    def count(self, excluded=frozenset()):
        """{'max_listeners': n, 'max_members': n, 'ring_size': members of
        the largest pool, 'ring_slots': n, 'max_cidrs': prefixes of the
        fuller family} without `excluded` ((kind, id) pairs) and what is
        below them."""
        listeners = members = largest_pool = slots = 0
        cidrs = collections.Counter()
        ring_slots = functools.partial(self._ring_slots, self.ring_ceiling)
        gone = self._excluded_per_pool(excluded)
        for lid, (lb_id, pool_id) in self.listeners.items():
            if lb_id not in self.vips or ('listeners', lid) in excluded \
                    or ('loadbalancers', lb_id) in excluded:
                continue
            vips = self.vips[lb_id]
            listeners += vips
            for family, prefixes in self.cidrs[lid].items():
                cidrs[family] += self.vip_families[lb_id][family] * prefixes
            if lb_id in self.tier2:
                members += vips * self.tier2[lb_id]
                largest_pool = max(largest_pool, self.tier2[lb_id])
                slots += vips * ring_slots(self.tier2[lb_id])
            elif pool_id in self.pools and \
                    ('pools', pool_id) not in excluded:
                in_pool = self.members.get(pool_id, 0) - gone[pool_id]
                members += vips * in_pool
                largest_pool = max(largest_pool, in_pool)
                slots += vips * ring_slots(in_pool)
        return {'max_listeners': listeners, 'max_members': members,
                'ring_size': largest_pool, 'ring_slots': slots,
                'max_cidrs': max(cidrs.values(), default=0)}

    @staticmethod
    def _ring_slots(ceiling, pool_members):
        # An empty pool has no ring (amphora_agent.capacity counts alike).
        return wire_rings.ring_size_for(pool_members, ceiling) \
            if pool_members else 0
