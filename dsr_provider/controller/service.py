"""dsr-controller: the provider driver's changes in, desired state in SQL,
snapshots out to the agents, statuses back to Octavia.

Every controller consumes the driver's changes from one shared queue
(acknowledged after the commit, see dsr_wire/changes.py) and serves the
agents' RPC; writes go to the shared database.  tooz
leader election picks the one that runs the Reporter.  When the leader
dies, another is elected within the coordination timeout and resumes from
the database.

The process runs on cotyledon like Octavia's octavia-worker
(dsr_wire/daemon.py): SIGTERM stops gracefully (consumers, election, group
membership), SIGHUP re-reads the configuration (options marked mutable in
dsr_provider/opts.py; docs/operations.md).  It never migrates its database:
it refuses to start unless the schema is at this code's head ("dsr-db-manage
upgrade" first), so controllers starting together never race on DDL.
"""

import collections
import faulthandler
import os
import signal
import socket
import sys
import threading

from oslo_config import cfg
from oslo_log import log as logging
import oslo_messaging as messaging
from sqlalchemy import exc as sa_exc
from tooz import coordination

from dsr_provider.controller import db as db_mod
from dsr_provider.controller import election as election_mod
from dsr_provider.controller import endpoints
from dsr_provider.controller import enrolment
from dsr_provider.controller import guard as guard_mod
from dsr_provider.controller import l7_damping
from dsr_provider.controller import membership_recall
from dsr_provider.controller import neutron_sync
from dsr_provider.controller import reporter as reporter_mod
from dsr_provider.controller import store as store_mod
from dsr_provider.controller import tier2
from dsr_provider.controller import wake
from dsr_wire import agent_rpc
from dsr_wire import auth
from dsr_wire import changes
from dsr_wire import daemon
from dsr_wire import membership

LOG = logging.getLogger(__name__)

# Seconds between a standby controller's tries of the leadership lock, and
# before the leader retries what a round left (reporter.run_statuses).
STANDBY_INTERVAL = 0.1
# Seconds between two reads of the enrolled SEs (Controller.read_enrolled):
# an SE enrolled or revoked counts for the changes of its group this much
# later at most.
ENROLLED_REFRESH = 1.0


def _warn_if_queue_not_durable(conf):
    """The changes wait in RabbitMQ until a controller takes them; in a
    queue that is not durable (oslo.messaging's default) a broker restart
    loses them, and Octavia keeps their objects PENDING_* for good.  The
    queue is declared on Octavia's exchange with the process's own rabbit
    options (octavia-api's and dsr-controller's must agree, or RabbitMQ
    refuses the second declaration), so they cannot be forced here:
    tell the operator (docs/operations.md, "RabbitMQ")."""
    try:
        rabbit = conf.oslo_messaging_rabbit
        durable = rabbit.amqp_durable_queues or getattr(
            rabbit, 'rabbit_quorum_queue', False)
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return          # not RabbitMQ's driver
    if not durable:
        LOG.warning('[oslo_messaging_rabbit] amqp_durable_queues and '
                    'rabbit_quorum_queue are off: a RabbitMQ restart loses '
                    'the changes waiting for a controller (their objects '
                    'stay PENDING in Octavia). Turn one on for octavia-api '
                    'and dsr-controller alike (docs/operations.md, '
                    '"RabbitMQ").')


