"""Endpoints of dsr-controller.

ChangeEndpoint is the notification endpoint that receives the provider
driver's changes (dsr_wire/changes.py: at-least-once, acknowledged
after the commit) and hands them to ProviderEndpoint; AgentEndpoint serves
the agents' RPC (namespace octavia_dsr_controller, see
docs/agent-protocol.md).  They only write the database: the elected
leader's Reporter does the rest.
"""

import time

from oslo_log import log as logging
import oslo_messaging as messaging
from sqlalchemy import exc as sa_exc
import tenacity

from dsr_provider.controller import config_flight
from dsr_provider.controller import guard as guard_mod
from dsr_provider.controller import reporter as reporter_mod
from dsr_provider.controller import store as store_mod
from dsr_provider.controller import tier2
from dsr_wire import agent_rpc
from dsr_wire import auth
from dsr_wire import capability_seal
from dsr_wire import changes

LOG = logging.getLogger(__name__)

# The change API this controller serves: the driver's side of the contract.
API_VERSION = changes.API_VERSION


def _id(doc, key):
    return doc.get(key) or doc.get('id')


def _compatible(version):
    """RPC versioning rules: same major, minor not newer than ours."""
    try:
        major, minor = (int(x) for x in str(version).split('.'))
    except ValueError:
        return False
    ours_major, ours_minor = (int(x) for x in API_VERSION.split('.'))
    return major == ours_major and minor <= ours_minor


# An agent's report is a cast: a database error would lose it.  A few
# quick retries ride out a blip; beyond them the agent's next heartbeat
# (every [agent] stats_interval) carries the same state again.
REPORT_ATTEMPTS = 4


def _record(what, func, *args, **kwargs):
    """func's answer (record_agent: news to the leader), or None when the
    database stayed unavailable."""
    try:
        for attempt in tenacity.Retrying(
                retry=tenacity.retry_if_exception_type(
                    sa_exc.OperationalError),
                wait=tenacity.wait_exponential(multiplier=0.1, max=1.0),
                stop=tenacity.stop_after_attempt(REPORT_ATTEMPTS),
                sleep=time.sleep,   # looked up per call: tests patch it
                before_sleep=tenacity.before_sleep_log(LOG, logging.WARNING),
                reraise=True):
            with attempt:
                answer = func(*args, **kwargs)
    except sa_exc.OperationalError as exc:
        LOG.warning('%s not stored (database unavailable after %d '
                    'attempts: %s); the agent sends it again',
                    what, REPORT_ATTEMPTS, exc)
        return None
    return answer


# Database trouble that is not the database's answer to the data: no
# connection to be had from the pool in time (many changes at once, a
# server that stopped answering), or one that was lost.  SQLAlchemy raises
# these outside DBAPIError.
_NO_CONNECTION = (sa_exc.TimeoutError, sa_exc.DisconnectionError,
                  sa_exc.PendingRollbackError)


def _transient(exc):
    """A database error that a later try may not meet (the server or the
    connection is down: pymysql reports a dropped connection as an
    OperationalError or an InterfaceError; the pool had no connection in
    time), as opposed to one the data causes (IntegrityError, DataError,
    ...), which comes back every time."""
    if isinstance(exc, _NO_CONNECTION):
        return True
    return isinstance(exc, (sa_exc.OperationalError,
                            sa_exc.InterfaceError)) or \
        exc.connection_invalidated


class TransientError(Exception):
    """The change could not be stored now; deliver it again later."""


