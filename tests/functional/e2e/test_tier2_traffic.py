"""Tier 2, the whole path through the real product: octavia-api and the
`openstack` CLI, the driver agent, dsr-controller on MariaDB, two L4 SE
agents (XDP, BGP to BIRD) and two L7 SE agents (dsr-agent role tier2 in
their own namespaces, tools/lab/l7_ses.py) in front of plain HTTP servers
with no DSR configuration.

    client -- router -- se1, se2     L4 SEs: VIP -> Maglev -> IPIP
                   |---- m1, m2      L7 SEs (HAProxy, SNAT)
                   |---- m3, m4      servers :8080 (m4 also "api" :8081)

The L7 agents start before any tier-2 load balancer names their group
(they get the empty document).  Then: requests through the VIP, round
robin over both servers, SNAT seen by the servers, /api to the second
pool, every object ACTIVE/ONLINE in Octavia; one L7 SE stopped (SIGTERM:
it drains) under a request loop loses no request and leaves the L4 SEs'
rings (weight 0) within 2 s, then leaves them altogether.  Last, a UDP
listener through the same L7 SEs (nftables there), in front of UDP echo
servers on the same hosts.
"""

import collections
import json
import os
import signal
import threading
import time
import urllib.request

import pytest

from tests.functional.amphora_agent.l7.test_tier2_path import \
    get_with_member_header
from tests.functional.e2e import helpers as h
from tools.lab import l7_ses
from tools.lab import netns
from tools.lab import product_lab as pl
from tools.lab import traffic_loop

VIP = netns.VIP4
L7, SERVERS = ('m1', 'm2'), ('m3', 'm4')
WEB_PORT, API_PORT = 8080, 8081
RING_BOUND = 2.0      # issue 11: L7 SE join/leave in the L4 rings


@pytest.fixture(scope='module')
def lab():
    with h.tier2_product(L7, SERVERS, WEB_PORT) as lab:
        l7_ses.start_plain_server(lab.topo, 'm4', API_PORT, 'api')
        yield lab


def ring(lab, se, port=80, protocol='tcp'):
    """{member address: weight} of the L4 listener on `port` as the L4
    SE's dataplane runs it (dsrctl show)."""
    members = {}
    for lst in lab.agents.show(se)['listeners']:
        if lst.get('port') == port and lst.get('protocol') == protocol:
            members.update({m['address']: m['weight']
                            for m in lst['members']})
    return members


def rings(lab, port=80, protocol='tcp'):
    return {se: ring(lab, se, port, protocol) for se in h.se_names(lab)}


def wait_rings(lab, expected, timeout, what, port=80, protocol='tcp'):
    last = {}

    def ok():
        last.clear()
        last.update(rings(lab, port, protocol))
        return all(r == expected for r in last.values())
    try:
        netns.wait_for(ok, timeout, what, interval=0.05)
    except TimeoutError as exc:
        raise AssertionError(f'{exc}; rings: {last}') from None


