"""The tier-2 demo: `openstack loadbalancer create --flavor tier2` to
packets, on this machine (issue 11).

    make demo DEMO=tier2
    (or: .venv/bin/python tools/demo.py --scenario tier2)

Brings up the local stack with two L4 SEs (dsr-agent, XDP, ExaBGP), two
L7 SEs (dsr-agent with role tier2: HAProxy, SNAT) and two plain HTTP
servers with no DSR configuration; creates a tier-2 flavor, a load
balancer with an HTTP listener, two pools and an L7 policy sending /api
to the second through the `openstack` CLI; sends requests; then captures
one request with tcpdump on every link it crosses and prints the packet
path:

    client -> router -> L4 SE -> IPIP -> L7 SE -> (SNAT) server
    client <- router <------------------ L7 SE <- server

and tears everything down.
"""

import collections
import json
import re

from tools import demo
from tools.lab import capture
from tools.lab import l7_ses
from tools.lab import netns
from tools.lab import product_lab as pl

VIP = netns.VIP4
L7, SERVERS = ('m1', 'm2'), ('m3', 'm4')
WEB_PORT, API_PORT = 8080, 8081
CAPTURED_PORT = 45000
_OPTIONS = re.compile(r', options \[[^\]]*\]')  # TCP options: noise here


def get(topo, path, source_port):
    """GET path from the client; (status, X-Member header)."""
    out = topo.run('client', [*netns.SCRIPT_PYTHON, '-c', (
        'import http.client,json,socket,sys;'
        'c=http.client.HTTPConnection(sys.argv[1],80,timeout=10,'
        'source_address=("",int(sys.argv[3])));'
        'c.request("GET",sys.argv[2]);r=c.getresponse();r.read();c.close();'
        'print(json.dumps([r.status,r.getheader("X-Member")]))'),
        VIP, path, str(source_port)]).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))


def create(lab):
    cli = demo.cli
    demo.say(f'A tier-2 flavor: the L4 SEs\' group (the provider\'s '
             f'default, {lab.agents.se_group}), the L7 SEs\' group '
             f'{lab.l7.group}')
    cli(lab, 'loadbalancer', 'flavorprofile', 'create', '--name', 'tier2',
        '--provider', 'dsr', '--flavor-data',
        json.dumps({'tier': 2, 'l7_se_group': lab.l7.group}), '-c', 'id')
    cli(lab, 'loadbalancer', 'flavor', 'create', '--name', 'tier2',
        '--flavorprofile', 'tier2', '--enable', '-c', 'id')
    demo.say('Load balancer, HTTP listener, two pools, an L7 policy')
    cli(lab, 'loadbalancer', 'create', '--name', 'demo-t2', '--provider',
        'dsr', '--flavor', 'tier2', '--vip-subnet-id', pl.VIP_SUBNET,
        '--vip-address', VIP, '--wait', '-c', 'id', '-c',
        'provisioning_status')
    cli(lab, 'loadbalancer', 'listener', 'create', '--name', 'web',
        '--protocol', 'HTTP', '--protocol-port', '80', '--wait', '-c', 'id',
        'demo-t2')
    cli(lab, 'loadbalancer', 'pool', 'create', '--name', 'p-web',
        '--listener', 'web', '--protocol', 'HTTP', '--lb-algorithm',
        'ROUND_ROBIN', '--wait', '-c', 'id')
    cli(lab, 'loadbalancer', 'pool', 'create', '--name', 'p-api',
        '--loadbalancer', 'demo-t2', '--protocol', 'HTTP', '--lb-algorithm',
        'ROUND_ROBIN', '--wait', '-c', 'id')
    members = [(s, lab.topo.host(s).ipv4, WEB_PORT, 'p-web')
               for s in SERVERS]
    members.append(('api', lab.topo.host('m4').ipv4, API_PORT, 'p-api'))
    for name, address, port, pool in members:
        cli(lab, 'loadbalancer', 'member', 'create', '--name', name,
            '--address', address, '--protocol-port', str(port),
            '--subnet-id', pl.MEMBER_SUBNET, '--wait', '-c', 'id', pool)
    cli(lab, 'loadbalancer', 'l7policy', 'create', '--name', 'to-api',
        '--action', 'REDIRECT_TO_POOL', '--redirect-pool', 'p-api', '--wait',
        '-c', 'id', 'web')
    cli(lab, 'loadbalancer', 'l7rule', 'create', '--type', 'PATH',
        '--compare-type', 'STARTS_WITH', '--value', '/api', '--wait', '-c',
        'id', 'to-api')


def wait_rings(lab):
    """Every L4 SE steers the VIP's port 80 to both L7 SEs."""
    want = {lab.topo.host(n).ipv4 for n in L7}

    def ring(se):
        return {m['address'] for lst in lab.agents.show(se)['listeners']
                if lst.get('port') == 80 for m in lst['members']}
    netns.wait_for(lambda: all(ring(s.name) == want for s in lab.topo.ses),
                   60, 'both L7 SEs in every L4 SE\'s ring', interval=0.2)
    lab.agents.wait_route(f'{VIP}/32', [s.name for s in lab.topo.ses],
                          timeout=30)