class ProviderEndpoint:
    """The provider driver's changes, one method per API call (every
    public method is one: see CHANGE_METHODS).  An update calls the
    store's put_*(document, True): an update never creates its object."""

    def __init__(self, store, notifier=None, on_change=None):
        """notifier: AgentNotifier; tells the agents right after a commit
        instead of waiting for the leader's loop.  on_change(what): called
        after a change or its refusal is committed (wake.py: the leader
        reports what needs no SE at once, and publishes what was not)."""
        self.store = store
        self.notifier = notifier
        self.on_change = on_change

    def _published(self, what):
        if self.notifier is not None:
            try:
                reporter_mod.publish_generations(self.store, self.notifier)
            except Exception:  # noqa: BLE001 -- the leader's loop retries
                LOG.exception('telling the agents failed; the leader '
                              'retries')
        if self.on_change is not None:
            self.on_change(what)

    def _do(self, what, func, *args, target, action='create',
            attempts=5):
        """Apply a change.  target: (kind, [documents]) of the objects it
        is about, which get a status when it cannot apply; action:
        create, update or delete (which needs no object to succeed).  Transient
        database errors are retried here first (the store's writes are
        idempotent), then the message goes back to the queue; any other
        database error would fail the same way forever: ERROR for the
        objects, and the message is acknowledged."""
        for attempt in range(1, attempts + 1):
            try:
                generation = func(*args)
                LOG.info('%s -> generation %s', what, generation)
                self._published(what)
                return
            except store_mod.Redelivered as exc:
                # Its controller died after the commit and before the
                # acknowledgement; its statuses are owed or reported.
                # Applied again it could undo a later change.
                LOG.warning('%s ignored: %s (a redelivered message)', what,
                            exc)
                return
            except store_mod.Unknown as exc:
                self._unknown(what, exc, target, action)
                return
            except (sa_exc.DBAPIError,) + _NO_CONNECTION as exc:
                if not _transient(exc):
                    LOG.exception('%s: the database refused it', what)
                    self._settle(what, self.store.refuse, target[0],
                                 target[1], f'database error: {exc.orig}')
                    return
                LOG.warning('%s: database error (attempt %d/%d): %s', what,
                            attempt, attempts, exc)
                time.sleep(min(0.1 * 2 ** attempt, 5.0))
            except Exception as exc:  # noqa: BLE001 -- a bug, see below
                # It would fail the same way on every redelivery, on every
                # controller, in a loop (a requeued message comes straight
                # back): ERROR for the objects, as Octavia's own
                # controller worker does when a flow fails, and ack.
                LOG.exception('%s failed', what)
                self._settle(what, self.store.refuse, target[0], target[1],
                             f'internal error: {type(exc).__name__}: {exc}')
                return
        raise TransientError(f'{what}: database unavailable after '
                             f'{attempts} attempts')

    def _unknown(self, what, exc, target, action):
        """A change naming an object the controller does not have."""
        kind, docs = target
        own = (exc.kind, exc.obj_id) in {
            (kind, store_mod.object_id(kind, d)) for d in docs}
        if own and action == 'delete':
            self._settle(what, self.store.delete_missing, kind, docs[0])
        elif own and isinstance(exc, store_mod.Tombstoned) and not (
                action == 'update' and exc.failed):
            # RabbitMQ redelivers a change whose controller died before
            # acknowledging it: the object was deleted since.  (An update
            # of one whose delete failed is the user's: ERROR below.)
            LOG.warning('%s ignored: %s (a stale, redelivered message)',
                        what, exc)
        else:
            self._settle(what, self.store.refuse, kind, docs, str(exc))

    def _settle(self, what, func, *args):
        """Record the status of a change that cannot apply; a database
        outage meanwhile puts the message back."""
        try:
            func(*args)
        except (sa_exc.DBAPIError,) + _NO_CONNECTION as exc:
            if _transient(exc):
                raise TransientError(f'{what}: database unavailable: '
                                     f'{exc}') from exc
            raise
        self._published(what)

    # load balancers
    def loadbalancer_create(self, ctxt, loadbalancer):
        self._do('loadbalancer_create', self.store.create_loadbalancer,
                 loadbalancer, target=('loadbalancers', [loadbalancer]))

    def loadbalancer_update(self, ctxt, old_loadbalancer, new_loadbalancer):
        new = dict(new_loadbalancer)
        new.setdefault('loadbalancer_id',
                       _id(old_loadbalancer, 'loadbalancer_id'))
        self._do('loadbalancer_update', self.store.update_loadbalancer, new,
                 target=('loadbalancers', [new]), action='update')

    def loadbalancer_delete(self, ctxt, loadbalancer, cascade=False):
        self._do('loadbalancer_delete', self.store.delete_loadbalancer,
                 _id(loadbalancer, 'loadbalancer_id'), cascade,
                 target=('loadbalancers', [loadbalancer]), action='delete')

    # listeners
    def listener_create(self, ctxt, listener):
        self._do('listener_create', self.store.put_listener, listener,
                 target=('listeners', [listener]))

    def listener_update(self, ctxt, old_listener, new_listener):
        merged = dict(old_listener)
        merged.update(new_listener)
        # Octavia's old listener carries its L7 policies and their rules:
        # they are changed by their own calls, not put again (one whose
        # delete failed would refuse the update).
        merged.pop('l7policies', None)
        self._do('listener_update', self.store.put_listener, merged, True,
                 target=('listeners', [merged]), action='update')

    def listener_delete(self, ctxt, listener):
        self._do('listener_delete', self.store.delete_listener,
                 _id(listener, 'listener_id'),
                 target=('listeners', [listener]), action='delete')

    # pools
    def pool_create(self, ctxt, pool):
        self._do('pool_create', self.store.put_pool, pool,
                 target=('pools', [pool]))

    def pool_update(self, ctxt, old_pool, new_pool):
        merged = dict(old_pool)
        merged.update(new_pool)
        merged.pop('members', None)
        merged.pop('healthmonitor', None)
        self._do('pool_update', self.store.put_pool, merged, True,
                 target=('pools', [merged]), action='update')

    def pool_delete(self, ctxt, pool):
        self._do('pool_delete', self.store.delete_pool, _id(pool, 'pool_id'),
                 target=('pools', [pool]), action='delete')

    # members
    def member_create(self, ctxt, member):
        self._do('member_create', self.store.put_member, member,
                 target=('members', [member]))

    def member_update(self, ctxt, old_member, new_member):
        merged = dict(old_member)
        merged.update(new_member)
        self._do('member_update', self.store.put_member, merged, True,
                 target=('members', [merged]), action='update')

    def member_delete(self, ctxt, member):
        self._do('member_delete', self.store.delete_member,
                 _id(member, 'member_id'), target=('members', [member]),
                 action='delete')

    def member_batch_update(self, ctxt, pool_id, members):
        self._do('member_batch_update', self.store.batch_update_members,
                 pool_id, members, target=('members', members),
                 action='update')

    # health monitors
    def health_monitor_create(self, ctxt, healthmonitor):
        self._do('health_monitor_create', self.store.put_healthmonitor,
                 healthmonitor, target=('healthmonitors', [healthmonitor]))

    def health_monitor_update(self, ctxt, old_healthmonitor,
                              new_healthmonitor):
        merged = dict(old_healthmonitor)
        merged.update(new_healthmonitor)
        self._do('health_monitor_update', self.store.put_healthmonitor,
                 merged, True, target=('healthmonitors', [merged]),
                 action='update')

    def health_monitor_delete(self, ctxt, healthmonitor):
        self._do('health_monitor_delete', self.store.delete_healthmonitor,
                 _id(healthmonitor, 'healthmonitor_id'),
                 target=('healthmonitors', [healthmonitor]),
                 action='delete')

    # L7 policies and rules (tier 2)
    def l7policy_create(self, ctxt, l7policy):
        self._do('l7policy_create', self.store.put_l7policy, l7policy,
                 target=('l7policies', [l7policy]))

    def l7policy_update(self, ctxt, old_l7policy, new_l7policy):
        merged = dict(old_l7policy)
        merged.update(new_l7policy)
        merged.pop('rules', None)
        self._do('l7policy_update', self.store.put_l7policy, merged, True,
                 target=('l7policies', [merged]), action='update')

    def l7policy_delete(self, ctxt, l7policy):
        self._do('l7policy_delete', self.store.delete_l7policy,
                 _id(l7policy, 'l7policy_id'),
                 target=('l7policies', [l7policy]), action='delete')

    def l7rule_create(self, ctxt, l7rule):
        self._do('l7rule_create', self.store.put_l7rule, l7rule,
                 target=('l7rules', [l7rule]))

    def l7rule_update(self, ctxt, old_l7rule, new_l7rule):
        merged = dict(old_l7rule)
        merged.update(new_l7rule)
        self._do('l7rule_update', self.store.put_l7rule, merged, True,
                 target=('l7rules', [merged]), action='update')

    def l7rule_delete(self, ctxt, l7rule):
        self._do('l7rule_delete', self.store.delete_l7rule,
                 _id(l7rule, 'l7rule_id'), target=('l7rules', [l7rule]),
                 action='delete')


