"""L7 SEs for a product lab (tools/lab/product_lab.py): members of its
topology that the agent lab left plain (ProductLab(plain_members=...)),
each running the real dsr-agent with ``[agent] role = tier2`` inside its
own namespace (its RPC and tooz connections reach the machine's RabbitMQ
and Redis through tools/lab/nsrelay.py), enrolled with the lab's real
controller in the L7 SE group; and plain HTTP servers (no DSR
configuration) for tier-2 pools.

    l7 = L7SEs(lab, ['m1', 'm2'])    # group <L4 group>-l7, the flavor default
    l7.start()                       # relay, keys, enrolment, agents
    start_plain_server(lab.topo, 'm3', 8080)
    l7.stop_agent('m2')              # SIGTERM: the agent drains and leaves
    l7.kill_agent('m2')              # SIGKILL the agent and its HAProxies
    l7.close()                       # agents, HAProxies, relay

    l7 = L7SEs(lab, ['m1', 'm2', 'm3'])
    l7.start(['m1', 'm2'])           # all enrolled and relayed; m3 later:
    l7.start_agent('m3')

SynRecorder notes the client ports of the connections an L7 SE receives.

The agents' files live under the agent lab's root and their decap pins
under its pin root, which the lab removes; close() stops the HAProxies
they leave running (``dsr-l7 stop``).
"""

import concurrent.futures
import json
import os
import signal
import sys
import time
import urllib.parse

from amphora_agent import stopmode
from dsr_provider.controller import db as db_mod
from dsr_provider.controller import enrolment
from dsr_wire import auth
from tools.lab import agent_lab
from tools.lab import l7_batch
from tools.lab import netns


def start_plain_server(topo, host, port, name=None):
    """tools/lab/servers/http_server.py on the host's own addresses (GET /
    answers ``member=<name>``, default the host's name); the Proc."""
    h = topo.host(host)
    return topo.spawn(host, [*netns.SCRIPT_PYTHON,
                             netns.SERVERS_DIR / 'http_server.py', '--name',
                             name or host, '--port', port, '--bind', h.ipv4,
                             '--bind', h.ipv6], ready=r'^READY')


