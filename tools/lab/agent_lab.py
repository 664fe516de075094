"""A lab for dsr-agent: SEs running the real agent process against real
RabbitMQ (private vhost), Redis (private SE group) and a BIRD router.

The controller is a test double built on the same oslo.messaging API as the
real one will be: it serves get_config from a snapshot the test sets, casts
config_changed, and records every report.
"""

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

from oslo_config import cfg
import oslo_messaging as messaging

from dsr_wire import agent_rpc as rpc
from dsr_wire import auth
from tools.lab import bird as bird_mod
from tools.lab import lock_dir
from tools.lab import netns

RABBIT = 'rabbit://guest:guest@127.0.0.1:5672/'
REDIS_SERVER = 'redis://127.0.0.1:6379'
REDIS = f'{REDIS_SERVER}?membership_timeout=1&lock_timeout=1'
ROUTER_ASN = 65000
SE_ASN = 65001
PIN_ROOT = '/sys/fs/bpf'
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# What the shipped unit grants dsr-agent (etc/systemd/dsr-agent.service,
# measured in docs/security.md), as setpriv spells them.
UNIT_CAPS = ('bpf', 'net_admin', 'net_raw', 'perfmon')
# DSR_AGENT_USER=dsrtest: the agent suites run their agents as that user
# (created if missing) with the capabilities DSR_AGENT_CAPS (comma-separated,
# default UNIT_CAPS); see run_as_from_env.
USER_ENV, CAPS_ENV = 'DSR_AGENT_USER', 'DSR_AGENT_CAPS'
# Capability numbers (linux/capability.h) of those the agent may hold.
CAP_BITS = {'net_admin': 12, 'net_raw': 13, 'sys_admin': 21,
            'perfmon': 38, 'bpf': 39}


def option_lines(options):
    """The lines of {option: value} in a config file's section."""
    return ''.join(f'{k} = {v}\n' for k, v in options.items())


def process_status(pid):
    """/proc/<pid>/status as {field: value}."""
    with open(f'/proc/{pid}/status') as f:
        return dict(line.rstrip('\n').split(':\t', 1) for line in f
                    if ':\t' in line)


def ensure_user(user):
    """The unprivileged system account the agent runs as (tests run as
    root; a fresh CI host has none)."""
    import pwd
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(['useradd', '--system', '--no-create-home',
                        '--shell', '/usr/sbin/nologin', user], check=True,
                       capture_output=True, timeout=60)


def run_as_from_env(environ=None):
    """AgentLab's run_as from DSR_AGENT_USER / DSR_AGENT_CAPS, or None."""
    environ = os.environ if environ is None else environ
    user = environ.get(USER_ENV)
    if not user:
        return None
    caps = environ.get(CAPS_ENV)
    caps = tuple(c.strip().lower().removeprefix('cap_')
                 for c in caps.split(',') if c.strip()) if caps \
        else UNIT_CAPS
    ensure_user(user)
    return user, caps


def rabbitmqctl(*args, input=None):
    return subprocess.run(['rabbitmqctl', '-q'] + list(args),
                          capture_output=True, text=True, timeout=60,
                          input=input)


_DELETING = []          # rabbitmqctl delete_vhost runs not reaped yet
_DELETING_LOCK = threading.Lock()


def delete_vhost(vhost):
    """Delete ``vhost`` without waiting: a lab's teardown does not wait
    for rabbitmqctl's Erlang VM (about 0.6 s).  The run is reaped by a
    later call or, at the latest, when this process exits."""
    with _DELETING_LOCK:
        _reap_deletions(wait=False)
        _DELETING.append(subprocess.Popen(
            ['rabbitmqctl', '-q', 'delete_vhost', vhost],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))


def _reap_deletions(wait):
    for proc in list(_DELETING):
        if wait:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.poll() is not None:
            _DELETING.remove(proc)


atexit.register(_reap_deletions, wait=True)


def add_vhost(vhost, user='guest'):
    """``vhost`` with every permission for ``user``, in one rabbitmqctl
    run (import_definitions of the two) instead of two: each run boots an
    Erlang VM (about 0.4 CPU-s and 0.6 s), and every lab makes a vhost."""
    definitions = {'vhosts': [{'name': vhost}], 'permissions': [{
        'user': user, 'vhost': vhost, 'configure': '.*', 'write': '.*',
        'read': '.*'}]}
    out = rabbitmqctl('import_definitions', input=json.dumps(definitions))
    if out.returncode != 0:
        raise RuntimeError(f'rabbitmqctl import_definitions of vhost '
                           f'{vhost}: {out.stderr.strip()}')


