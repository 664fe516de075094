"""The leader's loop: tell agents about new generations, and tell Octavia
what the agents did (provisioning, operating status, statistics).

Only the elected controller runs it; everything it needs is in the
database, so a new leader picks up exactly where a dead one stopped and
nothing stays PENDING_*.
"""

import collections
import concurrent.futures
import time

from octavia_lib.common.constants import ACTIVE
from octavia_lib.common.constants import DELETED
from octavia_lib.common.constants import ERROR
from oslo_log import log as logging
import sqlalchemy as sa

from dsr_provider.controller import listener_totals
from dsr_provider.controller import models
from dsr_provider.controller import neutron_ports
from dsr_provider.controller import operating_delta
from dsr_provider.controller import routing
from dsr_provider.controller import store as store_mod

LOG = logging.getLogger(__name__)


def publish_generations(store, notifier):
    """Tell the agents of every group with an unpublished generation.

    The endpoint that stored a change calls it at once (the fast path); the
    leader's loop calls it too, so a controller dying in between delays the
    news by one loop round at most.  A duplicate is harmless: agents fetch
    once per generation they have not seen.
    """
    with store.db.session() as s:
        todo = [(g.name, g.generation) for g in s.query(models.SEGroup)
                if g.generation > g.published_generation]
    for name, generation in todo:
        notifier.config_changed(name, generation)
        with store.db.session() as s:
            group = s.get(models.SEGroup, name, with_for_update=True)
            group.published_generation = max(
                group.published_generation, generation)


# Size of one status document: one driver-agent child updates its objects
# one transaction each and octavia-lib gives up after 30 s.  Measured on a
# loaded 2-core host: 195 objects ACTIVE in 5.4 s, 39 DELETED in 8-17 s (a
# delete reads the object's whole graph, locks the quota, then deletes).
MAX_UPDATE_COST = 200
DELETED_COST = 8
# After a timeout the driver agent's child goes on applying the document:
# its load balancers are not sent again meanwhile (a second child deleting
# the same rows fails "No row was found").
HOLD_AFTER_TIMEOUT = 30.0
# Seconds before the first retry of a failed operating status update, and
# the longest wait between two (doubled each failure in a row).
OPERATING_BACKOFF = 0.5
OPERATING_BACKOFF_MAX = 10.0
# A document Octavia refuses names the object it could not update (a
# listener, L7 policy or rule it does not find), and that object's load
# balancer waits a round: right after a create, Octavia may not have
# committed it yet (its API calls the provider first), which takes it
# milliseconds.  An object it still refuses after GHOST_REFUSALS tries
# over GHOST_AFTER seconds, and does not find when asked (a get), it never
# committed (its transaction failed after the provider took the change):
# every later status of that load balancer would wait behind it forever.
# Its entries are dropped and the rest delivered; it is deleted here (off
# the SEs).  Both bounds: rounds retry fast (a burst of refusals in a
# second proves nothing), and one held round is not three refusals.
GHOST_REFUSALS = 3
GHOST_AFTER = 30.0
# A statistics round sends the listeners whose totals changed since they
# were last sent: each update is a driver-agent child that sets up
# Octavia's ORM (~0.3 CPU-s), and the totals of idle listeners do not
# move.  All of them go again this often, so a value Octavia lost (a
# restored database) does not stay lost.
STATS_REFRESH = 60.0
# The operating round recomputes every object's status from every row of
# the deployment only when something it reads changed: a generation (any
# object), an agent's reported statuses (their digest), a pending report,
# a port refusal, the live SEs.  Idle, a round is a few small queries
# instead of the whole deployment ten times a second.  And this often
# anyway, should a change ever arrive by a path that moves none of them.
OPERATING_REFRESH = 10.0
# Tombstones older than [dsr_controller] tombstone_ttl are purged this
# often, not every round: nobody waits for it.
PURGE_INTERVAL = 60.0


def _merge(statuses):
    """One status document from several, in order: the last value of each
    field of each object wins, as if they had been sent one by one."""
    merged = collections.OrderedDict()
    for status in statuses:
        for kind, items in status.items():
            for item in items:
                merged.setdefault((kind, item['id']), {}).update(item)
    result = collections.OrderedDict()
    for (kind, _id), item in merged.items():
        result.setdefault(kind, []).append(item)
    return dict(result)


