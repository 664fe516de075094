"""dsr-agent with [agent] role = tier2 on the L7 SEs, end to end against
real RabbitMQ (private vhost) and Redis (private key namespace): a signed
L7 snapshot from a controller double (tools/lab/agent_lab.FakeController)
is applied by both L7 SEs' agents, traffic flows client -> L4 SE -> L7 SE
-> servers, the agents report state and member status, and their tooz
capabilities say ready; a draining stop says draining and leaves.  m1's
agent runs inside its namespace (an L7 SE that is a host of its own); m2's
is started outside it with [agent] netns naming it (its RPC and tooz
connections in the namespace it started in, everything else in m2's)."""

import os
import signal
import sys
import urllib.parse

from oslo_config import cfg
import oslo_messaging as messaging
import pytest

from amphora_agent import processes
from dsr_wire import auth
from dsr_wire import capability_seal
from dsr_wire import l7 as l7_schema
from dsr_wire import membership as membership_mod
from tests.functional.amphora_agent.l7.conftest import L7_SES
from tests.functional.amphora_agent.l7.test_tier2_path import document
from tests.functional.amphora_agent.l7.test_tier2_path import served_by
from tests.functional.amphora_agent import test_metrics as metrics_lab
from tools.lab import agent_lab
from tools.lab import l7_ses
from tools.lab import netns


@pytest.fixture
def agents(tier2):
    tag = tier2.topo.prefix.rstrip('-')
    lab = type('AgentRig', (), {})()
    lab.tag, lab.group = tag, f'g-{tag}-l7'
    lab.vhost = f'dsr-{tag}-l7'
    lab.root = os.path.join(tier2.state_root, 'agents')
    lab.redis = f'{agent_lab.REDIS}&namespace=dsrlab-{tag}-l7'
    lab.procs = {}
    agent_lab.add_vhost(lab.vhost)
    lab.transport = messaging.get_rpc_transport(
        cfg.CONF, url=agent_lab.RABBIT + lab.vhost)
    keys = os.path.join(lab.root, 'keys')
    ctl = os.path.join(keys, 'controller.key')
    kid = auth.generate_key(ctl)
    auth.write_public_key(os.path.join(keys, 'trusted', f'{kid}.pub'),
                          auth.load_private_key(ctl).public_key())
    lab.controller = agent_lab.FakeController(
        lab.transport, f'ctl-{tag}', auth.Signer(ctl))
    lab.controller.start()
    ports = sorted({urllib.parse.urlsplit(u).port for u in (
        agent_lab.RABBIT, lab.redis)})
    relay = netns.Proc([sys.executable, '-m', 'tools.lab.nsrelay']
                       + [f'--port={p}' for p in ports]
                       + [tier2.topo.ns(n) for n in L7_SES],
                       cwd=os.path.dirname(os.path.dirname(
                           os.path.dirname(agent_lab.__file__))))
    relay.wait_for_line(r'^READY', 30)
    observer = membership_mod.Membership(lab.redis, f'observer-{tag}',
                                         lab.group, {})
    observer.start()
    lab.observer = observer

    lab.metrics_ports = {}

    def metrics_section(name):
        """[metrics] on, for an agent started here (its endpoint is in
        this namespace, as it runs where the agent starts)."""
        port = lab.metrics_ports[name] = metrics_lab._free_port()
        return f'[metrics]\nenabled = true\nport = {port}'

    def config(name, netns_name=None):
        auth.generate_key(os.path.join(keys, f'{name}.key'))
        path = os.path.join(lab.root, f'{name}.conf')
        with open(path, 'w') as f:
            f.write(f"""[DEFAULT]
transport_url = {agent_lab.RABBIT + lab.vhost}
log_file = {os.path.join(lab.root, name + '.log')}
[agent]
se_id = {name}-{tag}
se_group = {lab.group}
role = tier2
state_dir = {os.path.join(lab.root, name, 'agent')}
stats_interval = 1
resync_interval = 5
drain_wait = 1.0
{f'netns = {netns_name}' if netns_name else ''}
{metrics_section(name) if netns_name else ''}
[coordination]
backend_url = {lab.redis}
[auth]
private_key = {os.path.join(keys, name + '.key')}
controller_keys_dir = {os.path.join(keys, 'trusted')}
state_dir = {os.path.join(lab.root, name, 'auth')}
""")
            with open(tier2.config_file(name)) as l7conf:
                f.write(l7conf.read())
        return path

    def start(name, outside=False):
        """The agent inside the L7 SE's namespace, or (outside) in this
        one with [agent] netns naming the L7 SE's."""
        ns = tier2.topo.ns(name)
        argv = [sys.executable, '-m', 'amphora_agent.service',
                '--config-file', config(name, ns if outside else None)]
        if not outside:
            argv = ['nsenter', f'--net=/run/netns/{ns}', '--'] + argv
        proc = netns.Proc(argv)
        proc.wait_for_line(r'^READY', 60)
        lab.procs[name] = proc

    lab.start = start
    try:
        yield lab
    finally:
        l7_ses.stop_without_drain(
            {os.path.join(lab.root, name, 'agent'): proc
             for name, proc in lab.procs.items()})
        observer.stop()
        lab.controller.stop()
        netns.kill_proc(relay)
        lab.transport.cleanup()
        agent_lab.delete_vhost(lab.vhost)
        agent_lab._delete_redis_keys(f'dsrlab-{tag}-l7')