class Controller:
    def __init__(self, conf, driver_lib=None):
        self.conf = conf
        c = conf.dsr_controller
        # Before anything starts: a bad combination stops it here.
        try:
            self.damping = l7_damping.FlapDamping(
                c.l7_flap_half_life, c.l7_flap_suppress, c.l7_flap_reuse)
        except ValueError:
            raise ValueError(
                f'[dsr_controller] l7_flap_reuse ({c.l7_flap_reuse}) must be '
                f'below l7_flap_suppress ({c.l7_flap_suppress})') from None
        self.controller_id = c.controller_id or \
            f'{socket.gethostname()}-{id(self):x}'
        self.database = db_mod.Database(c.database_connection)
        # Capacity is checked against the limits of the group's live
        # agents (tooz membership).
        self.store = store_mod.Store(self.database, c.default_se_group,
                                     live_agents=self.live_agents,
                                     agent_ttl=c.agent_ttl)
        self.transport = agent_rpc.get_transport(conf)
        self.signer = self.guard = None
        if c.authentication:
            # Raises on a missing or group/world-readable key.
            self.signer = auth.Signer(c.signing_key)
            self.guard = guard_mod.AgentGuard(self.database,
                                              window=c.auth_window)
            LOG.info('authentication on: signing with key %s',
                     self.signer.key_id)
        self.coordinator = membership.coordinator(
            c.coordination_url, self.controller_id)
        self.driver_lib = driver_lib
        self._sockets_missing = False
        self._strangers = {}    # group -> members logged as strangers
        self._enrolled = None   # group -> SE ids enrolled (read_enrolled)
        # Controllers of one deployment elect their leader in this group.
        self.leader_group = c.leader_group.encode()
        self.election = election_mod.LeaderElection(
            self.coordinator, self.leader_group, self.controller_id)
        # Memberships read through a backend reset (its own membership of
        # the leader group is the sentinel).
        self.recall = membership_recall.MembershipRecall(
            self.coordinator, self.leader_group, self.controller_id)
        self._stop = threading.Event()
        self._reload = threading.Event()
        # Set when something the reporter's round reads was stored, here
        # or (a wake cast, wake.py) by another controller: the next round
        # starts now instead of after loop_interval.
        self._wake = threading.Event()
        self._waker = None
        self._server = None
        self._listener = None
        self._thread = None
        self._stats_thread = None
        self._reporter = None   # the leader's, while leading
        self._neutron = None
        self._tier2 = None

    def _driver_lib(self):
        """octavia-lib's DriverLibrary, or None while a socket of the
        driver agent is missing.  Its constructor waits for the sockets by
        itself, for minutes, in the reporter's thread: a controller started
        before octavia-driver-agent could not be stopped (SIGTERM waited
        for the join's 10 s timeout).  Until they appear the leader's
        rounds are skipped, as they were blocked before: statuses wait."""
        if self.driver_lib is None:
            from dsr_provider import driver_agent_client
            c = self.conf.dsr_controller
            sockets = (c.octavia_status_socket, c.octavia_stats_socket,
                       c.octavia_get_socket)
            missing = [path for path in sockets if not os.path.exists(path)]
            if missing:
                if not self._sockets_missing:
                    LOG.warning('octavia-driver-agent socket(s) %s missing: '
                                'statuses wait for the driver agent',
                                ', '.join(missing))
                self._sockets_missing = True
                return None
            if self._sockets_missing:
                LOG.info('octavia-driver-agent sockets present')
                self._sockets_missing = False
            self.driver_lib = driver_agent_client.DriverLibrary(
                status_socket=c.octavia_status_socket,
                stats_socket=c.octavia_stats_socket,
                get_socket=c.octavia_get_socket)
        return self.driver_lib

    def live_agents(self, se_group):
        def read(group):
            return dict.fromkeys(self.coordinator.get_members(group).get())
        alive = set(self.recall.read(membership.group_id(se_group), read,
                                     what='live agents'))
        if self.signer is None or self._enrolled is None:
            return alive    # never read yet: the backend is believed
        # The backend is not authenticated: a stranger listed in the group
        # would hold every change of it PENDING (then ERROR), a change
        # waits for the enrolled SEs only.
        enrolled = self._enrolled.get(se_group, frozenset())
        strangers = alive - enrolled
        new = sorted(strangers - self._strangers.get(se_group, set()))
        if new:
            # A few names a line: anybody can add members by the thousand.
            LOG.warning('SE group %s: %d member(s) of the coordination '
                        'group not enrolled in it ignored (docs/security.md'
                        '): %s%s', se_group, len(new),
                        ', '.join(auth.shown(se_id) for se_id in new[:8]),
                        ' ...' if len(new) > 8 else '')
        self._strangers[se_group] = strangers
        return alive & enrolled

    def read_enrolled(self):
        """Read which SEs are enrolled in which group, for live_agents.

        Kept in memory and read again every ENROLLED_REFRESH by a thread
        of its own: live_agents is called inside transactions (the
        capacity check holds the group's row lock), and a second
        connection taken there by every RPC thread at once emptied the
        pool (SQLAlchemy's 5 + 10) -- each waited for a connection the
        others held.  False when the database could not be read (the last
        read stays)."""
        try:
            rows = enrolment.list_ses(self.database)
        except Exception as exc:  # noqa: BLE001 -- the database is away
            LOG.debug('enrolled SEs not read: %s', exc)
            return False
        enrolled = collections.defaultdict(set)
        for row in rows:
            enrolled[row['se_group']].add(row['se_id'])
        self._enrolled = {group: frozenset(ids)
                          for group, ids in enrolled.items()}
        return True

    def _keep_enrolled(self):
        while not self._stop.wait(ENROLLED_REFRESH):
            self.read_enrolled()

    def start(self):
        if self.signer is not None:
            self.read_enrolled()
            threading.Thread(target=self._keep_enrolled, name='enrolled',
                             daemon=True).start()
        self.coordinator.start(start_heart=True)
        try:
            self.coordinator.create_group(self.leader_group).get()
        except coordination.GroupAlreadyExist:
            pass
        try:
            self.coordinator.join_group(self.leader_group).get()
        except coordination.MemberAlreadyExist:
            # A previous process with this controller_id died without
            # leaving (kill -9, crash): nobody removes its entry, which is
            # ours again (tooz has re-written it).
            LOG.info('controller %s rejoins %s', self.controller_id,
                     self.leader_group.decode())
        self._waker = wake.Waker(self.transport, self.controller_id,
                                 lambda: self.election.leading,
                                 self._woken, signer=self.signer)
        c = self.conf.dsr_controller
        self._server = agent_rpc.controller_server(
            self.transport, self.controller_id,
            [endpoints.AgentEndpoint(self.store, guard=self.guard,
                                     signer=self.signer,
                                     on_news=self._waker),
             wake.WakeEndpoint(
                 self.controller_id, self._woken,
                 key_for=wake.ControllerKeys(c.signing_key)
                 if self.signer is not None else None,
                 window=c.auth_window)])
        self._server.start()
        self._listener = self._change_listener()
        self._listener.start()
        self._thread = threading.Thread(target=self._run, name='reporter',
                                        daemon=True)
        self._thread.start()
        self._stats_thread = threading.Thread(
            target=self._run_statistics, name='statistics', daemon=True)
        self._stats_thread.start()
        # Members' and SEs' Neutron ports, while leading (None: disabled).
        self._neutron = neutron_sync.start(
            self.conf, self.database, lambda: self.election.leading,
            on_change=self._wake.set)
        # L7 SEs joining and leaving tier-2 load balancers, while leading.
        notifier = agent_rpc.AgentNotifier(self.transport,
                                           signer=self.signer)
        members_of = tier2.tooz_members(self.coordinator, self.recall)
        if self.signer is not None:
            members_of = tier2.trusted_only(
                self.database, members_of, self.store.l7_reports,
                window=c.auth_window)
        # The flap penalties go on from one leader to the next.
        self.damping.keep = l7_damping.StoreKeep(self.store)
        self._tier2 = tier2.start(
            self.store, members_of,
            self._tier2_changed(notifier), lambda: self.election.leading,
            signed_only=self.signer is not None,
            damping=self.damping)

    def _woken(self):
        """Something was stored, here or by another controller (wake.py):
        the next round starts now, and the tier-2 watcher reads the L7
        groups again (a tier-2 load balancer may name a new one)."""
        if self._tier2:
            self._tier2[2].groups_changed()
        self._wake.set()

    def _tier2_changed(self, notifier):
        """After the (leading) tier-2 watcher stored a membership change:
        the agents are told, and the round reports what it moved."""
        def changed():
            reporter_mod.publish_generations(self.store, notifier)
            self._wake.set()
        return changed

    def _change_listener(self):
        """Consumer of the driver's changes; no pool, so every controller
        competes for the messages of one queue."""
        c = self.conf.dsr_controller
        transport = messaging.get_notification_transport(self.conf)
        _warn_if_queue_not_durable(self.conf)
        target = messaging.Target(exchange=c.provider_exchange,
                                  topic=changes.TOPIC)
        key_for = None
        if self.signer is not None:
            key_for = auth.TrustedKeys(c.provider_keys_dir, 'provider',
                                       required=False)
            if not key_for.ids() and not c.unsigned_changes:
                LOG.error('no provider driver public key (*.pub) in %s: '
                          'every change is refused until one is there '
                          '([dsr_provider] signing_key of octavia-api; '
                          'docs/security.md)', c.provider_keys_dir)
        return messaging.get_notification_listener(
            transport, [target],
            [endpoints.ChangeEndpoint(
                endpoints.ProviderEndpoint(
                    self.store, agent_rpc.AgentNotifier(
                        self.transport, signer=self.signer),
                    on_change=self._waker),
                key_for=key_for, window=c.tombstone_ttl,
                unsigned=c.unsigned_changes)],
            executor='threading', allow_requeue=True)

    def _run(self):
        c = self.conf.dsr_controller
        reporter = None
        while not self._stop.is_set():
            again = False
            if self._reload.is_set():
                self._reload.clear()
                reporter = None     # rebuilt with the reloaded options
            try:
                self.coordinator.run_watchers()
                if not self.election.check():
                    reporter = None     # a new term starts afresh
                else:
                    if reporter is None and self._driver_lib() is not None:
                        self.store.agent_ttl = c.agent_ttl  # reloaded
                        reporter = reporter_mod.Reporter(
                            self.store, agent_rpc.AgentNotifier(
                                self.transport, signer=self.signer),
                            self._driver_lib(),
                            self.live_agents, apply_timeout=c.apply_timeout,
                            agent_ttl=c.agent_ttl,
                            report_workers=c.report_workers,
                            tombstone_ttl=c.tombstone_ttl)
                    # Statistics go from their own thread: each update
                    # costs a driver-agent child (0.4-1 s on a loaded
                    # host), which a status Octavia waits for must not
                    # queue behind.
                    if reporter is not None:
                        again = reporter.run_statuses()
            except Exception:  # noqa: BLE001 -- keep the loop alive
                LOG.exception('controller loop failed; retrying')
            self._reporter = reporter
            # The leader sleeps until woken (wake.py), unless its round
            # left work to retry or it waits for the driver agent's
            # sockets; a standby takes the lock within STANDBY_INTERVAL of
            # its expiry.
            soon = again or reporter is None or not self.election.leading
            self._wake.wait(min(c.loop_interval, STANDBY_INTERVAL) if soon
                            else c.loop_interval)
            self._wake.clear()

    def _run_statistics(self):
        """The leader's listener statistics, every stats_interval."""
        while not self._stop.wait(self.conf.dsr_controller.stats_interval):
            reporter = self._reporter
            if reporter is None or not self.election.leading:
                continue
            try:
                reporter.report_statistics()
            except Exception:  # noqa: BLE001 -- keep the loop alive
                LOG.exception('statistics round failed; retrying')

    def reload(self):
        """After a SIGHUP: loop_interval and stats_interval are read on
        every round; the reporter is rebuilt for apply_timeout,
        agent_ttl, report_workers and tombstone_ttl."""
        self._reload.set()
        self._wake.set()

    def stop(self):
        LOG.info('controller %s stopping', self.controller_id)
        self._stop.set()
        self._wake.set()
        for thread in (self._thread, self._stats_thread):
            if thread:
                thread.join(timeout=10)
        LOG.info('controller %s: reporter stopped', self.controller_id)
        # The reporter was the leadership's only user: another controller
        # can take over now, not after the consumers' stop below (seconds
        # without a leader otherwise).
        self.election.resign()
        if self._tier2:
            thread, stop, _watcher = self._tier2
            stop.set()
            thread.join(timeout=10)
        if self._neutron:
            self._neutron.stop()
        # An idle oslo.messaging listener notices stop() only when its
        # current poll times out (up to 5 s), and tooz's stop waits for its
        # heartbeat thread: all at once, not in turn (nothing left uses
        # the coordinator: the reporter, tier-2 and Neutron threads ended).
        stoppers = [threading.Thread(target=_stop_server, args=(server,),
                                     name='stop-server')
                    for server in (self._listener, self._server) if server]
        stoppers.append(threading.Thread(target=self._leave,
                                         name='stop-coordination'))
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        LOG.info('controller %s stopped', self.controller_id)

    def _leave(self):
        try:
            self.coordinator.leave_group(self.leader_group).get()
        except coordination.ToozError:
            pass
        self.coordinator.stop()


def _stop_server(server):
    server.stop()
    server.wait()


def main(argv=None):
    from dsr_provider import opts
    conf = cfg.CONF
    opts.register_controller_opts(conf)
    logging.register_options(conf)
    daemon.register_opts(conf)
    conf(argv if argv is not None else sys.argv[1:], project='octavia-dsr',
         prog='dsr-controller')
    logging.setup(conf, 'octavia-dsr')
    refusal = None
    try:
        db_mod.require_head(conf.dsr_controller.database_connection)
    except (db_mod.SchemaNotCurrent, sa_exc.SQLAlchemyError) as exc:
        refusal = exc
    if refusal is not None:
        LOG.error('dsr-controller cannot start: %s', refusal)
        print(f'dsr-controller: {refusal}', file=sys.stderr, flush=True)
        return 2
    daemon.serve(conf, 'dsr-controller', _start_worker)


def _start_worker(conf):
    """The controller of the worker process."""
    # kill -USR2 <worker pid>: every thread's stack on stderr (a stuck loop).
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    return Controller(conf)


if __name__ == '__main__':
    sys.exit(main())
