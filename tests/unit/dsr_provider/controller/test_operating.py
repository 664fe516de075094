"""One test per row of the operating-status tables in
dsr_provider/controller/operating.py."""

import types

import pytest

from dsr_provider.controller import operating
from dsr_provider.controller import routing


def row(id_, doc=None, **links):
    return types.SimpleNamespace(id=id_, doc=doc or {}, **links)


class Group:
    """lb1 (group g1) -> l1 -> p1 -> m1, m2 (+ hm1), all enabled."""

    def __init__(self):
        self.lbs = [row('lb1', se_group='g1')]
        self.listeners = [row('l1', {'default_pool_id': 'p1'},
                              loadbalancer_id='lb1')]
        self.pools = [row('p1', loadbalancer_id='lb1')]
        self.members = [row('m1', pool_id='p1'), row('m2', pool_id='p1')]
        self.hms = [row('hm1', pool_id='p1')]
        self.reports = {'m1': ['ONLINE', 'ONLINE'],
                        'm2': ['ONLINE', 'ONLINE']}
        self.rejected = set()
        self.serving = {'g1': routing.ALL}

    def get(self, kind, name):
        for r in getattr(self, kind):
            if r.id == name:
                return r
        raise KeyError(name)

    def compute(self):
        return operating.compute(self.lbs, self.listeners, self.pools,
                                 self.members, self.hms, self.reports,
                                 self.rejected, self.serving)

    def status(self, kind, obj_id):
        return self.compute().get((kind, obj_id))


@pytest.fixture
def g():
    return Group()


def test_all_healthy_is_online_everywhere(g):
    assert set(g.compute().values()) == {'ONLINE'}


def test_no_live_serviceable_se_makes_everything_offline(g):
    g.serving = {}
    result = g.compute()
    assert len(result) == 6 and set(result.values()) == {'OFFLINE'}


def test_no_bgp_session_of_the_vip_family_makes_everything_offline(g):
    """The group's SEs serve, but none has an IPv4 session established:
    no router sends them the IPv4 VIP's traffic."""
    g.lbs[0].doc = {'vip_address': '192.0.2.10'}
    g.serving = {'g1': frozenset({6})}
    result = g.compute()
    assert len(result) == 6 and set(result.values()) == {'OFFLINE'}
    g.serving = {'g1': frozenset()}
    assert set(g.compute().values()) == {'OFFLINE'}
    g.serving = {'g1': frozenset({4})}
    assert set(g.compute().values()) == {'ONLINE'}


def test_dual_stack_routed_on_one_family_is_degraded(g):
    g.lbs[0].doc = {'vip_address': '192.0.2.10', 'additional_vips': [
        {'ip_address': '2001:db8::10'}]}
    g.serving = {'g1': frozenset({4})}
    result = g.compute()
    assert result[('loadbalancers', 'lb1')] == 'DEGRADED'
    assert result[('listeners', 'l1')] == 'ONLINE'
    assert result[('members', 'm1')] == 'ONLINE'
    g.serving = {'g1': frozenset({6})}
    assert g.status('loadbalancers', 'lb1') == 'DEGRADED'
    g.serving = {'g1': routing.ALL}
    assert g.status('loadbalancers', 'lb1') == 'ONLINE'
    # A worse status still wins.
    g.rejected = {('members', 'm1'), ('members', 'm2')}
    g.serving = {'g1': frozenset({4})}
    assert g.status('loadbalancers', 'lb1') == 'ERROR'


def test_tier2_needs_its_l7_group_serving(g):
    g.lbs[0].l7_se_group = 'l7'
    g.lbs[0].doc = {'vip_address': '192.0.2.10'}
    g.serving = {'g1': frozenset({4}), 'l7': routing.ALL}
    assert g.status('loadbalancers', 'lb1') == 'ONLINE'
    g.serving = {'g1': frozenset({4}), 'l7': frozenset()}
    assert g.status('loadbalancers', 'lb1') == 'OFFLINE'
    g.serving = {'g1': frozenset({4})}
    assert g.status('loadbalancers', 'lb1') == 'OFFLINE'


def test_rejected_stays_error_without_a_live_se(g):
    g.serving = {}
    g.rejected = {('listeners', 'l1')}
    assert g.status('listeners', 'l1') == 'ERROR'
    assert g.status('loadbalancers', 'lb1') == 'OFFLINE'


# ------------------------------------------------------------- members
def test_member_rejected_is_error_and_degrades_its_pool(g):
    g.rejected = {('members', 'm2')}
    assert g.status('members', 'm2') == 'ERROR'
    assert g.status('pools', 'p1') == 'DEGRADED'


