"""A stand-in for ExaBGP in the UNIT tests (no network, no BGP).

Run like ExaBGP (``fake_exabgp.py CONFIG``): it starts the API process of
the config (the real exabgp_api.py helper) and answers the few commands the
speaker sends, keeping an adj-rib-out per neighbor:

    show neighbor json | show adj-rib out | clear adj-rib out
    neighbor <ip> announce route <prefix> next-hop <nh>
    neighbor <ip> withdraw route <prefix>

Every command is appended to $FAKE_EXABGP_LOG (one line each) so tests can
count what the speaker sent.  Exits on SIGTERM or when the helper dies.
"""

import json
import os
import re
import signal
import subprocess
import sys


def main():
    conf_path = sys.argv[-1]
    with open(conf_path) as f:
        conf = f.read()
    run = re.search(r'^\s*run (.*);$', conf, re.M).group(1).split()
    peers = re.findall(r'^neighbor (\S+) \{', conf, re.M)
    rib = {p: {} for p in peers}
    log_path = os.environ.get('FAKE_EXABGP_LOG')
    helper = subprocess.Popen(run, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, bufsize=1)

    def bye(*_):
        helper.terminate()
        helper.wait(5)
        sys.exit(0)

    signal.signal(signal.SIGTERM, bye)
    print(f'fake exabgp {os.getpid()} peers {peers}', flush=True)

    def answer(lines, ok=True):
        for line in lines:
            helper.stdin.write(line + '\n')
        helper.stdin.write(('done' if ok else 'error') + '\n')
        helper.stdin.flush()

    for line in helper.stdout:
        cmd = line.strip()
        if log_path:
            with open(log_path, 'a') as f:
                f.write(cmd + '\n')
        if cmd == 'show neighbor json':
            answer([json.dumps([{'peer': {'address': p},
                                 'fsm': 'ESTABLISHED'} for p in peers])])
            continue
        if cmd == 'show adj-rib out':
            out = []
            for p, routes in rib.items():
                for prefix, nh in sorted(routes.items()):
                    afi = 'ipv6' if ':' in prefix else 'ipv4'
                    out.append(f'{p} {afi} unicast {prefix} next-hop {nh}')
            answer(out)
            continue
        if cmd == 'clear adj-rib out':
            for routes in rib.values():
                routes.clear()
            answer([])
            continue
        m = re.match(r'neighbor (\S+) announce route (\S+) next-hop (\S+)$',
                     cmd)
        if m and m.group(1) in rib:
            rib[m.group(1)][m.group(2)] = m.group(3)
            answer([])
            continue
        m = re.match(r'neighbor (\S+) withdraw route (\S+)$', cmd)
        if m and m.group(1) in rib:
            rib[m.group(1)].pop(m.group(2), None)
            answer([])
            continue
        answer([f'unknown command {cmd}'], ok=False)
    bye()


if __name__ == '__main__':
    main()