def _cost(status):
    return sum(DELETED_COST if item.get('provisioning_status') == DELETED
               else 1 for items in status.values() for item in items)


def _owner(groups, kind, obj_id):
    """The load balancer of groups whose statuses name the object."""
    if obj_id is None:
        return None
    for lb_id, _todo, statuses in groups:
        for st in statuses:
            if any(item['id'] == obj_id for k, items in st.items()
                   if kind in (None, k) for item in items):
                return lb_id
    return None


def _without(status, ghosts):
    """The status document without the entries of ghosts ({(kind, id)}:
    objects Octavia never committed), but for their DELETED: Octavia skips
    the delete of an object it does not have."""
    result = {}
    for kind, items in status.items():
        kept = [item for item in items if (kind, item['id']) not in ghosts
                or item.get('provisioning_status') == DELETED]
        if kept:
            result[kind] = kept
    return result


def _loadbalancer_of(status_doc):
    """The load balancer a status document is about (None if none)."""
    for lb in (status_doc or {}).get('loadbalancers') or ():
        return lb.get('id')
    return None


class Reporter:
    def __init__(self, store, notifier, driver_lib, live_agents,
                 apply_timeout=30.0, agent_ttl=30.0, report_workers=2,
                 max_update_cost=MAX_UPDATE_COST,
                 hold_after_timeout=HOLD_AFTER_TIMEOUT,
                 tombstone_ttl=7 * 86400.0):
        """live_agents(se_group) -> set of SE ids alive in the group.
        agent_ttl: seconds after its last report a live SE stops voting in
        operating statuses (silent).  report_workers: status documents in
        flight at once.  tombstone_ttl: seconds deleted objects are
        remembered (Store.delete_missing)."""
        self.store = store
        self.notifier = notifier
        self.driver_lib = driver_lib
        self.live_agents = live_agents
        self.apply_timeout = apply_timeout
        self.agent_ttl = agent_ttl
        self.report_workers = report_workers
        self.max_update_cost = max_update_cost
        self._cost_limit = max_update_cost
        self.hold_after_timeout = hold_after_timeout
        self.tombstone_ttl = tombstone_ttl
        self._purged_at = time.monotonic()
        self._silent = set()        # SE ids last seen silent (logged)
        self._held = {}         # load balancer -> monotonic time it waits to
        # (kind, id) Octavia refused -> [refusals, monotonic time of the
        # first]; and the objects found never committed (GHOST_AFTER).
        self._refused = {}
        self._ghosts = set()
        self._sent_operating = {}
        # The inputs and view of the last operating round that was sent,
        # and when every object was last computed (operating_delta.py).
        self._operating_inputs = None
        self._operating_view = None
        self._operating_full_at = 0.0
        # After a failed update (octavia-driver-agent down): the next try
        # waits, longer each time, up to OPERATING_BACKOFF_MAX (each try
        # recomputed statuses: 7 a second, 3.3 CPU-s in 10 s at 300 load
        # balancers).
        self._operating_failures = 0
        self._operating_retry_at = 0.0
        self._last_stats = 0.0
        self._sent_stats = {}       # listener id -> entry last sent
        self._stats_refreshed = None  # monotonic time of the last full send
        # Set by a round that left work for the next one (a load balancer
        # Octavia refused "waits a round", an operating update failed):
        # the controller runs it soon, not after loop_interval.
        self._again = False

    def run_once(self, stats_interval=5.0):
        """One round of everything (the controller runs run_statuses and
        report_statistics from separate threads)."""
        self.run_statuses()
        if time.monotonic() - self._last_stats >= stats_interval:
            self._last_stats = time.monotonic()
            self.report_statistics()

    def run_statuses(self):
        """Notifications to agents, then provisioning and operating
        statuses to Octavia.  True when the round left work that the next
        one should retry soon (the caller's loop otherwise waits for a
        wake or loop_interval).

        Most rounds find nothing to do: one transaction reads what each
        step needs to know (groups with an unpublished generation, pending
        reports, the operating inputs), and a step with nothing to do
        costs nothing more.  Idle rounds were three transactions each (a
        pool pre-ping, the queries, a commit apiece): half of an idle
        controller's CPU at ten rounds a second."""
        self._again = False
        with self.store.db.session() as s:
            unpublished, inputs = self._round(s)
        if unpublished:
            self.publish_generations()
        _, _, pending, _, _ = inputs
        if pending:
            self.report_provisioning()
            inputs = None           # it moves the operating inputs
        self.report_operating_status(inputs)
        if time.monotonic() - self._purged_at >= PURGE_INTERVAL:
            self._purged_at = time.monotonic()
            purged = self.store.purge_tombstones(self.tombstone_ttl)
            if purged:
                LOG.info('%d tombstone(s) older than %s s purged', purged,
                         self.tombstone_ttl)
        return self._again

    # ---------------------------------------------------------- agents
    def publish_generations(self):
        publish_generations(self.store, self.notifier)

    def _agents(self, session, se_group):
        """States of the live agents (a new agent has not reported yet).
        Silent ones included: the provisioning verdicts wait for them, as
        their XDP program and ExaBGP may still forward with the generation
        they last applied -- a change is not ACTIVE until they apply it
        or apply_timeout passes."""
        alive = self.live_agents(se_group)
        rows = {r.se_id: r for r in session.query(
            models.AgentState).filter_by(se_group=se_group)}
        return [rows.get(se_id) or models.AgentState(
            se_id=se_id, se_group=se_group, updated_at=0.0)
            for se_id in sorted(alive)]

    # ---------------------------------------------------- provisioning
    # Each octavia-driver-agent request forks a child that starts cold:
    # 1.5-2 s on a loaded 2-core host whatever it does, 9-15 s when four
    # run at once, past octavia-lib's 30 s timeout when the host is busier.
    # So a round sends every ready load balancer in as few documents as it
    # can, and asks no get first: an update of a row Octavia inserted but
    # has not committed waits for the commit (InnoDB row lock); the one
    # that reads first (a listener) fails naming it, and its load balancer
    # waits a round.  docs/benchmarks.md (Load) has the measurements.
    def report_provisioning(self):
        with self.store.db.session() as s:
            pending = s.query(models.PendingStatus).order_by(
                models.PendingStatus.id).all()
            agents = {}
            for p in pending:
                for group in (p.se_group, p.also_se_group):
                    if group is not None and group not in agents:
                        agents[group] = self._agents(s, group)
        # One load balancer's statuses stay in order: a change is reported
        # only with every earlier change of its load balancer.
        by_lb = collections.OrderedDict()
        blocked = set()
        now = time.monotonic()
        self._held = {lb: t for lb, t in self._held.items() if t > now}
        for p in pending:
            lb_id = _loadbalancer_of(p.status)
            if lb_id in blocked or lb_id in self._held:
                continue
            verdict = self._verdict(p, agents)
            if verdict is None:
                blocked.add(lb_id)
                continue
            by_lb.setdefault(lb_id, []).append((p, verdict))
        if not by_lb:
            return
        # What is rejected now and every known operating status go in the
        # same update as the provisioning status (an admin-down member is
        # ACTIVE and OFFLINE at once, never NO_MONITOR in between).
        view = self._view()
        groups = [(lb_id, todo, [_without(store_mod.octavia_status(
            p.status, failed=verdict == ERROR, rejected=view.rejected,
            operating=view.operating, held=view.held), self._ghosts)
            for p, verdict in todo])
            for lb_id, todo in by_lb.items()]
        chunks = list(self._chunks(groups))
        if len(chunks) == 1:
            self._send_groups(chunks[0], view)
            return
        # Deletions fill several documents, and their children are CPU
        # bound: a few at once use the host's cores.
        with concurrent.futures.ThreadPoolExecutor(
                max_workers=min(self.report_workers, len(chunks))) as pool:
            list(pool.map(lambda chunk: self._send_groups(chunk, view),
                          chunks))

    def _chunks(self, groups):
        """Whole load balancers, at most the cost limit per document (one
        load balancer costing more goes alone)."""
        chunk, size = [], 0
        for group in groups:
            n = sum(_cost(st) for st in group[2])
            if chunk and size + n > self._cost_limit:
                yield chunk
                chunk, size = [], 0
            chunk.append(group)
            size += n
        if chunk:
            yield chunk

    def _send_groups(self, groups, view):
        """One document for these load balancers; a load balancer whose
        object Octavia refuses waits a round, the others are sent again
        without it; an object Octavia never committed is dropped and its
        load balancer sent without it (GHOST_AFTER)."""
        while groups:
            status = _merge(st for _lb, _todo, sts in groups for st in sts)
            started = time.monotonic()
            try:
                self.driver_lib.update_loadbalancer_status(status)
            except Exception as exc:  # noqa: BLE001 -- retried next round
                kind = getattr(exc, 'status_object', None)
                obj_id = getattr(exc, 'status_object_id', None)
                culprit = _owner(groups, kind, obj_id)
                ghosts = culprit is not None and self._ghost(
                    kind, obj_id, culprit, exc)
                kept = [(lb_id, todo, [_without(st, ghosts) for st in sts])
                        for lb_id, todo, sts in groups] if ghosts else groups
                if kept != groups:
                    # The rest of its load balancer's statuses go now.
                    groups = kept
                    continue
                LOG.warning('status update of %d load balancer(s) failed '
                            '(%s)%s', len(groups), exc,
                            '' if culprit is None else
                            f'; load balancer {culprit} waits a round')
                if culprit is None:
                    # Timed out, or the driver agent is gone: the next
                    # documents are smaller, these load balancers wait.
                    self._cost_limit = max(1, self._cost_limit // 2)
                    until = time.monotonic() + self.hold_after_timeout
                    self._held.update((g[0], until) for g in groups)
                    return
                groups = [g for g in groups if g[0] != culprit]
                self._again = True
                continue
            self._cost_limit = self.max_update_cost
            LOG.info('status of %d load balancer(s) (%d objects) sent to '
                     'Octavia in %.2f s', len(groups),
                     sum(len(items) for items in status.values()),
                     time.monotonic() - started)
            for kind, items in status.items():
                for item in items:
                    self._refused.pop((kind, item['id']), None)
                    if 'operating_status' in item:
                        self._sent_operating[(kind, item['id'])] = \
                            item['operating_status']
            done = [p for _lb, todo, _sts in groups for p, _v in todo]
            for _lb, todo, _sts in groups:
                for p, verdict in todo:
                    if verdict != ERROR:
                        self._log_rejections(p, view)
            with self.store.db.session() as s:
                for p in done:
                    row = s.get(models.PendingStatus, p.id)
                    if row is not None:
                        s.delete(row)
                for _lb, todo, _sts in groups:
                    for p, verdict in todo:
                        self.store.record_outcomes(s, p.status, verdict)
            return

    def _ghost(self, kind, obj_id, lb_id, exc):
        """The objects to drop from load balancer lb_id's statuses, Octavia
        having refused them naming kind obj_id: none until it refused it
        GHOST_REFUSALS times over GHOST_AFTER seconds and does not find it
        (GHOST_AFTER); then it, its ancestors Octavia does not have either
        (below the load balancer) and their descendants, deleted here."""
        key = (kind, obj_id)
        if key in self._ghosts:
            return {key}
        if kind not in store_mod._MODELS or kind == 'loadbalancers':
            return set()
        now = time.monotonic()
        refused = self._refused.setdefault(key, [0, now])
        refused[0] += 1
        if refused[0] < GHOST_REFUSALS or now - refused[1] < GHOST_AFTER:
            return set()
        if self._in_octavia(kind, obj_id) is not False:
            # Octavia has it (or did not say): refused for another reason,
            # its load balancer waits as before; asked again later.
            self._refused[key] = [0, now]
            return set()
        top = key
        while True:
            parent = self.store.parent(*top)
            if parent is None or parent[0] == 'loadbalancers' or \
                    self._in_octavia(*parent) is not False:
                break
            top = parent
        ghosts = {top, key} | self.store.descendants(*top)
        LOG.error('%s %s of load balancer %s: Octavia refused its status %d '
                  'times over %.0f s (%s) and has no such object (its '
                  'transaction failed after the provider took the '
                  'change); dropped from the load balancer\'s statuses '
                  '(%s), which go on without it, and deleted here (off '
                  'the SEs)', store_mod._GET_RESOURCE[top[0]], top[1],
                  lb_id, refused[0], now - refused[1], exc,
                  ', '.join(f'{store_mod._GET_RESOURCE[k]} {i}'
                            for k, i in sorted(ghosts)))
        self._ghosts.update(ghosts)
        self._refused.pop(key, None)
        self._forget(top, ghosts)
        return ghosts

    def _in_octavia(self, kind, obj_id):
        """Whether Octavia has the object (a get, one driver-agent child):
        True, False, or None when it could not say."""
        try:
            getter = getattr(self.driver_lib,
                             f'get_{store_mod._GET_RESOURCE[kind]}')
            return getter(obj_id) is not None
        except Exception as exc:  # noqa: BLE001 -- asked again later
            LOG.warning('could not ask Octavia for %s %s: %s',
                        store_mod._GET_RESOURCE[kind], obj_id, exc)
            return None

    def _forget(self, top, ghosts):
        """An object Octavia never committed, with what is below it: deleted
        here (the SEs drop it with the new generation, a tombstone keeps a
        redelivered create out; Octavia skips the DELETED of what it does
        not have) and taken out of every status still owed."""
        try:
            getattr(self.store, f'delete_{store_mod._GET_RESOURCE[top[0]]}')(
                top[1])
        except Exception:  # noqa: BLE001 -- its statuses are dropped anyway
            LOG.exception('could not delete %s %s',
                          store_mod._GET_RESOURCE[top[0]], top[1])
        with self.store.db.session() as s:
            for p in s.query(models.PendingStatus):
                kept = _without(p.status, ghosts)
                if kept != p.status:
                    p.status = kept
        self._again = True

    @staticmethod
    def _log_rejections(p, view):
        """Once per change: which changed object an SE left out, and why
        (the controller logged its own refusals when it stored them)."""
        for kind, items in p.status.items():
            for item in items:
                if not item.get('changed') or item.get('rejected') or \
                        item['provisioning_status'] == DELETED:
                    continue
                for se_id, reason in view.agent_rejections.get(
                        (kind, item['id']), ()):
                    LOG.error('%s %s rejected by SE %s of group %s: %s',
                              store_mod._GET_RESOURCE[kind], item['id'],
                              se_id, p.se_group, reason)

    def _verdict(self, pending, agents):
        """ACTIVE, ERROR, or None (not yet): every group the status waits
        for (its own; a tier-2 change the L4 SEs run too, also theirs).
        agents: {se_group: live agents}."""
        verdicts = [self._group_verdict(pending, pending.se_group,
                                        pending.generation,
                                        agents[pending.se_group])]
        if pending.also_se_group is not None:
            verdicts.append(self._group_verdict(
                pending, pending.also_se_group, pending.also_generation or 0,
                agents[pending.also_se_group]))
        if ERROR in verdicts:
            return ERROR
        if None in verdicts:
            return None
        return ACTIVE

    def _group_verdict(self, pending, se_group, generation, agents):
        if not agents:
            # No SE serves the group: the desired state is stored and will
            # be applied when one joins.
            return ACTIVE
        if any(a.rejected_generation is not None and
               a.rejected_generation >= generation and
               (a.applied_generation or 0) < generation
               for a in agents):
            return ERROR
        if all((a.applied_generation or 0) >= generation for a in agents):
            return ACTIVE
        if time.time() - pending.created_at > self.apply_timeout:
            LOG.error('generation %s of %s not applied by every SE within '
                      '%s s', generation, se_group, self.apply_timeout)
            return ERROR
        return None

    # --------------------------------------------------- operating status
    def _view(self):
        """What the SEs do now: rejected objects and operating statuses
        (dsr_provider/controller/operating.py has the rules)."""
        with self.store.db.session() as s:
            agent_rejections = collections.defaultdict(list)
            serving = {}    # group -> VIP families served (operating.py)
            agents = {}
            live = []       # each group's heard-from SEs, groups by name
            silent = set()  # groups whose live SEs all stopped reporting
            deadline = self._silent_before()
            for group in [name for (name,) in s.query(
                    models.SEGroup.name).order_by(models.SEGroup.name)]:
                group_agents = self._agents(s, group)
                serviceable = [a for a in group_agents
                               if a.serviceable is not False]
                if serviceable:
                    serving[group] = frozenset().union(*(
                        routing.families(a.bgp) for a in serviceable))
                # A silent SE's last reports no longer vote.
                heard = [a for a in group_agents
                         if not 0 < a.updated_at < deadline]
                if group_agents and not heard:
                    silent.add(group)
                live.append([agent.se_id for agent in heard])
                for agent in heard:
                    if agent.updated_at:        # a stored row
                        agents[agent.se_id] = operating_delta.agent_view(
                            agent)
                    for kind, objects in (agent.rejected_objects or
                                          {}).items():
                        for obj_id, reason in objects.items():
                            agent_rejections[(kind, obj_id)].append(
                                (agent.se_id, reason))
            rows = {kind: list(s.query(model))
                    for kind, model in store_mod._MODELS.items()}
            pending = [p.status for p in s.query(models.PendingStatus)]
            diverged = {(kind, r.id) for kind, kind_rows in rows.items()
                        for r in kind_rows if getattr(r, 'diverged', None)}
            port_refused = set(neutron_ports.member_reasons(s))
        statuses, rejected = operating_delta.compute(
            rows, operating_delta.reports_of(live, agents),
            agent_rejections, serving, port_refused, silent)
        # Objects Octavia may not have committed yet get theirs with their
        # provisioning status.
        waiting = {(kind, item['id']) for doc in pending
                   for kind, items in doc.items() for item in items
                   if item.get('changed')}
        return _View(statuses, rejected, dict(agent_rejections), waiting,
                     agents, serving, port_refused, silent,
                     diverged | store_mod.below(rows, rejected))

    def _round(self, session):
        """(groups with a generation not yet published, the operating
        inputs), read in `session` by column: the round's one read."""
        groups = session.execute(sa.select(
            models.SEGroup.name, models.SEGroup.generation,
            models.SEGroup.published_generation).order_by(
            models.SEGroup.name)).all()
        unpublished = [name for name, generation, published in groups
                       if generation > published]
        return unpublished, self._inputs(session, [
            (name, generation) for name, generation, _ in groups])

    def _inputs(self, session, groups):
        """What the operating statuses are computed from, in brief: equal
        values, equal statuses (the rows themselves move with their
        group's generation).  groups: [(name, generation)] by name."""
        rows = session.execute(sa.select(
            models.AgentState.se_id, models.AgentState.se_group,
            models.AgentState.statuses_digest,
            models.AgentState.updated_at).order_by(
            models.AgentState.se_id)).all()
        agents = [tuple(r[:3]) for r in rows]
        pending = list(session.execute(sa.select(
            models.PendingStatus.id).order_by(
            models.PendingStatus.id)).scalars())
        refused = sorted(neutron_ports.member_reasons(session).items())
        deadline = self._silent_before()
        stale = {r.se_id: r.se_group for r in rows if r.updated_at < deadline}
        # The heard-from live SEs: one going silent, or coming back,
        # moves the inputs.
        live, silent = [], {}
        for name, _ in groups:
            alive = self.live_agents(name)
            silent.update((se_id, name) for se_id in alive
                          if stale.get(se_id) == name)
            live.append(sorted(se_id for se_id in alive
                               if stale.get(se_id) != name))
        self._log_silence(silent)
        return groups, agents, pending, refused, live

    def _silent_before(self):
        """An SE whose last report is older than this (epoch seconds) is
        silent."""
        return time.time() - self.agent_ttl

    def _log_silence(self, silent):
        """Once per change: an SE going silent, and coming back.
        silent: {se_id: group} of the live SEs silent now."""
        for se_id in sorted(set(silent) - self._silent):
            LOG.warning('SE %s of group %s: no report for over %s s; its '
                        'member statuses no longer count (changes still '
                        'wait for it)', se_id, silent[se_id], self.agent_ttl)
        for se_id in sorted(self._silent - set(silent)):
            LOG.info('SE %s reports again (or left its group)', se_id)
        self._silent = set(silent)

    def report_operating_status(self, inputs=None):
        """Operating statuses that changed, to Octavia.  inputs: what
        _inputs() read this round (read here when None)."""
        if time.monotonic() < self._operating_retry_at:
            return          # a round after it computes them again
        if inputs is None:
            with self.store.db.session() as s:
                _, inputs = self._round(s)
        now = time.monotonic()
        fresh = (self._operating_inputs is not None and
                 now - self._operating_full_at < OPERATING_REFRESH)
        if fresh and self._operating_inputs == inputs:
            return
        delta = None
        if fresh:
            view = self._operating_view
            with self.store.db.session() as s:
                delta = operating_delta.member_reports(
                    s, view.agents, self._operating_inputs, inputs,
                    view.agent_rejections, view.serving, view.port_refused,
                    view.silent)
        if delta is None:
            view = self._view()
            operating = view.operating
        else:
            agents, operating = delta
            view = view._replace(agents=agents)
        status = collections.defaultdict(list)
        for (kind, obj_id), st in sorted(operating.items()):
            if (kind, obj_id) in view.waiting:
                continue
            self._add(status, kind, obj_id, st)
        status = {k: v for k, v in status.items() if v}
        if status:
            started = time.monotonic()
            try:
                self.driver_lib.update_loadbalancer_status(status)
            except Exception:  # noqa: BLE001
                self._operating_failures += 1
                delay = min(OPERATING_BACKOFF_MAX, OPERATING_BACKOFF * 2 ** (
                    self._operating_failures - 1))
                LOG.exception('operating status update failed (%d in a '
                              'row); trying again in %.1f s',
                              self._operating_failures, delay)
                for kind, items in status.items():
                    for item in items:
                        self._sent_operating.pop((kind, item['id']), None)
                self._operating_retry_at = time.monotonic() + delay
                return      # computed again after the delay
            self._operating_failures = 0
            LOG.info('operating status of %d objects sent to Octavia in '
                     '%.2f s', sum(len(items) for items in status.values()),
                     time.monotonic() - started)
        self._operating_inputs = inputs
        self._operating_view = view
        if delta is None:
            self._operating_full_at = now

    def _add(self, status, kind, obj_id, st):
        if self._sent_operating.get((kind, obj_id)) == st:
            return
        self._sent_operating[(kind, obj_id)] = st
        status[kind].append({'id': obj_id, 'operating_status': st})

    # ------------------------------------------------------------ stats
    def report_statistics(self):
        with self.store.db.session() as s:
            listener_totals.one_snapshot(s)
            # listener -> the SE group whose agents count its traffic: a
            # tier-2 listener's are its L7 SEs (HAProxy, as an amphora);
            # its L4 SEs see the same connections on their way through.
            counted_by = {lst.id: lb.l7_se_group or lb.se_group
                          for lst, lb in s.query(
                              models.Listener, models.LoadBalancer).join(
                              models.LoadBalancer,
                              models.Listener.loadbalancer_id ==
                              models.LoadBalancer.id)}
            counting = [(agent, lid, counters)
                        for agent in s.query(models.AgentState)
                        for lid, counters in ((agent.stats or {}).get(
                            'listeners') or {}).items()
                        if counted_by.get(lid) == agent.se_group]
            carried = listener_totals.carried_totals(s, counted_by)
        # Active connections only from the SEs heard from (live in tooz,
        # not silent): a stopped SE's last ones are gone.
        deadline = self._silent_before()
        alive = {}
        reports = []
        for agent, lid, counters in counting:
            if agent.se_group not in alive:
                alive[agent.se_group] = self.live_agents(agent.se_group)
            heard = agent.se_id in alive[agent.se_group] and \
                agent.updated_at >= deadline
            reports.append((lid, counters or {}, heard))
        # The totals never go down (listener_totals.py).
        totals = listener_totals.totals(carried, reports)
        entries = [
            {'id': lid, 'active_connections': c['active_connections'],
             'bytes_in': c['bytes_in'], 'bytes_out': c['bytes_out'],
             'request_errors': c['request_errors'],
             'total_connections': c['total_connections']}
            for lid, c in sorted(totals.items())]
        now = time.monotonic()
        refresh = self._stats_refreshed is None or \
            now - self._stats_refreshed >= STATS_REFRESH
        if not refresh:
            entries = [e for e in entries
                       if self._sent_stats.get(e['id']) != e]
        if not entries:
            return
        try:
            self.driver_lib.update_listener_statistics(
                {'listeners': entries})
        except Exception:  # noqa: BLE001 -- sent again next round
            LOG.exception('statistics update failed')
            return
        if refresh:
            self._sent_stats.clear()
            self._stats_refreshed = now
        self._sent_stats.update((e['id'], e) for e in entries)


_View = collections.namedtuple(
    '_View', 'operating rejected agent_rejections waiting agents serving '
    'port_refused silent held')
