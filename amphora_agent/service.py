"""dsr-agent: turns the controller's snapshot into a working SE.

One worker thread owns every change (dataplane, BGP, reports); the RPC
server, the health checker and the timers only set flags and wake it.  The
dataplane is pinned and ExaBGP runs detached, so a killed agent leaves
traffic and routes untouched; a restarted one adopts both and converges
without a visible change.

The process runs on cotyledon (dsr_wire/daemon.py).  SIGTERM drains:
withdraw the VIPs, keep forwarding for drain_wait seconds, stop ExaBGP,
exit -- unless the unit's ExecStop= said this stop is the first half of a
restart (stopmode.py): then the agent exits leaving the dataplane pinned
and ExaBGP announcing, and the next agent adopts both (hitless).  SIGHUP
re-reads the configuration; the worker applies the mutable options
(reload(), docs/operations.md).
"""

import dataclasses
import ipaddress
import threading
import time

from oslo_log import log as logging
import oslo_messaging as messaging

from amphora_agent import capacity
from amphora_agent import control as control_mod
from amphora_agent.dataplane import dataplane as dp_mod
from amphora_agent.dataplane import maglev
from amphora_agent.dataplane import model
from amphora_agent import desired
from amphora_agent import gcpause
from amphora_agent import heartbeat as heartbeat_mod
from amphora_agent import netwatch
from amphora_agent import snapshot as snapshot_mod
from amphora_agent import stopmode
from amphora_agent import trust as trust_mod
from dsr_wire import agent_rpc as rpc
from dsr_wire import auth
from dsr_wire import daemon
from dsr_wire import membership as membership_mod

LOG = logging.getLogger(__name__)


_ASK = object()     # _fetch(): no answer given, ask the controller
# Seconds a get_config waits for the controller's answer.
RPC_TIMEOUT = 10


def _prefix(vip):
    return f'{vip}/{32 if vip.version == 4 else 128}'


def health_targets(snap):
    """(targets, rejected) for the health checker: probe targets built
    from the snapshot's validated objects only; a monitor or member the
    checker refuses anyway is rejected alone (its pool unmonitored, the
    member left out)."""
    return HealthTargets()(snap)


class HealthTargets:
    """health_targets() that reuses the targets of unchanged load balancers
    (building 160,000 targets took seconds; the parser hands back the same
    object for an unchanged load balancer)."""

    def __init__(self):
        self._memo = {}     # load balancer id -> (lb, targets, rejected)

    def __call__(self, snap):
        fresh, targets, rejected = {}, {}, {}
        for lb in snap.load_balancers:
            hit = self._memo.get(lb.id)
            if hit is None or hit[0] is not lb:
                hit = (lb,) + _lb_health_targets(lb)
            fresh[lb.id] = hit
            targets.update(hit[1])
            for kind, items in hit[2].items():
                rejected.setdefault(kind, {}).update(items)
        self._memo = fresh
        return targets, rejected


def _lb_health_targets(lb):
    """(targets, rejected) of one load balancer."""
    from amphora_agent.health import monitor as hm
    targets, rejected, specs = {}, {}, {}
    for listener in lb.listeners:
        pool = listener.pool
        # A disabled load balancer or listener serves nothing: its members
        # are not probed (as an amphora renders no HAProxy for it), and
        # are probed from their initial state once it is enabled again.
        served = lb.admin_state_up and listener.admin_state_up
        for member in (pool.members if pool else ()):
            mon = pool.health_monitor
            spec = None
            if mon is not None and mon.admin_state_up:
                if mon.id not in specs:
                    try:
                        specs[mon.id] = hm.MonitorSpec(
                            type=mon.type, delay=mon.delay,
                            timeout=mon.timeout,
                            max_retries=mon.max_retries,
                            max_retries_down=mon.max_retries_down,
                            http_method=mon.http_method,
                            url_path=mon.url_path,
                            expected_codes=mon.expected_codes)
                    except hm.InvalidMonitor as exc:
                        specs[mon.id] = None
                        rejected.setdefault('healthmonitors', {})[
                            mon.id] = f'health monitor {mon.id}: {exc}'
                spec = specs[mon.id]
            if member.id in targets and targets[member.id].admin_state_up:
                continue    # a pool another, enabled listener serves
            try:
                targets[member.id] = hm.Target(
                    address=str(member.monitor_address or member.address),
                    port=member.monitor_port or member.protocol_port,
                    monitor=spec,
                    admin_state_up=(member.admin_state_up
                                    and pool.admin_state_up and served))
            except hm.InvalidMonitor as exc:
                rejected.setdefault('members', {})[member.id] = (
                    f'member {member.id}: {exc}')
    for member_id in rejected.get('members', ()):
        targets.pop(member_id, None)
    return targets, rejected


