"""Tier 2 in namespaces: one L4 SE (the tier-1 dataplane, programmed
through dsrctl) whose members are two L7 SEs running the L7 engine
(dsr-l7: decap + VIP on lo + HAProxy), in front of plain HTTP servers with
no DSR configuration.

    client -- router -- se1      L4 SE: VIP -> Maglev -> IPIP to m1/m2
                  |---- m1, m2   L7 SEs (tunnel addresses 198.19.{1,2}.2)
                  |---- m3, m4   HTTP servers (198.19.{3,4}.2:8080;
                                 m4 also "api" on :8081)

Every HAProxy, pin and state file is removed on teardown, also when a
test fails.
"""

import json
import os
import shutil

import pytest

from tests.functional.amphora_agent.dataplane.conftest import DsrSetup
from tests.functional.amphora_agent.dataplane.conftest import listener
from tests.functional.amphora_agent.dataplane.conftest import PIN_ROOT
from tools.lab import l7_batch
from tools.lab import netns
from tools.lab import tier2_path

L7_SES = ('m1', 'm2')
SERVERS = ('m3', 'm4')
SERVER_PORT, API_PORT = 8080, 8081


class Tier2Lab(DsrSetup):
    def __init__(self, topo):
        super().__init__(topo)
        self.state_root = self.pin_root.replace(PIN_ROOT, '/tmp') + '-l7'
        os.makedirs(os.path.join(self.state_root, 'certs'), exist_ok=True)
        self.servers = {}
        self.engines = l7_batch.Engines(topo, self.config_file,
                                        self.state_root)

    def addr(self, name, family=4):
        return self.topo.host(name).addr(family)

    def config_file(self, name):
        return tier2_path.write_l7_config(
            os.path.join(self.state_root, f'{name}.conf'), self.topo, name,
            self.state_root, self.pin_dir(name + '-decap'))

    def l7(self, name, *args, check=True):
        """A dsr-l7 command on the L7 SE's engine (its namespace's
        ``dsr-l7 batch``); (returncode, JSON output or None)."""
        answer = self.engines.call(name, *args)
        if check and answer['rc'] != 0:
            raise AssertionError(f'dsr-l7 {args} on {name} failed: '
                                 f'{answer}')
        return answer['rc'], answer.get('output')

    def apply_l7(self, document, names=L7_SES, new_engine=()):
        """The document on each of ``names``; those in ``new_engine`` get
        it from a one-shot ``dsr-l7 apply`` (a new engine adopting what
        runs there, as after an L7 agent's restart), the others from
        their batch."""
        results = {}
        path = os.path.join(self.state_root,
                            f'doc-{document["generation"]}.json')
        with open(path, 'w') as f:
            json.dump(document, f)
        for name in names:
            if name in new_engine:
                proc = self.engines.once(name, 'apply', path)
                assert proc.returncode == 0, proc.stdout + proc.stderr
                results[name] = json.loads(proc.stdout.splitlines()[-1])
            else:
                results[name] = self.l7(name, 'apply', path)[1]
        return results

    def start_l4(self, listeners, xdp_mode='generic', max_listeners=8):
        """The L4 tier: the VIPs' members are the L7 SEs' tunnel
        addresses (one L4 listener per L7 listener port)."""
        se = self.topo.ses[0]
        self.dsrctl(se.name, 'attach', se.ifname, '--mode', xdp_mode,
                    '--max-listeners', str(max_listeners))
        self.dsrctl(se.name, 'tunnel-source', 'set', '--ipv4', se.ipv4,
                    '--ipv6', se.ipv6)
        self.apply(*listeners)
        self.topo.route_vip(netns.VIP4, via=se.name)
        self.topo.route_vip(netns.VIP6, via=se.name)

    def start(self):
        self.start_l4([*(listener(netns.VIP4, port=port, members=[
            self.addr(n) for n in L7_SES]) for port in (80, 443)),
            listener(netns.VIP6, port=80, members=[
                self.addr(n, 6) for n in L7_SES])])
        for name in SERVERS:
            h = self.topo.host(name)
            self.servers[name] = self.topo.spawn(
                name, [*netns.SCRIPT_PYTHON,
                       netns.SERVERS_DIR / 'http_server.py', '--name', name,
                       '--port', SERVER_PORT, '--bind', h.ipv4,
                       '--bind', h.ipv6], ready=r'^READY')
        h = self.topo.host('m4')
        self.topo.spawn('m4', [*netns.SCRIPT_PYTHON,
                               netns.SERVERS_DIR / 'http_server.py',
                               '--name', 'api', '--port', API_PORT,
                               '--bind', h.ipv4], ready=r'^READY')

    def close(self):
        self.engines.stop(L7_SES)
        super().close()
        shutil.rmtree(self.state_root, ignore_errors=True)


def _lab(cls, make_topology):
    lab = cls(make_topology(n_se=1, n_members=4))
    try:
        lab.start()
        yield lab
    finally:
        lab.close()


@pytest.fixture
def tier2(make_topology):
    yield from _lab(Tier2Lab, make_topology)


UDP_PORT, UDP_SERVER_PORT = 53, 5353


class Tier2UdpLab(Tier2Lab):
    """The same topology for UDP listeners: the L4 SE steers VIP:53/udp
    (IPv4 and IPv6) to the L7 SEs, whose nftables rules DNAT to UDP echo
    servers on m3 and m4 (answering with the source they saw).  The L7
    SEs run ``dsr-l7 serve`` (the UDP health checks need a process)."""

    def __init__(self, topo):
        super().__init__(topo)
        self.serving = {}
        self.echo = {}

    def start(self):
        self.start_l4([
            listener(netns.VIP4, port=UDP_PORT, protocol='udp',
                     members=[self.addr(n) for n in L7_SES]),
            listener(netns.VIP6, port=UDP_PORT, protocol='udp',
                     members=[self.addr(n, 6) for n in L7_SES])])
        for name in SERVERS:
            self.start_echo(name)

    def start_echo(self, name):
        h = self.topo.host(name)
        self.echo[name] = self.topo.spawn(
            name, [*netns.SCRIPT_PYTHON, netns.SERVERS_DIR / 'udp_echo.py',
                   '--name', name, '--port', UDP_SERVER_PORT, '--show-peer',
                   '--bind', h.ipv4, '--bind', h.ipv6], ready=r'^READY')

    def serve(self, document, names=L7_SES, timeout=180):
        """``dsr-l7 serve`` on each L7 SE; {name: (process, apply result,
        stats file)}."""
        path = os.path.join(self.state_root,
                            f'doc-{document["generation"]}.json')
        with open(path, 'w') as f:
            json.dump(document, f)
        for name in names:
            stats = os.path.join(self.state_root, f'{name}-stats.json')
            proc = self.topo.spawn(name, l7_batch.dsr_l7(
                self.config_file(name), name, 'serve', path, '--stats-file',
                stats),
                ready=r'"load_balancers"', ready_timeout=timeout)
            line = next(li for li in proc.lines if '"load_balancers"' in li)
            self.serving[name] = (proc, json.loads(line), stats)
        return self.serving

    def close(self):
        for proc, _, _ in self.serving.values():
            proc.stop()
        super().close()


@pytest.fixture
def tier2_udp(make_topology):
    yield from _lab(Tier2UdpLab, make_topology)
