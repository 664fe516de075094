"""Serviceability decisions from the kernel's links, addresses and routes.

The decisions are pure functions of what netlink returned; the functional
tests (tests/functional/amphora_agent/bgp/test_agent_supervision.py) drive
them from a real namespace with real events.
"""

import ipaddress

from amphora_agent import netwatch as nw

A = ipaddress.ip_address
UP = nw.Link(2, 'eth0', True, 'UP')


def links(*items):
    return {lk.index: lk for lk in items}


def test_uplink_states():
    assert nw.link_problems(links(UP), 'eth0') == []
    assert nw.link_problems(links(UP), None) == []
    assert nw.link_problems(links(UP), 'eth1') == [
        'uplink eth1 does not exist']
    assert nw.link_problems(links(nw.Link(2, 'eth0', False, 'DOWN')),
                            'eth0') == ['uplink eth0 is down']
    assert nw.link_problems(
        links(nw.Link(2, 'eth0', True, 'LOWERLAYERDOWN')), 'eth0') == [
        'uplink eth0 has no carrier (LOWERLAYERDOWN)']
    # Devices without a carrier notion report UNKNOWN: usable.
    assert nw.link_problems(links(nw.Link(3, 'tun0', True, 'UNKNOWN')),
                            'tun0') == []


def test_tunnel_sources():
    v4, v6 = A('198.18.1.2'), A('2001:db8:1:1::2')
    ok = [nw.Address(v4, 2, 0), nw.Address(v6, 2, 0x80)]   # PERMANENT
    assert nw.source_problems(links(UP), ok, [v4, v6]) == []
    assert nw.source_problems(links(UP), ok[:1], [v4, v6]) == [
        'tunnel source 2001:db8:1:1::2 is not configured']
    tentative = [ok[0], nw.Address(v6, 2, nw.IFA_F_TENTATIVE | 0x80)]
    assert 'tentative' in nw.source_problems(links(UP), tentative,
                                             [v6])[0]
    failed = [nw.Address(v6, 2, nw.IFA_F_DADFAILED | nw.IFA_F_TENTATIVE)]
    assert 'duplicate address detection failed' in nw.source_problems(
        links(UP), failed, [v6])[0]
    down = links(nw.Link(2, 'eth0', True, 'LOWERLAYERDOWN'))
    assert nw.source_problems(down, ok, [v4]) == [
        'tunnel source 198.18.1.2: interface eth0 is down']


def test_route_problems():
    ls = links(UP, nw.Link(3, 'eth1', False, 'DOWN'))
    assert nw.route_problem(nw.Route(oif=2), ls) is None
    assert nw.route_problem(nw.Route(error='Network is unreachable'),
                            ls) == 'Network is unreachable'
    assert nw.route_problem(nw.Route(oif=2, flags=nw.RTNH_F_LINKDOWN),
                            ls) == 'route is linkdown'
    assert nw.route_problem(nw.Route(oif=3), ls) == (
        'route through eth1, which is down')
    assert 'not unicast' in nw.route_problem(nw.Route(oif=1, type=2), ls)


def test_groups():
    assert str(nw.group_of('198.19.1.77')) == '198.19.1.0/24'
    assert str(nw.group_of('2001:db8:2:1::2')) == '2001:db8:2:1::/64'


VIP1, VIP2, VIP3 = A('192.0.2.10'), A('192.0.2.11'), A('2001:db8:f::10')
M1, M2, M6 = A('198.19.1.2'), A('198.19.2.2'), A('2001:db8:2:1::2')
G1, G2, G6 = (nw.group_of(m) for m in (M1, M2, M6))


def test_serviceable_se_announces_vips_with_a_routable_member():
    verdict = nw.decide([], {VIP1: {M1, M2}, VIP2: {M2}, VIP3: {M6}},
                        {G1: None, G2: 'Network is unreachable', G6: None})
    assert verdict.serviceable
    # VIP1 keeps its route (M1 serves); VIP2 has no routable member.
    assert verdict.vips == {VIP1, VIP3}
    assert verdict.problems == [
        'VIP 192.0.2.11: no route to any of its members']


def test_se_problem_withdraws_everything():
    verdict = nw.decide(['uplink eth0 is down'], {VIP1: {M1}},
                        {G1: None})
    assert not verdict.serviceable and verdict.vips == set()
    assert verdict.problems == ['uplink eth0 is down']


def test_no_routable_member_at_all_is_not_serviceable():
    verdict = nw.decide([], {VIP1: {M1}, VIP3: {M6}},
                        {G1: 'Network is unreachable',
                         G6: 'route is linkdown'})
    assert not verdict.serviceable and verdict.vips == set()
    assert verdict.problems[0].startswith('no route to any member')


def test_vips_without_known_members_need_serviceability_only():
    # Adopted from a previous agent, before the first snapshot.
    assert nw.decide([], {VIP1: set()}, {}).vips == {VIP1}
    assert nw.decide(['tunnel source 198.18.1.2 is not configured'],
                     {VIP1: set()}, {}).vips == set()