# What a change's event_type may name.
CHANGE_METHODS = frozenset(changes.METHODS)


class ChangeEndpoint:
    """Notification endpoint: dispatches a change to ProviderEndpoint.

    Returning (HANDLED) acknowledges the message; REQUEUE puts it back for
    another try, and only a database outage does.  A change that can never
    apply (unknown method, incompatible version, malformed arguments) is
    logged and dropped, and one that fails on a bug leaves its objects
    ERROR: redelivering either would fail the same way forever.
    """

    filter_rule = messaging.NotificationFilter(
        publisher_id=f'^{changes.PUBLISHER_ID}$')

    def __init__(self, provider_endpoint, key_for=None, window=None,
                 unsigned=False):
        """key_for(key_id) -> a provider driver's public key or None: with
        it, a change must be signed by one of those keys (dsr_wire/
        changes.py), inside window seconds of now (a change may wait in
        its queue: the tombstones' time), else it is refused; unsigned:
        one with no signature at all is applied all the same (an upgrade
        from drivers that did not sign)."""
        self.provider = provider_endpoint
        self.key_for = key_for
        self.window = window
        self.unsigned = unsigned
        self.refusals = auth.Counter()

    def _identity(self, ctxt, event_type, payload, metadata):
        """What a second delivery of this change is known by (its signed
        nonce, else its message_id), or None when it is refused."""
        message_id = (metadata or {}).get('message_id')
        if self.key_for is None:
            return message_id or ''
        signed = (ctxt or {}).get(auth.CONTEXT_KEY) if isinstance(
            ctxt, dict) else None
        if signed is None and self.unsigned:
            return message_id or ''
        try:
            # Replays: the nonce is recorded with the change it signs
            # (store: processed_changes), as long as the window.
            auth.verify_context(ctxt, event_type, payload.get('args'),
                                self.key_for, self.window, None)
        except auth.AuthError as exc:
            total = self.refusals.add(event_type)
            LOG.warning('auth: refused change %s: %s [refusals: %d]',
                        event_type, auth.shown(str(exc), 300), total)
            return None
        return f'signed:{signed["key_id"]}:{signed["nonce"]}'

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        if event_type not in CHANGE_METHODS:
            LOG.error('change %r dropped: unknown method', event_type)
            return messaging.NotificationResult.HANDLED
        version = (payload or {}).get('version', '')
        if not _compatible(version):
            LOG.error('change %s dropped: API version %r, this controller '
                      'serves %s', event_type, version, API_VERSION)
            return messaging.NotificationResult.HANDLED
        identity = self._identity(ctxt, event_type, payload, metadata)
        if identity is None:
            return messaging.NotificationResult.HANDLED
        token = store_mod.CHANGE_MESSAGE.set(identity or None)
        try:
            getattr(self.provider, event_type)(ctxt, **payload['args'])
        except TransientError as exc:
            LOG.warning('%s; requeued', exc)
            return messaging.NotificationResult.REQUEUE
        except (TypeError, KeyError, ValueError, AttributeError):
            LOG.exception('change %s dropped: malformed', event_type)
        except Exception:  # noqa: BLE001 -- not even its ERROR was stored
            # Acknowledged all the same: requeued, it would come straight
            # back and fail again on every controller, forever.
            LOG.exception('change %s dropped: it failed and its objects '
                          'could not be set ERROR', event_type)
        finally:
            store_mod.CHANGE_MESSAGE.reset(token)
        return messaging.NotificationResult.HANDLED