def seen_in_every_ring(lab, expected, timeout, what):
    """Poll each L4 SE's ring in a thread of its own until it is
    `expected`; {SE: wall time of the read that first showed it} -- an
    upper bound of when each SE programmed it, not inflated by reading the
    other SEs in turn."""
    seen, errors = {}, []

    def poll(se):
        try:
            netns.wait_for(lambda: ring(lab, se) == expected, timeout,
                           f'{what} on {se}', interval=0.02)
            seen[se] = time.time()
        except Exception as exc:  # noqa: BLE001 -- raised below
            errors.append(exc)
    threads = [threading.Thread(target=poll, args=(se,))
               for se in h.se_names(lab)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise AssertionError(f'{errors}; rings: {rings(lab)}')
    return seen


def test_tier2_traffic_through_the_product(lab):
    topo = lab.topo
    addr = {n: topo.host(n).ipv4 for n in L7 + SERVERS}
    # 1. The L7 agents, started before any tier-2 load balancer named
    # their group, applied its (empty) document and reported no error.

    def l7_states():
        out = lab.mysql(f'SELECT se_id, applied_generation, '
                        f'rejected_generation, error FROM '
                        f'{lab.controller_db}.agent_states WHERE se_group '
                        f"= '{lab.l7.group}'")
        assert out.returncode == 0, out.stderr
        return sorted(tuple(line.split('\t'))
                      for line in out.stdout.splitlines()[1:])
    netns.wait_for(lambda: l7_states() == [
        (lab.l7.se_id(n), '0', 'NULL', 'NULL') for n in L7], 30,
        'both L7 agents applying the empty document, nothing rejected')

    # 2. A tier-2 load balancer through the CLI.
    h.tier2_flavor(lab)
    h.act(lab, 'create', '--name', 'lb', '--provider', 'dsr', '--flavor',
          'tier2', '--vip-subnet-id', pl.VIP_SUBNET, '--vip-address', VIP,
          timeout=60)
    h.act(lab, 'listener', 'create', '--name', 'web', '--protocol', 'HTTP',
          '--protocol-port', '80', 'lb', timeout=60)
    h.http_pool(lab, 'p-web', ('--listener', 'web'), WEB_PORT,
                {name: addr[name] for name in SERVERS})
    h.http_pool(lab, 'p-api', ('--loadbalancer', 'lb'), API_PORT,
                {'api': addr['m4']})
    h.act(lab, 'l7policy', 'create', '--name', 'to-api', '--action',
          'REDIRECT_TO_POOL', '--redirect-pool', 'p-api', 'web')
    h.act(lab, 'l7rule', 'create', '--type', 'PATH', '--compare-type',
          'STARTS_WITH', '--value', '/api', 'to-api')

    # 3. Both L7 SEs in every L4 SE's ring.
    wait_rings(lab, {addr[n]: 1 for n in L7}, 30, 'both L7 SEs in the rings')

    # 4. Traffic: round robin over both servers; the servers see only the
    # L7 SEs' addresses (SNAT), both of them, never the client.
    at_server = {(srv, src): topo.nft_counter(srv, saddr=src)
                 for srv in SERVERS
                 for src in (addr['m1'], addr['m2'], topo.client.ipv4)}
    served = collections.Counter(h.member_of(topo.http_get(
        VIP, source_port=port)) for port in range(40000, 40024))
    assert set(served) == set(SERVERS), served
    for srv in SERVERS:
        assert at_server[(srv, topo.client.ipv4)].packets() == 0, srv
    for l7se in L7:
        assert sum(at_server[(srv, addr[l7se])].packets()
                   for srv in SERVERS) > 0, l7se
    # The L7 policy: /api reaches the second pool (its server answers 404
    # for the path, naming itself); other paths the first.
    assert get_with_member_header(topo, '/api/v1/items') == (404, 'api')
    assert get_with_member_header(topo, '/other')[1] in SERVERS

    # 5. Every object ACTIVE and ONLINE in Octavia (members ONLINE by the
    # L7 SEs' HTTP health checks).
    h.wait_all_online(lab)

    # 6. One L7 SE stops (SIGTERM: draining, then it leaves its group)
    # under a request loop: no request fails, the established upload
    # completes, the L4 rings stop sending it new flows within 2 s.
    loop = topo.spawn('client', [*netns.SCRIPT_PYTHON, traffic_loop.__file__,
                                 VIP, '80'], ready=r'^STARTED',
                      ready_timeout=15)
    try:
        netns.wait_for(lambda: 'MEMBER m3' in loop.output() and
                       'MEMBER m4' in loop.output(), 20,
                       'the loop served by both servers')
        timeline = h.RingTimeline(lab)
        t0, stopped = time.monotonic(), time.time()
        proc = lab.l7.stop_agent('m2')
        seen = seen_in_every_ring(lab, {addr['m1']: 1, addr['m2']: 0}, 10,
                                  'm2 at weight 0')
        # The upload ends while m2 drains (it may run through m2, which
        # then waits for it before leaving: [l7] drain_timeout).
        os.killpg(loop.pid, signal.SIGUSR1)
        assert proc.wait(timeout=60) == 0, proc.output_tail()
        wait_rings(lab, {addr['m1']: 1}, 10, 'm2 out of every ring')
        left = time.monotonic() - t0
        # Requests go on after it left (through m1 alone), the loop's too.
        served = h.http_served(topo, VIP, range(41000, 41006))
        assert set(served) <= set(SERVERS), served
    finally:
        os.killpg(loop.pid, signal.SIGTERM)
        rc, out = loop.wait_output(90)
        netns.kill_proc(loop)
    assert rc == 0, out[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    m2_id = lab.l7.se_id('m2')
    _, drained, how = timeline.change(
        stopped, seen, lambda _ready, draining: m2_id in draining,
        'rings_written')
    print(f'\nL7 SE m2 SIGTERM -> weight 0 in both L4 rings: '
          f'{drained:.2f} s ({how}), out of them: {left:.2f} s; loop: '
          f'{result["new"]["ok"]} ok, {result["new"]["failed"]} failed')
    assert result['new']['failed'] == 0, result['new']
    assert result['established']['ok'], result['established']
    assert drained <= RING_BOUND, drained
    # Octavia: still served (m1), nothing left pending.
    assert h.find(lab, 'loadbalancers', 'lb')['operating_status'] == 'ONLINE'
    assert h.not_active(lab) == []
    # Round robin over both servers through m1 alone -- with the loop
    # stopped: its requests (one every 0.05 s) share m1's backend with
    # these and can take every other turn (rehearsal 19: 12 of 12 here on
    # m4), and once m1's health checks hold both servers ONLINE.
    h.wait_all_online(lab)
    served = h.http_served(topo, VIP, range(41006, 41018))
    assert set(served) == set(SERVERS), served


UDP_VIP, UDP_PORT, UDP_SERVER_PORT = '192.0.2.20', 53, 5353


def test_tier2_udp_through_the_product(lab):
    """A tier-2 UDP listener through the CLI, the controller and the L7
    agents (nftables DNAT/SNAT on the L7 SEs, amphora_agent/l7/udp.py):
    every flow answered by one server, both servers used, the servers see
    only the L7 SEs, the listener's statistics reach Octavia, and the
    UDP-CONNECT monitor takes a server that stopped answering out (ERROR,
    new flows to the other).  Runs after the test above
    (its first step needs the L7 group's empty document), with the L7 SEs
    whose agents still run."""
    topo = lab.topo
    live = sorted(lab.l7.procs)
    addr = {n: topo.host(n).ipv4 for n in L7 + SERVERS}
    echo = {name: topo.spawn(name, [
        *netns.SCRIPT_PYTHON, netns.SERVERS_DIR / 'udp_echo.py', '--name',
        name, '--port', UDP_SERVER_PORT, '--bind', addr[name]],
        ready=r'^READY') for name in SERVERS}
    if not any(f['name'] == 'tier2'
               for f in h.api(lab, 'flavors')['flavors']):
        h.tier2_flavor(lab)
    # Octavia's minimum delay for UDP-CONNECT is 3 s.
    h.create_lb(lab, 'lb-udp', 'dns', 'p-dns', UDP_VIP, '--flavor', 'tier2',
                protocol='UDP', port=UDP_PORT,
                monitor=('hm-dns', '--delay', '3', '--timeout', '2',
                         '--max-retries', '1', '--type', 'UDP-CONNECT'))
    h.act(lab, 'pool', 'set', '--lb-algorithm', 'ROUND_ROBIN', 'p-dns')
    for name in SERVERS:
        h.act(lab, *h.member_args(name, addr[name], 'p-dns',
                                  UDP_SERVER_PORT))
    h.wait_members(lab, 'p-dns', {n: 'ONLINE' for n in SERVERS})
    # The L4 SEs send the UDP listener's flows to the live L7 SEs.
    wait_rings(lab, {addr[n]: 1 for n in live}, 30,
               'the L7 SEs in the UDP rings', UDP_PORT, 'udp')

    at_server = {(srv, src): topo.nft_counter(srv, saddr=src)
                 for srv in SERVERS
                 for src in (*(addr[n] for n in live), topo.client.ipv4)}
    served = h.udp_flows_served(topo, UDP_VIP, UDP_PORT,
                                range(43000, 43012))
    assert set(served) == set(SERVERS), served
    for srv in SERVERS:
        assert at_server[(srv, topo.client.ipv4)].packets() == 0, srv
    assert sum(at_server[(srv, addr[n])].packets()
               for srv in SERVERS for n in live) > 0

    # The L7 SEs' UDP counters reach Octavia's listener statistics.
    listener_id = h.find(lab, 'listeners', 'dns')['id']
    last = {}

    def counted():
        last.update(h.api(lab, f'listeners/{listener_id}/stats')['stats'])
        return last['bytes_in'] > 0 and last['bytes_out'] > 0
    try:
        netns.wait_for(counted, 30, 'UDP listener statistics in Octavia')
    except TimeoutError as exc:
        raise AssertionError(f'{exc}; last: {last}') from None
    assert h.find(lab, 'loadbalancers', 'lb-udp')['operating_status'] == \
        'ONLINE'

    # The monitor is the L7 SEs' own: a server that stops answering goes
    # ERROR (UDP-CONNECT: port unreachable) and new flows go to the other.
    netns.kill_proc(echo['m4'])
    h.wait_members(lab, 'p-dns', {'m3': 'ONLINE', 'm4': 'ERROR'})
    served = h.udp_flows_served(topo, UDP_VIP, UDP_PORT,
                                range(43100, 43106))
    assert set(served) == {'m3'}, served
    h.act(lab, 'delete', '--cascade', 'lb-udp', timeout=60)


BLOCKED_VIP, BLOCKED_PORT = '192.0.2.21', 8088
# A TCP socket bound to the port on every address, not listening: HAProxy
# cannot bind the VIP's port there (EADDRINUSE) and a connection to it is
# refused.
PORT_TAKER = ('import socket, sys, time\n'
              's = socket.socket()\n'
              's.bind(("0.0.0.0", int(sys.argv[1])))\n'
              'print("READY", flush=True)\n'
              'time.sleep(3600)\n')


def post(lab, path, body):
    req = urllib.request.Request(
        f'{lab.stack.api_url}/v2/lbaas/{path}', method='POST',
        data=json.dumps(body).encode(),
        headers={'Content-Type': 'application/json',
                 'Accept': 'application/json'})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def test_an_l7_se_that_fails_a_load_balancer_leaves_its_l4_pools(lab):
    """One L7 SE cannot run a load balancer (its port is taken there):
    the load balancer is ERROR, naming that SE, and the L4 SEs send its
    connections to the other L7 SE only -- not 1/N of them to an SE that
    refuses them -- while the L7 SE stays in the other load balancers'
    pools.  Runs after the tests above (m2's agent stopped by the first)."""
    topo = lab.topo
    addr = {n: topo.host(n).ipv4 for n in L7 + SERVERS}
    if 'm2' not in lab.l7.procs:
        lab.l7.start_agent('m2')
    taker = topo.spawn('m1', [*netns.SCRIPT_PYTHON, '-c', PORT_TAKER,
                              str(BLOCKED_PORT)], ready=r'^READY')
    try:
        flavor = next(f['id'] for f in h.api(lab, 'flavors')['flavors']
                      if f['name'] == 'tier2')
        # One call: an ERROR load balancer takes no further change.
        post(lab, 'loadbalancers', {'loadbalancer': {
            'name': 'lb-blocked', 'provider': 'dsr', 'flavor_id': flavor,
            'vip_subnet_id': pl.VIP_SUBNET, 'vip_address': BLOCKED_VIP,
            'listeners': [{
                'name': 'blocked', 'protocol': 'HTTP',
                'protocol_port': BLOCKED_PORT,
                'default_pool': {
                    'name': 'p-blocked', 'protocol': 'HTTP',
                    'lb_algorithm': 'ROUND_ROBIN',
                    'members': [{'name': n, 'address': addr[n],
                                 'protocol_port': WEB_PORT,
                                 'subnet_id': pl.MEMBER_SUBNET}
                                for n in SERVERS]}}]}})
        last = {}

        def errored():
            last.update(h.find(lab, 'loadbalancers', 'lb-blocked'))
            return last['provisioning_status'] == 'ERROR'
        netns.wait_for(errored, 60, 'lb-blocked ERROR (m1 cannot bind)')
        # The L4 rings of its listener hold m2 alone; the web listener's
        # (lb) still both L7 SEs.
        wait_rings(lab, {addr['m2']: 1}, 30, 'm1 out of lb-blocked\'s rings',
                   port=BLOCKED_PORT)
        wait_rings(lab, {addr[n]: 1 for n in L7}, 30,
                   'both L7 SEs in lb\'s rings')
        # Every connection served, none refused by m1.
        served = collections.Counter(
            h.member_of(topo.http_get(BLOCKED_VIP, port=BLOCKED_PORT,
                                      source_port=port))
            for port in range(44000, 44016))
        assert set(served) <= set(SERVERS) and sum(served.values()) == 16, \
            served
    finally:
        netns.kill_proc(taker)
        if any(lb['name'] == 'lb-blocked'
               for lb in h.api(lab, 'loadbalancers')['loadbalancers']):
            lab.openstack('loadbalancer', 'delete', '--cascade',
                          'lb-blocked')
    netns.wait_for(lambda: not any(
        lb['name'] == 'lb-blocked'
        for lb in h.api(lab, 'loadbalancers')['loadbalancers']), 60,
        'lb-blocked deleted')
