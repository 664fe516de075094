"""dsr-agent with ``[agent] role = tier2``: the L7 SE's agent.

The same contract as a tier-1 agent (dsr_wire/agent_rpc.py): it asks the
controller for its group's snapshot (get_config), which for an L7 group is
the L7 document (dsr_wire/l7.py), signed as tier-1 snapshots are and
opened by the same ControllerTrust (amphora_agent/trust.py: trusted key,
this group, no generation older than the applied one); a config_changed
cast (signed too) or the resync timer makes it ask again.  The document
is applied by the L7 engine (amphora_agent/l7/engine.py).

It reports what a tier-1 agent reports -- report_state (applied
generation, error, per load balancer result), report_member_status
(HAProxy's view, Octavia's statuses), report_stats (per listener
counters) -- and keeps its tooz membership of ``octavia-dsr.<l7 group>``
with the capabilities of the tier-2 contract:
``{"role": "tier2", "tunnel_addresses": {"4": .., "6": ..}, "ready":
bool, "draining": bool, "l7_contract": int}``; ``ready`` is the engine's
(HAProxy runs the applied generation, VIPs on lo, decap attached) and
false while draining; ``l7_contract`` is the L7 contract version this
release understands (dsr_wire.l7.CONTRACT_VERSION): the controller sends
a group's newer fields only once all its L7 SEs publish it.

One worker thread does everything; the RPC server and the timers only wake
it.  With ``[agent] netns`` it enters that namespace first, so the
HAProxies, the UDP tables, the VIPs on lo and the decap are the L7 SE's
namespace's, while its calls to the controller (RPC) and to the
coordination backend (tooz) go through control threads started where the
agent started (amphora_agent/control.py), as the tier-1 agent's do: a
connection opened again after an outage must not open in the SE's
namespace.  Stop with drain: publish draining (the controller gives this L7 SE
weight 0 on the L4 tier), wait ``[agent] drain_wait``, leave the group;
the HAProxies keep running (a restarted agent adopts them), ``dsr-l7
stop`` removes them.
"""

import threading
import time

from oslo_log import log as logging
import oslo_messaging as messaging

from amphora_agent import control as control_mod
from amphora_agent.l7 import engine as engine_mod
from amphora_agent.l7 import metrics as metrics_mod
from amphora_agent.l7 import render
from amphora_agent.l7 import wall_steps
from amphora_agent import trust as trust_mod
from dsr_wire import agent_rpc as rpc
from dsr_wire import auth
from dsr_wire import capability_seal
from dsr_wire import l7 as l7_schema
from dsr_wire import membership as membership_mod
from dsr_wire.schema import Invalid

LOG = logging.getLogger(__name__)


def member_statuses(engine):
    """{member id: Octavia operating status} over every load balancer:
    HAProxy's view; a member HAProxy does not run (its pool serves no
    listener, its load balancer is disabled) is OFFLINE, as the health
    manager makes a member missing from an amphora's heartbeat; members of
    an ERROR load balancer are ERROR."""
    result = {m: 'OFFLINE' for lb_id in engine.members
              for m in engine.members_of(lb_id)}
    for lb_id, lb_stats in engine.stats().items():
        for pool in lb_stats.get('pools', {}).values():
            for member_id, member in pool['members'].items():
                if member['operating_status']:
                    result[member_id] = member['operating_status']
    for lb_id, outcome in engine.result.items():
        if outcome['status'] == 'ERROR':
            for member_id in engine.members_of(lb_id):
                result[member_id] = 'ERROR'
    return result


def listener_stats_of_lbs(engine, udp=True):
    """{listener id: (load balancer id, Octavia's listener statistics)}
    (udp: with the UDP listeners')."""
    result = {}
    for lb_id, lb_stats in engine.stats(udp=udp).items():
        for listener_id, listener in lb_stats.get('listeners', {}).items():
            result[listener_id] = (lb_id, dict(listener['stats']))
    return result