class Agent:
    def __init__(self, conf, bgp=None, health=None, transport=None,
                 membership=None):
        self.conf = conf
        self.se_id = conf.agent.se_id
        self.se_group = conf.agent.se_group
        self.tunnel4 = (ipaddress.ip_address(conf.agent.tunnel_source4)
                        if conf.agent.tunnel_source4 else None)
        self.tunnel6 = (ipaddress.ip_address(conf.agent.tunnel_source6)
                        if conf.agent.tunnel_source6 else None)
        self.bgp = bgp
        self.health = health
        self.transport = transport or rpc.get_transport(conf)
        self.membership = membership
        from amphora_agent.bgp import sessions as bgp_sessions
        self.bgp_sessions = bgp_sessions.BgpSessions(lambda: self.bgp)
        self._metrics = None
        self.trust = None
        signer = None
        if conf.auth.enabled:
            # Both raise on a missing, unreadable or insecure key: the
            # agent does not start half-authenticated.
            signer = auth.Signer(conf.auth.private_key)
            self.trust = trust_mod.ControllerTrust(
                self.se_group, conf.auth.controller_keys_dir,
                conf.auth.state_dir, window=conf.auth.window)
        self._control = control_mod.ControlThread()
        client = rpc.ControllerClient(self.transport, timeout=RPC_TIMEOUT,
                                      signer=signer,
                                      retry=conf.agent.rpc_retry)
        # The call's own timeout and bounded retry end it; the wait's
        # bound is a backstop (a driver that ignores both).
        self.controller = control_mod.ControllerProxy(
            client, self._control, timeout=RPC_TIMEOUT * 6)
        # The get_config under way on the control thread (see _fetch_step).
        self._fetch_future = None
        self.dp = None
        self.snapshot = None
        self.applied_generation = None
        self.announced = set()
        self.last_error = None
        # The last snapshot refused whole, until one is applied: every
        # report carries it (a heartbeat must not clear the refusal).
        self.rejected_generation = None
        self._plan = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._fetch_wanted = True
        self._reconcile_wanted = False
        # The next reconcile re-reads every dataplane map (a full check).
        self._check_wanted = False
        self._reload_wanted = False
        self._seen_generation = -1
        self._lock = threading.Lock()
        # What the applies changed in the maps, by kind, summed since the
        # agent started (dataplane_changes_total; under _lock).
        self._changes_total = dict.fromkeys(dp_mod.CHANGE_KINDS, 0)
        self._rpc_server = None
        self._thread = None
        self._reported_statuses = {}
        # Entries of the fuller connection table (one per family, each of
        # conn_table_size) at the last statistics report: the state
        # reports' flows held (a walk of the tables is not made for every
        # state report).
        self._flows_held = None
        # The last state reported, and who sends it again while the
        # worker is inside a long step (heartbeat.py).
        self._last_state = None
        # One report of the state at a time: a heartbeat that read the
        # state before the worker's newer report must not be queued after
        # it (only the newest cast of a kind is kept).
        self._state_lock = threading.Lock()
        self._heartbeat = heartbeat_mod.BusyHeartbeat(
            self._resend_state, lambda: conf.agent.stats_interval,
            lambda: conf.agent.busy_heartbeat_max)
        self._parser = snapshot_mod.Parser()
        self._planner = desired.Planner()
        self._targets = HealthTargets()
        # Members whose health changed since the last plan: the planner
        # re-plans only their load balancers (None: ask about every one).
        self._health_changed = None
        # Supervision and serviceability (set up in _start_se_side).
        self._bgp_sup = None
        self._netwatch = None
        self._verdict = None
        self._ready_vips = None
        self._intent = None
        self._draining = False

    # ------------------------------------------------------------ lifecycle
    def start(self, timeout=60):
        """Start; the SE-side work runs in the SE's network namespace.

        With [agent] netns set, the worker thread enters that namespace
        before touching anything: the dataplane, next hops, the health
        probes (threads it starts inherit the namespace) and ExaBGP (forked
        from it) live there, while RPC and coordination connections made by
        the calling thread stay where the agent was started.
        """
        self._started = threading.Event()
        self._start_error = None
        self._thread = threading.Thread(target=self._run, name='reconciler',
                                        daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError('agent start timed out')
        if self._start_error is not None:
            raise self._start_error
        if self.membership is not None:
            self.membership.start()
        self._rpc_server = rpc.agent_server(
            self.transport, self.se_group, self.se_id,
            rpc.AgentEndpoint(self.config_changed,
                              verify=self.trust and
                              self.trust.check_notification))
        self._rpc_server.start()
        self._wake.set()
        from amphora_agent import metrics
        self._metrics = metrics.start(self.conf, self)

    def _start_se_side(self):
        netns_name = getattr(self.conf.agent, 'netns', None)
        if netns_name:
            control_mod.enter_netns(netns_name)
        dpc = self.conf.dataplane
        limits = dp_mod.Limits(max_listeners=dpc.max_listeners,
                               ring_size=dpc.ring_size,
                               max_reals=dpc.max_members + 1,
                               conn_table_size=dpc.conn_table_size,
                               ring_slots=dpc.ring_slots)
        # The agent that attaches the program loads it from the installed
        # object at every start, beside the pinned maps (flows, rings,
        # counters stay), and attach() swaps it in atomically: a restart
        # after an upgrade runs the new release's packet path, not the
        # program the pins kept.
        before = dp_mod.Dataplane.program_tag(dpc.pin_dir)
        self.dp = dp_mod.Dataplane.open(
            dpc.pin_dir, limits=limits, reload=bool(dpc.interface),
            flood_guard_rate=dpc.flood_guard_rate)
        if dpc.interface:
            mode = self.dp.attach(dpc.interface, dpc.xdp_mode)
            after = dp_mod.Dataplane.program_tag(dpc.pin_dir)
            LOG.info('SE program %s on %s (%s XDP)%s', after,
                     dpc.interface, mode,
                     '' if before in (None, after) else
                     f': replaced {before} (an upgraded packet path)')
        conf = self.conf.agent
        backoff = dict(max_delay=conf.helper_restart_max_delay,
                       reset_after=conf.helper_healthy_after)
        if conf.check_serviceability:
            # Opened here, after setns: its sockets see the SE's links.
            self._netwatch = netwatch.NetWatch(
                uplink=dpc.interface, sources=[self.tunnel4, self.tunnel6],
                on_change=self._wake.set)
            self._netwatch.start()
        if self.bgp is not None:
            from amphora_agent.bgp import supervisor as bgp_supervisor
            self._bgp_sup = bgp_supervisor.BgpSupervisor(
                self.bgp, on_event=self._wake.set, **backoff)
            self._bgp_sup.start()
            self._read_announced()
            # Until the first snapshot, what the previous agent announced
            # is what this SE serves (still filtered by serviceability).
            self._ready_vips = {ipaddress.ip_interface(p).ip
                                for p in self.announced}
        if self.health is not None:
            if hasattr(self.health, 'set_backoff'):
                self.health.set_backoff(**backoff)
            self.health.start()

    def stop(self, drain=True):
        """Drain (withdraw, wait) and stop; drain=False leaves routes.

        The worker stops first, so neither a reconcile nor the ExaBGP
        supervisor can announce again (or restart ExaBGP) during the drain;
        the pinned dataplane keeps forwarding meanwhile."""
        self._draining = True
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=30)
        self._heartbeat.stop()
        if self._bgp_sup is not None:
            self._bgp_sup.close()
        if drain and self.bgp is not None:
            self.bgp.drain(wait=self.conf.agent.drain_wait)
        if self._rpc_server:
            self._rpc_server.stop()
            self._rpc_server.wait()
        if self.health is not None:
            self.health.stop()
        if self.membership is not None:
            self.membership.stop()
        if self.dp:
            self.dp.close()
        if self._metrics is not None:
            self._metrics.stop()
        self._control.stop()

    # ----------------------------------------------------------- triggers
    def reload(self):
        """The configuration files were re-read (SIGHUP): the worker
        applies the changed mutable options at its next round."""
        with self._lock:
            self._reload_wanted = True
        self._wake.set()

    def config_changed(self, se_group, generation):
        if se_group != self.se_group:
            return
        with self._lock:
            if generation > self._seen_generation:
                self._seen_generation = generation
                self._fetch_wanted = True
        self._wake.set()

    def health_changed(self, key, old, new):
        LOG.info('member %s: %s -> %s', key, old, new)
        with self._lock:
            if self._health_changed is not None:
                self._health_changed.add(key)
            self._reconcile_wanted = True
        self._wake.set()

    # ------------------------------------------------------------- worker
    def _run(self):
        try:
            self._start_se_side()
        except Exception as exc:  # noqa: BLE001 -- reported by start()
            self._start_error = exc
            if self._netwatch is not None:
                self._netwatch.stop()
            self._started.set()
            return
        self._started.set()
        try:
            self._loop()
        finally:
            if self._netwatch is not None:
                self._netwatch.stop()   # its query socket is this thread's

    def _loop(self):
        conf = self.conf.agent
        if self._netwatch is not None:
            # Filter what a previous agent left announced before anything
            # else: the SE may have lost its uplink meanwhile.
            self._safe(self._net_check)
        next_stats = time.monotonic() + conf.stats_interval
        next_resync = time.monotonic() + conf.resync_interval
        next_nexthops = time.monotonic() + conf.nexthop_refresh_interval
        next_check = time.monotonic() + conf.dataplane_check_interval
        while not self._stop.is_set():
            with self._lock:
                fetch, self._fetch_wanted = self._fetch_wanted, False
                recon, self._reconcile_wanted = self._reconcile_wanted, False
                reload, self._reload_wanted = self._reload_wanted, False
            if reload:
                self._safe(self._apply_reload)
                # The intervals may have changed: count them from now.
                now = time.monotonic()
                next_stats = now + conf.stats_interval
                next_resync = now + conf.resync_interval
                next_nexthops = now + conf.nexthop_refresh_interval
                next_check = now + conf.dataplane_check_interval
            with self._heartbeat.busy():
                failed = self._fetch_and_reconcile(fetch, recon)
            if failed:
                self._stop.wait(1.0)
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + conf.stats_interval
                self._safe(self.report_stats)
            if now >= next_resync:
                next_resync = now + conf.resync_interval
                self._safe(self.resync)
            if now >= next_check:
                next_check = now + conf.dataplane_check_interval
                with self._lock:
                    self._check_wanted = self._reconcile_wanted = True
            if now >= next_nexthops:
                next_nexthops = now + conf.nexthop_refresh_interval
                self._safe(self.dp.refresh_nexthops)
                if self._netwatch is not None:
                    # A safety net only: events drive the checks.
                    self._netwatch.invalidate()
                    self._safe(lambda: self._net_check(refresh=False))
            elif self._netwatch is not None and self._netwatch.changed():
                self._safe(self._net_check)
            self._safe(self._supervise)
            with self._lock:
                pending = self._fetch_wanted or self._reconcile_wanted
            if not pending:
                timeout = min(1.0, max(0.05, next_stats - time.monotonic()))
                if self._bgp_sup is not None:
                    due = self._bgp_sup.next_check_in()
                    if due is not None:
                        timeout = max(0.01, min(timeout, due))
                self._wake.wait(timeout=timeout)
            self._wake.clear()

    def _fetch_and_reconcile(self, fetch, recon):
        """One step: take a fetched snapshot, apply what changed.  Returns
        whether it failed (asked again)."""
        failed = False
        try:
            recon = self._fetch_step(fetch) or recon
        except messaging.MessagingTimeout:
            # Already waited (the call's deadline): ask again at once; the
            # broker gives the call to a live controller.
            LOG.warning('the controller did not answer get_config in '
                        'time; asking again')
            with self._lock:
                self._fetch_wanted = True
        except Exception:  # noqa: BLE001 -- keep the SE running
            LOG.exception('getting the configuration failed; retrying')
            failed = True
            with self._lock:
                self._fetch_wanted = True
        # Even without the controller: health changes are acted on.
        try:
            if recon:
                self._reconcile()
        except Exception:  # noqa: BLE001 -- keep the SE running
            LOG.exception('reconcile failed; retrying')
            failed = True
            with self._lock:
                self._reconcile_wanted = True
        return failed

    def _apply_reload(self):
        """Reloaded options the worker must act on; the intervals and
        drain_wait are read where they are used.  A changed [bgp] option
        gives ExaBGP a new configuration: the speaker restarts it (withdraw,
        restart_drain_time, start, announce again); only the timeouts are
        taken over without a restart."""
        if self.dp is not None:
            self.dp.set_flood_guard_rate(
                self.conf.dataplane.flood_guard_rate)
        if self.bgp is None:
            return
        from amphora_agent.bgp import speaker as bgp_speaker
        new = bgp_speaker.BgpSpeaker.from_options(
            self.conf.bgp, nexthop4=self.conf.agent.tunnel_source4,
            nexthop6=self.conf.agent.tunnel_source6)
        old = self.bgp
        for name in ('start_timeout', 'command_timeout',
                     'restart_drain_time'):
            setattr(old, name, getattr(new, name))
        if (new.config, new.exabgp_argv, new.log_level) == (
                old.config, old.exabgp_argv, old.log_level):
            return
        LOG.info('BGP configuration changed: reconfiguring ExaBGP')
        self.bgp = new
        if self._bgp_sup is not None:
            self._bgp_sup.speaker = new
            self._bgp_sup.start()
            self._read_announced()
            self._intent = None     # the next _announce() checks again
        self._announce(self._ready_vips or set())

    # ------------------------------------------------------ supervision
    def _read_announced(self):
        """What ExaBGP announces now (empty when it is not running)."""
        from amphora_agent.bgp import speaker as bgp_speaker
        try:
            self.announced = set(self.bgp.announced())
        except bgp_speaker.BgpError as exc:
            LOG.warning('BGP: cannot read the announced routes: %s', exc)
            self.announced = set()

    def _supervise(self):
        """Restart dead helpers (ExaBGP, the health checker's threads) and
        report any change of their state, or of the BGP sessions, at
        once."""
        if self._draining:
            return
        before = self._runtime_state().get('helpers')
        if self._bgp_sup is not None and self._bgp_sup.check():
            # The new ExaBGP announced the persisted intent.
            self._read_announced()
        if self.health is not None and hasattr(self.health, 'supervise'):
            self.health.supervise()
        # A BGP session coming or going decides which of this SE's VIPs
        # the routers send it: the controller's operating statuses follow.
        if self._runtime_state().get('helpers') != before or \
                self.bgp_sessions.changed():
            self._report_state()

    def _net_check(self, refresh=True):
        """Links, addresses or routes changed: re-assess what this SE can
        serve, refresh the next hops before announcing, withdraw at once
        what it cannot serve any more."""
        before = self._verdict
        ready = self._ready_vips or set()
        verdict = self._assess(ready)
        if refresh and verdict.serviceable and self.dp is not None:
            self._safe(self.dp.refresh_nexthops)
        self._announce(ready)
        if before is None or before.serviceable != verdict.serviceable:
            self._report_state()

    @staticmethod
    def _safe(func):
        try:
            func()
        except Exception:  # noqa: BLE001
            LOG.exception('%s failed', getattr(func, '__name__', func))

    def _fetch_step(self, fetch):
        """Ask for the configuration (fetch) without waiting for the
        answer: get_config runs on the control thread and wakes the worker
        when answered; the answer is taken at the next round.  True when
        it brought a new snapshot; raises the call's error."""
        future = self._fetch_future
        if future is None:
            if not fetch:
                return False
            future = self._fetch_future = self.controller.submit(
                'get_config', self.se_group, self.se_id, packed=True)
            future.add_done_callback(lambda _f: self._wake.set())
        elif fetch:
            # Asked again while a call is under way: its answer may
            # predate the change, so ask once more after it.
            self._fetch_again = True
        if not future.done():
            return False
        self._fetch_future = None
        if self._fetch_again:
            self._fetch_again = False
            with self._lock:
                self._fetch_wanted = True
        return self._fetch(future.result())

    _fetch_again = False

    def _fetch(self, document=_ASK):
        """Get (unless given) and validate the snapshot; True when it is
        new.

        Objects the SE cannot run (invalid, no tunnel source for their
        family, beyond its capacity) are left out alone and named in the
        snapshot's rejected map; only a document-level problem rejects the
        snapshot.  self.snapshot changes only once every step for the new
        generation (health targets included) succeeded, so a failure is
        retried instead of leaving a half-taken generation behind.
        """
        if document is _ASK:
            # Packed: the parser decodes only the load balancers that
            # changed.
            document = self.controller.get_config(self.se_group, self.se_id,
                                                  packed=True)
        if self.trust is not None:
            refusal = None
            try:
                document = self.trust.open_snapshot(document)
            except auth.AuthError as exc:
                refusal = exc
            if refusal is not None:
                self.trust.refuse('get_config answer',
                                  _claimed_key(document), refusal)
                # Another consumer of the controller topic answered (or
                # a replay): ask again soon, the real controller answers
                # the next call or the one after.
                with self._lock:
                    self._fetch_wanted = True
                self._stop.wait(0.5)
                return False
        if document is None:
            LOG.info('the controller has no configuration for group %s yet',
                     self.se_group)
            return False
        try:
            snap = self._parser.parse(document)
            if snap.se_group != self.se_group:
                raise snapshot_mod.InvalidSnapshot(
                    f'snapshot.se_group: {snap.se_group!r} is not this '
                    f'SE\'s group {self.se_group!r}')
        except snapshot_mod.InvalidSnapshot as exc:
            generation = document.get('generation') \
                if isinstance(document, dict) else None
            self.last_error = str(exc)
            LOG.error('rejected snapshot generation %s: %s; keeping '
                      'generation %s', generation, exc,
                      self.applied_generation)
            self.rejected_generation = generation
            self._report_state()
            return False
        # The parser kept what it needs: free the dicts (62 MB at 10,000
        # load balancers) before the checks below allocate.
        del document
        if self.snapshot and snap.generation <= self.snapshot.generation:
            if snap.generation < self.snapshot.generation:
                # A late answer (or another controller behind): never go
                # back to an older generation.
                LOG.warning('ignoring snapshot generation %s older than '
                            'generation %s', snap.generation,
                            self.snapshot.generation)
            return False
        snap = self._check_tunnel_sources(snap)
        snap = capacity.enforce(snap, self._limits(), self.se_id)
        targets, rejected = self._health_targets(snap)
        snap = snapshot_mod.without(snap, rejected)
        if self.health is not None:
            self.health.set_targets(targets, down=self._found_down(
                snap, targets) if self.snapshot is None else ())
        self.snapshot = snap
        self._log_rejections(snap)
        return True

    # Rejections already logged: (kind, id, reason).  Reassigned, never
    # mutated, so the class default is safe.
    _logged_rejections = frozenset()
    # {kind: {id: reason}} of the applied generation.
    _applied_rejected = {}
    # The applied snapshot (the held listeners as they run): _fit's
    # fallback for a running listener whose change does not fit.
    _applied_snap = None

    def _log_rejections(self, snap):
        """Log each rejection once per (object, reason), not every round."""
        current = frozenset((kind, obj_id, reason)
                            for kind, items in snap.rejected.items()
                            for obj_id, reason in items.items())
        for _kind, _obj_id, reason in sorted(current -
                                             self._logged_rejections):
            LOG.warning('generation %s: rejected %s', snap.generation,
                        reason)
        self._logged_rejections = current

    def _limits(self):
        """What this SE's dataplane holds (the live maps once open)."""
        if self.dp is not None:
            return capacity.Limits.of_dataplane(self.dp.limits)
        dpc = self.conf.dataplane
        return capacity.Limits(max_listeners=dpc.max_listeners,
                               max_members=dpc.max_members,
                               ring_size=dpc.ring_size,
                               conn_table_size=dpc.conn_table_size,
                               ring_slots=dpc.ring_slots)

    def _held(self):
        """What this SE's dataplane holds against each of its limits
        (capacity.Limits keys; conn_table_size: the fuller connection
        table at the last statistics report), or None if nothing is
        known."""
        held = (self.dp.held() if self.dp is not None else None) or {}
        if self._flows_held is not None:
            held['conn_table_size'] = self._flows_held
        return held or None

    def _check_tunnel_sources(self, snap):
        """A member of a family this SE has no tunnel source for cannot be
        reached: reject that member alone."""
        sources = {4: self.tunnel4, 6: self.tunnel6}
        if None not in sources.values():
            return snap     # both families reachable: no walk (10,000 LBs)
        rejected = {}
        for member, pool, _lb in snap.members():
            version = member.address.version
            if sources[version] is None:
                rejected.setdefault('members', {})[member.id] = (
                    f'member {member.id} of pool {pool.id}: '
                    f'{member.address} needs an IPv{version} tunnel source, '
                    f'which SE {self.se_id} does not have')
        return snapshot_mod.without(snap, rejected)

    def _health_targets(self, snap):
        return self._targets(snap)

    def _found_down(self, snap, targets):
        """The first snapshot after a restart: the monitored members the
        adopted (pinned) rings leave out, which the previous agent had
        found down.  They start down: started up, they would be put back
        in the rings (and their VIP announced) until a probe failed.  The
        rings are what the previous agent ran, so no state file can be
        staler than they are.

        Only a member that can be out for its health alone starts down;
        one out by design starts as any member: admin-down (member or
        pool: not probed), a backup while a primary of weight > 0 serves,
        a member of a listener the rings do not have (new, or left out
        for capacity), and the members of a listener whose live ring is
        smaller than its pool's (the pool grew past a ring size step: its
        new members are new, or were rejected for capacity as the ring
        could not grow).  A weight-0 member is in the maps (drained, no
        slots), so it is not out."""
        if self.dp is None:
            return set()
        live = self.dp.read_state().listeners
        if not live:
            return set()
        sizes = self._live_ring_sizes() or {}
        ceiling = self.dp.limits.ring_size
        down = set()
        for lb in snap.load_balancers:
            for listener in lb.listeners:
                pool = listener.pool
                keys = [key for key in (
                    model.ListenerKey(vip, listener.port,
                                      listener.protocol.lower())
                    for vip in lb.vips) if key in live] if pool else ()
                if not keys:
                    continue
                ring = maglev.ring_size_for(len(pool.members), ceiling)
                if any(sizes.get(key, ring) < ring for key in keys):
                    continue
                rings = [live[key].members for key in keys]
                # A backup is left out while a primary of weight > 0
                # serves: its absence says nothing of its health.
                primaries = any(not m.backup and m.weight > 0
                                for ring in rings for m in ring.values())
                for member in pool.members:
                    target = targets.get(member.id)
                    if target is None or not target.probed or any(
                            member.address in ring for ring in rings) or (
                            member.backup and primaries):
                        continue
                    down.add(member.id)
        if down:
            LOG.info('restart: %d monitored members out of the adopted '
                     'rings start down', len(down))
        return down

    def _usable(self, member_id):
        return self.health is None or self.health.usable(member_id)

    def _reconcile(self):
        """Apply self.snapshot; only a complete apply (dataplane and BGP)
        moves applied_generation, anything else sets error and is
        retried by the worker loop."""
        if self.snapshot is None:
            return
        snap = self.snapshot
        with self._lock:
            changed, self._health_changed = self._health_changed, set()
            full, self._check_wanted = self._check_wanted, False
        try:
            plan = self._planner.plan(snap, self._usable, self.tunnel4,
                                      self.tunnel6, health_changed=changed)
            # The dataplane's apply builds no cycles either: no collector
            # passes over the whole heap meanwhile (6 s of a 13 s change
            # at 10,000 load balancers, load 34).
            with gcpause.paused():
                try:
                    changes = self._apply(plan.state, full=full)
                except model.InvalidConfig as exc:
                    snap, plan, changes = self._fit(snap, plan, exc)
            self._plan = plan
            if any(changes.values()):
                LOG.info('generation %s applied: %s', snap.generation,
                         {k: v for k, v in changes.items() if v})
            self._announce(plan.ready_vips)
        except Exception as exc:
            with self._lock:
                self._health_changed = None     # ask about all next time
                # The dataplane re-reads its maps after a failed apply
                # anyway; a check that did not run is due again.
                self._check_wanted = self._check_wanted or full
            self.last_error = (f'generation {snap.generation} not applied: '
                               f'{exc}')
            self._safe(self._report_state)
            raise
        self.applied_generation = snap.generation
        self._applied_rejected = snap.rejected
        # What a listener falls back to when its change does not fit.
        self._applied_snap = snap
        if self.trust is not None:
            # Never below this one again, even after a restart.
            self._safe(lambda: self.trust.applied(snap.generation))
        self.last_error = None
        self.rejected_generation = None
        self._report_state()
        self._report_member_status()

    def _fit(self, snap, plan, refusal):
        """The dataplane refused plan (InvalidConfig, before writing): at
        capacity, a change may fit only once its removals are made (members
        swapped at max_members, a load balancer replaced by one of the same
        ring size with the ring space full; the dataplane keeps a leaving
        member's slot and ring until the new ones are written).  Apply the
        removals first, then the whole plan; if it still does not fit,
        reject alone what does not fit and apply the rest.  A running
        listener is never taken down to fit a change: it keeps its applied
        configuration and only its change (its new members, or the
        listener's own change) is rejected.  Returns (snapshot, plan,
        changes) of what was applied."""
        LOG.info('generation %s refused by the dataplane (%s): applying '
                 'its removals first', snap.generation, refusal)
        state = self._removals(plan.state)
        self._apply(state)
        # Made, whatever becomes of the rest of the generation: a VIP left
        # with no listener is withdrawn now, not announced to an SE that
        # no longer serves it.  (None: nothing announced by this agent
        # yet -- a restart keeps what ExaBGP announces until an apply.)
        if self._ready_vips is not None:
            self._announce(self._ready_vips
                           & {key.vip for key in state.listeners})
        try:
            return snap, plan, self._apply(plan.state)
        except model.InvalidConfig:
            pass
        rejected, held = self._reject_what_does_not_fit(plan, state)
        if not rejected and not held:
            raise refusal
        if held:
            snap, added = self._hold(snap, held)
            if snap is None:
                # No applied configuration to keep (the first generation
                # after a restart): refuse the generation, as the maps
                # are, rather than take a running listener down.
                raise refusal
            for mid, reason in added.items():
                rejected.setdefault('members', {}).setdefault(mid, reason)
        snap = snapshot_mod.without(snap, rejected)
        if held:
            # Named (the controller reports them), not left out: they run
            # as applied.  (_drop: no object is dropped.)
            snap = snapshot_mod.without(snap, {'listeners': held},
                                        _drop=frozenset())
        fitted = self._planner.plan(snap, self._usable, self.tunnel4,
                                    self.tunnel6)
        # Never withdraw what served before the change unless the
        # snapshot removed it: refuse the generation instead (the maps
        # keep every running listener).
        lost = [key for key in state.listeners
                if key in plan.state.listeners
                and key not in fitted.state.listeners]
        if lost:
            LOG.error('generation %s: fitting it would take running '
                      'listeners down (%s): refused', snap.generation,
                      ', '.join(map(str, lost)))
            raise refusal
        self.snapshot = snap
        self._log_rejections(snap)
        return snap, fitted, self._apply(fitted.state)

    def _hold(self, snap, held):
        """snap with each listener of held ({listener id: reason}) as it
        was applied (its pool's members as applied, but those the change
        removes), and {member id: reason} of the members the change adds
        to them (rejected: the listener keeps running without them).
        (None, None) if a held listener has no applied version."""
        applied = {}
        for lb in (self._applied_snap.load_balancers
                   if self._applied_snap is not None else ()):
            for lst in lb.listeners:
                applied[lst.id] = lst
        added, lbs = {}, []
        for lb in snap.load_balancers:
            listeners = []
            for lst in lb.listeners:
                if lst.id not in held:
                    listeners.append(lst)
                    continue
                old = applied.get(lst.id)
                if old is None:
                    return None, None
                ids = {m.id for m in lst.pool.members} if lst.pool else set()
                if old.pool is not None:
                    old = dataclasses.replace(old, pool=dataclasses.replace(
                        old.pool, members=tuple(
                            m for m in old.pool.members if m.id in ids)))
                kept = {m.id for m in old.pool.members} if old.pool \
                    else set()
                for mid in sorted(ids - kept):
                    added[mid] = (
                        f'member {mid}: not added, listener {lst.id} keeps '
                        f'running as applied in SE {self.se_id}: its change '
                        'does not fit')
                listeners.append(old)
            same = all(a is b for a, b in zip(listeners, lb.listeners))
            lbs.append(lb if same else dataclasses.replace(
                lb, listeners=tuple(listeners)))
        return dataclasses.replace(snap, load_balancers=tuple(lbs)), added

    def _live_ring_sizes(self):
        """{ListenerKey: slots of its live ring}, or None when the
        dataplane does not tell (the maps hold the size, not the pool)."""
        live = getattr(self.dp, '_live_listeners', None)
        if live is None:
            return None
        return {key: val.ring_size for key, val in live().items()}

    def _pool_for_ring(self, ring, count):
        """A pool size (at least count) whose ring has `ring` slots."""
        ceiling = self.dp.limits.ring_size
        n = max(count, 1)
        while maglev.ring_size_for(n, ceiling) < ring and n < 1 << 24:
            n *= 2
        return n

    def _removals(self, desired_state):
        """desired_state restricted to what is live: the listeners and
        members it removes are gone, nothing is added and no ring grows
        (a live listener keeps what it has, but for the members that
        leave)."""
        live = self.dp.read_state().listeners
        applied = self._plan.state.listeners if self._plan else {}
        rings = None if self._plan else self._live_ring_sizes()
        listeners = {}
        for key, spec in desired_state.listeners.items():
            if key not in live:
                continue
            # The applied spec keeps the live ring's size (pool_members,
            # which the maps do not hold).
            base = applied.get(key)
            if base is None and rings and key in rings:
                # None applied yet (a restart): the listener as the maps
                # run it, its ring's size too.
                base = dataclasses.replace(
                    live[key], pool_members=self._pool_for_ring(
                        rings[key], len(live[key].members)))
            elif base is None:
                base = spec
            listeners[key] = dataclasses.replace(base, members={
                a: m for a, m in base.members.items()
                if a in spec.members and a in live[key].members})
        return model.DesiredState(
            listeners=listeners,
            tunnel_source4=desired_state.tunnel_source4,
            tunnel_source6=desired_state.tunnel_source6,
            icmp_echo=desired_state.icmp_echo)

    def _reject_what_does_not_fit(self, plan, state):
        """From `state` (applied), add plan's listeners one by one in
        snapshot order: a new listener that does not fit is rejected; a
        running one (in `state`) is tried with its running members and
        ring size (its pool may have grown past a ring size step that
        does not fit beside the ring in place), then each new member that
        does not fit is rejected; if even that does not fit, the listener
        is held: it keeps running as applied, its change rejected.
        ({kind: {id: reason}} rejected, {listener id: reason} held)."""
        rejected, held = {}, {}

        def fits(key, spec):
            nonlocal state
            trial = dataclasses.replace(
                state, listeners={**state.listeners, key: spec})
            try:
                self._apply(trial)
            except model.InvalidConfig as exc:
                return exc
            state = trial
            return None

        for key, spec in plan.state.listeners.items():
            current = state.listeners.get(key)
            if current == spec:
                continue
            reason = fits(key, spec)
            if reason is None:
                continue
            lid = plan.listener_ids[key]
            if current is None:
                rejected.setdefault('listeners', {})[lid] = (
                    f'listener {lid}: does not fit in SE {self.se_id}: '
                    f'{reason}')
                continue
            # Running: never taken down to fit a change.  First with the
            # change's settings and its running members only; the ring is
            # sized as the plan without the rejected members will size it
            # (the pool less them), so each new member it takes grows the
            # pool by one.
            new = [a for a in spec.members if a not in current.members]
            kept = dataclasses.replace(spec, members={
                a: m for a, m in spec.members.items()
                if a in current.members},
                pool_members=max(spec.pool_members - len(new), 0))
            reason = fits(key, kept)
            if reason is not None:
                # As it runs (already in state): keep it.
                held[lid] = (
                    f'listener {lid}: its change does not fit in SE '
                    f'{self.se_id} ({reason}): it keeps running as applied')
                continue
            for address in new:
                more = dataclasses.replace(
                    kept, members={**kept.members,
                                   address: spec.members[address]},
                    pool_members=kept.pool_members + 1)
                reason = fits(key, more)
                if reason is None:
                    kept = more
                    continue
                mid = plan.member_ids[(key, address)]
                rejected.setdefault('members', {})[mid] = (
                    f'member {mid}: does not fit in SE {self.se_id}: '
                    f'{reason}')
        if held and 'listeners' in rejected:
            # A listener running on another of its VIPs is held, not
            # rejected.
            for lid in held:
                rejected['listeners'].pop(lid, None)
            if not rejected['listeners']:
                del rejected['listeners']
        return rejected, held

    def _announce(self, ready_vips):
        """Make BGP announce exactly the VIPs this SE can serve: the ready
        ones (members usable) that the SE can forward to (netwatch)."""
        self._ready_vips = set(ready_vips)
        if self.bgp is None or self._draining:
            return
        wanted = {_prefix(v) for v in self._assess(self._ready_vips).vips}
        if wanted == self._intent and wanted == self.announced:
            return
        from amphora_agent.bgp import speaker as bgp_speaker
        self._intent = wanted
        try:
            # Persists the intent first: a restarted ExaBGP announces it.
            self.bgp.set_announced(wanted)
            self.announced = wanted
        except bgp_speaker.BgpError as exc:
            LOG.warning('BGP: cannot announce now (%s); the intent is kept '
                        'for the restarted ExaBGP', exc)
            self.announced = set()
            if self._bgp_sup is not None:
                self._bgp_sup.suspect()

    def _vip_members(self, vips):
        """{vip: member addresses in its rings} from the applied plan."""
        result = {v: set() for v in vips}
        plan = self._plan
        if plan is not None:
            for key, spec in plan.state.listeners.items():
                if key.vip in result:
                    result[key.vip].update(spec.members)
        return result

    def _assess(self, ready_vips):
        """netwatch's verdict on ``ready_vips`` (all of them, serviceable,
        when the check is off); logs when it changes."""
        if self._netwatch is None:
            self._verdict = netwatch.Verdict(True, set(ready_vips), [])
            return self._verdict
        verdict = self._netwatch.assess(self._vip_members(ready_vips))
        before = self._verdict
        if before is None or (before.serviceable, before.problems) != (
                verdict.serviceable, verdict.problems):
            if verdict.serviceable and not verdict.problems:
                LOG.info('SE serviceable: announcing %d of %d ready VIPs',
                         len(verdict.vips), len(ready_vips))
            elif verdict.serviceable:
                LOG.warning('SE serviceable; not announcing: %s',
                            '; '.join(verdict.problems))
            else:
                LOG.warning('SE cannot forward, announcing nothing: %s',
                            '; '.join(verdict.problems))
        self._verdict = verdict
        return verdict

    def _runtime_state(self):
        """The SE's own condition for report_state: its helpers (BGP
        speaker, health checker) and whether it can serve at all."""
        helpers = {}
        if self._bgp_sup is not None:
            helpers['bgp'] = self._bgp_sup.report()
        else:
            helpers['bgp'] = {'state': 'disabled', 'restarts': 0,
                              'last_error': None}
        if self.health is not None and hasattr(self.health, 'report'):
            helpers['health'] = self.health.report()
        verdict = self._verdict
        if verdict is None and self._netwatch is not None and \
                threading.current_thread() is self._thread:
            verdict = self._assess(self._ready_vips or set())
        return {'helpers': helpers,
                'serviceable': True if verdict is None
                else verdict.serviceable}

    # ------------------------------------------------------------ reports
    def member_statuses(self):
        """Statuses of the members of the applied generation: a member of
        a fetched generation not applied yet (or whose apply keeps
        failing) is in no ring and is not reported."""
        snap = self._applied_snap
        if snap is None:
            return {}
        result = {}
        for member, pool, _lb in snap.members():
            if not member.admin_state_up:
                result[member.id] = 'OFFLINE'
            elif self.health is None or pool.health_monitor is None:
                result[member.id] = 'NO_MONITOR'
            else:
                result[member.id] = self.health.status(member.id)
        return result

    def _report_member_status(self, again=False):
        statuses = self.member_statuses()
        if statuses == self._reported_statuses and not again:
            return
        self.controller.report_member_status(
            self.se_id, self.se_group, self.applied_generation, statuses)
        self._reported_statuses = statuses

    def _report_state(self):
        state = {'applied_generation': self.applied_generation,
                 'error': self.last_error,
                 'rejected_generation': self.rejected_generation,
                 'announced': sorted(self.announced),
                 'rejected_objects': self._applied_rejected,
                 'limits': self._limits().to_dict()}
        held = self._held()
        if held is not None:
            state['held'] = held
        state.update(self._runtime_state())
        state['ring_abi'] = maglev.ABI_VERSION
        state['bgp'] = self.bgp_sessions.report()
        if self.trust is not None:
            state['auth_refusals'] = self.trust.refusals.total()
            # The oldest generation it accepts (what it applied, kept
            # across restarts): after a restart applied_generation is None
            # until an apply, and a controller whose database went back
            # must still learn where to continue from.
            state['generation_floor'] = self.trust.floor
        with self._state_lock:
            self._last_state = state
            self._heartbeat.sent()
            self.controller.report_state(self.se_id, self.se_group, state)

    def _apply(self, state, **kwargs):
        """Dataplane.apply, its changes counted (changes_total): the
        fitting path's applies write the maps too."""
        changes = self.dp.apply(state, **kwargs)
        with self._lock:
            for kind, count in changes.items():
                self._changes_total[kind] = \
                    self._changes_total.get(kind, 0) + count
        return changes

    def changes_total(self):
        """{kind: count} of what the applies of this process changed in
        the dataplane's maps (listeners added, rings written, rings moved
        to make room, ...), for the metrics' scrape thread."""
        with self._lock:
            return dict(self._changes_total)

    def held_reported(self):
        """The `held` of the last state reported ({} if none): for the
        metrics' scrape thread, which must not read the dataplane's
        bookkeeping while the worker changes it (the reported dict is
        never changed after)."""
        with self._state_lock:
            state = self._last_state
        return dict((state or {}).get('held') or {})

    def _resend_state(self, busy_for):
        """The heartbeat while the worker is busy: the last state again,
        still true (the step has not applied anything yet), and how long
        the step has taken."""
        with self._state_lock:
            state = self._last_state
            if state is None:
                return
            self.controller.report_state(
                self.se_id, self.se_group,
                dict(state, busy_for=round(busy_for, 1)))

    def collect_stats(self):
        """Per Octavia listener and member: packets, bytes_in, connections.

        bytes_out is always 0: replies bypass the SE (DSR).
        active_connections counts connection-table entries, an upper bound.
        """
        if self._plan is None:
            return {'listeners': {}, 'members': {}}
        # conn_census() walks the connection table once; stats() need not
        # walk it again for its total.
        raw = self.dp.stats(conn_table_entries=False)
        entries, active = self.dp.conn_census()
        self._flows_held = max(entries.values(), default=0)
        listeners, members = {}, {}
        for item in raw['listeners']:
            lkey = model.ListenerKey.parse(item['listener'])
            lid = self._plan.listener_ids.get(lkey)
            if lid is None:
                continue
            agg = listeners.setdefault(lid, {
                'bytes_in': 0, 'bytes_out': 0, 'packets': 0,
                'total_connections': 0, 'active_connections': 0,
                'request_errors': 0})
            agg['bytes_in'] += item['bytes']
            agg['packets'] += item['packets']
            agg['total_connections'] += item['new_flows']
            agg['request_errors'] += item['drops']
        for item in raw['members']:
            lkey = model.ListenerKey.parse(item['listener'])
            address = ipaddress.ip_address(item['address'])
            mid = self._plan.member_ids.get((lkey, address))
            lid = self._plan.listener_ids.get(lkey)
            flows = active.get((item['listener'], item['address']), 0)
            if lid is not None:
                listeners[lid]['active_connections'] += flows
            if mid is None:
                continue
            agg = members.setdefault(mid, {
                'bytes_in': 0, 'packets': 0, 'total_connections': 0,
                'active_connections': 0})
            agg['bytes_in'] += item['bytes']
            agg['packets'] += item['packets']
            agg['total_connections'] += item['new_flows']
            agg['active_connections'] += flows
        return {'listeners': listeners, 'members': members}

    def resync(self):
        """Every resync_interval, for what a lost cast left behind: ask
        for the configuration (a config_changed lost) and send the member
        statuses again (a report the controller could not store; they are
        O(members), so not at the stats pace)."""
        with self._lock:
            self._fetch_wanted = True
        self._report_member_status(again=True)

    def report_stats(self):
        # A heartbeat at the stats pace: the state again, changed or not
        # (BGP sessions change without an event the worker sees, and a
        # report lost on its way -- a cast while the controller's database
        # was away -- must not leave Octavia with an old status).
        # The statistics are read first, so that the state carries the
        # flows just counted; the state is sent even if reading failed.
        stats = None
        try:
            if self._plan is not None:
                stats = self.collect_stats()
        finally:
            self._report_state()
        if stats is not None:
            self.controller.report_stats(self.se_id, self.se_group, stats)


