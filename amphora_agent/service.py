"""dsr-agent: turns the controller's snapshot into a working SE.

One worker thread owns every change (dataplane, BGP, reports); the RPC
server, the health checker and the timers only set flags and wake it.  The
dataplane is pinned and ExaBGP runs detached, so a killed agent leaves
traffic and routes untouched; a restarted one adopts both and converges
without a visible change.  SIGTERM drains: withdraw the VIPs, keep
forwarding for drain_wait seconds, then stop.
"""

import ipaddress
import logging
import signal
import threading
import time

from amphora_agent import desired
from amphora_agent import membership as membership_mod
from amphora_agent import rpc
from amphora_agent import snapshot as snapshot_mod
from amphora_agent.dataplane import dataplane as dp_mod
from amphora_agent.dataplane import model

LOG = logging.getLogger(__name__)


def _prefix(vip):
    return f'{vip}/{32 if vip.version == 4 else 128}'


class _ControlThread:
    """Runs callables in a thread started in the agent's own namespace.

    Sockets belong to the network namespace of the thread that opens them;
    the reconciler lives in the SE's namespace, so every RPC (which may open
    a new broker connection) is made from here instead.
    """

    def __init__(self):
        import concurrent.futures
        import queue
        self._futures = concurrent.futures
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name='control',
                                        daemon=True)
        self._thread.start()

    def _loop(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, func, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(func(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 -- to the caller
                future.set_exception(exc)

    def call(self, func, *args, **kwargs):
        future = self._futures.Future()
        self._queue.put((future, func, args, kwargs))
        return future.result()

    def stop(self):
        self._queue.put(None)
        self._thread.join(timeout=10)


class _ControllerProxy:
    """ControllerClient whose calls run on the control thread."""

    def __init__(self, client, control):
        self._client = client
        self._control = control

    def __getattr__(self, name):
        method = getattr(self._client, name)
        return lambda *a, **kw: self._control.call(method, *a, **kw)


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
        self._control = _ControlThread()
        self.controller = _ControllerProxy(
            rpc.ControllerClient(self.transport), self._control)
        self.dp = None
        self.snapshot = None
        self.applied_generation = None
        self.announced = set()
        self.last_error = None
        self._plan = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._fetch_wanted = True
        self._reconcile_wanted = False
        self._seen_generation = -1
        self._lock = threading.Lock()
        self._rpc_server = None
        self._thread = None
        self._reported_statuses = {}
        self._parser = snapshot_mod.Parser()
        self._planner = desired.Planner()

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
            rpc.AgentEndpoint(self.config_changed))
        self._rpc_server.start()
        self._wake.set()

    def _start_se_side(self):
        netns_name = getattr(self.conf.agent, 'netns', None)
        if netns_name:
            from pyroute2 import netns
            # flags=0: never create a namespace that is not there.
            netns.setns(netns_name, flags=0)
        dpc = self.conf.dataplane
        limits = dp_mod.Limits(max_listeners=dpc.max_listeners,
                               ring_size=dpc.ring_size,
                               max_reals=dpc.max_members + 1,
                               conn_table_size=dpc.conn_table_size)
        self.dp = dp_mod.Dataplane.open(dpc.pin_dir, limits=limits)
        if dpc.interface:
            mode = self.dp.attach(dpc.interface, dpc.xdp_mode)
            LOG.info('SE program on %s (%s XDP)', dpc.interface, mode)
        if self.bgp is not None:
            self.bgp.start()
            self.announced = set(self.bgp.announced())
        if self.health is not None:
            self.health.start()

    def stop(self, drain=True):
        """Drain (withdraw, wait) and stop; drain=False leaves routes."""
        if drain and self.bgp is not None:
            self.bgp.drain(wait=self.conf.agent.drain_wait)
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=30)
        if self._rpc_server:
            self._rpc_server.stop()
            self._rpc_server.wait()
        if self.health is not None:
            self.health.stop()
        if self.membership is not None:
            self.membership.stop()
        if self.dp:
            self.dp.close()
        self._control.stop()

    # ----------------------------------------------------------- triggers
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
            self._reconcile_wanted = True
        self._wake.set()

    # ------------------------------------------------------------- worker
    def _run(self):
        try:
            self._start_se_side()
        except Exception as exc:  # noqa: BLE001 -- reported by start()
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        conf = self.conf.agent
        next_stats = time.monotonic() + conf.stats_interval
        next_resync = time.monotonic() + conf.resync_interval
        next_nexthops = time.monotonic() + conf.nexthop_refresh_interval
        while not self._stop.is_set():
            with self._lock:
                fetch, self._fetch_wanted = self._fetch_wanted, False
                recon, self._reconcile_wanted = self._reconcile_wanted, False
            try:
                if fetch:
                    recon = self._fetch() or recon
                if recon:
                    self._reconcile()
            except Exception:  # noqa: BLE001 -- keep the SE running
                LOG.exception('reconcile failed; retrying')
                with self._lock:
                    self._fetch_wanted = self._fetch_wanted or fetch
                    self._reconcile_wanted = True
                self._stop.wait(1.0)
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + conf.stats_interval
                self._safe(self.report_stats)
            if now >= next_resync:
                next_resync = now + conf.resync_interval
                with self._lock:
                    self._fetch_wanted = True
            if now >= next_nexthops:
                next_nexthops = now + conf.nexthop_refresh_interval
                self._safe(self.dp.refresh_nexthops)
            if self.membership is not None:
                self._safe(self.membership.run_watchers)
            with self._lock:
                pending = self._fetch_wanted or self._reconcile_wanted
            if not pending:
                self._wake.wait(timeout=min(
                    1.0, max(0.05, next_stats - time.monotonic())))
            self._wake.clear()

    @staticmethod
    def _safe(func):
        try:
            func()
        except Exception:  # noqa: BLE001
            LOG.exception('%s failed', getattr(func, '__name__', func))

    def _fetch(self):
        """Get and validate the snapshot; True when it is new."""
        document = self.controller.get_config(self.se_group, self.se_id)
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
            self._check_tunnel_sources(snap)
        except snapshot_mod.InvalidSnapshot as exc:
            generation = document.get('generation') \
                if isinstance(document, dict) else None
            self.last_error = str(exc)
            LOG.error('rejected snapshot generation %s: %s; keeping '
                      'generation %s', generation, exc,
                      self.applied_generation)
            self._report_state(rejected_generation=generation)
            return False
        if self.snapshot and snap.generation == self.snapshot.generation:
            return False
        self.snapshot = snap
        if self.health is not None:
            self.health.set_targets(self._health_targets(snap))
        return True

    def _check_tunnel_sources(self, snap):
        """A member of a family this SE has no tunnel source for cannot be
        reached: refuse the snapshot now rather than fail the apply."""
        sources = {4: self.tunnel4, 6: self.tunnel6}
        for member, pool, _lb in snap.members():
            version = member.address.version
            if sources[version] is None:
                raise snapshot_mod.InvalidSnapshot(
                    f'pool {pool.id} member {member.id}: {member.address} '
                    f'needs an IPv{version} tunnel source, which SE '
                    f'{self.se_id} does not have')

    def _health_targets(self, snap):
        from amphora_agent.health import monitor as hm
        targets = {}
        for member, pool, _lb in snap.members():
            spec = None
            mon = pool.health_monitor
            if mon is not None and mon.admin_state_up:
                spec = hm.MonitorSpec(
                    type=mon.type, delay=mon.delay, timeout=mon.timeout,
                    max_retries=mon.max_retries,
                    max_retries_down=mon.max_retries_down,
                    http_method=mon.http_method, url_path=mon.url_path,
                    expected_codes=mon.expected_codes)
            targets[member.id] = hm.Target(
                address=str(member.monitor_address or member.address),
                port=member.monitor_port or member.protocol_port,
                monitor=spec,
                admin_state_up=member.admin_state_up and pool.admin_state_up)
        return targets

    def _usable(self, member_id):
        return self.health is None or self.health.usable(member_id)

    def _reconcile(self):
        if self.snapshot is None:
            return
        plan = self._planner.plan(self.snapshot, self._usable, self.tunnel4,
                                  self.tunnel6)
        changes = self.dp.apply(plan.state)
        self._plan = plan
        if any(changes.values()):
            LOG.info('generation %s applied: %s', self.snapshot.generation,
                     {k: v for k, v in changes.items() if v})
        self._announce(plan.ready_vips)
        self.applied_generation = self.snapshot.generation
        self.last_error = None
        self._report_state()
        self._report_member_status()

    def _announce(self, ready_vips):
        """Make BGP announce exactly the VIPs this SE can serve."""
        wanted = {_prefix(v) for v in ready_vips}
        if self.bgp is not None and wanted != self.announced:
            self.bgp.set_announced(wanted)
            self.announced = wanted

    def _runtime_state(self):
        """The SE's own condition for report_state: its helpers (BGP
        speaker, health checker) and whether it can serve at all."""
        return {}

    # ------------------------------------------------------------ reports
    def member_statuses(self):
        if self.snapshot is None:
            return {}
        result = {}
        for member, pool, _lb in self.snapshot.members():
            if not member.admin_state_up:
                result[member.id] = 'OFFLINE'
            elif self.health is None or pool.health_monitor is None:
                result[member.id] = 'NO_MONITOR'
            else:
                result[member.id] = self.health.status(member.id)
        return result

    def _report_member_status(self):
        statuses = self.member_statuses()
        if statuses == self._reported_statuses:
            return
        self.controller.report_member_status(
            self.se_id, self.se_group, self.applied_generation, statuses)
        self._reported_statuses = statuses

    def _report_state(self, rejected_generation=None):
        state = {'applied_generation': self.applied_generation,
                 'error': self.last_error,
                 'rejected_generation': rejected_generation,
                 'announced': sorted(self.announced)}
        state.update(self._runtime_state())
        self.controller.report_state(self.se_id, self.se_group, state)

    def collect_stats(self):
        """Per Octavia listener and member: packets, bytes_in, connections.

        bytes_out is always 0: replies bypass the SE (DSR).
        active_connections counts connection-table entries, an upper bound.
        """
        if self._plan is None:
            return {'listeners': {}, 'members': {}}
        # flows_by_member() walks the connection table once; stats() need
        # not walk it again for its total.
        raw = self.dp.stats(conn_table_entries=False)
        active = self.dp.flows_by_member()
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

    def report_stats(self):
        if self._plan is None:
            return
        self.controller.report_stats(self.se_id, self.se_group,
                                     self.collect_stats())


def main(argv=None):
    import sys

    from oslo_config import cfg
    from oslo_log import log as oslo_log

    from amphora_agent import opts

    conf = cfg.CONF
    opts.register_agent_opts(conf)
    oslo_log.register_options(conf)
    conf(argv if argv is not None else sys.argv[1:], project='octavia-dsr',
         prog='dsr-agent')
    oslo_log.setup(conf, 'octavia-dsr')

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
    stopping = threading.Event()

    def on_term(signum, frame):
        stopping.set()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    agent.start()
    LOG.info('dsr-agent %s (group %s) running', agent.se_id, agent.se_group)
    print('READY', flush=True)
    stopping.wait()
    LOG.info('draining')
    agent.stop(drain=True)
    return 0


if __name__ == '__main__':
    import sys
    sys.exit(main())
