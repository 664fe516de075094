"""The metrics module without a dataplane (or with a fake one): off by
default, a scrape still answers when a part fails, probe latency and
logged errors are counted, the series per member and [metrics]
member_series, a conn-table evictions counter that never goes back, probe
counts kept for a member briefly not monitored, the BGP session cache asks
ExaBGP at most once per max_age, and the sample Grafana dashboard only
names metrics and labels the agent exposes.  (The live scrape with
traffic: tests/functional/amphora_agent/test_metrics.py.)"""

import ipaddress
import json
import logging
import pathlib
import re
import types
import urllib.request

from oslo_config import cfg
from prometheus_client import exposition
from prometheus_client import parser
from prometheus_client import registry as registry_mod

from amphora_agent.bgp import sessions
from amphora_agent.dataplane import maglev
from amphora_agent.dataplane import model
from amphora_agent.l7 import metrics as l7_metrics
from amphora_agent import metrics
from amphora_agent import opts
from tests.unit.amphora_agent.l7 import test_metrics as test_l7_metrics

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _conf(**overrides):
    conf = cfg.ConfigOpts()
    opts.register_agent_opts(conf)
    conf.set_override('se_id', 'se-1', 'agent')
    for name, value in overrides.items():
        conf.set_override(name, value, 'metrics')
    conf([], project='octavia-dsr-test')
    return conf


class FakeHealth:
    on_probe = None

    def __init__(self, members=('m1',)):
        self.members = dict.fromkeys(members, 'ONLINE')

    def statuses(self):
        return dict(self.members)

    def report(self):
        return {'state': 'running', 'restarts': 1, 'last_error': None}

    def stats(self):
        return {'skipped_slots': 0}


class FakeSpeaker:
    def __init__(self):
        self.calls = 0

    def status(self):
        self.calls += 1
        return {'198.18.1.1': types.SimpleNamespace(state='established'),
                '2001:db8:1:1::1': types.SimpleNamespace(state='active')}


def _snapshot(members=('m1',), generation=3):
    return types.SimpleNamespace(generation=generation, load_balancers=[
        types.SimpleNamespace(id='lb1', listeners=[types.SimpleNamespace(
            id='l1', pool=types.SimpleNamespace(id='p1', members=[
                types.SimpleNamespace(id=m) for m in members]))])])


def _agent(conf, tmp_path, members=('m1',)):
    snap = _snapshot(members)
    speaker = FakeSpeaker()
    return types.SimpleNamespace(
        conf=conf, se_id='se-1', se_group='g1', applied_generation=3,
        snapshot=snap, _applied_snap=snap, last_error=None,
        health=FakeHealth(members), trust=None,
        announced={'192.0.2.10/32'}, _plan=None, _verdict=None,
        _bgp_sup=None, _applied_rejected={'members': {'m9': 'why'}},
        bgp=speaker,
        bgp_sessions=sessions.BgpSessions(lambda: speaker, max_age=60),
        held_reported=dict, changes_total=dict)


VIP = '192.0.2.10:80/tcp'


def _listener(vip=VIP, new_flows=0):
    return dict(listener=vip, packets=10, bytes=1000, new_flows=new_flows,
                flood_guarded=0, conn_hits=8, conn_misses=2,
                drop_not_allowed=0, drop_conn_limit=0, drops=1,
                connection_limit=100, counted_flows=2)


class FakeDataplane:
    """What the collector reads of a Dataplane: listeners' and members'
    counters, the connection tables' census, the limits."""

    limits = types.SimpleNamespace(conn_table_size=1000, max_listeners=8,
                                   max_reals=65536, ring_size=5261,
                                   total_ring_slots=8 * 5261, max_cidrs=64)

    def __init__(self, listeners, members=(), entries=0):
        self.listeners, self.members = list(listeners), list(members)
        self.entries = entries

    def stats(self, conn_table_entries=True):
        return {'se': {'pass': 1, 'steered': 10, 'drop_no_listener': 2},
                'listeners': self.listeners, 'members': self.members}

    def conn_census(self):
        return {4: self.entries, 6: 0}, {
            (m['listener'], m['address']): 1 for m in self.members}

    def close(self):
        pass


def _with_dataplane(agent, members):
    """agent's plan and a FakeDataplane: members ({id: address}) of
    listener l1 on VIP."""
    key = model.ListenerKey.parse(VIP)
    agent._plan = types.SimpleNamespace(
        listener_ids={key: 'l1'},
        member_ids={(key, ipaddress.ip_address(a)): m
                    for m, a in members.items()})
    return FakeDataplane([_listener()], [
        dict(listener=VIP, address=a, packets=5, bytes=500, new_flows=1)
        for a in members.values()])


