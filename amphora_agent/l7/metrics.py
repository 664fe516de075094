"""Prometheus metrics of an L7 SE's agent ([metrics] options, as a tier-1
SE's: off by default, bound to localhost).

    server = metrics.start(conf, agent)   # None when [metrics] enabled=false

The endpoint runs where the agent started (not in the SE's namespace) and
reads what the agent's worker last saw -- its reports: the HAProxies'
listener counters at the statistics pace (`[agent] stats_interval`), the
members' statuses and the SE's readiness at every report -- never the
HAProxies or the SE's namespace itself, so a scrape cannot stall or race
the worker.  Names as amphora_agent/metrics.py's (``octavia_dsr_``,
``_total``, base units); the L7 SE's own with ``l7_``.  HAProxy's counters
start again at 0 when its load balancer's HAProxy is restarted or
reloaded with a new process: Prometheus takes that for a counter reset.
"""

from amphora_agent import metrics

# Octavia's listener statistics -> (metric, kind, help).
_LISTENER = (
    ('active_connections', 'l7_listener_active_connections', 'gauge',
     'Connections open at a listener\'s HAProxy frontend.'),
    ('total_connections', 'l7_listener_connections', 'counter',
     'Connections a listener\'s HAProxy frontend accepted.'),
    ('bytes_in', 'l7_listener_received_bytes', 'counter',
     'Bytes a listener received from clients.'),
    ('bytes_out', 'l7_listener_sent_bytes', 'counter',
     'Bytes a listener sent to clients.'),
    ('request_errors', 'l7_listener_request_errors', 'counter',
     'Requests a listener refused as invalid.'),
)


def start(conf, agent):
    """The L7 agent's metrics endpoint; None when disabled."""
    opts = getattr(conf, 'metrics', None)
    if opts is None or not opts.enabled:
        return None
    return metrics.start(conf, agent, L7Collector(agent, opts.member_series))


class L7Collector(metrics.ScrapeCollector):
    def __init__(self, agent, member_series=True):
        super().__init__()
        self.agent = agent
        self.member_series = member_series

    def parts(self):
        return (self._agent_metrics, self._listener_metrics,
                self._member_metrics)

    def _agent_metrics(self, f):
        agent = self.agent
        engine = agent.engine
        self.identity_metrics(f, agent, engine.generation,
                              engine.rejected_objects())
        f.gauge('l7_ready', '1 while this L7 SE is ready (its HAProxies '
                'run the applied generation, VIPs on lo, decapsulation '
                'attached) and not draining.', [], [],
                int(agent.seen_ready and not agent.draining))
        f.gauge('l7_draining', '1 while this L7 SE drains (weight 0 in '
                'the L4 pools).', [], [], int(bool(agent.draining)))
        results = {}
        for outcome in dict(engine.result).values():
            results[outcome['status']] = results.get(outcome['status'],
                                                     0) + 1
        for status in sorted(set(results) | {'ACTIVE', 'ERROR'}):
            f.gauge('l7_load_balancers', 'Load balancers of the applied '
                    'generation by this SE\'s outcome (ERROR: left out).',
                    ['status'], [status], results.get(status, 0))
        # The worker replaces the list whole (L7Agent.supervise).
        f.gauge('l7_haproxies_down', 'HAProxies that should run and do '
                'not (waiting for their restart).', [], [],
                len(agent._reported_dead))

    def _listener_metrics(self, f):
        for listener, (lb, stats) in sorted(
                self.agent.seen_listeners.items()):
            for key, name, kind, doc in _LISTENER:
                value = stats.get(key)
                if value is None:
                    continue
                getattr(f, kind)(name, doc, ['lb', 'listener'],
                                 [lb, listener], value)

    def _member_metrics(self, f):
        counts = {}
        for member, (lb, status) in sorted(self.agent.seen_members.items()):
            counts[(lb, status)] = counts.get((lb, status), 0) + 1
            if self.member_series:
                f.gauge('l7_member_health', 'A member\'s operating status '
                        'by this SE\'s HAProxy (value 1 on the current '
                        'status).', ['lb', 'member', 'status'],
                        [lb, member, status], 1)
        for (lb, status), count in sorted(counts.items()):
            f.gauge('l7_members', 'Members of a load balancer by their '
                    'operating status at this SE\'s HAProxy.',
                    ['lb', 'status'], [lb, status], count)