def test_member_admin_down_is_offline_and_not_counted(g):
    g.get('members', 'm2').doc['admin_state_up'] = False
    g.reports['m2'] = ['ERROR', 'ERROR']
    assert g.status('members', 'm2') == 'OFFLINE'
    assert g.status('pools', 'p1') == 'ONLINE'


def test_member_of_an_unserved_pool_is_offline(g):
    g.get('pools', 'p1').doc['admin_state_up'] = False
    assert g.status('members', 'm1') == 'OFFLINE'


def test_member_not_reported_yet_is_left_unsent(g):
    del g.reports['m1']
    assert ('members', 'm1') not in g.compute()


def test_member_error_needs_a_majority_of_ses(g):
    g.reports['m1'] = ['ERROR', 'ONLINE']
    assert g.status('members', 'm1') == 'ONLINE'
    g.reports['m1'] = ['ERROR', 'ERROR', 'ONLINE']
    assert g.status('members', 'm1') == 'ERROR'


def test_member_with_weight_zero_is_draining(g):
    g.get('members', 'm1').doc['weight'] = 0
    assert g.status('members', 'm1') == 'DRAINING'
    assert g.status('pools', 'p1') == 'ONLINE'


def test_member_without_monitor_keeps_no_monitor(g):
    g.reports['m1'] = ['NO_MONITOR']
    assert g.status('members', 'm1') == 'NO_MONITOR'
    assert g.status('pools', 'p1') == 'ONLINE'


# --------------------------------------------------------------- pools
def test_pool_rejected_is_error_and_so_is_its_listener_and_lb(g):
    g.rejected = {('pools', 'p1')}
    assert g.status('pools', 'p1') == 'ERROR'
    assert g.status('listeners', 'l1') == 'ERROR'
    assert g.status('loadbalancers', 'lb1') == 'ERROR'
    assert g.status('members', 'm1') == 'OFFLINE'


def test_pool_admin_down_is_offline_its_listener_online(g):
    # The listener is not disabled and nothing of it fails (amphora: the
    # HAProxy frontend stays OPEN).
    g.get('pools', 'p1').doc['admin_state_up'] = False
    assert g.status('pools', 'p1') == 'OFFLINE'
    assert g.status('listeners', 'l1') == 'ONLINE'
    assert g.status('loadbalancers', 'lb1') == 'ONLINE'


def test_pool_on_no_listener_is_offline(g):
    g.listeners[0].doc.pop('default_pool_id')
    assert g.status('pools', 'p1') == 'OFFLINE'


def test_pool_without_members_is_online(g):
    # What amphora and ovn-octavia-provider report (and tempest expects).
    g.members = []
    result = g.compute()
    assert result[('pools', 'p1')] == 'ONLINE'
    assert result[('listeners', 'l1')] == 'ONLINE'
    assert result[('loadbalancers', 'lb1')] == 'ONLINE'


def test_pool_with_every_member_disabled_is_offline_not_error(g):
    for m in g.members:
        m.doc['admin_state_up'] = False
    result = g.compute()
    assert result[('pools', 'p1')] == 'OFFLINE'
    assert result[('members', 'm1')] == 'OFFLINE'
    assert result[('listeners', 'l1')] == 'ONLINE'
    assert result[('loadbalancers', 'lb1')] == 'ONLINE'


def test_pool_with_no_member_status_known_is_unsent(g):
    g.reports = {}
    result = g.compute()
    assert ('pools', 'p1') not in result
    assert ('listeners', 'l1') not in result
    assert ('loadbalancers', 'lb1') not in result


def test_pool_with_every_member_down_is_error(g):
    g.reports = {'m1': ['ERROR'], 'm2': ['ERROR']}
    assert g.status('pools', 'p1') == 'ERROR'
    assert g.status('listeners', 'l1') == 'ERROR'
    assert g.status('loadbalancers', 'lb1') == 'ERROR'


def test_one_member_of_two_down_is_degraded_up_to_the_lb(g):
    """Issue 9 case 7: DEGRADED, not ERROR."""
    g.reports['m2'] = ['ERROR', 'ERROR']
    assert g.status('pools', 'p1') == 'DEGRADED'
    assert g.status('listeners', 'l1') == 'DEGRADED'
    assert g.status('loadbalancers', 'lb1') == 'DEGRADED'


# ----------------------------------------------------------- listeners
def test_listener_rejected_is_error(g):
    g.rejected = {('listeners', 'l1')}
    assert g.status('listeners', 'l1') == 'ERROR'
    assert g.status('pools', 'p1') == 'OFFLINE'
    assert g.status('loadbalancers', 'lb1') == 'ERROR'


