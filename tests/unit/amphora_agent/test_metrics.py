"""The metrics module without a dataplane: off by default, a scrape still
answers when a part fails, probe latency and logged errors are counted,
the BGP session cache asks ExaBGP at most once per max_age, and the
sample Grafana dashboard only names metrics the agent exposes.  (The live
scrape with traffic: tests/functional/amphora_agent/test_metrics.py.)"""

import json
import logging
import pathlib
import re
import types
import urllib.request

from oslo_config import cfg
from prometheus_client import parser

from amphora_agent.bgp import sessions
from amphora_agent.dataplane import maglev
from amphora_agent import metrics
from amphora_agent import opts

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

    def statuses(self):
        return {'m1': 'ONLINE'}

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


def _agent(conf, tmp_path):
    snap = types.SimpleNamespace(generation=3, load_balancers=[
        types.SimpleNamespace(id='lb1', listeners=[types.SimpleNamespace(
            id='l1', pool=types.SimpleNamespace(id='p1', members=[
                types.SimpleNamespace(id='m1')]))])])
    speaker = FakeSpeaker()
    return types.SimpleNamespace(
        conf=conf, se_id='se-1', se_group='g1', applied_generation=3,
        snapshot=snap, last_error=None, health=FakeHealth(), trust=None,
        announced={'192.0.2.10/32'}, _plan=None, _verdict=None,
        _bgp_sup=None, _applied_rejected={'members': {'m9': 'why'}},
        bgp=speaker,
        bgp_sessions=sessions.BgpSessions(lambda: speaker, max_age=60))


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
        _scrape(server.port)
    finally:
        server.stop()
    assert agent.health.on_probe is None        # unhooked on stop

    def v(name, **labels):
        return samples[(name, frozenset(labels.items()))]
    # The dataplane part failed (nothing pinned): counted, rest answered.
    assert v('octavia_dsr_metrics_scrape_errors_total') == 1
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
    assert v('octavia_dsr_health_probe_duration_seconds_bucket', le='0.005',
             **member) == 1
    assert v('octavia_dsr_health_probe_duration_seconds_count',
             **member) == 2
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


def test_dashboard_names_only_exposed_metrics():
    source = (ROOT / 'amphora_agent' / 'metrics.py').read_text()
    exposed = set()
    for kind, name in re.findall(
            r"f\.(counter|gauge|histogram)\(\s*'(\w+)'", source):
        base = metrics.PREFIX + name
        exposed |= {base + '_total'} if kind == 'counter' else {base}
        if kind == 'histogram':
            exposed |= {base + s for s in ('_bucket', '_count', '_sum')}
    dashboard = json.loads((ROOT / 'etc' / 'grafana' /
                            'octavia-dsr-agents.json').read_text())
    used = set()
    for panel in dashboard['panels']:
        for target in panel.get('targets', ()):
            used |= set(re.findall(r'octavia_dsr_\w+', target['expr']))
    assert used and used <= exposed, used - exposed
