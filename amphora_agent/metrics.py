"""Prometheus metrics of one SE agent ([metrics] options, off by default).

    server = metrics.start(conf, agent)   # None when [metrics] enabled=false
    ...
    server.stop()

A custom collector reads everything at scrape time from where it already
is, so nothing is counted twice: the pinned dataplane's counters (through
a read-only handle of its own -- the worker's Dataplane object is not
shared across threads), the agent's applied plan (which Octavia listener
and member each dataplane listener and member slot is), its snapshot (the
load balancer and pool of each), the health checker, the BGP session
cache (bgp/sessions.py) and the agent's state.  Only what nobody keeps is
recorded here: health-probe results and latency (the checker's on_probe
hook) and the agent's logged errors (a logging handler).

Series per monitored member: 3 (member_health, health_probes_total by
result) plus 4 traffic series per dataplane member (one per VIP address of
its listener); probe latency is a histogram per pool.  [metrics]
member_series = false drops every per-member series.

Names follow Prometheus conventions: the ``octavia_dsr_`` prefix, ``_total``
for counters, base units (bytes, seconds), Octavia ids as labels ``lb``,
``listener``, ``pool``, ``member``, and ``vip`` for the dataplane listener
(VIP:port/protocol: an Octavia listener has one per VIP address).
docs/observability.md lists every metric.
"""

import bisect
import logging
import threading

from prometheus_client import core
from prometheus_client import exposition
from prometheus_client import process_collector
from prometheus_client import registry as registry_mod

LOG = logging.getLogger(__name__)

PREFIX = 'octavia_dsr_'
# Health-probe latency buckets (seconds): probes are LAN round trips
# bounded by the monitor's timeout.
PROBE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BUCKET_LABELS = tuple(map(repr, PROBE_BUCKETS)) + ('+Inf',)
_SE_PACKETS = ('pass', 'steered', 'icmp_echo_reply', 'icmp_too_big_sent',
               'icmp_error_steered')
# Loggers whose ERROR records agent_errors_total counts.
ERROR_LOGGERS = ('amphora_agent', 'dsr_wire')
# Set on the record of a failed scrape part: metrics_scrape_errors_total
# counts it, agent_errors_total does not (once, not twice).
SCRAPE_ERROR = 'dsr_metrics_scrape_error'


def start(conf, agent, collector=None):
    """Serve the agent's metrics over HTTP; None when disabled.
    collector: what to serve (an L7 SE's, amphora_agent/l7/metrics.py);
    by default a tier-1 SE's AgentCollector.

    Call it from the thread (network namespace) the endpoint must live in:
    the agent's starting one, not the SE's."""
    opts = getattr(conf, 'metrics', None)   # None: options not registered
    if opts is None or not opts.enabled:
        return None
    if collector is None:
        collector = AgentCollector(agent, conf.dataplane.pin_dir,
                                   opts.member_series)
    server = MetricsServer(collector, host=opts.bind_host, port=opts.port,
                           certfile=opts.tls_cert_file,
                           keyfile=opts.tls_key_file)
    try:
        server.start()
    except OSError as exc:
        # The SE serves without its metrics rather than not at all.
        LOG.error('Prometheus metrics endpoint %s port %d: %s; running '
                  'without it', opts.bind_host, opts.port, exc)
        server.stop()
        return None
    return server


class MetricsServer:
    """collector: a registry Collector with hook(), unhook() and close()
    (started and stopped with the endpoint)."""

    def __init__(self, collector, host='127.0.0.1', port=0, certfile=None,
                 keyfile=None):
        self.registry = registry_mod.CollectorRegistry(auto_describe=True)
        self.collector = collector
        self.registry.register(self.collector)
        process_collector.ProcessCollector(registry=self.registry)
        self.host, self.port = host, port
        self.certfile, self.keyfile = certfile, keyfile
        self._httpd = None

    def start(self):
        self.collector.hook()
        self._httpd, _thread = exposition.start_http_server(
            self.port, addr=self.host, registry=self.registry,
            certfile=self.certfile, keyfile=self.keyfile)
        self.port = self._httpd.server_port
        LOG.info('Prometheus metrics on %s port %d', self.host, self.port)

    def stop(self):
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        self.collector.unhook()
        self.collector.close()