def _collect(collector):
    """{(name, frozenset(labels)): value} of one scrape of collector."""
    registry = registry_mod.CollectorRegistry()
    registry.register(collector)
    text = exposition.generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in parser.text_string_to_metric_families(text)
            for s in f.samples}


def _scrape(port):
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics',
                                timeout=10) as answer:
        text = answer.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in parser.text_string_to_metric_families(text)
            for s in f.samples}


def test_off_by_default_and_bound_to_localhost(tmp_path):
    conf = _conf()
    assert conf.metrics.enabled is False
    assert conf.metrics.bind_host == '127.0.0.1'
    assert metrics.start(conf, _agent(conf, tmp_path)) is None


def test_a_scrape_answers_without_a_dataplane(tmp_path):
    conf = _conf(enabled=True, port=0)
    conf.set_override('pin_dir', str(tmp_path / 'no-pins'), 'dataplane')
    agent = _agent(conf, tmp_path)
    server = metrics.start(conf, agent)
    try:
        assert agent.health.on_probe is not None
        agent.health.on_probe('m1', 0.0, 1.0, 1.003, True)
        agent.health.on_probe('m1', 5.0, 5.0, 5.2, False)
        logging.getLogger('amphora_agent.test').error('something broke')
        samples = _scrape(server.port)
        second = _scrape(server.port)
    finally:
        server.stop()
    assert agent.health.on_probe is None        # unhooked on stop

    def v(name, **labels):
        return samples[(name, frozenset(labels.items()))]
    # The dataplane part failed (nothing pinned): counted, rest answered.
    assert v('octavia_dsr_metrics_scrape_errors_total') == 1
    # ... once: not again as an error the agent logged.
    assert second[('octavia_dsr_metrics_scrape_errors_total',
                   frozenset())] == 2
    assert not any(n == 'octavia_dsr_agent_errors_total'
                   and ('logger', 'amphora_agent.metrics') in ls
                   for n, ls in second)
    assert v('octavia_dsr_applied_generation') == 3
    assert v('octavia_dsr_ring_abi_version') == maglev.ABI_VERSION
    assert v('octavia_dsr_rejected_objects', kind='members') == 1
    assert v('octavia_dsr_agent_errors_total',
             logger='amphora_agent.test') == 1
    assert v('octavia_dsr_bgp_peer_up', peer='198.18.1.1') == 1
    assert v('octavia_dsr_bgp_peer_up', peer='2001:db8:1:1::1') == 0
    assert v('octavia_dsr_bgp_route_announced', prefix='192.0.2.10/32') == 1
    assert agent.bgp.calls == 1                 # cached across scrapes
    member = dict(lb='lb1', pool='p1', member='m1')
    assert v('octavia_dsr_health_probes_total', result='ok', **member) == 1
    assert v('octavia_dsr_health_probes_total', result='failed',
             **member) == 1
    pool = dict(lb='lb1', pool='p1')
    assert v('octavia_dsr_health_probe_duration_seconds_bucket', le='0.001',
             **pool) == 0
    assert v('octavia_dsr_health_probe_duration_seconds_bucket', le='0.005',
             **pool) == 1
    assert v('octavia_dsr_health_probe_duration_seconds_bucket', le='+Inf',
             **pool) == 2
    assert v('octavia_dsr_health_probe_duration_seconds_count', **pool) == 2
    assert abs(v('octavia_dsr_health_probe_duration_seconds_sum', **pool)
               - 0.203) < 1e-9
    assert v('octavia_dsr_pool_members', status='ONLINE', **pool) == 1
    assert v('octavia_dsr_helper_restarts_total', helper='health') == 1
    assert ('process_resident_memory_bytes', frozenset()) in samples


def test_bgp_sessions_report_changes_once():
    speaker = FakeSpeaker()
    clock = [0.0]
    s = sessions.BgpSessions(lambda: speaker, max_age=5,
                             clock=lambda: clock[0])
    assert s.changed()
    assert s.report() == {'peers': {'198.18.1.1': 'established',
                                    '2001:db8:1:1::1': 'active'}}
    assert not s.changed() and speaker.calls == 1
    clock[0] = 6.0
    assert not s.changed() and speaker.calls == 2
    assert sessions.BgpSessions(lambda: None).report() == {'peers': {}}


def _series_of(samples, member):
    return sorted((n, tuple(sorted(ls))) for n, ls in samples
                  if ('member', member) in ls)