def _rejected_objects(value):
    """{kind: {object_id: reason}} with known kinds only (a malformed report
    must not break the reporter)."""
    if not isinstance(value, dict):
        return None
    result = {}
    for kind, objects in value.items():
        if kind in store_mod.KINDS and isinstance(objects, dict):
            result[kind] = {str(k): str(v) for k, v in objects.items()}
    return {k: v for k, v in result.items() if v} or None


def _listener_stats(stats):
    """{'listeners': {listener id: counters}} of a statistics report."""
    listeners = stats.get('listeners') if isinstance(stats, dict) else None
    return {'listeners': listeners if isinstance(listeners, dict) else {}}


def _per_limit(value, least):
    """{limit key: integer >= least} of a report's dict (anything else
    dropped), or None: the agent's capacity (least 1) or what its
    dataplane holds against it (least 0)."""
    if not isinstance(value, dict):
        return None
    result = {k: v for k, v in value.items()
              if k in store_mod.LIMIT_KEYS and isinstance(v, int)
              and not isinstance(v, bool) and v >= least}
    return result or None


def _ring_abi(value):
    """The agent's Maglev ring ABI: a positive integer (else unknown)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _bgp(state):
    """{'peers': {address: session state}, 'announced': [prefix]}: strings
    only, bounded (a malformed report must not break the fleet view)."""
    result = {}
    bgp = state.get('bgp')
    peers = bgp.get('peers') if isinstance(bgp, dict) else None
    if isinstance(peers, dict):
        result['peers'] = {str(k)[:64]: str(v)[:32]
                           for k, v in peers.items()}
    announced = state.get('announced')
    if isinstance(announced, list):
        result['announced'] = sorted(str(p)[:64] for p in announced)
    return result or None


class AgentEndpoint:
    target = messaging.Target(namespace=agent_rpc.CONTROLLER_NAMESPACE,
                              version=agent_rpc.CONTROLLER_API_VERSION)

    def __init__(self, store, guard=None, signer=None, on_news=None):
        """guard: guard.AgentGuard checking every message (None: trust
        any, for tests of older agents); signer: auth.Signer of the
        controller key that signs the snapshots (None: unsigned);
        on_news(reason): called after an agent's report that is news to
        the leader's round is stored (wake.py: a generation every SE
        applied is reported at once; a heartbeat wakes nobody)."""
        self.store = store
        self.guard = guard
        self.signer = signer
        self.on_news = on_news
        self._answers = config_flight.SingleFlight(
            lambda se_group: self.store.snapshot(se_group), self._envelope)

    def _store_report(self, what, se_id, se_group, ctxt=None, kind=None,
                      **fields):
        """Store an agent's report; the leader is woken when it is news.
        A signed one (the guard checked it) is ordered by its signing
        time among the SE's reports of its kind (Store.record_agent)."""
        signed = auth.signed_at(ctxt) if self.guard is not None else None
        if signed is not None:
            fields['sent'] = (kind, signed)
        news = _record(what, self.store.record_agent, se_id, se_group,
                       **fields)
        if news and self.on_news is not None:
            self.on_news(what)

    def _admitted(self, ctxt, method, **args):
        """Casts: False when refused (logged and counted by the guard)."""
        if self.guard is None:
            return True
        try:
            self.guard.check(ctxt, method, args)
        except guard_mod.Refused:
            return False
        return True

    # The caller gets the refusal; the controller logs it once (guard),
    # without oslo.messaging's traceback.
    @messaging.expected_exceptions(guard_mod.Refused)
    def get_config(self, ctxt, se_group, se_id, packed=False):
        args = {'se_group': se_group, 'se_id': se_id}
        if packed:
            args['packed'] = packed
        if self.guard is not None:
            self.guard.check(ctxt, 'get_config', args)
        return self._answer(se_group, packed is True)

    def _answer(self, se_group, packed=False):
        """The group's snapshot, signed, from a build that started after
        this ask arrived (asks arriving together share one: config_flight).
        Never from a cache: an answer cached per generation served a stale
        document: a snapshot built while a change was being committed
        carried the new generation without the change, and every later ask
        got it again (a new member removed again by the SEs; e2e
        test_isolation caught it)."""
        return self._answers.answer(se_group, packed)

    def _envelope(self, snapshot, packed):
        if self.signer is None:
            return snapshot
        # An L4 document (an L7 one has a role) packed (auth.pack).
        return self.signer.envelope(
            snapshot, packed=packed and snapshot.get('role') is None)

    def report_state(self, ctxt, se_id, se_group, state):
        if not self._admitted(ctxt, 'report_state', se_id=se_id,
                              se_group=se_group, state=state):
            return
        # Older agents send none of the isolation keys: None is "nothing
        # rejected, limits unknown" for them.
        self._store_report(
            f'state of SE {se_id}', se_id, se_group, ctxt, 'report_state',
            applied_generation=state.get('applied_generation'),
            rejected_generation=state.get('rejected_generation'),
            error=state.get('error'),
            rejected_objects=_rejected_objects(state.get('rejected_objects')),
            limits=_per_limit(state.get('limits'), 1),
            held=_per_limit(state.get('held'), 0),
            helpers=state.get('helpers') or None,
            serviceable=state.get('serviceable'),
            ring_abi=_ring_abi(state.get('ring_abi')),
            bgp=_bgp(state),
            tunnel_addresses=tier2.tunnel_addresses(
                state.get('tunnel_addresses')),
            seal_boot=capability_seal.boot_id(state.get('capability_seal')),
            generation_floor=state.get('generation_floor'))

    def report_member_status(self, ctxt, se_id, se_group, generation,
                             statuses):
        if not self._admitted(ctxt, 'report_member_status', se_id=se_id,
                              se_group=se_group, generation=generation,
                              statuses=statuses):
            return
        self._store_report(f'member statuses of SE {se_id}', se_id,
                           se_group, ctxt, 'report_member_status',
                           member_statuses=statuses)

    def report_stats(self, ctxt, se_id, se_group, stats):
        if not self._admitted(ctxt, 'report_stats', se_id=se_id,
                              se_group=se_group, stats=stats):
            return
        # News only from an SE heard from again (statistics move nothing
        # the round reads).  Only the listeners' are kept: Octavia takes
        # listener statistics alone, and the per-member counters agents
        # also send were 13 x the size (25 MB an SE at 10,000 listeners x
        # 16 members: over MariaDB's default max_allowed_packet).
        self._store_report(f'statistics of SE {se_id}', se_id, se_group,
                           ctxt, 'report_stats',
                           stats=_listener_stats(stats))