class ErrorCounter(logging.Handler):
    """Counts the agent's ERROR and CRITICAL log records by logger (but
    failed scrape parts: see SCRAPE_ERROR)."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.counts = {}
        self._count_lock = threading.Lock()

    def emit(self, record):
        if getattr(record, SCRAPE_ERROR, False):
            return
        with self._count_lock:
            self.counts[record.name] = self.counts.get(record.name, 0) + 1


class _ProbeStats:
    """Probe results per member, a latency histogram per pool.

    ``pool_of(member)``: (lb id, pool id) or None; a probe of a member
    the agent's snapshot does not have yet (a race with a change) is left
    out of the histograms."""

    def __init__(self, pool_of, per_member=True):
        self._lock = threading.Lock()
        self._pool_of = pool_of
        self._per_member = per_member
        self._results = {}      # member -> [ok, failed]
        # (lb, pool) -> [sum, counts per bucket, failed probes]
        self._latency = {}

    def record(self, key, scheduled, started, finished, ok):
        duration = max(finished - started, 0.0)
        where = self._pool_of(key)
        # The last slot counts the probes above the largest bound.
        index = bisect.bisect_left(PROBE_BUCKETS, duration)
        with self._lock:
            if self._per_member:
                results = self._results.get(key)
                if results is None:
                    results = self._results[key] = [0, 0]
                results[0 if ok else 1] += 1
            if where is not None:
                latency = self._latency.get(where)
                if latency is None:
                    latency = self._latency[where] = [
                        0.0, [0] * (len(PROBE_BUCKETS) + 1), 0]
                latency[0] += duration
                latency[1][index] += 1
                latency[2] += 0 if ok else 1

    def snapshot(self, members, pools):
        """({member: (ok, failed)}, {(lb, pool): (sum, counts, failed)}),
        copies; entries of other members and pools are forgotten."""
        with self._lock:
            for key in [k for k in self._results if k not in members]:
                del self._results[key]
            for key in [k for k in self._latency if k not in pools]:
                del self._latency[key]
            return ({k: tuple(v) for k, v in self._results.items()},
                    {k: (v[0], list(v[1]), v[2])
                     for k, v in self._latency.items()})


class Families:
    """The metric families of one scrape, created on first use."""

    def __init__(self):
        self.items = {}

    def _get(self, cls, name, doc, labels, **kwargs):
        family = self.items.get(name)
        if family is None:
            family = self.items[name] = cls(PREFIX + name, doc,
                                            labels=labels, **kwargs)
        return family

    def counter(self, name, doc, labels, values, value):
        # CounterMetricFamily adds _total itself.
        self._get(core.CounterMetricFamily, name, doc, labels).add_metric(
            values, value)

    def gauge(self, name, doc, labels, values, value):
        self._get(core.GaugeMetricFamily, name, doc, labels).add_metric(
            values, value)

    def histogram(self, name, doc, labels, values, buckets, sum_value):
        self._get(core.HistogramMetricFamily, name, doc, labels).add_metric(
            values, buckets, sum_value)


class ScrapeCollector(registry_mod.Collector):
    """A collector that reads its agent at scrape time, part by part
    (parts(): methods filling a Families): a part that fails is logged
    and counted, and the scrape answers with the rest."""

    def __init__(self):
        self.errors = ErrorCounter()
        self._lock = threading.Lock()   # scrapes may run concurrently
        self._scrape_errors = 0

    def hook(self):
        for name in ERROR_LOGGERS:
            logging.getLogger(name).addHandler(self.errors)

    def unhook(self):
        for name in ERROR_LOGGERS:
            logging.getLogger(name).removeHandler(self.errors)

    def close(self):
        pass

    def describe(self):
        # Families depend on the live state; nothing to pre-register.
        return []

    def parts(self):
        raise NotImplementedError

    def collect(self):
        with self._lock:
            families = Families()
            for part in self.parts():
                try:
                    part(families)
                except Exception:  # noqa: BLE001 -- a scrape must answer
                    self._scrape_errors += 1
                    LOG.exception('metrics: %s failed', part.__name__,
                                  extra={SCRAPE_ERROR: True})
            families.counter(
                'metrics_scrape_errors', 'Parts of scrapes that failed '
                '(logged as errors, not counted in agent_errors_total).',
                [], [], self._scrape_errors)
            return list(families.items.values())

    def identity_metrics(self, f, agent, applied, rejected):
        """What every agent serves: who it is, the generation it applied
        (None: none yet), its error, what it left out ({kind: {id:
        reason}}), its logged errors and refused controller messages."""
        f.gauge('agent_info', 'The SE this agent runs (value 1).',
                ['se_id', 'se_group', 'role'],
                [agent.se_id, agent.se_group,
                 getattr(agent.conf.agent, 'role', '')], 1)
        f.gauge('applied_generation', 'Snapshot generation applied to the '
                'dataplane and BGP (L7 SE: to its HAProxies; -1: none '
                'yet).', [], [], -1 if applied is None else applied)
        f.gauge('agent_error', '1 while the agent reports an error (the '
                'last apply failed or a snapshot was rejected).', [], [],
                int(bool(agent.last_error)))
        for kind, items in (rejected or {}).items():
            f.gauge('rejected_objects', 'Objects of the applied generation '
                    'this SE left out (invalid, over capacity, '
                    'unreachable).', ['kind'], [kind], len(items))
        counts = dict(self.errors.counts)
        for name in ERROR_LOGGERS:
            counts.setdefault(name, 0)          # a series from the start
        for logger, count in sorted(counts.items()):
            f.counter('agent_errors', 'Errors the agent logged (ERROR and '
                      'CRITICAL records), by logger.', ['logger'], [logger],
                      count)
        trust = getattr(agent, 'trust', None)
        if trust is not None:
            f.counter('auth_refusals', 'Controller messages refused by '
                      'signature checks.', [], [], trust.refusals.total())


class AgentCollector(ScrapeCollector):
    """Reads a tier-1 agent and its dataplane at scrape time."""

    def __init__(self, agent, pin_dir, member_series=True):
        super().__init__()
        self.agent = agent
        self.pin_dir = pin_dir
        self.member_series = member_series
        self.probes = _ProbeStats(self._pool_of, per_member=member_series)
        self._dp = None
        self._ids = {}      # _ids_of's, by agent attribute
        self._evictions = 0             # conn_table_evictions_total
        self._evictions_derived = None  # its derived value, last scrape
        self._hooked_health = None

    # ------------------------------------------------------------- hooks
    def hook(self):
        super().hook()
        health = getattr(self.agent, 'health', None)
        if health is not None and getattr(health, 'on_probe', 0) is None:
            health.on_probe = self.probes.record
            self._hooked_health = health

    def unhook(self):
        super().unhook()
        if self._hooked_health is not None:
            self._hooked_health.on_probe = None
            self._hooked_health = None

    def close(self):
        with self._lock:
            if self._dp is not None:
                self._dp.close()
                self._dp = None

    # ----------------------------------------------------------- collect
    def parts(self):
        return (self._agent_metrics, self._dataplane_metrics,
                self._bgp_metrics, self._health_metrics)

    def _ids_of(self, which='snapshot'):
        """({listener id: lb id}, {member id: (lb id, pool id)}) of the
        agent's newest ('snapshot') or applied ('_applied_snap') snapshot.

        The health checker's loop calls it too (on_probe): an entry is
        replaced whole, never changed."""
        snapshot = getattr(self.agent, which, None)
        cached = self._ids.get(which)
        if cached is None or cached[0] is not snapshot:
            # Usually the newest snapshot is the applied one: index it once.
            cached = next((c for c in list(self._ids.values())
                           if c[0] is snapshot), None)
        if cached is None:
            listeners, members = {}, {}
            for lb in snapshot.load_balancers if snapshot else ():
                for listener in lb.listeners:
                    listeners[listener.id] = lb.id
                    if listener.pool:
                        for m in listener.pool.members:
                            members[m.id] = (lb.id, listener.pool.id)
            cached = (snapshot, listeners, members)
        self._ids[which] = cached
        return cached[1], cached[2]

    def _pool_of(self, member):
        return self._ids_of()[1].get(member)

    # ------------------------------------------------------------- agent
    def _agent_metrics(self, f):
        from amphora_agent.dataplane import maglev
        agent = self.agent
        self.identity_metrics(f, agent, agent.applied_generation,
                              getattr(agent, '_applied_rejected', None))
        f.gauge('ring_abi_version', 'Maglev ring ABI this agent builds '
                'rings with: every SE of a group must run the same one.',
                [], [], maglev.ABI_VERSION)
        f.gauge('ring_builder_native', '1 when rings are built by the C '
                'library, 0 with the slow pure-Python fallback.', [], [],
                int(maglev.native_available()))
        snap = agent.snapshot
        f.gauge('snapshot_generation', 'Newest snapshot generation taken '
                'from the controller (-1: none yet).', [], [],
                -1 if snap is None else snap.generation)
        verdict = getattr(agent, '_verdict', None)
        f.gauge('serviceable', '1 when the SE can forward (uplink, tunnel '
                'sources, routes to members); 0 withdraws every VIP.', [],
                [], int(verdict is None or verdict.serviceable))
        runtime = {}
        if getattr(agent, '_bgp_sup', None) is not None:
            runtime['bgp'] = agent._bgp_sup.report()
        health = getattr(agent, 'health', None)
        if health is not None and hasattr(health, 'report'):
            runtime['health'] = health.report()
        for helper, rep in runtime.items():
            f.gauge('helper_up', '1 while a supervised helper (ExaBGP, '
                    'the health checker) runs.', ['helper'], [helper],
                    int(rep.get('state') == 'running'))
            f.counter('helper_restarts', 'Restarts of a supervised helper.',
                      ['helper'], [helper], rep.get('restarts', 0))

    # --------------------------------------------------------- dataplane
    def _dataplane(self):
        if self._dp is None:
            from amphora_agent.dataplane import dataplane as dp_mod
            self._dp = dp_mod.Dataplane.open(self.pin_dir, create=False)
        return self._dp

    def _dataplane_metrics(self, f):
        from amphora_agent.dataplane import model
        try:
            dp = self._dataplane()
            raw = dp.stats(conn_table_entries=False)
            entries, flows = dp.conn_census()
        except Exception:
            # The pins may have been replaced (dsrctl reset): reopen next.
            if self._dp is not None:
                self._dp.close()
                self._dp = None
            raise
        for name, value in raw['se'].items():
            if name.startswith('drop_'):
                f.counter('se_dropped_packets', 'Packets the SE program '
                          'dropped, by reason.', ['reason'], [name[5:]],
                          value)
            elif name in _SE_PACKETS:
                f.counter('se_packets', 'Packets the SE program handled '
                          'without dropping, by action (pass: not for a '
                          'VIP).', ['action'], [name], value)
        limits = dp.limits
        for family, n in sorted(entries.items()):
            f.gauge('conn_table_entries', 'Entries in the connection '
                    'table of a family (established flows, including idle '
                    'ones not yet evicted).', ['family'], [str(family)], n)
            f.gauge('conn_table_size', 'Capacity of the connection table '
                    'of a family (entries).', ['family'], [str(family)],
                    limits.conn_table_size)
        derived = (sum(item['new_flows'] for item in raw['listeners'])
                   - sum(entries.values()))
        # The derived value drops when a listener goes (its inserts leave
        # the sum, its entries stay): add only its rises, so that the
        # counter never goes back (a counter reset to Prometheus).  It
        # starts at 0 with the process, as counters do: the pinned
        # dataplane's history is the baseline, not a first rise.
        last, self._evictions_derived = self._evictions_derived, derived
        if last is not None:
            self._evictions += max(derived - last, 0)
        f.counter('conn_table_evictions', 'Estimated entries displaced '
                  'from the connection tables: the rises of flows inserted '
                  'minus entries present (LRU evictions, plus entries '
                  'replaced in place when a flow was re-steered).', [], [],
                  self._evictions)
        plan = getattr(self.agent, '_plan', None)
        listener_ids = plan.listener_ids if plan else {}
        member_ids = plan.member_ids if plan else {}
        lb_of, _ = self._ids_of()
        f.gauge('capacity_used', 'Dataplane objects in use, by resource.',
                ['resource'], ['listeners'], len(raw['listeners']))
        f.gauge('capacity_used', '', ['resource'], ['members'],
                len(raw['members']))
        f.gauge('capacity_limit', 'Dataplane capacity, by resource.',
                ['resource'], ['listeners'], limits.max_listeners)
        f.gauge('capacity_limit', '', ['resource'], ['members'],
                limits.max_reals - 1)
        # The rest of what the agent last reported holding (its own
        # count of what it wrote; this process's Dataplane keeps none).
        held = self.agent.held_reported() if self.agent is not None else {}
        for key, resource, limit in (
                ('ring_slots', 'ring_slots', limits.total_ring_slots),
                ('ring_size', 'largest_pool', limits.ring_size),
                ('max_cidrs', 'allowed_cidrs', limits.max_cidrs)):
            if key in held:
                f.gauge('capacity_used', '', ['resource'], [resource],
                        held[key])
                f.gauge('capacity_limit', '', ['resource'], [resource],
                        limit)
        if self.agent is not None:
            for kind, count in sorted(self.agent.changes_total().items()):
                f.counter('dataplane_changes', 'What the agent\'s applies '
                          'changed in the dataplane maps since it started, '
                          'by kind (listeners_added, rings_written, '
                          'rings_moved: rings moved to make room, ...).',
                          ['kind'], [kind], count)
        active_by_listener = {}
        for (vip, _address), count in flows.items():
            active_by_listener[vip] = active_by_listener.get(vip, 0) + count
        keys = {item['listener']: model.ListenerKey.parse(item['listener'])
                for item in raw['listeners']}
        labels = ['lb', 'listener', 'vip']
        for item in raw['listeners']:
            vip = item['listener']
            lid = listener_ids.get(keys[vip])
            if lid is None:
                continue    # not (yet) in the applied plan
            values = [lb_of.get(lid, ''), lid, vip]
            f.counter('listener_packets', 'Packets steered to the '
                      'members of a listener.', labels, values,
                      item['packets'])
            f.counter('listener_bytes', 'Bytes (IP packets, before '
                      'encapsulation) steered to the members of a '
                      'listener.', labels, values, item['bytes'])
            f.counter('listener_new_flows', 'Flows a listener started '
                      '(connection-table inserts).', labels, values,
                      item['new_flows'])
            f.gauge('listener_active_flows', 'Connection-table entries of '
                    'a listener (an upper bound of its open flows).',
                    labels, values, active_by_listener.get(vip, 0))
            f.counter('listener_flood_guarded_packets', 'Packets of a '
                      'listener steered by its ring without a '
                      'connection-table insert because the CPU was over '
                      '[dataplane] flood_guard_rate (every packet of such '
                      'a flow counts).', labels, values,
                      item['flood_guarded'])
            for result, key in (('hit', 'conn_hits'),
                                ('miss', 'conn_misses')):
                f.counter('listener_conn_table_lookups', 'Connection-table '
                          'lookups of steered packets, by result.',
                          labels + ['result'], values + [result], item[key])
            policy = item['drop_not_allowed'] + item['drop_conn_limit']
            for reason, value in (
                    ('not_allowed', item['drop_not_allowed']),
                    ('conn_limit', item['drop_conn_limit']),
                    ('other', max(item['drops'] - policy, 0))):
                f.counter('listener_dropped_packets', 'Packets of a '
                          'listener dropped, by reason (not_allowed: '
                          'allowed_cidrs; conn_limit: connection_limit; '
                          'other: no member, no route, too big, ...).',
                          labels + ['reason'], values + [reason], value)
            if 'connection_limit' in item:
                f.gauge('listener_connection_limit', 'A listener\'s '
                        'connection_limit on this SE.', labels, values,
                        item['connection_limit'])
                f.gauge('listener_limited_flows', 'Flows a listener '
                        'counts against its connection_limit.', labels,
                        values, item['counted_flows'])
        labels = ['lb', 'listener', 'member', 'vip']
        for item in raw['members'] if self.member_series else ():
            vip = item['listener']
            lkey = keys[vip]
            mid = member_ids.get((lkey, model.parse_address(
                item['address'], 'member address')))
            lid = listener_ids.get(lkey)
            if mid is None or lid is None:
                continue
            values = [lb_of.get(lid, ''), lid, mid, vip]
            f.counter('member_packets', 'Packets steered to a member.',
                      labels, values, item['packets'])
            f.counter('member_bytes', 'Bytes (IP packets, before '
                      'encapsulation) steered to a member.', labels, values,
                      item['bytes'])
            f.counter('member_new_flows', 'Flows steered to a member '
                      '(connection-table inserts).', labels, values,
                      item['new_flows'])
            f.gauge('member_active_flows', 'Connection-table entries '
                    'pointing at a member.', labels, values,
                    flows.get((vip, item['address']), 0))

    # --------------------------------------------------------------- BGP
    def _bgp_metrics(self, f):
        sessions = getattr(self.agent, 'bgp_sessions', None)
        peers = sessions.peers() if sessions is not None else {}
        for peer, state in sorted(peers.items()):
            f.gauge('bgp_peer_up', '1 while the BGP session with a peer '
                    'is established.', ['peer'], [peer],
                    int(state == 'established'))
            f.gauge('bgp_peer_state', 'BGP session state of a peer (value '
                    '1 on the current state).', ['peer', 'state'],
                    [peer, state], 1)
        announced = sorted(getattr(self.agent, 'announced', ()) or ())
        f.gauge('bgp_announced_routes', 'VIP routes this SE announces.',
                [], [], len(announced))
        for prefix in announced:
            f.gauge('bgp_route_announced', 'A VIP route this SE announces '
                    '(value 1).', ['prefix'], [prefix], 1)

    # ------------------------------------------------------------ health
    def _health_metrics(self, f):
        health = getattr(self.agent, 'health', None)
        if health is None:
            return
        _, pool_of = self._ids_of()
        _, applied = self._ids_of('_applied_snap')
        statuses = health.statuses()
        # Counts of a member briefly out of the checker's targets are kept
        # while it is applied: it comes back without a counter reset.
        results, latency = self.probes.snapshot(
            statuses.keys() | applied.keys(),
            set(pool_of.values()) | set(applied.values()))
        labels = ['lb', 'pool', 'member']
        in_pool = {}
        for member, status in sorted(statuses.items()):
            lb, pool = where = pool_of.get(member, ('', ''))
            if pool:
                key = where + (status,)
                in_pool[key] = in_pool.get(key, 0) + 1
            if not self.member_series:
                continue
            f.gauge('member_health', 'A member\'s operating status by '
                    'its health monitor (value 1 on the current status).',
                    labels + ['status'], [lb, pool, member, status], 1)
            for result, count in zip(('ok', 'failed'),
                                     results.get(member, ())):
                f.counter('health_probes', 'Health probes of a member, by '
                          'result.', labels + ['result'],
                          [lb, pool, member, result], count)
        for (lb, pool, status), count in sorted(in_pool.items()):
            f.gauge('pool_members', 'Members of a pool by their operating '
                    'status (the health monitor\'s, NO_MONITOR without '
                    'one).', ['lb', 'pool', 'status'], [lb, pool, status],
                    count)
        for (lb, pool), (seconds, counts, failed) in sorted(
                latency.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(_BUCKET_LABELS, counts):
                cumulative += count
                buckets.append((bound, cumulative))
            f.histogram('health_probe_duration_seconds', 'Time a health '
                        'probe of a pool\'s members took (to its answer or '
                        'its timeout).', ['lb', 'pool'], [lb, pool], buckets,
                        seconds)
            # Per pool as well: with member_series off, the only count of
            # failures.
            f.counter('health_pool_failed_probes', 'Health probes of a '
                      'pool\'s members that failed.', ['lb', 'pool'],
                      [lb, pool], failed)
        stats = health.stats() if hasattr(health, 'stats') else {}
        if 'skipped_slots' in stats:
            f.counter('health_skipped_probes', 'Probe slots skipped '
                      'because the checker ran late (an overloaded '
                      'agent).', [], [], stats['skipped_slots'])
