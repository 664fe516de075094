"""The product demo: `openstack loadbalancer create --provider dsr` to
packets, on this machine.

    make demo        (or: .venv/bin/python tools/demo.py)
    make demo DEMO=tier2   (tools/demo_tier2.py: L4 SEs in front of L7 SEs)

Brings up the local stack (real octavia-api and driver agent, dsr-controller,
two SEs with dsr-agent + ExaBGP, a BIRD router, two members, a client),
creates a load balancer through the `openstack` CLI, sends traffic from the
client, prints the member spread, the ECMP route at the router and
`openstack loadbalancer stats show`, and tears everything down.  To keep a
stack up and use the CLI by hand: `python -m tools.stack up` (README).
"""

import argparse
import os
import re
import secrets
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools.lab import netns  # noqa: E402
from tools.lab import product_lab as pl  # noqa: E402

VIP = netns.VIP4


def say(text):
    print(f'\n\033[1m== {text}\033[0m', flush=True)


def cli(lab, *args):
    print('$ openstack ' + ' '.join(shlex.quote(a) for a in args),
          flush=True)
    if 'show' in args or 'list' in args:
        args = args + ('-f', 'table')
    elif 'create' in args:
        args = args + ('-f', 'value')
    out = lab.openstack(*args, timeout=120)
    print(out.stdout.rstrip(), flush=True)
    return out.stdout


def main():
    netns.exit_on_sigterm()  # a SIGTERM still tears the lab down
    parser = argparse.ArgumentParser(prog='demo.py')
    parser.add_argument('--scenario', choices=['tier1', 'tier2'],
                        default='tier1',
                        help='tier1: L4 DSR to members (this file); tier2: '
                             'L4 SEs in front of L7 SEs (tools/demo_tier2.py)')
    if parser.parse_args().scenario == 'tier2':
        from tools import demo_tier2
        demo_tier2.run()
        return
    tier1()


def tier1():
    say('Bringing up: octavia-api + driver agent (provider dsr), '
        'dsr-controller, 2 SEs (dsr-agent, ExaBGP), BIRD router, 2 members, '
        'client')
    with netns.Topology(n_se=2, n_members=2) as topo:
        lab = pl.ProductLab(topo)
        # TCP-MD5 on every BGP session, a fresh key per run.
        lab.agents.bgp_md5_password = secrets.token_hex(20)
        try:
            lab.start()
            say('Create a load balancer with the openstack CLI')
            cli(lab, 'loadbalancer', 'create', '--name', 'demo-lb',
                '--provider', 'dsr', '--vip-subnet-id', pl.VIP_SUBNET,
                '--vip-address', VIP, '--wait', '-c', 'id', '-c',
                'provisioning_status')
            cli(lab, 'loadbalancer', 'listener', 'create', '--name', 'web',
                '--protocol', 'TCP', '--protocol-port', '80', '--wait',
                '-c', 'id', 'demo-lb')
            cli(lab, 'loadbalancer', 'pool', 'create', '--name', 'web-pool',
                '--listener', 'web', '--protocol', 'TCP', '--lb-algorithm',
                'SOURCE_IP_PORT', '--wait', '-c', 'id')
            for m in topo.members:
                cli(lab, 'loadbalancer', 'member', 'create', '--name',
                    m.name, '--address', m.ipv4, '--protocol-port', '80',
                    '--subnet-id', pl.MEMBER_SUBNET, '--wait', '-c', 'id',
                    'web-pool')
            cli(lab, 'loadbalancer', 'healthmonitor', 'create', '--delay',
                '2', '--timeout', '1', '--max-retries', '2', '--type', 'TCP',
                '--wait', '-c', 'id', 'web-pool')
            lab.agents.wait_route(f'{VIP}/32', [s.name for s in topo.ses],
                                  timeout=30)
            netns.wait_for(lambda: {m['operating_status'] for m in
                                    lab.openstack_json(
                                        'loadbalancer', 'member', 'list',
                                        'web-pool')} == {'ONLINE'},
                           30, 'members ONLINE')
            cli(lab, 'loadbalancer', 'member', 'list', 'web-pool', '-c',
                'name', '-c', 'address', '-c', 'provisioning_status', '-c',
                'operating_status')

            say(f'The router learned {VIP} by BGP from both SEs (ECMP)')
            print(topo.run('router', ['ip', 'route', 'show', VIP]).stdout)

            say(f'Client: 20 connections to http://{VIP}/')
            replies_at_ses = [topo.nft_counter(s.name, saddr=VIP)
                              for s in topo.ses]
            spread = {}
            for port in range(40000, 40020):
                body = topo.http_get(VIP, source_port=port)
                member = re.search(r'member=(\S+)', body).group(1)
                spread[member] = spread.get(member, 0) + 1
            for member, count in sorted(spread.items()):
                print(f'   {member}: {count} connections')
            crossed = sum(c.packets() for c in replies_at_ses)
            print(f'   replies seen on the SEs: {crossed} '
                  '(members answer the client directly)')

            say('Statistics reported by the SEs')
            netns.wait_for(lambda: lab.openstack_json(
                'loadbalancer', 'stats', 'show', 'demo-lb')[
                    'total_connections'] >= 20, 30, 'stats')
            cli(lab, 'loadbalancer', 'stats', 'show', 'demo-lb')

            say('Delete (cascade): the VIP is withdrawn at the router')
            cli(lab, 'loadbalancer', 'delete', '--cascade', '--wait',
                'demo-lb')
            lab.agents.wait_route(f'{VIP}/32', [], timeout=30)
            print(topo.run('router', ['ip', 'route', 'show', VIP]).stdout
                  or '   (no route)')
        finally:
            lab.close()
    say('Torn down: namespaces, processes, databases, vhost removed')


if __name__ == '__main__':
    main()