class FakeController:
    """The controller's RPC surface, recording what agents send."""

    def __init__(self, transport, server_id, signer):
        self.signer = signer
        self.snapshot = None
        self.states = {}      # se_id -> last report_state
        self.statuses = {}    # se_id -> last member statuses
        self.stats = {}       # se_id -> last stats
        self.get_config_calls = 0
        self.packed_calls = 0
        self.lock = threading.Lock()
        self._server = rpc.controller_server(transport, server_id, [self])
        self._notifier = rpc.AgentNotifier(transport, signer=signer)
        self.target = messaging.Target(namespace=rpc.CONTROLLER_NAMESPACE,
                                       version=rpc.CONTROLLER_API_VERSION)

    def start(self):
        self._server.start()

    def stop(self):
        self._server.stop()
        self._server.wait()

    # RPC endpoints
    def get_config(self, ctxt, se_group, se_id, packed=False):
        with self.lock:
            self.get_config_calls += 1
            self.packed_calls += bool(packed)
            snapshot = self.snapshot
            packable = isinstance(snapshot, dict) and isinstance(
                snapshot.get('load_balancers'), list)
            return self.signer.envelope(snapshot,
                                        packed=packed and packable)

    def report_state(self, ctxt, se_id, se_group, state):
        with self.lock:
            self.states[se_id] = state

    def report_member_status(self, ctxt, se_id, se_group, generation,
                             statuses):
        with self.lock:
            self.statuses[se_id] = statuses

    def report_stats(self, ctxt, se_id, se_group, stats):
        with self.lock:
            self.stats[se_id] = stats

    def publish(self, snapshot, se_group):
        with self.lock:
            self.snapshot = snapshot
        self._notifier.config_changed(se_group, snapshot['generation'])


