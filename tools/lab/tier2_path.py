"""The tier-2 path in namespaces without Octavia, for bench/l7_bench.py:
an L4 SE programmed through dsrctl (XDP, Maglev, IPIP to the L7 SEs'
tunnel addresses) and L7 SEs run by the L7 engine CLI (dsr-l7 batch:
decap, VIPs on lo, HAProxy from an L7 document, SNAT), in front of plain
HTTP servers.

    path = Tier2Path(topo, l7_ses=['m1'])
    path.start_l4(netns.VIP4, ports=[80])      # se1 -> m1 (IPIP)
    path.apply_l7(l7_docs.document(...))       # HAProxy on m1
    start_haproxy_server(topo, 'm2', 8080)     # a plain server
    path.close()                               # HAProxies, VIPs, pins

Every pin lives under /sys/fs/bpf/octavia-dsr-lab-<topology prefix>, every
state file under /tmp/octavia-dsr-lab-<prefix>; close() removes both (the
namespaces, and the programs attached in them, go with the topology).
"""

import json
import os
import shutil
import subprocess
import sys

from tools.lab import l7_batch
from tools.lab import netns

PIN_ROOT = '/sys/fs/bpf'


def l4_listener(vip, port, members, encap='ipip',
                algorithm='SOURCE_IP_PORT'):
    """One listener of dsrctl's desired-state document."""
    return {'vip': str(vip), 'port': port, 'protocol': 'tcp',
            'encap': encap, 'algorithm': algorithm,
            'members': [{'address': str(a), 'weight': 1} for a in members]}


def start_haproxy_server(topo, host, port, name=None, timeout=20.0):
    """A plain HTTP server that costs little CPU per request: HAProxy
    answering every request itself (``member=<name>``, header X-Member)
    on the host's own IPv4 address; the Proc once it answers.  The Python
    test server (tools/lab/servers/http_server.py) spends more CPU per
    request than HAProxy does and would be what a benchmark measures."""
    name = name or host
    h = topo.host(host)
    state = f'/tmp/octavia-dsr-lab-{topo.prefix}'
    os.makedirs(state, exist_ok=True)
    cfg = os.path.join(state, f'server-{host}-{port}.cfg')
    with open(cfg, 'w') as f:
        f.write(f"""global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend plain
    bind {h.ipv4}:{port}
    http-request return status 200 content-type text/plain string \
"member={name}" hdr X-Member {name}
""")
    proc = topo.spawn(host, ['haproxy', '-db', '-f', cfg])
    netns.wait_for(lambda: f'member={name}' in topo.http_get(
        h.ipv4, port=port, host=host), timeout, f'HAProxy server on {host}')
    return proc


def write_l7_config(path, topo, name, state_root, decap_pin_dir):
    """dsr-l7's options for L7 SE ``name``: eBPF decap, tunnel addresses
    = the host's addresses (SNAT from them), state under
    ``state_root/<name>``, certificates in ``state_root/certs``; the path."""
    h = topo.host(name)
    with open(path, 'w') as f:
        f.write(f'[dataplane]\n'
                f'decap_pin_dir = {decap_pin_dir}\n'
                f'[l7]\n'
                f'state_dir = {state_root}/{name}\n'
                f'cert_manager = local_cert_manager\n'
                f'decap = ebpf\n'
                f'interface = {h.ifname}\n'
                f'tunnel_addresses = {h.ipv4},{h.ipv6}\n'
                f'log_socket = {state_root}/{name}.log.sock\n'
                f'connection_logging = false\n'
                f'reload_timeout = 30\n'
                # Octavia's local cert manager's layout (<ref>.crt, .key)
                f'[certificates]\n'
                f'storage_path = {state_root}/certs\n')
    return path


class Tier2Path:
    def __init__(self, topo, l7_ses, l4_se='se1'):
        self.topo = topo
        self.l7_ses = list(l7_ses)
        self.l4_se = l4_se
        self.pin_root = os.path.join(PIN_ROOT,
                                     f'octavia-dsr-lab-{topo.prefix}')
        self.state_root = f'/tmp/octavia-dsr-lab-{topo.prefix}'
        self.engines = l7_batch.Engines(topo, self.config_file,
                                        self.state_root)
        os.makedirs(self.pin_root, exist_ok=True)
        os.makedirs(os.path.join(self.state_root, 'certs'), exist_ok=True)

    def addr(self, name, family=4):
        return self.topo.host(name).addr(family)

    # ------------------------------------------------------------ L4 tier
    def dsrctl(self, host, *args):
        cmd = [sys.executable, '-m', 'amphora_agent.cmd.dsrctl',
               '--netns', self.topo.ns(host),
               '--pin-dir', os.path.join(self.pin_root, host),
               '--decap-pin-dir', os.path.join(self.pin_root,
                                               host + '-decap'),
               *args]
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f'dsrctl {" ".join(args)} failed '
                               f'({proc.returncode}): {proc.stdout}'
                               f'{proc.stderr}')
        return proc.stdout

    def start_l4(self, vip, ports=(80,), xdp_mode='native'):
        """The L4 SE: the SE program on its uplink, the VIP's ports
        steered to every L7 SE's IPv4 tunnel address, the router's route
        to the VIP through it."""
        se = self.topo.host(self.l4_se)
        self.dsrctl(se.name, 'attach', se.ifname, '--mode', xdp_mode)
        self.dsrctl(se.name, 'tunnel-source', 'set', '--ipv4', se.ipv4,
                    '--ipv6', se.ipv6)
        state = {'tunnel_source': {'ipv4': se.ipv4, 'ipv6': se.ipv6},
                 'listeners': [l4_listener(vip, port, [
                     self.addr(n) for n in self.l7_ses]) for port in ports]}
        path = os.path.join(self.state_root, f'{se.name}.json')
        with open(path, 'w') as f:
            json.dump(state, f)
        self.dsrctl(se.name, 'apply', path)
        self.topo.route_vip(vip, via=se.name)

    def l4_packets(self):
        """Packets the L4 SE steered, summed over its listeners (its XDP
        program sends them back out before any nftables hook sees them)."""
        stats = json.loads(self.dsrctl(self.l4_se, 'stats', '--json'))
        return sum(lst['packets'] for lst in stats['listeners'])

    # ------------------------------------------------------------ L7 tier
    def config_file(self, name):
        return write_l7_config(
            os.path.join(self.state_root, f'{name}.conf'), self.topo, name,
            self.state_root, os.path.join(self.pin_root, name + '-decap'))

    def l7(self, name, *args):
        """A dsr-l7 command on the L7 SE's engine (its namespace's
        ``dsr-l7 batch``); its JSON output (None when it prints nothing)."""
        answer = self.engines.call(name, *args)
        if answer['rc'] != 0:
            raise RuntimeError(f'dsr-l7 {args} on {name} failed: {answer}')
        return answer.get('output')

    def apply_l7(self, document):
        """The document on every L7 SE; {name: dsr-l7's result}."""
        path = os.path.join(self.state_root,
                            f'doc-{document["generation"]}.json')
        with open(path, 'w') as f:
            json.dump(document, f)
        return {name: self.l7(name, 'apply', path) for name in self.l7_ses}

    # ----------------------------------------------------------- teardown
    def close(self):
        self.engines.stop([
            name for name in self.l7_ses if os.path.exists(
                os.path.join(self.state_root, f'{name}.conf'))])
        shutil.rmtree(self.pin_root, ignore_errors=True)
        shutil.rmtree(self.state_root, ignore_errors=True)
