"""The operating-status row for members whose Neutron port refused the
VIP pairs (operating.py, Members table)."""

from dsr_provider.controller import operating
from tests.unit.dsr_provider.controller.test_operating import Group


def compute(g, refused):
    return operating.compute(g.lbs, g.listeners, g.pools, g.members, g.hms,
                             g.reports, g.rejected, g.serving,
                             port_refused=refused)


def test_a_refused_port_makes_its_member_error_and_the_pool_degraded():
    g = Group()
    out = compute(g, {'m1'})
    assert out[('members', 'm1')] == 'ERROR'      # the SEs said ONLINE
    assert out[('members', 'm2')] == 'ONLINE'
    assert out[('pools', 'p1')] == 'DEGRADED'
    assert out[('loadbalancers', 'lb1')] == 'DEGRADED'


def test_before_any_se_report_it_is_already_error():
    g = Group()
    g.reports = {}
    assert compute(g, {'m1'})[('members', 'm1')] == 'ERROR'


def test_admin_down_and_unserved_rows_come_first():
    g = Group()
    g.get('members', 'm1').doc['admin_state_up'] = False
    assert compute(g, {'m1'})[('members', 'm1')] == 'OFFLINE'
    g.serving = {}
    assert compute(g, {'m2'})[('members', 'm2')] == 'OFFLINE'
