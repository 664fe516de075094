"""The tempest stage's test sets and worker partitions."""

import re

import pytest
import yaml

from tools.tempest import selection

V2 = 'octavia_tempest_plugin.tests.api.v2.'
IDS = [
    V2 + 'test_healthmonitor.HealthMonitorAPITest.test_SIP_TCP_'
         'healthmonitor_create',
    V2 + 'test_healthmonitor.HealthMonitorAPITest.test_SI_TCP_'
         'healthmonitor_create',
    V2 + 'test_member.MemberAPITest1.test_ipv4_TCP_SI_member_create',
    V2 + 'test_member.MemberAPITest1.test_ipv4_TCP_SIP_member_create',
    V2 + 'test_pool.PoolAPITest.test_TCP_SI_pool_with_listener_create',
    V2 + 'test_pool.PoolAPITest.test_TCP_SI_pool_update',
    V2 + 'test_pool.PoolAPITest.test_TCP_SIP_pool_update',
    V2 + 'test_listener.ListenerAPITest.test_tcp_listener_list',
    V2 + 'test_amphora.AmphoraAPITest.test_amphora_list',
    V2 + 'test_pool.PoolAPITest.test_TCP_LC_pool_update',
    'dsr_provider.tempest.tests.scenario.test_traffic.DSRTrafficTest.'
    'test_dsr_traffic_bypasses_se_on_reply',
    'tempest.api.compute.servers.test_servers.ServersTest.test_x',
]


def selected(test_set):
    include, exclude = selection.regexes(test_set)
    return {i.rsplit('.', 1)[1] for i in IDS
            if re.search(include, i) and not re.search(exclude, i)}


def test_full_set_runs_what_applies_to_dsr():
    assert selected('full') == {
        'test_SIP_TCP_healthmonitor_create',
        'test_SI_TCP_healthmonitor_create',
        'test_ipv4_TCP_SI_member_create', 'test_ipv4_TCP_SIP_member_create',
        'test_TCP_SI_pool_with_listener_create', 'test_TCP_SI_pool_update',
        'test_TCP_SIP_pool_update', 'test_tcp_listener_list',
        'test_dsr_traffic_bypasses_se_on_reply'}


def test_ci_set_drops_the_source_ip_twins_but_one_pool():
    assert selected('full') - selected('ci') == {
        'test_SI_TCP_healthmonitor_create', 'test_ipv4_TCP_SI_member_create',
        'test_TCP_SI_pool_update'}


@pytest.mark.parametrize('name', [
    'test_listener.ListenerAPITest.test_http_listener_create',
    'test_listener.ListenerAPITest.test_tcp_listener_list_no_allowed_cidrs',
    'test_listener.ListenerAPITest.test_tcp_listener_create',
    'test_pool.PoolAPITest.test_PROXY_SIP_pool_update',
    'test_member.MemberAPITest1.test_ipv6_HTTPS_SIP_member_create',
    'test_healthmonitor.HealthMonitorAPITest.test_SIP_PING_healthmonitor_list',
    'test_l7rule.L7RuleAPITest.test_l7rule_create',
    'test_flavor_profile.FlavorProfileAPITest.test_flavor_profile_create',
])
def test_ci_set_drops_tests_bound_to_skip_and_twins(name):
    include, exclude = selection.regexes('ci')
    assert re.search(exclude, V2 + name)
    assert not re.search(selection.regexes('full')[1], V2 + name)


@pytest.mark.parametrize('name', [
    'test_listener.ListenerAPITest.test_tcp_listener_list',
    'test_listener.ListenerAPITest.test_udp_listener_show_stats',
    'test_listener.ListenerAPITest.'
    'test_tcp_udp_sctp_https_listener_create_on_same_port',
    'test_healthmonitor.HealthMonitorAPITest.test_SIP_UDP_healthmonitor_list',
    'test_member.MemberAPITest2.test_UDP_SIP_member_batch_update',
    'test_load_balancer.LoadBalancerAPITest.test_load_balancer_list',
])
def test_ci_set_keeps(name):
    assert not re.search(selection.regexes('ci')[1], V2 + name)


def test_unknown_set_is_refused():
    with pytest.raises(ValueError, match='unknown test set'):
        selection.regexes('smoke')


