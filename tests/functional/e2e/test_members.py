"""Members change under a live TCP load balancer, through the `openstack`
CLI: a failing health check, admin-down and delete each take a member out
(Octavia shows why) and no new flow reaches it while the other serves."""

from tests.functional.e2e import helpers as h
from tools.lab import netns

VIP4 = netns.VIP4


def block_http(topo, member):
    """The member's application stops answering on port 80."""
    for rule in (['add', 'table', 'inet', 'hmtest'],
                 ['add', 'chain', 'inet', 'hmtest', 'in',
                  '{ type filter hook input priority 0; }'],
                 ['add', 'rule', 'inet', 'hmtest', 'in', 'tcp', 'dport',
                  '80', 'reject', 'with', 'tcp', 'reset']):
        topo.run(member, ['nft'] + rule)


def unblock_http(topo, member):
    topo.run(member, ['nft', 'delete', 'table', 'inet', 'hmtest'])


def only_other_serves(lab, gone, ports):
    """New flows (one per client source port) all go to members other than
    `gone`, and not one tunnelled packet reaches `gone`."""
    before = h.tunnelled(lab, gone)
    served = h.http_served(lab.topo, VIP4, ports)
    assert gone not in served and served, served
    assert h.tunnelled(lab, gone) == before, f'new flows reached {gone}'
    return served


def wait_serving(lab, member, base_port):
    """Wait until new flows reach `member` again."""
    attempt = [base_port]

    def ok():
        attempt[0] += 20
        return member in h.http_served(lab.topo, VIP4,
                                       range(attempt[0], attempt[0] + 20))
    netns.wait_for(ok, 15, f'{member} serving new flows', interval=0.2)


def test_member_health_failure_admin_down_and_delete(make_product):
    lab = make_product(n_se=2, n_members=2)
    topo = lab.topo
    ses = h.se_names(lab)
    h.create_lb(lab, 'lb1', 'l1', 'p1', VIP4,
                monitor=('hm1', '--delay', '1', '--timeout', '1',
                         '--max-retries', '1', '--max-retries-down', '1',
                         '--type', 'TCP'),
                members={m.name: m.ipv4 for m in topo.members})
    h.wait_members(lab, 'p1', {'m1': 'ONLINE', 'm2': 'ONLINE'})
    lab.agents.wait_route(f'{VIP4}/32', ses, timeout=30)
    assert set(h.http_served(topo, VIP4, range(40000, 40020))) == {'m1',
                                                                   'm2'}

    # 1. m1's application fails its health check: ERROR, out of the rings.
    block_http(topo, 'm1')
    h.wait_members(lab, 'p1', {'m1': 'ERROR', 'm2': 'ONLINE'})
    pool = lab.openstack_json('loadbalancer', 'pool', 'show', 'p1')
    assert pool['operating_status'] == 'DEGRADED', pool
    only_other_serves(lab, 'm1', range(40100, 40120))
    unblock_http(topo, 'm1')
    h.wait_members(lab, 'p1', {'m1': 'ONLINE', 'm2': 'ONLINE'})
    wait_serving(lab, 'm1', 40200)

    # 2. Admin-down: OFFLINE, no new flow.
    h.act(lab, 'member', 'set', '--disable', 'p1', 'm1')
    h.wait_members(lab, 'p1', {'m1': 'OFFLINE', 'm2': 'ONLINE'})
    only_other_serves(lab, 'm1', range(40600, 40620))
    h.act(lab, 'member', 'set', '--enable', 'p1', 'm1')
    h.wait_members(lab, 'p1', {'m1': 'ONLINE', 'm2': 'ONLINE'})
    wait_serving(lab, 'm1', 40700)

    # 3. Delete: gone from Octavia and from every SE's dataplane.
    h.act(lab, 'member', 'delete', 'p1', 'm1')
    h.wait_members(lab, 'p1', {'m2': 'ONLINE'})
    for se in ses:
        netns.wait_for(lambda: [m['address'] for m in lab.agents.show(se)[
            'listeners'][0]['members']] == [topo.host('m2').ipv4], 10,
            f'only m2 in the dataplane of {se}')
    only_other_serves(lab, 'm1', range(41100, 41120))
    assert h.not_active(lab) == []
