"""The dataplane demo: one SE in front of two members, driven by dsrctl.

    make demo-dataplane  (or: .venv/bin/python tools/dataplane_demo.py)

Builds client - router - SE - members in network namespaces, programs a VIP
through dsrctl exactly as an operator would, fetches a page through the VIP
a few times, shows which member answered and that no reply crossed the SE,
then removes everything it made.
"""

import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools.lab import netns  # noqa: E402  (the project's topology kit)


def say(text):
    print(f'\n\033[1m== {text}\033[0m', flush=True)


def dsrctl(topo, host, pin_root, *args):
    cmd = [sys.executable, '-m', 'amphora_agent.cmd.dsrctl',
           '--netns', topo.ns(host),
           '--pin-dir', os.path.join(pin_root, host),
           '--decap-pin-dir', os.path.join(pin_root, host + '-decap')]
    print('$ dsrctl --netns', host, ' '.join(shlex.quote(a) for a in args),
          flush=True)
    out = subprocess.run(cmd + list(args), capture_output=True, text=True)
    print(out.stdout + out.stderr, end='', flush=True)
    if out.returncode:
        raise SystemExit(f'dsrctl failed ({out.returncode})')
    return out.stdout


def main():
    vip = netns.VIP4
    listener = f'{vip}:80/tcp'
    with netns.Topology(n_se=1, n_members=2) as topo:
        pin_root = f'/sys/fs/bpf/octavia-dsr-demo-{topo.prefix}'
        try:
            se = topo.ses[0]
            say('Topology: client 203.0.113.2 -- router -- SE 198.18.1.2; '
                'members 198.19.1.2, 198.19.2.2 (a routed hop away)')
            say('Members: VIP on lo, tc decap program, HTTP server')
            for m in topo.members:
                topo.setup_member(m.name)
                dsrctl(topo, m.name, pin_root, 'decap', 'attach', m.ifname,
                       '--address', m.ipv4)
                topo.start_http_server(m.name)
            say('SE: XDP program, tunnel source, listener, two members')
            dsrctl(topo, 'se1', pin_root, 'attach', se.ifname,
                   '--max-listeners', '8')
            dsrctl(topo, 'se1', pin_root, 'tunnel-source', 'set',
                   '--ipv4', se.ipv4, '--ipv6', se.ipv6)
            dsrctl(topo, 'se1', pin_root, 'listener', 'add', listener,
                   '--algorithm', 'SOURCE_IP_PORT', '--encap', 'ipip')
            for m in topo.members:
                dsrctl(topo, 'se1', pin_root, 'member', 'add', listener,
                       m.ipv4)
            dsrctl(topo, 'se1', pin_root, 'show')
            topo.route_vip(vip, via='se1')
            replies_at_se = topo.nft_counter('se1', saddr=vip)

            say(f'Client: GET http://{vip}/ from six source ports')
            for port in range(40001, 40007):
                answer = dsrctl(topo, 'se1', pin_root, 'lookup',
                                '--listener', listener,
                                '--src', f'{topo.client.ipv4}:{port}')
                body = topo.http_get(vip, source_port=port)
                print(f'   source port {port}: answered by {body}   '
                      f'(the SE program said: '
                      f'{answer.split("member=")[1].split()[0]})')
            say('SE counters')
            dsrctl(topo, 'se1', pin_root, 'stats')
            say('Replies that crossed the SE (packets from the VIP seen on '
                f'its interface): {replies_at_se.packets()}')
            if replies_at_se.packets():
                raise SystemExit('a reply crossed the SE: not DSR')
            print('Replies went member -> router -> client directly.')
        finally:
            subprocess.run(['rm', '-rf', pin_root])
    say('Cleaned up: namespaces, processes and pins removed')


if __name__ == '__main__':
    main()