def test_partition_keeps_classes_together_and_balances():
    ids = ([V2 + f'test_member.MemberAPITest1.test_m{i}' for i in range(50)]
           + [V2 + f'test_member.MemberAPITest2.test_n{i}' for i in range(70)]
           + [V2 + 'test_healthmonitor.HealthMonitorAPITest.test_'
              f'{alg}_TCP_healthmonitor_{i}' for alg in ('SI', 'SIP')
              for i in range(30)]
           + [V2 + 'test_load_balancer.LoadBalancerAPITest.test_lb']
           + ['x.y.test_flavor.FlavorAPITest.test_f'])
    parts, loads = selection.partition(ids, 4)
    assert sorted(sum(parts, [])) == sorted(ids)
    owner = {t: n for n, part in enumerate(parts) for t in part}

    def workers(word):
        return {owner[t] for t in ids if word in t}
    assert len(workers('MemberAPITest1')) == 1
    assert len(workers('MemberAPITest2')) == 1
    # The longest class is split by algorithm over two workers.
    assert len(workers('test_SI_')) == 1 and len(workers('test_SIP_')) == 1
    assert workers('test_SI_') != workers('test_SIP_')
    # Longest first to the least loaded: 792 | 776 | 648+40 | 648+27.
    assert sorted(loads) == [675, 688, 776, 792]


def test_worker_file_names_each_test_once(tmp_path):
    path = tmp_path / 'workers.yaml'
    parts = [[IDS[0], IDS[1]], [IDS[6]]]
    selection.write_worker_file(path, parts)
    workers = yaml.safe_load(path.read_text())
    assert len(workers) == 2
    for test_id in IDS:
        hits = [r for w in workers for r in w['worker']
                if re.search(r, test_id + '[id-1,smoke]')]
        assert len(hits) == (1 if test_id in IDS[:2] + [IDS[6]] else 0)
    # The SIP test's pattern does not take its SI twin, nor a longer name.
    (pattern,) = workers[1]['worker']
    assert not re.search(pattern, IDS[5])
    assert not re.search(pattern, IDS[6] + '_more')


@pytest.mark.parametrize('name', [
    'test_listener.ListenerAPITest.test_http_listener_create',
    'test_listener.ListenerAPITest.test_https_listener_create',
    'test_pool.PoolAPITest.test_HTTP_LC_pool_with_listener_create',
    'test_pool.PoolAPITest.test_HTTP_RR_pool_update',
    'test_pool.PoolAPITest.test_HTTP_RR_app_cookie_pool_with_listener_create',
    'test_healthmonitor.HealthMonitorAPITest.test_RR_HTTP_'
    'healthmonitor_update',
    'test_healthmonitor.HealthMonitorAPITest.test_LC_HTTPS_'
    'healthmonitor_create',
    'test_member.MemberAPITest2.test_HTTP_RR_member_batch_update',
    'test_l7policy.L7PolicyAPITest.test_l7policy_create_redirect_pool',
    'test_l7rule.L7RuleAPITest.test_l7rule_update',
])
def test_tier2_set_runs_what_the_l7_ses_add(name):
    include, exclude = selection.regexes('tier2')
    for test_id in (V2 + name, V2 + name + '[id-1,smoke]'):
        assert re.search(include, test_id) and not re.search(exclude,
                                                             test_id)


@pytest.mark.parametrize('name', [
    # Tier 1's own: TCP listeners, SOURCE_IP(_PORT) pools, the scenario.
    'test_listener.ListenerAPITest.test_tcp_listener_list',
    'test_pool.PoolAPITest.test_TCP_SIP_pool_update',
    # Twins and longer names of a selected test.
    'test_listener.ListenerAPITest.test_http_listener_create_no_allowed_'
    'cidrs',
    'test_pool.PoolAPITest.test_HTTP_RR_pool_update_more',
    'test_amphora.AmphoraAPITest.test_amphora_list',
])
def test_tier2_set_leaves_out(name):
    include, exclude = selection.regexes('tier2')
    assert not re.search(include, V2 + name) or re.search(exclude, V2 + name)
    # The DSR scenario is tier 1's.
    assert not re.search(include, IDS[10])


def test_every_set_names_its_tier():
    assert set(selection.SET_TIERS) == set(selection.SETS)
    assert selection.SET_TIERS['tier2'] == 2


def test_tier2_partition_uses_the_tier2_class_times():
    ids = ([V2 + f'test_l7rule.L7RuleAPITest.test_r{i}' for i in range(5)]
           + [V2 + f'test_listener.ListenerAPITest.test_l{i}'
              for i in range(12)]
           + [V2 + f'test_l7policy.L7PolicyAPITest.test_p{i}'
              for i in range(7)])
    _, loads = selection.partition(
        ids, 2, selection.SET_CLASS_SECONDS['tier2'])
    t2 = selection.TIER2_CLASS_SECONDS
    # The listener class alone; both L7 classes on the other worker.
    assert sorted(loads) == sorted([
        t2['ListenerAPITest'][0],
        t2['L7RuleAPITest'][0] + t2['L7PolicyAPITest'][0]])
    # Tier 1's table knows L7RuleAPITest by its one skipped test: 5 tests
    # would be estimated at 5 times its class cost.
    assert selection.SET_CLASS_SECONDS['ci'] is selection.CLASS_SECONDS