def test_series_per_member_and_member_series_off(tmp_path):
    conf = _conf()
    assert conf.metrics.member_series is True
    members = {f'm{i}': f'10.0.0.{i}' for i in range(1, 4)}
    per_member = {}
    for member_series in (True, False):
        agent = _agent(conf, tmp_path, members=tuple(members))
        collector = metrics.AgentCollector(agent, str(tmp_path),
                                           member_series=member_series)
        collector._dp = _with_dataplane(agent, members)
        collector.hook()
        try:
            for m in members:
                agent.health.on_probe(m, 0.0, 1.0, 1.002, True)
                agent.health.on_probe(m, 2.0, 2.0, 2.5, False)
            samples = _collect(collector)
        finally:
            collector.unhook()
        per_member[member_series] = [len(_series_of(samples, m))
                                     for m in members]
        # Per listener and per pool whatever the option.
        assert samples[('octavia_dsr_listener_packets_total', frozenset(
            dict(lb='lb1', listener='l1', vip=VIP).items()))] == 10
        pool = dict(lb='lb1', pool='p1')
        assert samples[('octavia_dsr_health_probe_duration_seconds_count',
                        frozenset(pool.items()))] == 2 * len(members)
        assert samples[('octavia_dsr_pool_members', frozenset(
            dict(pool, status='ONLINE').items()))] == len(members)
        assert samples[('octavia_dsr_health_pool_failed_probes_total',
                        frozenset(pool.items()))] == len(members)
    # member_health, health_probes_total ok|failed, and the 4 traffic
    # series of its one dataplane member; none with member_series false.
    assert per_member == {True: [3 + 4] * 3, False: [0] * 3}


def test_capacity_of_rings_and_allow_lists_is_what_the_agent_reported(
        tmp_path):
    """Ring slots, the largest pool and allow-list prefixes come from the
    agent's last report of what it holds (the scrape's own Dataplane
    keeps no account of them); none before it reported any."""
    conf = _conf()
    agent = _agent(conf, tmp_path)
    collector = metrics.AgentCollector(agent, str(tmp_path))
    collector._dp = _with_dataplane(agent, {'m1': '10.0.0.1'})

    def capacity(samples, what):
        return {r: samples.get((f'octavia_dsr_capacity_{what}',
                                frozenset({('resource', r)})))
                for r in ('ring_slots', 'largest_pool', 'allowed_cidrs')}
    samples = _collect(collector)
    assert capacity(samples, 'used') == dict.fromkeys(
        ('ring_slots', 'largest_pool', 'allowed_cidrs'))
    agent.held_reported = lambda: {'max_listeners': 1, 'ring_slots': 4001,
                                   'ring_size': 1, 'max_cidrs': 3}
    samples = _collect(collector)
    assert capacity(samples, 'used') == {
        'ring_slots': 4001, 'largest_pool': 1, 'allowed_cidrs': 3}
    assert capacity(samples, 'limit') == {
        'ring_slots': 8 * 5261, 'largest_pool': 5261, 'allowed_cidrs': 64}


def test_dataplane_changes_are_the_agents_counts_by_kind(tmp_path):
    agent = _agent(_conf(), tmp_path)
    collector = metrics.AgentCollector(agent, str(tmp_path))
    collector._dp = _with_dataplane(agent, {'m1': '10.0.0.1'})
    agent.changes_total = lambda: {'listeners_added': 3, 'rings_moved': 2,
                                   'acls_written': 0}
    samples = _collect(collector)
    assert {dict(ls)['kind']: v for (n, ls), v in samples.items()
            if n == 'octavia_dsr_dataplane_changes_total'} == {
        'listeners_added': 3, 'rings_moved': 2, 'acls_written': 0}


def test_conn_table_evictions_never_go_back(tmp_path):
    agent = _agent(_conf(), tmp_path)
    key_a, key_b = (model.ListenerKey.parse(v) for v in (
        VIP, '192.0.2.10:443/tcp'))
    agent._plan = types.SimpleNamespace(
        listener_ids={key_a: 'l1', key_b: 'l2'}, member_ids={})
    dp = FakeDataplane([_listener(VIP, 100),
                        _listener('192.0.2.10:443/tcp', 100)], entries=150)
    collector = metrics.AgentCollector(agent, str(tmp_path))
    collector._dp = dp
    name = ('octavia_dsr_conn_table_evictions_total', frozenset())
    # 200 inserted, 150 present: the pinned dataplane's history is the
    # baseline, the counter starts at 0 with the process (an agent
    # restarted after a listener was deleted must not read less).
    assert _collect(collector)[name] == 0
    dp.listeners[0]['new_flows'] = 120      # 20 more evicted
    assert _collect(collector)[name] == 20
    # Listener l2 deleted: its 100 inserts leave the sum, its entries stay.
    del dp.listeners[1]
    assert _collect(collector)[name] == 20
    # New flows of l1 evict 30 more entries (the table stays full).
    dp.listeners[0]['new_flows'] = 150
    assert _collect(collector)[name] == 50
    # A restarted agent (a new collector) over the same pins: from 0.
    again = metrics.AgentCollector(agent, str(tmp_path))
    again._dp = dp
    assert _collect(again)[name] == 0