class AgentLab:
    def __init__(self, topo, bfd=False, fake_controller=True, run_as=None,
                 bgp_md5_password=None, plain_members=()):
        """``plain_members``: names of members left plain (no VIPs on lo,
        no decap, no servers): hosts a test gives another job, e.g. L7
        SEs and ordinary servers of tier 2 (tools/lab/l7_ses.py).
        ``run_as``: None (agents run as root) or ``(user, caps)``: the
        agents run as that user with exactly the capabilities ``caps``
        (names as setpriv spells them, e.g. 'bpf'), inherited, ambient and
        bounding set alike, as systemd's AmbientCapabilities= and
        CapabilityBoundingSet= give them.  Without 'sys_admin' an agent
        cannot setns: it is started inside its SE's namespace (as on an
        SE that is a host of its own, no [agent] netns), where a relay
        (nsrelay.py) makes the broker and Redis answer on 127.0.0.1 as on
        the host.  ``bgp_md5_password``: TCP-MD5
        on every BGP session (BIRD and the agents' [bgp] md5_password); it
        may also be set on the lab before start()."""
        self.topo = topo
        self.tag = topo.prefix.rstrip('-')
        self.se_group = f'g-{self.tag}'
        self.vhost = f'dsr-{self.tag}'
        self.root = tempfile.mkdtemp(prefix=f'agent-{self.tag}-')
        # Run outside a test session (a bench, by hand), the lab's member
        # decaps and setups lock in a folder of this process, not in the
        # host's /run/octavia-dsr; its processes inherit it.
        lock_dir.use_private()
        self.pin_root = os.path.join(PIN_ROOT, f'octavia-dsr-test-{self.tag}')
        self.agents = {}
        self.bird = None
        self.controller = None
        self.transport = None
        self.generation = 0
        self.bfd = bfd
        self.fake_controller = fake_controller
        self.responders = {}
        self.run_as = run_as
        self.bgp_md5_password = bgp_md5_password
        # BIRD's and the agents' BGP hold time: 3 s (the least BIRD takes)
        # for the tests that time a withdrawal; may be set before start().
        self.bgp_hold_time = 3
        self.relay = None
        self.plain_members = frozenset(plain_members)
        # Agents start inside their SE's namespace: they may not setns.
        # A test may set it False to see an agent without CAP_SYS_ADMIN
        # fail to enter its namespace.
        self.in_se_netns = bool(run_as) and 'sys_admin' not in run_as[1]

    # ------------------------------------------------------------ set-up
    def start(self):
        add_vhost(self.vhost)
        self.transport = messaging.get_rpc_transport(
            cfg.CONF, url=RABBIT + self.vhost)
        self.make_keys()
        if self.run_as:
            self._hand_over_to_agent_user()
        if self.in_se_netns:
            self._start_relay()
        if self.fake_controller:
            self.controller = FakeController(
                self.transport, f'ctl-{self.tag}',
                auth.Signer(self.controller_key))
            self.controller.start()
        self.bird = bird_mod.BirdRouter(self.topo, local_asn=ROUTER_ASN,
                                        bfd=self.bfd)
        self.bird.add_ses(self.topo.ses, SE_ASN, hold_time=self.bgp_hold_time,
                          password=self.bgp_md5_password)
        self.bird.start()
        if self.bfd:
            # ExaBGP has no BFD: a BFD-only BIRD on each SE answers it.
            for se in self.topo.ses:
                responder = bird_mod.BfdResponder(self.topo, se.name)
                responder.start()
                self.responders[se.name] = responder
        for member in self.topo.members:
            if member.name in self.plain_members:
                continue
            self.topo.setup_member(member.name)
            self.dsrctl(member.name, 'decap', 'attach', member.ifname,
                        '--address', member.ipv4, '--address', member.ipv6)
            # Health probes go to the member's own address: serve there too.
            binds = (netns.VIP4, netns.VIP6, member.ipv4, member.ipv6)
            self.topo.start_http_server(member.name, binds=binds)
            self.topo.start_udp_echo(member.name, binds=binds)

    # -------------------------------------------------------------- keys
    @property
    def keys_dir(self):
        return os.path.join(self.root, 'keys')

    @property
    def controller_key(self):
        return os.path.join(self.keys_dir, 'controller.key')

    @property
    def controller_keys_dir(self):
        """The agents' trusted controller public keys."""
        return os.path.join(self.keys_dir, 'controller')

    @property
    def provider_key(self):
        """The provider driver's key (octavia-api signs its changes)."""
        return os.path.join(self.keys_dir, 'provider.key')

    @property
    def provider_keys_dir(self):
        """The controllers' trusted provider public keys."""
        return os.path.join(self.keys_dir, 'providers')

    def se_key(self, se):
        return os.path.join(self.keys_dir, f'{se}.key')

    def se_public_key(self, se):
        return os.path.join(self.keys_dir, f'{se}.pub')

    def make_keys(self):
        """The controller's key (its public key trusted by every agent)
        and one key pair per SE, as "dsr-manage gen-key" writes them."""
        kid = auth.generate_key(self.controller_key)
        auth.write_public_key(
            os.path.join(self.controller_keys_dir, f'{kid}.pub'),
            auth.load_private_key(self.controller_key).public_key())
        kid = auth.generate_key(self.provider_key)
        auth.write_public_key(
            os.path.join(self.provider_keys_dir, f'{kid}.pub'),
            auth.load_private_key(self.provider_key).public_key())
        for se in self.topo.ses:
            auth.generate_key(self.se_key(se.name),
                              self.se_public_key(se.name))

    def _agent_ids(self):
        import pwd
        entry = pwd.getpwnam(self.run_as[0])
        return entry.pw_uid, entry.pw_gid

    def _hand_over_to_agent_user(self):
        """What an operator (or systemd's StateDirectory=) does: the
        agent's own files and directories belong to its user; the
        controller's private key stays root's."""
        uid, gid = self._agent_ids()
        for dirpath, _dirs, files in os.walk(self.root):
            os.chown(dirpath, uid, gid)
            for name in files:
                os.chown(os.path.join(dirpath, name), uid, gid)
        os.chown(self.controller_key, 0, 0)
        os.makedirs(self.pin_root, mode=0o700, exist_ok=True)
        os.chown(self.pin_root, uid, gid)

    def _agent_python(self):
        """An interpreter the agent user can execute: this venv's may
        live under a home directory only root can enter.  A venv of the
        system interpreter of the same version, seeing our site-packages
        through a .pth file (the agent re-executes sys.executable for its
        helpers, so it must be reachable too)."""
        venv = os.path.join(self.root, 'python')
        if not os.path.isdir(venv):
            base = '/usr/bin/python%d.%d' % sys.version_info[:2]
            subprocess.run([base, '-m', 'venv', '--without-pip', venv],
                           check=True, capture_output=True, timeout=60)
            import site
            pth = os.path.join(
                venv, 'lib', 'python%d.%d' % sys.version_info[:2],
                'site-packages', 'lab-site-packages.pth')
            with open(pth, 'w') as f:
                f.write('\n'.join(site.getsitepackages()) + '\n')
        return os.path.join(venv, 'bin', 'python')

    def _start_relay(self):
        ports = sorted({urllib.parse.urlsplit(url).port for url in (
            self.transport_url, self.redis_url)})
        self.relay = netns.Proc([sys.executable, '-m', 'tools.lab.nsrelay']
                                + [f'--port={p}' for p in ports]
                                + [se.ns for se in self.topo.ses],
                                cwd=_REPO)
        try:
            self.relay.wait_for_line(r'^READY', 30)
        except BaseException:
            netns.kill_proc(self.relay)
            self.relay = None
            raise

    def _agent_command(self, argv, se=None):
        if not self.run_as:
            return argv
        user, caps = self.run_as
        argv = [self._agent_python()] + argv[1:]
        capset = ','.join(['-all'] + [f'+{c}' for c in caps])
        command = ['setpriv', f'--reuid={user}', f'--regid={user}',
                   '--init-groups', f'--inh-caps={capset}',
                   f'--ambient-caps={capset}', f'--bounding-set={capset}',
                   '--'] + argv
        if se is not None and self.in_se_netns:
            # nsenter (root) enters, then setpriv drops; unlike `ip netns
            # exec` it keeps the host's /sys, so bpffs stays visible.
            command = ['nsenter', f'--net=/run/netns/{self.topo.ns(se)}',
                       '--'] + command
        return command

    def dsrctl(self, host, *args, check=True):
        cmd = [sys.executable, '-m', 'amphora_agent.cmd.dsrctl',
               '--netns', self.topo.ns(host),
               '--pin-dir', os.path.join(self.pin_root, host),
               '--decap-pin-dir', os.path.join(self.pin_root,
                                               host + '-decap')]
        out = subprocess.run(cmd + list(args), capture_output=True,
                             text=True, timeout=60)
        if check:
            assert out.returncode == 0, out.stdout + out.stderr
        return out

    def show(self, se):
        return json.loads(self.dsrctl(se, 'show', '--json').stdout)

    @property
    def transport_url(self):
        return RABBIT + self.vhost

    @property
    def redis_url(self):
        """Coordination URL with a key namespace private to this lab, so
        labs sharing the Redis server never see each other's groups."""
        return f'{REDIS}&namespace=dsrlab-{self.tag}'

    def config_file(self, se):
        host = self.topo.host(se)
        path = os.path.join(self.root, f'{se}.conf')
        bgp_dir = os.path.join(self.root, se, 'bgp')
        # It holds the broker credentials: owner and group only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, 'w') as f:
            f.write(f"""[DEFAULT]
transport_url = {self.transport_url}
debug = false
log_file = {os.path.join(self.root, se + '.log')}

[agent]
se_id = {se}-{self.tag}
se_group = {self.se_group}
{'' if self.in_se_netns else f'netns = {host.ns}'}
tunnel_source4 = {host.ipv4}
tunnel_source6 = {host.ipv6}
stats_interval = 1
resync_interval = 5
nexthop_refresh_interval = 5
drain_wait = 1.0

[dataplane]
pin_dir = {os.path.join(self.pin_root, se)}
interface = {host.ifname}
xdp_mode = generic
max_listeners = 8

[coordination]
backend_url = {self.redis_url}

[auth]
private_key = {self.se_key(se)}
controller_keys_dir = {self.controller_keys_dir}
state_dir = {os.path.join(self.root, se, 'state')}

[bgp]
local_asn = {SE_ASN}
peers = {host.gw4} {ROUTER_ASN}
peers = {host.gw6} {ROUTER_ASN}
hold_time = {self.bgp_hold_time}
state_dir = {bgp_dir}
""")
            if self.bgp_md5_password:
                f.write(f'md5_password = {self.bgp_md5_password}\n')
        if self.run_as:
            os.chown(path, *self._agent_ids())
        return path

    def start_agent(self, se):
        proc = netns.Proc(self._agent_command(
            [sys.executable, '-m', 'amphora_agent.service',
             '--config-file', self.config_file(se)], se=se))
        try:
            proc.wait_for_line(r'^READY', 30)
            if self.run_as:
                self._check_privileges(proc.pid)
        except BaseException:
            netns.kill_proc(proc)
            raise
        self.agents[se] = proc
        return proc

    def _check_privileges(self, pid):
        """The agent runs as the user with exactly its capabilities: a
        suite run unprivileged proves nothing if it silently was not."""
        uid, _gid = self._agent_ids()
        status = process_status(pid)
        expected = sum(1 << CAP_BITS[c] for c in self.run_as[1])
        assert status['Uid'].split() == [str(uid)] * 4, status['Uid']
        for field in ('CapEff', 'CapBnd', 'CapAmb'):
            assert int(status[field], 16) == expected, (field, status[field])

    def start_agents(self):
        for se in self.topo.ses:
            self.start_agent(se.name)

    def kill_agent(self, se, sig=signal.SIGKILL):
        proc = self.agents.pop(se)
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)

    # ---------------------------------------------------------- snapshots
    def publish(self, load_balancers):
        self.generation += 1
        snap = {'schema_version': 1, 'se_group': self.se_group,
                'generation': self.generation,
                'load_balancers': load_balancers}
        self.controller.publish(snap, self.se_group)
        return self.generation

    def publish_raw(self, document):
        self.controller.publish(document, self.se_group)

    def wait_applied(self, generation, ses=None, timeout=20):
        ses = ses or [s.name for s in self.topo.ses]

        def applied():
            return all((self.controller.states.get(f'{se}-{self.tag}') or
                        {}).get('applied_generation') == generation
                       for se in ses)
        netns.wait_for(applied, timeout,
                       f'generation {generation} applied on {ses}')

    def state(self, se):
        return self.controller.states.get(f'{se}-{self.tag}') or {}

    def statuses(self, se):
        return self.controller.statuses.get(f'{se}-{self.tag}') or {}

    def wait_route(self, prefix, ses, timeout=15):
        expected = sorted(self.topo.host(s).addr(6 if ':' in prefix else 4)
                          for s in ses)

        def ok():
            return sorted(self.bird.kernel_nexthops(prefix)) == expected
        netns.wait_for(ok, timeout, f'{prefix} via {ses}')

    # ---------------------------------------------------------- teardown
    def close(self):
        for se in list(self.agents):
            try:
                self.kill_agent(se)
            except Exception:  # noqa: BLE001
                pass
        _kill_processes_mentioning(self.root)
        for responder in self.responders.values():
            responder.stop()
        if self.bird is not None:
            self.bird.stop()
        if self.controller is not None:
            self.controller.stop()
        if self.relay is not None:
            netns.kill_proc(self.relay)
        if self.transport is not None:
            self.transport.cleanup()
        delete_vhost(self.vhost)
        _delete_redis_keys(f'dsrlab-{self.tag}')
        shutil.rmtree(self.pin_root, ignore_errors=True)
        # Keep the agents' logs of the last run for post-mortems.
        keep = os.path.join(tempfile.gettempdir(), 'dsr-agent-logs')
        shutil.rmtree(keep, ignore_errors=True)
        os.makedirs(keep, exist_ok=True)
        for name in os.listdir(self.root):
            if name.endswith('.log'):
                shutil.copy(os.path.join(self.root, name), keep)
        shutil.rmtree(self.root, ignore_errors=True)