def _claimed_key(envelope):
    if isinstance(envelope, dict):
        return f'controller key {envelope.get("key_id")}'
    return f'unsigned {type(envelope).__name__}'


def build_agent(conf):
    """The agent with its BGP speaker, health checker and group
    membership, from the configuration."""
    from amphora_agent.bgp import speaker as bgp_speaker
    from amphora_agent.health import monitor as hm
    bgp = None
    if conf.bgp.enabled:
        bgp = bgp_speaker.BgpSpeaker.from_options(
            conf.bgp, nexthop4=conf.agent.tunnel_source4,
            nexthop6=conf.agent.tunnel_source6)
    agent = None
    health = hm.HealthChecker(
        on_change=lambda *a: agent and agent.health_changed(*a),
        source4=conf.agent.tunnel_source4, source6=conf.agent.tunnel_source6)
    caps = {'tunnel_source4': conf.agent.tunnel_source4,
            'tunnel_source6': conf.agent.tunnel_source6,
            'role': conf.agent.role}
    membership = membership_mod.Membership(
        conf.coordination.backend_url, conf.agent.se_id, conf.agent.se_group,
        caps)
    agent = Agent(conf, bgp=bgp, health=health, membership=membership)
    return agent


class AgentProcess:
    """The agent as dsr_wire.daemon runs it in its worker process; the
    stop chooses between draining and leaving everything as it is."""

    def __init__(self, conf):
        self.conf = conf
        if conf.agent.role == 'tier2':
            # An L7 SE (docs/tier2.md): the L7 engine, not the dataplane.
            from amphora_agent.l7 import agent as l7_agent
            self.agent = l7_agent.build(conf)
        else:
            self.agent = build_agent(conf)

    def start(self):
        self.agent.start()
        LOG.info('dsr-agent %s (group %s) running', self.agent.se_id,
                 self.agent.se_group)

    def stop(self):
        if stopmode.restart_pending(self.conf.agent.state_dir):
            LOG.info('restart: stopping without draining (dataplane pinned, '
                     'ExaBGP left to the next agent)')
            drain = False
        else:
            LOG.info('draining')
            drain = True
        self.agent.stop(drain=drain)

    def reload(self):
        self.agent.reload()


def main(argv=None):
    import sys

    from oslo_config import cfg

    from amphora_agent import opts

    conf = cfg.CONF
    opts.register_agent_opts(conf)
    logging.register_options(conf)
    daemon.register_opts(conf)
    conf.register_cli_opt(cfg.StrOpt(
        'stop-hook', metavar='UNIT',
        help='Run as the systemd unit\'s ExecStop= (with %%n): when this '
             'stop is the first half of a restart of UNIT, tell the '
             'running agent to exit without draining; then exit.'))
    conf(argv if argv is not None else sys.argv[1:], project='octavia-dsr',
         prog='dsr-agent')
    logging.setup(conf, 'octavia-dsr')
    if conf.stop_hook:
        stopmode.stop_hook(conf.agent.state_dir, conf.stop_hook)
        return 0
    stopmode.clear(conf.agent.state_dir)
    daemon.serve(conf, 'dsr-agent', AgentProcess)


if __name__ == '__main__':
    import sys
    sys.exit(main())