def test_l7_agents_apply_signed_snapshot_and_publish_ready(tier2, agents):
    topo = tier2.topo
    agents.start('m1')
    agents.start('m2', outside=True)
    ids = {n: f'{n}-{agents.tag}' for n in L7_SES}
    doc = document(tier2)
    doc['se_group'] = agents.group
    agents.controller.publish(doc, agents.group)

    def applied():
        return all((agents.controller.states.get(i) or {}).get(
            'applied_generation') == 1 for i in ids.values())
    netns.wait_for(applied, 90, 'both L7 agents to apply generation 1')

    served = {served_by(topo.http_get(netns.VIP4, source_port=p))
              for p in range(42000, 42012)}
    assert served == {'m3', 'm4'}
    # m2's agent stayed in this namespace; what it started is in m2's,
    # and m2's HAProxy serves: the L4 SE spreads new flows over both.
    here = os.stat('/proc/self/ns/net').st_ino
    agent = agents.procs['m2'].pid
    # With a worker process, if the daemon forks one: the agent's own
    # processes, not the HAProxies its worker thread started.
    agent_pids = {agent} | {
        pid for pid in processes.process_children(agent)
        if 'amphora_agent.service' in processes.process_cmdline(pid)}
    assert all(os.stat(f'/proc/{pid}/ns/net').st_ino == here
               for pid in agent_pids)
    in_m2 = netns.namespace_pids(topo.ns('m2'))
    assert any(os.path.basename((processes.process_cmdline(pid) or [''])[0])
               == 'haproxy' for pid in in_m2), in_m2
    assert not agent_pids & set(in_m2)
    ports = iter(range(44000, 45000))

    def m2_served():
        topo.http_get(netns.VIP4, source_port=next(ports))
        listener = ((agents.controller.stats.get(ids['m2']) or {})
                    .get('listeners', {}).get('li-http') or {})
        return listener.get('total_connections', 0) > 0
    netns.wait_for(m2_served, 60, 'a connection served by m2\'s HAProxy')

    # m2's Prometheus endpoint: what it serves, and its counters follow
    # the traffic (as of its last statistics report, every second here).
    def scrape(name):
        return metrics_lab.scrape(agents.metrics_ports[name])
    samples = scrape('m2')
    value = metrics_lab.value
    assert value(samples, 'octavia_dsr_agent_info', role='tier2',
                 se_id=ids['m2']) == 1
    assert value(samples, 'octavia_dsr_applied_generation') == 1
    assert value(samples, 'octavia_dsr_l7_load_balancers',
                 status='ACTIVE') == 1
    netns.wait_for(lambda: value(scrape('m2'), 'octavia_dsr_l7_ready') == 1,
                   30, 'm2 ready, by its metrics')
    assert metrics_lab.total(samples, 'octavia_dsr_l7_members') == 3

    def connections():
        return value(scrape('m2'), 'octavia_dsr_l7_listener_connections_'
                     'total', listener='li-http')
    before = connections()
    assert before > 0
    received = value(samples, 'octavia_dsr_l7_listener_received_bytes_'
                     'total', listener='li-http')

    def more_through_m2():
        topo.http_get(netns.VIP4, source_port=next(ports))
        return connections() > before
    netns.wait_for(more_through_m2, 60, 'm2\'s connection counter to move')
    assert value(scrape('m2'), 'octavia_dsr_l7_listener_received_bytes_'
                 'total', listener='li-http') > received

    def published():
        members = agents.observer.members()
        return all((members.get(i) or {}).get('ready') for i in
                   ids.values())
    netns.wait_for(published, 30, 'both L7 SEs ready in the tooz group')
    caps = agents.observer.members()[ids['m1']]
    # Sealed with its key (authentication on; docs/security.md).
    assert capability_seal.is_sealed(caps)
    assert capability_seal.unsealed(caps) == {
        'role': 'tier2',
        'tunnel_addresses': {'4': tier2.addr('m1'), '6': tier2.addr('m1', 6)},
        'ready': True, 'draining': False,
        l7_schema.CONTRACT_CAPABILITY: l7_schema.CONTRACT_VERSION}
    netns.wait_for(lambda: agents.controller.statuses.get(ids['m1']), 30,
                   'member status from m1')
    assert agents.controller.statuses[ids['m1']] == {
        'm3': 'NO_MONITOR', 'm4': 'NO_MONITOR', 'api': 'NO_MONITOR'}
    netns.wait_for(lambda: (agents.controller.stats.get(ids['m1']) or {})
                   .get('listeners', {}).get('li-http'), 30,
                   'listener statistics from m1')

    # A draining stop: not ready, draining, then out of the group; its
    # HAProxy keeps serving meanwhile (the L4 tier stops sending new flows
    # once the controller sets its weight to 0).
    proc = agents.procs.pop('m2')
    os.kill(proc.pid, signal.SIGTERM)
    netns.wait_for(lambda: (agents.observer.members().get(ids['m2']) or
                            {}).get('draining'), 30, 'm2 draining')
    assert agents.observer.members()[ids['m2']]['ready'] is False
    proc.wait(timeout=60)
    netns.wait_for(lambda: ids['m2'] not in agents.observer.members(), 30,
                   'm2 out of the group')
    served = {served_by(topo.http_get(netns.VIP4, source_port=p))
              for p in range(43000, 43006)}
    assert served <= {'m3', 'm4'} and served
