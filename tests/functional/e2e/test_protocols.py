"""What the DSR provider serves besides IPv4 TCP over IPIP: a UDP listener,
an IPv6 VIP with IPv6 members, and a GRE flavor -- each a load balancer of
its own, created with the real `openstack` CLI, in one shared product lab."""

import pytest

from tests.functional.e2e import helpers as h
from tools.lab import netns
from tools.lab import product_lab as pl

VIP4, VIP6 = netns.VIP4, netns.VIP6
# A third VIP for the GRE load balancer (the members serve it too).
VIP_GRE = '192.0.2.11'


@pytest.fixture(scope='module')
def lab():
    with h.product(n_se=2, n_members=2) as lab:
        yield lab


def create_tcp_lb(lab, name, vip, vip_subnet, addresses, member_subnet,
                  *lb_args):
    """LB, TCP listener on 80, SOURCE_IP_PORT pool, TCP monitor, members
    named after the member hosts."""
    h.create_lb(lab, name, f'{name}-l', f'{name}-p', vip, *lb_args,
                vip_subnet=vip_subnet, members=addresses,
                member_subnet=member_subnet,
                monitor=(f'{name}-hm', '--delay', '1', '--timeout', '1',
                         '--max-retries', '1', '--type', 'TCP'))


def test_udp_listener_serves_both_members_without_loss(lab):
    topo = lab.topo
    # Octavia's minimum delay for UDP-CONNECT is 3 s.
    h.create_lb(lab, 'lb-udp', 'udp-l', 'udp-p', VIP4, protocol='UDP',
                port=5353,
                monitor=('udp-hm', '--delay', '3', '--timeout', '2',
                         '--max-retries', '1', '--type', 'UDP-CONNECT'),
                members={m.name: m.ipv4 for m in topo.members})

    h.wait_members(lab, 'udp-p', {m.name: 'ONLINE' for m in topo.members})
    lab.agents.wait_route(f'{VIP4}/32', h.se_names(lab), timeout=30)
    assert h.find(lab, 'listeners', 'udp-l')['protocol'] == 'UDP'

    # One flow per client source port: every flow answered, by one member.
    served = h.udp_flows_served(topo, VIP4, 5353, range(42000, 42012))
    assert set(served) == {m.name for m in topo.members}, served


def test_ipv6_vip_with_ipv6_members(lab):
    topo = lab.topo
    ses = h.se_names(lab)
    before = {m.name: h.decap_stats(lab, m.name) for m in topo.members}
    create_tcp_lb(lab, 'lb6', VIP6, pl.VIP6_SUBNET,
                  {m.name: m.ipv6 for m in topo.members}, pl.MEMBER6_SUBNET)

    lb = h.find(lab, 'loadbalancers', 'lb6')
    assert lb['vip_address'] == VIP6, lb
    h.wait_members(lab, 'lb6-p', {m.name: 'ONLINE' for m in topo.members})
    lab.agents.wait_route(f'{VIP6}/128', ses, timeout=30)

    served = h.http_served(topo, VIP6, range(43000, 43020))
    assert set(served) == {m.name for m in topo.members}, served
    for m in topo.members:
        after = h.decap_stats(lab, m.name)
        # IPv6 packets inside IPv6 (the members' family) tunnels.
        assert after['ip6ip'] > before[m.name]['ip6ip'], (m.name, after)
        assert after['gre'] == before[m.name]['gre'], (m.name, after)


def test_gre_flavor_encapsulates_in_gre(lab):
    topo = lab.topo
    for m in topo.members:
        topo.add_lo_addresses(m.name, [VIP_GRE])
        topo.start_http_server(m.name, binds=(VIP_GRE,))
    lab.openstack('loadbalancer', 'flavorprofile', 'create', '--name',
                  'gre-profile', '--provider', 'dsr', '--flavor-data',
                  '{"encapsulation": "gre"}')
    lab.openstack('loadbalancer', 'flavor', 'create', '--name', 'gre',
                  '--flavorprofile', 'gre-profile', '--enable')
    create_tcp_lb(lab, 'lb-gre', VIP_GRE, pl.VIP_SUBNET,
                  {m.name: m.ipv4 for m in topo.members}, pl.MEMBER_SUBNET,
                  '--flavor', 'gre')

    h.wait_members(lab, 'lb-gre-p', {m.name: 'ONLINE' for m in topo.members})
    lab.agents.wait_route(f'{VIP_GRE}/32', h.se_names(lab), timeout=30)
    for se in h.se_names(lab):
        encaps = {lst['encap'] for lst in lab.agents.show(se)['listeners']}
        assert 'gre' in encaps, (se, encaps)
    before = {m.name: h.decap_stats(lab, m.name) for m in topo.members}
    served = h.http_served(topo, VIP_GRE, range(44000, 44020))
    assert set(served) == {m.name for m in topo.members}, served
    for m in topo.members:
        after = h.decap_stats(lab, m.name)
        assert after['gre'] > before[m.name]['gre'], (m.name, after)
        # Nothing of this load balancer came in IPIP.
        assert after['ipip'] == before[m.name]['ipip'], (m.name, after)
