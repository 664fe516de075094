"""`openstack loadbalancer ... --provider dsr` to packets: a real
octavia-api, octavia-driver-agent, dsr-controller and dsr-agents, BIRD as
the router, real TCP from the client."""

import re

from tools.lab import netns
from tools.lab import product_lab as pl

VIP4 = netns.VIP4


def member_of(body):
    return re.search(r'member=(\S+)', body).group(1)


def test_create_tcp_load_balancer_and_serve_with_dsr(make_product):
    lab = make_product()
    topo = lab.topo
    lb = lab.openstack_json(
        'loadbalancer', 'create', '--name', 'lb1', '--provider', 'dsr',
        '--vip-subnet-id', pl.VIP_SUBNET, '--vip-address', VIP4, '--wait')
    assert lb.get('provisioning_status') == 'ACTIVE', lb
    lab.openstack('loadbalancer', 'listener', 'create', '--name', 'l1',
                  '--protocol', 'TCP', '--protocol-port', '80', '--wait',
                  'lb1')
    lab.openstack('loadbalancer', 'pool', 'create', '--name', 'p1',
                  '--listener', 'l1', '--protocol', 'TCP',
                  '--lb-algorithm', 'SOURCE_IP_PORT', '--wait')
    for m in topo.members:
        lab.openstack('loadbalancer', 'member', 'create', '--name', m.name,
                      '--address', m.ipv4, '--protocol-port', '80',
                      '--subnet-id', pl.MEMBER_SUBNET, '--wait', 'p1')
    lab.openstack('loadbalancer', 'healthmonitor', 'create', '--name',
                  'hm1', '--delay', '1', '--timeout', '1', '--max-retries',
                  '1', '--type', 'TCP', '--wait', 'p1')

    lab.agents.wait_route(f'{VIP4}/32', [s.name for s in topo.ses],
                          timeout=30)
    netns.wait_for(lambda: {m['operating_status'] for m in lab.openstack_json(
        'loadbalancer', 'member', 'list', 'p1')} == {'ONLINE'}, 30,
        'members ONLINE in Octavia')
    for kind, name in (('loadbalancer', 'lb1'),
                       ('loadbalancer listener', 'l1'),
                       ('loadbalancer pool', 'p1'),
                       ('loadbalancer healthmonitor', 'hm1')):
        shown = lab.openstack_json(*kind.split(), 'show', name)
        assert shown['provisioning_status'] == 'ACTIVE', shown
    assert lab.openstack_json('loadbalancer', 'show', 'lb1')[
        'operating_status'] == 'ONLINE'

    replies_at_ses = [topo.nft_counter(se.name, saddr=VIP4)
                      for se in topo.ses]
    served = {member_of(topo.http_get(VIP4, source_port=p))
              for p in range(40000, 40020)}
    assert served == {m.name for m in topo.members}
    assert all(c.packets() == 0 for c in replies_at_ses)

    netns.wait_for(lambda: lab.openstack_json(
        'loadbalancer', 'stats', 'show', 'lb1')['total_connections'] >= 20,
        30, 'stats show reports the traffic')
    stats = lab.openstack_json('loadbalancer', 'stats', 'show', 'lb1')
    assert stats['bytes_in'] > 0 and stats['bytes_out'] == 0, stats