def _delete_redis_keys(prefix):
    import redis
    try:
        client = redis.Redis(host='127.0.0.1', port=6379)
        keys = list(client.scan_iter(match=f'{prefix}*'))
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass


def _kill_processes_mentioning(text):
    """ExaBGP runs detached: find it (and its relay) by its state dir."""
    me = os.getpid()
    deadline = time.monotonic() + 5
    while True:
        found = []
        for pid in os.listdir('/proc'):
            if not pid.isdigit() or int(pid) == me:
                continue
            try:
                with open(f'/proc/{pid}/cmdline', 'rb') as f:
                    if text.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                continue
        if not found or time.monotonic() > deadline:
            return
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)  # reaping; bounded by the deadline above


def member(id_, address, port=80, **kw):
    return dict(id=id_, address=address, protocol_port=port, **kw)


def load_balancer(vips, listeners, id_='lb1'):
    return {'id': id_, 'vips': [{'address': v} for v in vips],
            'listeners': listeners}


def listener(id_, protocol, port, members, monitor=None, algorithm=None,
             pool_id=None):
    pool = {'id': pool_id or f'pool-{id_}',
            'algorithm': algorithm or 'SOURCE_IP_PORT',
            'members': members}
    if monitor:
        # One monitor object per pool: ids are unique in a snapshot.
        pool['health_monitor'] = dict(monitor, id=f'hm-{pool["id"]}')
    return {'id': id_, 'protocol': protocol, 'port': port, 'pool': pool}


def tcp_monitor(delay=1, timeout=1, max_retries=1, max_retries_down=1):
    return {'id': 'hm', 'type': 'TCP', 'delay': delay, 'timeout': timeout,
            'max_retries': max_retries, 'max_retries_down': max_retries_down}