def captures(topo):
    caps = capture.Captures(topo)
    port = f'tcp port {CAPTURED_PORT}'
    caps.add('client eth0', 'client', 'eth0', port)
    for se in topo.ses:
        caps.add(f'L4 SE {se.name} (router side of its link)', 'router',
                 se.router_ifname, f'{port} or ip proto 4')
    for name in L7:
        caps.add(f'L7 SE {name} eth0', name, 'eth0',
                 f'{port} or ip proto 4 or tcp port {WEB_PORT} or '
                 f'tcp port {API_PORT}')
    for name in SERVERS:
        caps.add(f'server {name} eth0', name, 'eth0',
                 f'tcp port {WEB_PORT} or tcp port {API_PORT}')
    return caps


def closes(lines):
    """FINs and RSTs: HAProxy may close its side either way."""
    return sum('Flags [F' in ln or 'Flags [R' in ln for ln in lines)


def answered(lines):
    """A server's capture holds a reply carrying data: the request went
    through.  Not two FINs: HAProxy may reset its server connection
    instead of closing it, or keep it alive."""
    return any(re.match(rf'^IP \S+\.({WEB_PORT}|{API_PORT}) > ', ln)
               and not ln.endswith(' length 0') for ln in lines)


def show_path(topo):
    """One request captured on every link; the captured lines and a
    summary of who carried what."""
    caps = captures(topo)
    with caps:
        status, member = get(topo, '/', CAPTURED_PORT)
        # Both sides closed at the client and the answer at a server:
        # the whole exchange went by every capture.
        caps.wait(lambda seen: closes(seen['client eth0']) >= 2 and any(
            answered(seen[f'server {s} eth0']) for s in SERVERS), 60,
            'the captured request to finish on every link')
    print(f'   GET / from client port {CAPTURED_PORT}: {status} from '
          f'{member}')
    for label, lines in caps.lines.items():
        if lines:
            print(f'   -- {label}: {len(lines)} packets')
            for ln in lines:
                print('      ' + _OPTIONS.sub('', ln))
    client = topo.client.ipv4
    to_vip = re.compile(rf'^IP {re.escape(client)}\.{CAPTURED_PORT} > '
                        rf'{re.escape(VIP)}\.80:')
    from_vip = re.compile(rf'IP {re.escape(VIP)}\.80 > ')
    tunnel = re.compile(r'^IP (\S+) > (\S+): IP ' + re.escape(client))
    summary = []
    l4_replies = 0
    for se in topo.ses:
        lines = caps.lines[f'L4 SE {se.name} (router side of its link)']
        tunnelled = collections.Counter(
            m.groups() for m in map(tunnel.match, lines) if m)
        l4_replies += sum(bool(from_vip.search(ln)) for ln in lines)
        if lines:
            inbound = sum(bool(to_vip.match(ln)) for ln in lines)
            summary.append(
                f'L4 SE {se.name}: {inbound} client->VIP packets in, IPIP '
                f'out: ' + ', '.join(
                    f'{n} {s} > {d}' for (s, d), n in tunnelled.items()))
    for name in L7:
        lines = caps.lines[f'L7 SE {name} eth0']
        if not lines:
            continue
        addr = topo.host(name).ipv4
        snat = sum(bool(re.match(rf'^IP {re.escape(addr)}\.\d+ > '
                                 r'\S+\.(8080|8081):', ln)) for ln in lines)
        replies = sum(bool(re.match(rf'^IP {re.escape(VIP)}\.80 > '
                                    rf'{re.escape(client)}\.', ln))
                      for ln in lines)
        summary.append(f'L7 SE {name}: {snat} packets to the server from '
                       f'{addr} (SNAT), {replies} replies VIP->client')
    summary.append(f'replies through the L4 SEs: {l4_replies}')
    demo.say('The packet path, from the captures')
    for line in summary:
        print(f'   {line}')


def run():
    demo.say('Bringing up: octavia-api + driver agent, dsr-controller, '
             '2 L4 SEs (dsr-agent, XDP, ExaBGP), 2 L7 SEs (dsr-agent role '
             'tier2, HAProxy), BIRD router, 2 plain HTTP servers, client')
    with netns.Topology(n_se=2, n_members=4) as topo:
        lab = pl.ProductLab(topo, plain_members=L7 + SERVERS)
        lab.l7 = l7_ses.L7SEs(lab, L7)
        try:
            lab.start()
            lab.l7.start()
            for name in SERVERS:
                l7_ses.start_plain_server(topo, name, WEB_PORT)
            l7_ses.start_plain_server(topo, 'm4', API_PORT, 'api')
            create(lab)
            wait_rings(lab)
            demo.cli(lab, 'loadbalancer', 'l7policy', 'list', '-c', 'name',
                     '-c', 'action', '-c', 'provisioning_status')

            demo.say(f'Client: 12 requests to http://{VIP}/ and 2 to '
                     f'http://{VIP}/api/items')
            spread = collections.Counter(
                get(topo, '/', port)[1] for port in range(44000, 44012))
            for member, count in sorted(spread.items()):
                print(f'   GET /: {count} answered by {member}')
            for port in (44100, 44101):
                status, member = get(topo, '/api/items', port)
                print(f'   GET /api/items: {status} answered by {member} '
                      '(the L7 policy\'s pool)')

            demo.say('One request captured with tcpdump on every link')
            show_path(topo)

            demo.say('Delete (cascade)')
            demo.cli(lab, 'loadbalancer', 'delete', '--cascade', '--wait',
                     'demo-t2')
        finally:
            lab.l7.close()
            lab.close()
    demo.say('Torn down: namespaces, processes, databases, vhost removed')
