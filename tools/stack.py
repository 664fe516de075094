"""The whole product on this machine, for trying it by hand.

    .venv/bin/python -m tools.stack up [--ses 2] [--members 2] [--tier2]
    . /run/octavia-dsr-stack/openrc && openstack loadbalancer list
    .venv/bin/python -m tools.stack down

`up` brings up a real octavia-api (noauth, noop compute/network/amphora
drivers, provider `dsr` enabled and default) and octavia-driver-agent on a
private MariaDB database, a dsr-controller, RabbitMQ/Redis (started if they
are not running), and in network namespaces a BIRD router, the SEs (each
with dsr-agent and ExaBGP), members running HTTP (port 80) and UDP echo
(port 5353) servers, and a client.  It returns once everything answers; a
keeper process holds the stack until `down`.

With --tier2, m1 and m2 are L7 SEs instead (dsr-agent with role tier2 in
the L7 SE group <L4 group>-l7, tools/lab/l7_ses.py) and the other members
(at least two) plain HTTP servers on port 8080 with no DSR configuration:
create a tier-2 flavor and load balancer by hand (README, docs/tier2.md).
"""

import argparse
import json
import os
import secrets
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

STATE_DIR = '/run/octavia-dsr-stack'
STATE = os.path.join(STATE_DIR, 'state.json')


TIER2_L7_SES = ('m1', 'm2')
TIER2_SERVER_PORT = 8080


def describe(lab):
    topo = lab.topo
    from tools.lab import product_lab as pl
    info = {
        'keeper_pid': os.getpid(),
        'openrc': os.path.join(STATE_DIR, 'openrc'),
        'api_url': lab.stack.api_url,
        'namespaces': {h: topo.ns(h) for h in
                       ['client', 'router'] + [s.name for s in topo.ses]
                       + [m.name for m in topo.members]},
        'members': {m.name: {'ipv4': m.ipv4, 'ipv6': m.ipv6}
                    for m in topo.members},
        'vip_subnets': {'ipv4': pl.VIP_SUBNET, 'ipv6': pl.VIP6_SUBNET},
        'member_subnets': {'ipv4': pl.MEMBER_SUBNET,
                           'ipv6': pl.MEMBER6_SUBNET},
        'vips_served_by_members': ['192.0.2.10', '2001:db8:f::10'],
    }
    if getattr(lab, 'l7', None) is not None:
        info.pop('vips_served_by_members')
        info['l4_se_group'] = lab.agents.se_group
        info['l7_se_group'] = lab.l7.group
        info['l7_ses'] = {n: topo.host(n).ipv4 for n in lab.l7.names}
        info['plain_http_servers'] = {
            m.name: f'{m.ipv4}:{TIER2_SERVER_PORT}' for m in topo.members
            if m.name not in lab.l7.names}
    return info


def keeper(args, ready_fd):
    """Build the stack, report, then hold it until SIGTERM."""
    from tools.lab import l7_ses
    from tools.lab import netns
    from tools.lab import product_lab
    stop = {'now': False}
    signal.signal(signal.SIGTERM, lambda *a: stop.update(now=True))
    with netns.Topology(n_se=args.ses, n_members=args.members) as topo:
        lab = product_lab.ProductLab(
            topo, plain_members=[m.name for m in topo.members]
            if args.tier2 else ())
        lab.l7 = l7_ses.L7SEs(lab, TIER2_L7_SES) if args.tier2 else None
        # TCP-MD5 on every BGP session, a fresh key per run.
        lab.agents.bgp_md5_password = secrets.token_hex(20)
        try:
            lab.start()
            if lab.l7 is not None:
                lab.l7.start()
                for m in topo.members[len(TIER2_L7_SES):]:
                    l7_ses.start_plain_server(topo, m.name,
                                              TIER2_SERVER_PORT)
            os.makedirs(STATE_DIR, exist_ok=True)
            openrc = os.path.join(STATE_DIR, 'openrc')
            with open(lab.stack.openrc_path) as src, os.fdopen(os.open(
                    openrc, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640),
                    'w') as dst:
                dst.write(src.read())
            info = describe(lab)
            with open(STATE, 'w') as f:
                json.dump(info, f, indent=2)
            os.write(ready_fd, b'READY\n')
            os.close(ready_fd)
            while not stop['now']:
                signal.pause()
        finally:
            if lab.l7 is not None:
                lab.l7.close()
            lab.close()
            for path in (STATE, os.path.join(STATE_DIR, 'openrc')):
                if os.path.exists(path):
                    os.unlink(path)


def up(args):
    if os.path.exists(STATE):
        sys.exit(f'a stack is already up (see {STATE}); run "down" first')
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        log = os.open('/tmp/octavia-dsr-stack.log',
                      os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        try:
            keeper(args, write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        line = pipe.readline()
    if line.strip() != 'READY':
        sys.exit('the stack did not come up; see /tmp/octavia-dsr-stack.log')
    with open(STATE) as f:
        info = json.load(f)
    print(json.dumps(info, indent=2))
    print(f'\nready: . {info["openrc"]} && openstack loadbalancer list\n'
          f'client shell: nsenter --net=/run/netns/'
          f'{info["namespaces"]["client"]} bash\n'
          'tear down: .venv/bin/python -m tools.stack down')


def down(args):
    if not os.path.exists(STATE):
        print('no stack is up')
        return
    with open(STATE) as f:
        pid = json.load(f)['keeper_pid']
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        os.unlink(STATE)
        print('the keeper was gone; removed its state file')
        return
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print('stack torn down')
            return
        time.sleep(0.2)  # waiting for another process to exit
    sys.exit(f'keeper {pid} did not exit; kill it by hand')


def main():
    parser = argparse.ArgumentParser(prog='tools.stack')
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('up')
    p.add_argument('--ses', type=int, default=2)
    p.add_argument('--members', type=int, default=None,
                   help='default 2; 4 with --tier2 (2 L7 SEs, 2 servers)')
    p.add_argument('--tier2', action='store_true',
                   help='m1, m2 are L7 SEs, the other members plain HTTP '
                        'servers (:8080)')
    p.set_defaults(func=up)
    p = sub.add_parser('down')
    p.set_defaults(func=down)
    args = parser.parse_args()
    if getattr(args, 'members', 0) is None:
        args.members = 4 if args.tier2 else 2
    if getattr(args, 'tier2', False) and \
            args.members < len(TIER2_L7_SES) + 1:
        parser.error(f'--members {args.members} is invalid with --tier2 '
                     f'(allowed: at least {len(TIER2_L7_SES) + 1}: the L7 '
                     'SEs m1, m2 and a server)')
    args.func(args)


if __name__ == '__main__':
    main()