def test_listener_admin_down_is_offline(g):
    g.get('listeners', 'l1').doc['admin_state_up'] = False
    assert g.status('listeners', 'l1') == 'OFFLINE'
    assert g.status('pools', 'p1') == 'OFFLINE'


def test_listener_without_pool_is_online(g):
    """As amphora and ovn-octavia-provider report it; it never makes
    its load balancer ERROR or DEGRADED (issue 9 case 7)."""
    g.listeners.append(row('l2', loadbalancer_id='lb1'))
    assert g.status('listeners', 'l2') == 'ONLINE'
    assert g.status('loadbalancers', 'lb1') == 'ONLINE'
    g.reports['m1'] = ['ERROR', 'ERROR']
    assert g.status('listeners', 'l2') == 'ONLINE'
    assert g.status('loadbalancers', 'lb1') == 'DEGRADED'


# ------------------------------------------------------ load balancers
def test_lb_admin_down_is_offline_with_everything_below(g):
    g.get('lbs', 'lb1').doc['admin_state_up'] = False
    result = g.compute()
    assert result[('loadbalancers', 'lb1')] == 'OFFLINE'
    assert result[('listeners', 'l1')] == 'OFFLINE'
    assert result[('members', 'm1')] == 'OFFLINE'


def test_lb_rejected_is_error_and_its_children_offline(g):
    g.rejected = {('loadbalancers', 'lb1')}
    assert g.status('loadbalancers', 'lb1') == 'ERROR'
    assert g.status('listeners', 'l1') == 'OFFLINE'


def test_lb_without_listeners_is_online(g):
    g.listeners = []
    assert g.status('loadbalancers', 'lb1') == 'ONLINE'


def test_lb_waits_for_every_listener_status(g):
    g.listeners.append(row('l2', {'default_pool_id': 'p2'},
                           loadbalancer_id='lb1'))
    g.pools.append(row('p2', loadbalancer_id='lb1'))
    g.members.append(row('m3', pool_id='p2'))
    assert ('loadbalancers', 'lb1') not in g.compute()


def test_other_groups_keep_their_status(g):
    g.lbs.append(row('lb2', se_group='g2'))
    g.serving = {'g1': routing.ALL}
    assert g.status('loadbalancers', 'lb2') == 'OFFLINE'
    assert g.status('loadbalancers', 'lb1') == 'ONLINE'


# ----------------------------------------------------- health monitors
def test_health_monitor_online_when_enabled_and_served(g):
    """Issue 14: monitors become ONLINE (Octavia creates them OFFLINE)."""
    g.members = []          # even before the pool has members
    assert g.status('hms', 'hm1') is None
    assert g.status('healthmonitors', 'hm1') == 'ONLINE'


def test_health_monitor_admin_down_is_offline(g):
    g.get('hms', 'hm1').doc['admin_state_up'] = False
    assert g.status('healthmonitors', 'hm1') == 'OFFLINE'


def test_health_monitor_rejected_is_error(g):
    g.rejected = {('healthmonitors', 'hm1')}
    assert g.status('healthmonitors', 'hm1') == 'ERROR'


def test_pool_an_l7_policy_redirects_to_is_served(g):
    """Tier 2: a pool that is no listener's default pool but that an
    enabled REDIRECT_TO_POOL policy of a served listener names is served
    (its members' reports count); a rejected or disabled policy, or
    another action, serves nothing."""
    g.pools.append(row('p2', loadbalancer_id='lb1'))
    g.members.append(row('m3', pool_id='p2'))
    g.reports['m3'] = ['ERROR']
    policy = row('pol1', {'action': 'REDIRECT_TO_POOL',
                          'redirect_pool_id': 'p2', 'admin_state_up': True},
                 listener_id='l1', rejected=None)

    def compute():
        return operating.compute(g.lbs, g.listeners, g.pools, g.members,
                                 g.hms, g.reports, g.rejected, g.serving,
                                 l7policies=[policy])
    result = compute()
    assert (result[('pools', 'p2')], result[('members', 'm3')]) == (
        'ERROR', 'ERROR')
    # The listener's own status still comes from its default pool.
    assert result[('listeners', 'l1')] == 'ONLINE'
    for change in ({'admin_state_up': False}, {'action': 'REJECT'}):
        policy.doc = dict(policy.doc, **change)
        assert compute()[('pools', 'p2')] == 'OFFLINE', change
    policy.doc['action'], policy.doc['admin_state_up'] = \
        'REDIRECT_TO_POOL', True
    policy.rejected = 'refused'
    assert compute()[('members', 'm3')] == 'OFFLINE'
