"""amphora_agent.l7.metrics: what an L7 SE's endpoint serves, from what
its agent last reported (an agent stood in by its attributes; the live
endpoint is tests/functional/amphora_agent/l7/test_l7_agent.py's)."""

import types

from prometheus_client import registry as registry_mod
import pytest

from amphora_agent.l7 import metrics


class Engine:
    generation = 7
    result = {'lb1': {'status': 'ACTIVE'}, 'lb2': {'status': 'ERROR'}}

    @staticmethod
    def rejected_objects():
        return {'loadbalancers': {'lb2': 'bind: port in use'}}


def agent():
    return types.SimpleNamespace(
        se_id='l7se1', se_group='g-l7', last_error=None, draining=False,
        conf=types.SimpleNamespace(agent=types.SimpleNamespace(
            role='tier2')),
        engine=Engine(), seen_ready=True, _reported_dead=['lb2'],
        seen_listeners={'li1': ('lb1', {
            'active_connections': 3, 'total_connections': 40,
            'bytes_in': 1000, 'bytes_out': 9000, 'request_errors': 1})},
        seen_members={'m1': ('lb1', 'ONLINE'), 'm2': ('lb1', 'ERROR'),
                      'm3': ('lb1', 'ONLINE')})


def samples(collector):
    registry = registry_mod.CollectorRegistry(auto_describe=True)
    registry.register(collector)
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in registry.collect() for s in family.samples}


def test_an_l7_ses_state_listeners_and_members():
    got = samples(metrics.L7Collector(agent()))
    assert got[('octavia_dsr_agent_info', frozenset({
        ('se_id', 'l7se1'), ('se_group', 'g-l7'),
        ('role', 'tier2')}))] == 1
    assert got[('octavia_dsr_applied_generation', frozenset())] == 7
    assert got[('octavia_dsr_l7_ready', frozenset())] == 1
    assert got[('octavia_dsr_l7_draining', frozenset())] == 0
    assert got[('octavia_dsr_l7_haproxies_down', frozenset())] == 1
    assert got[('octavia_dsr_rejected_objects',
                frozenset({('kind', 'loadbalancers')}))] == 1
    for status, count in (('ACTIVE', 1), ('ERROR', 1)):
        assert got[('octavia_dsr_l7_load_balancers',
                    frozenset({('status', status)}))] == count
    li1 = frozenset({('lb', 'lb1'), ('listener', 'li1')})
    assert got[('octavia_dsr_l7_listener_active_connections', li1)] == 3
    assert got[('octavia_dsr_l7_listener_connections_total', li1)] == 40
    assert got[('octavia_dsr_l7_listener_received_bytes_total', li1)] == 1000
    assert got[('octavia_dsr_l7_listener_sent_bytes_total', li1)] == 9000
    assert got[('octavia_dsr_l7_listener_request_errors_total', li1)] == 1
    assert got[('octavia_dsr_l7_members', frozenset({
        ('lb', 'lb1'), ('status', 'ONLINE')}))] == 2
    assert got[('octavia_dsr_l7_member_health', frozenset({
        ('lb', 'lb1'), ('member', 'm2'), ('status', 'ERROR')}))] == 1
    assert got[('octavia_dsr_metrics_scrape_errors_total', frozenset())] == 0


@pytest.mark.parametrize('member_series', [True, False])
def test_member_series_can_be_turned_off(member_series):
    got = samples(metrics.L7Collector(agent(), member_series))
    per_member = [k for k in got if dict(k[1]).get('member')]
    assert bool(per_member) is member_series
    assert ('octavia_dsr_l7_members', frozenset({
        ('lb', 'lb1'), ('status', 'ERROR')})) in got


def test_a_draining_se_is_not_ready_at_once():
    """Ready is as of the last report; draining is now: not both."""
    draining = agent()
    draining.draining = True
    got = samples(metrics.L7Collector(draining))
    assert got[('octavia_dsr_l7_ready', frozenset())] == 0
    assert got[('octavia_dsr_l7_draining', frozenset())] == 1


def test_a_failing_part_is_counted_and_the_rest_answers():
    broken = agent()
    broken.seen_listeners = None            # not a dict: that part fails
    got = samples(metrics.L7Collector(broken))
    assert got[('octavia_dsr_metrics_scrape_errors_total', frozenset())] == 1
    assert got[('octavia_dsr_l7_ready', frozenset())] == 1


def test_off_unless_enabled():
    conf = types.SimpleNamespace(metrics=types.SimpleNamespace(
        enabled=False))
    assert metrics.start(conf, agent()) is None
    assert metrics.start(types.SimpleNamespace(), agent()) is None