def as_l7_document(document):
    """The L7 document to apply for what get_config answered.

    The controller tells an L7 group from an L4 one by the tier-2 load
    balancers naming it; until one does, its agents get the schema v1
    (tier-1) document of a group with nothing to serve.  For an L7 SE that
    means the same as an empty L7 document, which it becomes (same group,
    same generation: the group's row keeps counting when a tier-2 load
    balancer names it).  A tier-1 document with load balancers is an L4
    group's: refused, naming the role.  (The controller is not told the
    group's role by the agents: membership is only a hint, and an L7 agent
    configured into an L4 group must not turn that group's document into
    an L7 one.)"""
    if 'role' in document or document.get('schema_version') != 1:
        return document
    if document.get('load_balancers') == []:
        return dict(document, role=l7_schema.ROLE)
    raise Invalid('l7snapshot.role', None, repr(l7_schema.ROLE),
                  f'SE group {document.get("se_group")!r} serves tier-1 '
                  'load balancers (a schema v1 document): an L7 SE '
                  '([agent] role = tier2) serves only a group that tier-2 '
                  'load balancers name as their l7_se_group')


class CapabilityPublisher:
    """The tooz membership of the L7 group, whose capabilities change
    (ready, draining): dsr_wire.membership.Membership joined with the
    capabilities of the moment, joined again when they change."""

    def __init__(self, membership):
        self.membership = membership
        self.published = None

    def start(self, capabilities):
        self.membership.update(capabilities)    # joins with them
        self.membership.start()
        self.published = capabilities

    def publish(self, capabilities):
        if capabilities == self.published:
            return False
        # Before the write: when the L4 rings may start to follow, for
        # the operator (and the tests timing the rings against it).
        before = self.published or {}
        if any(capabilities.get(k) != before.get(k)
               for k in ('ready', 'draining')):
            LOG.info('publishing ready %s, draining %s to %s',
                     capabilities.get('ready'), capabilities.get('draining'),
                     membership_mod.group_id(
                         self.membership.se_group).decode())
        self.membership.update(capabilities)
        self.published = capabilities
        return True

    def stop(self):
        # Idempotent: the agent's stop and its owner's may both call it.
        if self.published is not None:
            self.published = None
            self.membership.stop()


# Seconds kept, after the drain, for leaving the group and stopping RPC
# before cotyledon's graceful_shutdown_timeout ends the worker.
LEAVE_MARGIN = 5.0


def drain_budget(drain_wait, drain_timeout, graceful_shutdown_timeout):
    """Seconds to wait for HAProxy to go idle: at most drain_timeout, and
    short enough that the agent still leaves its group itself -- a worker
    killed at graceful_shutdown_timeout (0: no bound) stays listed until
    its membership expires and its open connections are reset anyway."""
    if graceful_shutdown_timeout <= 0:
        return drain_timeout
    return max(0.0, min(drain_timeout, graceful_shutdown_timeout
                        - drain_wait - LEAVE_MARGIN))


# A backstop for a call on a control thread (each has its own bound:
# rpc_retry for RPC, tooz's socket timeouts for the coordination backend).
CONTROL_TIMEOUT = 60
# Seconds between two retries of the load balancers the applied generation
# left ERROR (a port another process held, a certificate not fetched): each
# retry renders and checks them again.
RETRY_INTERVAL = 30.0
# Seconds before a HAProxy that died again soon after its restart is
# restarted once more (doubled each time in a row, up to RETRY_INTERVAL).
RESTART_DELAY = 1.0
# A restart within this many seconds of the one before is "in a row".
CRASH_WINDOW = 60.0