def test_probe_counts_kept_while_a_member_is_applied(tmp_path):
    agent = _agent(_conf(), tmp_path, members=('m1', 'm2'))
    collector = metrics.AgentCollector(agent, str(tmp_path))
    collector.hook()
    ok = ('octavia_dsr_health_probes_total', frozenset(dict(
        lb='lb1', pool='p1', member='m1', result='ok').items()))

    def probe_and_scrape():
        agent.health.on_probe('m1', 0.0, 1.0, 1.001, True)
        return _collect(collector).get(ok)

    try:
        assert probe_and_scrape() == 1
        # m1 out of the checker's targets for a while (a newest snapshot
        # without it), still applied: no series, its counts kept.
        del agent.health.members['m1']
        agent.snapshot = _snapshot(('m2',), generation=4)
        assert ok not in _collect(collector)
        agent.health.members['m1'] = 'ONLINE'
        agent.snapshot = agent._applied_snap
        assert probe_and_scrape() == 2
        # Gone from the checker and the applied snapshot: forgotten.
        del agent.health.members['m1']
        agent.snapshot = agent._applied_snap = _snapshot(('m2',), 5)
        _collect(collector)
        agent.health.members['m1'] = 'ONLINE'
        agent.snapshot = agent._applied_snap = _snapshot(('m1', 'm2'), 6)
        assert probe_and_scrape() == 1
    finally:
        collector.unhook()


def test_errors_of_dsr_wire_counted_and_scrape_errors_once(tmp_path):
    agent = _agent(_conf(), tmp_path)
    collector = metrics.AgentCollector(agent, str(tmp_path / 'no-pins'))
    collector.hook()
    try:
        assert _collect(collector)[('octavia_dsr_agent_errors_total',
                                    frozenset({('logger', 'dsr_wire')}))] == 0
        logging.getLogger('dsr_wire.membership').error('lost the group')
        samples = _collect(collector)     # its dataplane part fails
    finally:
        collector.unhook()

    def errors(logger):
        return samples.get(('octavia_dsr_agent_errors_total',
                            frozenset({('logger', logger)})), 0)
    assert errors('dsr_wire.membership') == 1
    assert samples[('octavia_dsr_metrics_scrape_errors_total',
                    frozenset())] == 2
    assert errors('amphora_agent.metrics') == 0


# Labels every series has in Prometheus besides its own.
TARGET_LABELS = {'instance', 'job'}


def test_dashboard_names_only_exposed_metrics_and_labels(tmp_path):
    source = (ROOT / 'amphora_agent' / 'metrics.py').read_text()
    exposed = set()
    for kind, name in re.findall(
            r"f\.(counter|gauge|histogram)\(\s*'(\w+)'", source):
        base = metrics.PREFIX + name
        exposed |= {base + '_total'} if kind == 'counter' else {base}
        if kind == 'histogram':
            exposed |= {base + s for s in ('_bucket', '_count', '_sum')}
    # The labels of the metrics a scrape of every part has.
    agent = _agent(_conf(), tmp_path)
    collector = metrics.AgentCollector(agent, str(tmp_path))
    collector._dp = _with_dataplane(agent, {'m1': '10.0.0.1'})
    collector.hook()
    try:
        agent.health.on_probe('m1', 0.0, 1.0, 1.001, True)
        samples = _collect(collector)
    finally:
        collector.unhook()
    # An L7 SE's (amphora_agent/l7/metrics.py), from a scrape.
    l7_samples = _collect(l7_metrics.L7Collector(test_l7_metrics.agent()))
    exposed |= {name for name, _labels in l7_samples}
    labels_of = {}
    for name, labels in list(samples) + list(l7_samples):
        labels_of.setdefault(name, set()).update(k for k, _ in labels)
    dashboard = json.loads((ROOT / 'etc' / 'grafana' /
                            'octavia-dsr-agents.json').read_text())
    used, wrong = set(), []
    for panel in dashboard['panels']:
        for target in panel.get('targets', ()):
            expr = target['expr']
            names = set(re.findall(r'octavia_dsr_\w+', expr))
            used |= names
            known = TARGET_LABELS.union(*(labels_of.get(n, ())
                                          for n in names))
            for group in re.findall(r'by \(([^)]*)\)', expr):
                grouped = {g.strip() for g in group.split(',')}
                if not grouped <= known:
                    wrong.append((panel['title'], grouped - known))
    assert used and used <= exposed, used - exposed
    assert not wrong, wrong