class L7SEs:
    # [agent] options of the labs' L7 SEs: statistics and recovery from a
    # lost cast quick enough for tests to wait on.
    AGENT_DEFAULTS = {'stats_interval': 1, 'resync_interval': 5}

    def __init__(self, lab, names, group=None, drain_wait=2.0,
                 agent_config=None):
        """agent_config: {option: value} over AGENT_DEFAULTS."""
        self.lab = lab
        self.topo = lab.topo
        self.names = list(names)
        self.group = group or f'{lab.agents.se_group}-l7'
        self.drain_wait = drain_wait
        self.agent_config = self.AGENT_DEFAULTS | (agent_config or {})
        self.root = os.path.join(lab.agents.root, 'l7')
        self.procs = {}
        self.relay = None

    def se_id(self, name):
        return f'{name}-{self.lab.tag}'

    def _path(self, *parts):
        return os.path.join(self.root, *parts)

    # ------------------------------------------------------------ set-up
    def start(self, names=None):
        """Relay, keys, enrolment of every L7 SE, then the agents of names
        (default: all) (READY)."""
        os.makedirs(self.root, exist_ok=True)
        ports = sorted({urllib.parse.urlsplit(u).port for u in (
            self.lab.agents.transport_url, self.lab.agents.redis_url)})
        self.relay = netns.Proc(
            [sys.executable, '-m', 'tools.lab.nsrelay']
            + [f'--port={p}' for p in ports]
            + [self.topo.ns(n) for n in self.names], cwd=agent_lab._REPO)
        self.relay.wait_for_line(r'^READY', 30)
        database = db_mod.Database(self.lab.controller_db_url)
        try:
            for name in self.names:
                auth.generate_key(self._path(f'{name}.key'),
                                  self._path(f'{name}.pub'))
                enrolment.enrol(database, self.group, self.se_id(name),
                                auth.load_public_key(
                                    self._path(f'{name}.pub')))
        finally:
            database.engine.dispose()
        for name in self.names if names is None else names:
            self.start_agent(name)

    def config_file(self, name):
        """The L7 SE's configuration: [agent] role = tier2 in the L7
        group, [l7] the engine (eBPF decap, tunnel addresses = the host's
        addresses, SNAT from them), certificates from octavia-api's local
        certificate manager storage."""
        h = self.topo.host(name)
        agents = self.lab.agents
        path = self._path(f'{name}.conf')
        state = self._path(name)
        options = agent_lab.option_lines(self.agent_config)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, 'w') as f:
            f.write(f"""[DEFAULT]
transport_url = {agents.transport_url}
log_file = {self._path(name + '.log')}

[agent]
se_id = {self.se_id(name)}
se_group = {self.group}
role = tier2
state_dir = {os.path.join(state, 'agent')}
{options}\
drain_wait = {self.drain_wait}

[coordination]
backend_url = {agents.redis_url}

[auth]
private_key = {self._path(name + '.key')}
controller_keys_dir = {agents.controller_keys_dir}
state_dir = {os.path.join(state, 'auth')}

[dataplane]
decap_pin_dir = {os.path.join(agents.pin_root, name + '-decap')}

[l7]
state_dir = {os.path.join(state, 'l7')}
cert_manager = local_cert_manager
decap = ebpf
interface = {h.ifname}
tunnel_addresses = {h.ipv4},{h.ipv6}
log_socket = {os.path.join(state, 'log.sock')}
connection_logging = false
reload_timeout = 30

[certificates]
storage_path = {self.lab.stack.cert_storage_path}
""")
        return path

    def start_agent(self, name, timeout=60):
        """dsr-agent inside the L7 SE's namespace, as on an L7 SE that is
        a host of its own (the relay makes the broker and Redis answer
        there); [agent] netns instead is test_l7_agent.py's."""
        proc = netns.Proc(['nsenter', f'--net=/run/netns/{self.topo.ns(name)}',
                           '--', sys.executable, '-m',
                           'amphora_agent.service', '--config-file',
                           self.config_file(name)], cwd=agent_lab._REPO)
        try:
            proc.wait_for_line(r'^READY', timeout)
        except BaseException:
            netns.kill_proc(proc)
            raise
        self.procs[name] = proc
        return proc

    def stop_agent(self, name, sig=signal.SIGTERM):
        """Signal the agent (SIGTERM: it drains, then leaves its group);
        the Proc, still to be waited for.  Its HAProxy keeps serving."""
        proc = self.procs.pop(name)
        os.kill(proc.pid, sig)
        return proc

    def kill_agent(self, name, sig=signal.SIGKILL):
        """The L7 SE dies: every process in its namespace -- the agent
        (master and worker) and its HAProxies (masters and workers) -- gets
        sig at once (the agent reaped).  Its VIPs and decap stay, as
        on a host whose processes died.  Returns the monotonic time of the
        signals (after the namespace's processes were found)."""
        proc = self.procs.pop(name)
        pids = {proc.pid, *netns.namespace_pids(self.topo.ns(name))}
        killed = time.monotonic()
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)
        return killed

    # ---------------------------------------------------------- teardown
    def close(self):
        # The stop CLI below removes what a restart leaves behind.
        stop_without_drain({os.path.join(self._path(name), 'agent'): proc
                            for name, proc in self.procs.items()})
        self.procs.clear()

        def stop(name):
            # The HAProxies, VIPs and decap the agent left behind.
            self.topo.run(name, l7_batch.dsr_l7(
                self._path(f'{name}.conf'), self.se_id(name), 'stop'),
                check=False, timeout=120)
        # One SE's clean-up does not wait for another's.
        names = [name for name in self.names
                 if os.path.exists(self._path(f'{name}.conf'))]
        with concurrent.futures.ThreadPoolExecutor(max(1, len(names))) as p:
            list(p.map(stop, names))
        if self.relay is not None:
            netns.kill_proc(self.relay)
            self.relay = None


def stop_without_drain(agents):
    """Stop L7 agents ({[agent] state_dir: Proc}) as for a restart
    (stopmode.py's marker): without draining.  A lab going away has no
    client to drain for, and a draining agent waits drain_wait, then for
    its HAProxies to go idle -- past kill_procs' 5 s: every tier-2
    teardown ended in SIGKILL.  HAProxies and VIPs stay, as for the next
    agent of a restart: the caller removes them."""
    for state_dir in agents:
        stopmode.mark_restart(state_dir, 'lab teardown')
    netns.kill_procs(agents.values())


class SynRecorder:
    """The client ports of the TCP connections (SYNs) to vip:port that an
    L7 SE received, decapsulated -- which L7 SE a client connection went
    to.  nftables set in table inet <table> of the SE's namespace (removed
    with it)."""

    def __init__(self, topo, name, vip, port, table='dsrsyn'):
        self.ns = topo.ns(name)
        self.table = table
        fam = 'ip6' if ':' in vip else 'ip'
        netns.run(self.ns, ['nft', '-f', '-'], input=f"""
add table inet {table}
add set inet {table} syn {{ type inet_service; size 65535; flags dynamic; }}
add chain inet {table} pre {{ type filter hook prerouting priority -300; }}
add rule inet {table} pre {fam} daddr {vip} tcp dport {port} \
    tcp flags & (syn | ack) == syn add @syn {{ tcp sport }}
""")

    def clear(self):
        netns.run(self.ns, ['nft', 'flush', 'set', 'inet', self.table,
                            'syn'])

    def ports(self):
        out = netns.run(self.ns, ['nft', '-j', 'list', 'set', 'inet',
                                  self.table, 'syn']).stdout
        for obj in json.loads(out).get('nftables', []):
            if 'set' in obj:
                return {e['elem']['val'] if isinstance(e, dict) else e
                        for e in obj['set'].get('elem', [])}
        raise LookupError(f'set syn not found in {self.ns}')