class L7Agent:
    def __init__(self, conf, engine, controller, trust=None,
                 publisher=None, transport=None, rpc_control=None,
                 coordination_control=None):
        """``controller``: the RPC client, or with ``rpc_control`` (a
        control_mod.ControlThread) a ControllerProxy on it;
        ``coordination_control``: where the publisher's tooz writes are
        made (its own thread: a broker outage must not hold back ready or
        draining).  Without them every call is made by its caller."""
        self.conf = conf
        self.se_id, self.se_group = conf.agent.se_id, conf.agent.se_group
        self.engine, self.controller = engine, controller
        self.trust, self.publisher = trust, publisher
        self.transport = transport
        self.draining = False
        self.last_error = None
        self.rejected_generation = None
        # The document the engine applied last: supervise() applies it
        # again for what a process lost or a retry may now bring up.
        self._document = None
        self._retry_at = 0.0
        self._restart_at = 0.0      # no restart of a dead HAProxy before
        self._restarted = -CRASH_WINDOW     # the last restart
        self._restarts = 0          # restarts in a row, each soon after
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._fetch_wanted = True
        self._lock = threading.Lock()
        self._thread = None
        self._rpc_server = None
        self._reported_statuses = None
        self._rpc_control = rpc_control
        self._coordination_control = coordination_control
        self._entered = threading.Event()   # the worker is in the SE's ns
        self._go = threading.Event()        # published and listening: loop
        self._start_error = None
        self._reported_dead = []
        self._wall_steps = wall_steps.WallSteps()
        # What the worker last reported, for the metrics endpoint's thread
        # (amphora_agent/l7/metrics.py): each replaced whole, never changed.
        self.seen_ready = False
        self.seen_members = {}      # member id: (load balancer id, status)
        self.seen_listeners = {}    # listener id: (lb id, statistics)
        self._metrics = None

    # -- what the contract publishes ------------------------------------

    def _tunnel_addresses(self):
        return {str(f): str(a) for f, a in
                sorted(self.engine.host.tunnel_addresses.items())}

    def capabilities(self):
        return {'role': 'tier2',
                'tunnel_addresses': self._tunnel_addresses(),
                # Not asked while draining: readiness reads the SE's
                # namespace, which the draining stop's thread is not in.
                'ready': not self.draining and bool(self.engine.ready),
                'draining': self.draining,
                l7_schema.CONTRACT_CAPABILITY: l7_schema.CONTRACT_VERSION}

    def state(self):
        dead = self._dead()
        return {'role': 'tier2',
                'applied_generation': self.engine.generation,
                'error': self.last_error,
                'rejected_generation': self.rejected_generation,
                'ready': self.capabilities()['ready'],
                # Signed, unlike its tooz capabilities: the controller
                # steers the L4 pools to these only (tier2.ready_members).
                'tunnel_addresses': self._tunnel_addresses(),
                # The run whose seals are its own: another run's seal, or
                # an unsealed entry, is not (tier2.trusted_only).
                'capability_seal': self.publisher.membership.seal_boot
                if self.publisher is not None else None,
                # HAProxies that died and wait for their restart (a crash
                # loop waits up to RETRY_INTERVAL): the controller leaves
                # this SE out of their L4 pools meanwhile.
                'helpers': {'haproxy': {
                    'state': 'restarting' if dead else 'running',
                    'not_running': dead}},
                'load_balancers': self.engine.result,
                # What the controller makes ERROR (with what is below it),
                # as it does for the L4 SEs' rejections: a load balancer
                # whose HAProxy did not take the generation is not what
                # Octavia asked for, whatever the others did.
                'rejected_objects': self.engine.rejected_objects(),
                'auth_refusals': (self.trust.refusals.total()
                                  if self.trust is not None else None),
                # The oldest generation it accepts (amphora_agent/trust.py):
                # where a controller whose database went back continues.
                'generation_floor': (self.trust.floor
                                     if self.trust is not None else None)}

    # -- one round ---------------------------------------------------------

    def config_changed(self, se_group, generation):
        if se_group != self.se_group:
            return
        with self._lock:
            self._fetch_wanted = True
        self._wake.set()

    def sync(self):
        """Fetch, check and apply the group's document; True when a new
        generation was applied."""
        document = self.controller.get_config(self.se_group, self.se_id)
        if self.trust is not None:
            try:
                document = self.trust.open_snapshot(document)
            except auth.AuthError as exc:
                key = document.get('key_id') \
                    if isinstance(document, dict) else None
                self.trust.refuse('get_config answer',
                                  f'controller key {key}', exc)
                return False
        if document is None:
            return False
        generation = document.get('generation') \
            if isinstance(document, dict) else None
        if generation is not None and generation == self.engine.generation:
            return False
        try:
            if not isinstance(document, dict):
                raise Invalid('l7snapshot', document, 'a JSON object')
            if document.get('se_group') != self.se_group:
                raise Invalid('l7snapshot.se_group',
                              document.get('se_group'),
                              f'this L7 SE\'s group {self.se_group!r}')
            started = time.monotonic()
            document = as_l7_document(document)
            self.engine.apply(document)
            self._document = document
            self._retry_at = time.monotonic() + RETRY_INTERVAL
            LOG.info('applied L7 generation %s in %.2f s: %s', generation,
                     time.monotonic() - started,
                     {lb: (r['status'], r['action'], r['error'])
                      for lb, r in self.engine.result.items()})
        except Invalid as exc:
            self.last_error = str(exc)
            self.rejected_generation = generation
            LOG.error('rejected L7 snapshot generation %s: %s; keeping '
                      'generation %s', generation, exc,
                      self.engine.generation)
            self.controller.report_state(self.se_id, self.se_group,
                                         self.state())
            return False
        self.last_error = None
        self.rejected_generation = None
        if self.trust is not None:
            self.trust.applied(generation)
        self.report()
        return True

    def _dead(self):
        """The load balancers whose HAProxy should run and does not."""
        return self.engine.dead() if self._document is not None else []

    def supervise(self, udp=False):
        """Bring back what the applied generation runs and this SE lost:
        at once a HAProxy that died (crashed, killed), and every
        RETRY_INTERVAL the load balancers it left ERROR and the removed
        ones whose HAProxy it could not stop; udp: also look
        for UDP tables removed behind its back (an nft call).  Before,
        nothing was retried until a new generation came: a crashed
        HAProxy stayed down, reported ACTIVE.  Returns whether it applied
        again."""
        if self._document is None:
            return False
        engine = self.engine
        dead = engine.dead()
        # A death is reported at once (its L4 pools leave this SE), not at
        # the next heartbeat; the restart below reports again.
        if dead != self._reported_dead:
            self._reported_dead = dead
            self.report()
        if udp:
            # A new list: the reported one is the metrics' (read whole).
            dead = dead + engine.udp_missing()
        failed = engine.failed()
        now = time.monotonic()
        retry = (failed or engine.unstopped) and now >= self._retry_at
        # A HAProxy that dies again right after its restart (a crash
        # loop) is restarted after a delay doubled each time, up to
        # RETRY_INTERVAL: each apply checks the whole document.
        dead = dead if now >= self._restart_at else []
        if not dead and not retry:
            return False
        if dead:
            LOG.warning('L7 generation %s: %s not running: applying it '
                        'again', engine.generation, ', '.join(dead))
            self._restarts = self._restarts + 1 \
                if now - self._restarted < CRASH_WINDOW else 0
            self._restarted = now
            self._restart_at = now + min(
                RETRY_INTERVAL, RESTART_DELAY * 2 ** self._restarts) \
                if self._restarts else now
        if retry:
            self._retry_at = now + RETRY_INTERVAL
        engine.apply(self._document)
        LOG.info('L7 generation %s applied again: %s', engine.generation,
                 {lb: (r['status'], r['action'], r['error'])
                  for lb, r in engine.result.items()
                  if lb in dead or lb in failed})
        self.report()
        return True

    def report(self, again=False):
        """Capabilities (when they changed), state, member status (when
        changed, or ``again``)."""
        # The signed state first (a cast, queued): with authentication on
        # the controller takes an L7 SE into the L4 pools only once it
        # reported, at the addresses of its report.
        state = self.state()
        self.controller.report_state(self.se_id, self.se_group, state)
        if self.publisher is not None:
            self._publish(self.capabilities())
        statuses = member_statuses(self.engine)
        if statuses != self._reported_statuses or again:
            self.controller.report_member_status(
                self.se_id, self.se_group, self.engine.generation, statuses)
            self._reported_statuses = statuses
        self.seen_ready = state['ready']
        lbs = {m: lb_id for lb_id in self.engine.members
               for m in self.engine.members_of(lb_id)}
        self.seen_members = {m: (lbs.get(m, ''), status)
                             for m, status in statuses.items()}

    def report_stats(self):
        listeners = listener_stats_of_lbs(self.engine)
        self.controller.report_stats(self.se_id, self.se_group, {
            'listeners': {lid: stats for lid, (_lb, stats) in
                          listeners.items()}, 'members': {}})
        self.seen_listeners = listeners
        # A heartbeat at the stats pace: the state again, changed or not
        # (a report lost on its way -- a cast while the controller's
        # database was away -- must not leave Octavia with an old status);
        # member statuses when health checks changed them.
        self.report()

    def resync(self):
        """Every resync_interval, for what a lost cast left behind: ask
        for the configuration and send the member statuses again (they
        are O(members), so not at the stats pace)."""
        with self._lock:
            self._fetch_wanted = True
        self.report(again=True)

    # -- lifecycle ---------------------------------------------------------

    def _publish(self, capabilities):
        if self._coordination_control is None:
            return self.publisher.publish(capabilities)
        return self._coordination_control.call(
            self.publisher.publish, capabilities, timeout=CONTROL_TIMEOUT)

    def start(self, timeout=60):
        t0 = time.monotonic()
        render.preload()
        LOG.info('Octavia\'s HAProxy templater loaded in %.2f s',
                 time.monotonic() - t0)
        self._thread = threading.Thread(target=self._run, name='l7-agent',
                                        daemon=True)
        self._thread.start()
        if not self._entered.wait(timeout):
            raise RuntimeError('L7 agent start timed out')
        if self._start_error is not None:
            raise self._start_error
        if self.publisher is not None:
            self.publisher.start(self.capabilities())
        if self.transport is not None:
            self._rpc_server = rpc.agent_server(
                self.transport, self.se_group, self.se_id,
                rpc.AgentEndpoint(self.config_changed,
                                  verify=self.trust and
                                  self.trust.check_notification))
            self._rpc_server.start()
        # Here, in the namespace the agent started in, not the SE's.
        self._metrics = metrics_mod.start(self.conf, self)
        self._go.set()

    def _run(self):
        try:
            self._enter_se_side()
        except Exception as exc:  # noqa: BLE001 -- raised by start()
            self._start_error = exc
            return
        finally:
            self._entered.set()
        self._go.wait()
        self._loop()

    def _enter_se_side(self):
        netns_name = getattr(self.conf.agent, 'netns', None)
        if netns_name:
            # This thread only (and what it starts: the HAProxies, nft,
            # the health checks).
            control_mod.enter_netns(netns_name)
            LOG.info('L7 SE side in network namespace %s', netns_name)
        self.engine.adopt()

    def _loop(self):
        conf = self.conf.agent
        next_stats = time.monotonic() + conf.stats_interval
        next_resync = time.monotonic() + conf.resync_interval
        report_again = None     # after a step of the wall clock
        while not self._stop.is_set():
            with self._lock:
                fetch, self._fetch_wanted = self._fetch_wanted, False
            try:
                if fetch:
                    self.sync()
            except messaging.MessagingTimeout:
                # Already waited (the call's deadline): ask again at once;
                # the broker gives the call to a live controller.
                LOG.warning('the controller did not answer get_config in '
                            'time; asking again')
                with self._lock:
                    self._fetch_wanted = True
            except Exception:  # noqa: BLE001 -- keep the L7 SE running
                LOG.exception('L7 sync failed; retrying')
                with self._lock:
                    self._fetch_wanted = True
                self._stop.wait(1.0)
            self._safe(self.engine.udp.supervise)
            now = time.monotonic()
            resync = now >= next_resync
            self._safe(lambda: self.supervise(udp=resync))
            moved = self._wall_steps.moved()
            if moved:
                # Its seals now look as late (or early) as its clock moved:
                # the leader follows once a signed state as late is stored.
                LOG.warning('the wall clock moved %+.1f s: reporting the '
                            'state at once, and again in %.0f s', moved,
                            wall_steps.again_after(moved))
                self._safe(self.report)
                report_again = now + wall_steps.again_after(moved)
            elif report_again is not None and now >= report_again:
                report_again = None
                self._safe(self.report)
            if now >= next_stats:
                next_stats = now + conf.stats_interval
                self._safe(self.report_stats)
            if resync:
                next_resync = now + conf.resync_interval
                self._safe(self.resync)
            with self._lock:
                pending = self._fetch_wanted
            if not pending:
                self._wake.wait(min(1.0, max(0.05,
                                             next_stats - time.monotonic())))
            self._wake.clear()

    @staticmethod
    def _safe(func):
        try:
            func()
        except Exception:  # noqa: BLE001
            LOG.exception('%s failed', getattr(func, '__name__', func))

    def reload(self):
        with self._lock:
            self._fetch_wanted = True
        self._wake.set()

    def stop(self, drain=True):
        if drain and self.publisher is not None:
            self.draining = True
            self._safe(lambda: self._publish(self.capabilities()))
            self._stop.wait(self.conf.agent.drain_wait)
            self._wait_idle(drain_budget(
                self.conf.agent.drain_wait, self.conf.l7.drain_timeout,
                getattr(self.conf, 'graceful_shutdown_timeout', 0)))
        self._stop.set()
        self._go.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._rpc_server is not None:
            self._rpc_server.stop()
            self._rpc_server.wait()
        if self.publisher is not None:
            self.publisher.stop()
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None
        # The UDP tables stay (kernel state, as the HAProxies do); their
        # health checks stop with the agent.
        self._safe(lambda: self.engine.udp.stop(remove=False))
        # Last: the final reports are tried once (control.py).
        for thread in (self._rpc_control, self._coordination_control):
            if thread is not None:
                thread.stop()

    def active_connections(self):
        """HAProxy's connections.  Not the UDP flows: conntrack keeps
        them minutes after their last packet, and a UDP flow steered to
        another L7 SE is DNATed afresh there, not reset."""
        return sum(stats.get('active_connections', 0)
                   for _lb, stats in listener_stats_of_lbs(
                       self.engine, udp=False).values())

    def _wait_idle(self, timeout):
        """Wait (at weight 0 in the L4 rings, no new flow arrives) until
        HAProxy holds no connection, or timeout: leaving the group takes
        this SE out of the rings, and the L4 SEs would then steer an open
        connection's packets to another L7 SE, which resets it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                active = self.active_connections()
            except Exception:  # noqa: BLE001 -- HAProxy gone: nothing open
                LOG.exception('draining: statistics unavailable')
                return
            if active == 0:
                return
            if time.monotonic() >= deadline:
                LOG.warning('draining: %d connection(s) still open after '
                            '%.0f s; leaving the group anyway', active,
                            timeout)
                return
            time.sleep(0.2)


def build(conf):
    """The L7 agent from the configuration ([agent], [auth],
    [coordination], [l7], [dataplane])."""
    signer = trust = None
    if conf.auth.enabled:
        signer = auth.Signer(conf.auth.private_key)
        trust = trust_mod.ControllerTrust(
            conf.agent.se_group, conf.auth.controller_keys_dir,
            conf.auth.state_dir, window=conf.auth.window)
    transport = rpc.get_transport(conf)
    engine = engine_mod.Engine.from_conf(
        conf.l7, conf.dataplane.decap_pin_dir, conf.agent.se_id)
    # Sealed with the SE's key: the coordination backend is not trusted
    # (dsr_wire/capability_seal.py).
    sealer = capability_seal.Sealer(signer, conf.agent.se_id,
                                    conf.agent.se_group) if signer else None
    membership = membership_mod.Membership(
        conf.coordination.backend_url, conf.agent.se_id, conf.agent.se_group,
        {'role': 'tier2'}, sealer=sealer)
    # A bounded retry: the loop that sends the reports also supervises
    # the UDP listeners' health checks, which must not wait for the
    # broker.  A report given up on goes again with the next heartbeat
    # (report_stats, every stats_interval); a failed get_config is asked
    # again a second later.
    client = rpc.ControllerClient(transport, signer=signer,
                                  retry=conf.agent.rpc_retry)
    # Started here, in the namespace the agent starts in (control.py).
    rpc_control = control_mod.ControlThread()
    return L7Agent(conf, engine,
                   control_mod.ControllerProxy(client, rpc_control,
                                               timeout=CONTROL_TIMEOUT),
                   trust=trust, publisher=CapabilityPublisher(membership),
                   transport=transport, rpc_control=rpc_control,
                   coordination_control=control_mod.ControlThread())
