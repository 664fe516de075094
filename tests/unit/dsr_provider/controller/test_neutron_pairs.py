"""The merge rules for a port's allowed_address_pairs and security groups:
only what the controller added is ever removed."""

import pytest

from dsr_provider.controller import neutron_pairs as np_mod
from dsr_provider.controller import neutron_tunnels

MAC = 'fa:16:3e:00:00:01'


def pair(ip, mac=MAC):
    return {'ip_address': ip, 'mac_address': mac}


@pytest.mark.parametrize('given,expected', [
    ('192.0.2.10', '192.0.2.10'), ('192.0.2.10/32', '192.0.2.10'),
    ('2001:DB8::A', '2001:db8::a'), ('2001:db8::a/128', '2001:db8::a'),
    ('198.51.100.7/24', '198.51.100.0/24')])
def test_normalise(given, expected):
    assert np_mod.normalise(given) == expected


def test_adds_the_wanted_vips_and_owns_them():
    plan = np_mod.plan_pairs([], MAC, set(), {'192.0.2.10', '2001:db8::10'})
    assert plan.values == [{'ip_address': '192.0.2.10'},
                           {'ip_address': '2001:db8::10'}]
    assert plan.owned == plan.added == {'192.0.2.10', '2001:db8::10'}
    assert plan.removed == set()


def test_nothing_to_do_is_no_update():
    plan = np_mod.plan_pairs([pair('192.0.2.10')], MAC, {'192.0.2.10'},
                             {'192.0.2.10/32'})
    assert plan.values is None
    assert plan.owned == {'192.0.2.10'}


def test_removes_only_its_own_pairs():
    current = [pair('192.0.2.10'), pair('192.0.2.11'), pair('203.0.113.5')]
    plan = np_mod.plan_pairs(current, MAC, {'192.0.2.10', '192.0.2.11'},
                             {'192.0.2.11'})
    assert plan.values == [pair('192.0.2.11'), pair('203.0.113.5')]
    assert plan.removed == {'192.0.2.10'}
    assert plan.owned == {'192.0.2.11'}


def test_an_operator_pair_equal_to_a_vip_is_never_taken_over():
    current = [pair('192.0.2.10')]
    plan = np_mod.plan_pairs(current, MAC, set(), {'192.0.2.10'})
    assert plan.values is None and plan.owned == set()
    # ... so the last membership going leaves it.
    plan = np_mod.plan_pairs(current, MAC, plan.owned, set())
    assert plan.values is None


def test_an_operator_cidr_covering_the_vip_is_enough():
    plan = np_mod.plan_pairs([pair('192.0.2.0/24')], MAC, set(),
                             {'192.0.2.10', '198.51.100.1'})
    assert plan.values == [pair('192.0.2.0/24'),
                           {'ip_address': '198.51.100.1'}]
    assert plan.owned == {'198.51.100.1'}


def test_a_pair_with_another_mac_does_not_cover_the_vip():
    other = pair('192.0.2.10', 'fa:16:3e:99:99:99')
    plan = np_mod.plan_pairs([other], MAC, set(), {'192.0.2.10'})
    assert plan.values == [other, {'ip_address': '192.0.2.10'}]


def test_an_owned_pair_removed_behind_our_back_is_added_again():
    plan = np_mod.plan_pairs([], MAC, {'192.0.2.10'}, {'192.0.2.10'})
    assert plan.added == {'192.0.2.10'} and plan.owned == {'192.0.2.10'}


def test_an_owned_pair_gone_and_unwanted_is_forgotten():
    plan = np_mod.plan_pairs([pair('203.0.113.5')], MAC, {'192.0.2.10'},
                             set())
    assert plan.values is None and plan.owned == set()


def test_ipv4_cidr_never_covers_ipv6():
    plan = np_mod.plan_pairs([pair('0.0.0.0/0')], MAC, set(),
                             {'2001:db8::10'})
    assert plan.added == {'2001:db8::10'}


def test_groups_keep_the_operators():
    plan = np_mod.plan_groups(['default', 'web'], set(), {'tun'})
    assert plan.values == ['default', 'web', 'tun']
    assert plan.owned == {'tun'}
    plan = np_mod.plan_groups(plan.values, plan.owned, set())
    assert plan.values == ['default', 'web'] and plan.removed == {'tun'}
    # An operator's group the controller also wants stays the operator's.
    plan = np_mod.plan_groups(['tun'], set(), {'tun'})
    assert plan.values is None and plan.owned == set()


def test_tunnel_rules_per_source_family():
    rules = neutron_tunnels.wanted_rules(['198.51.100.2', '2001:db8::2'])
    R = neutron_tunnels.Rule
    assert rules == {
        R('IPv4', '4', '198.51.100.2/32'), R('IPv4', '47', '198.51.100.2/32'),
        R('IPv4', None, '198.51.100.2/32'),
        R('IPv6', '4', '2001:db8::2/128'), R('IPv6', '41', '2001:db8::2/128'),
        R('IPv6', '47', '2001:db8::2/128')}
    # Neutron refuses protocol 41 with ethertype IPv4: never asked for.
    assert not any(r.ethertype == 'IPv4' and r.protocol == '41'
                   for r in rules)
    assert R('IPv4', None, '198.51.100.2/32') not in \
        neutron_tunnels.wanted_rules(['198.51.100.2'], any_from_ipv4=False)
