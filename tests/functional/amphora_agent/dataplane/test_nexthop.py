"""The next-hop resolver's routing snapshot against a real routing table:
longest prefix first, lowest metric among equal prefixes, IPv4 and IPv6,
no route."""

import ipaddress
import secrets

import pytest

from amphora_agent.dataplane import nexthop
from tools.lab import netns

ip = ipaddress.ip_address


@pytest.fixture
def table():
    ns = 'dsrnh' + secrets.token_hex(3)
    netns.create_namespace(ns)
    try:
        for cmd in (
                'ip link add nh0 type veth peer name nh1',
                'ip link set nh0 up', 'ip link set nh1 up',
                'ip addr add 198.19.0.2/16 dev nh0',
                'ip -6 addr add 2001:db8:1::2/64 dev nh0 nodad',
                'ip route add 198.19.128.0/17 via 198.19.0.1',
                'ip route add 198.19.130.0/24 via 198.19.0.3',
                'ip route add 198.19.131.7/32 via 198.19.0.4',
                'ip route add 203.0.113.0/24 via 198.19.0.5 metric 20',
                'ip route add 203.0.113.0/24 via 198.19.0.6 metric 10',
                'ip -6 route add 2001:db8:9::/48 via 2001:db8:1::1',
                'ip -6 route add 2001:db8:9:5::/64 via 2001:db8:1::3'):
            netns.run(ns, cmd.split())
        with netns.ipr(ns) as ipr:
            yield nexthop._RoutingSnapshot(ipr)
    finally:
        netns.remove_namespace(ns)


def gateway(snapshot, address):
    hit = snapshot.route(ip(address))
    return hit and hit[0]


def test_longest_prefix_wins(table):
    assert gateway(table, '198.19.200.1') == '198.19.0.1'        # /17
    assert gateway(table, '198.19.130.9') == '198.19.0.3'        # /24
    assert gateway(table, '198.19.131.7') == '198.19.0.4'        # /32
    assert gateway(table, '198.19.131.8') == '198.19.0.1'        # /17
    # The connected /16: no gateway, on nh0.
    hit = table.route(ip('198.19.5.5'))
    assert hit is not None and hit[0] is None


def test_lowest_metric_of_equal_prefixes(table):
    assert gateway(table, '203.0.113.9') == '198.19.0.6'


def test_ipv6(table):
    assert gateway(table, '2001:db8:9:1::1') == '2001:db8:1::1'   # /48
    assert gateway(table, '2001:db8:9:5::1') == '2001:db8:1::3'   # /64
    hit = table.route(ip('2001:db8:1::77'))                       # connected
    assert hit is not None and hit[0] is None


def test_no_route(table):
    assert table.route(ip('192.0.2.1')) is None
    assert table.route(ip('2001:db8:7::1')) is None
