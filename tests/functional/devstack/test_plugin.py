"""The DevStack plugin (devstack/plugin.sh), every phase executed for real.

harness.sh runs each phase as stack.sh / unstack.sh / clean.sh would (the
plugin's settings and plugin.sh sourced, errexit), with DevStack's own
ini functions and stand-ins for the rest (run_process starts the services
by PID as the unit and the plugin's drop-ins say: user, capabilities).
Against this machine's RabbitMQ (own vhost), MariaDB (own databases) and
Redis (own key namespace), on a topology of network namespaces (tools/lab):

    client -- router (BIRD, the operator's router) -- se1 (dsr-agent's netns)
                                                   -- m1, m2 (members)

1. "Octavia's plugin" leaves an octavia.conf that sets no provider list;
   `stack install`, `stack post-config` run; the written configuration is
   checked (provider list, modes and owners, [bgp] peers as oslo.config
   reads them, the database migrated and the SE enrolled, drop-ins).
2. octavia-api and octavia-driver-agent (tools/lab/localstack) run with the
   octavia.conf the plugin edited; the router gets the BGP key the plugin
   generated; `stack extra` starts dsr-controller and dsr-agent.
3. A load balancer created through octavia-api goes ACTIVE and serves TCP
   through its VIP from the client to both members.
4. `unstack` drains (the VIP is withdrawn), `clean` leaves nothing: no
   process, pin, XDP or tc program, database, Redis key, user, file.
"""

import configparser
import grp
import json
import os
from pathlib import Path
import pwd
import secrets
import shutil
import site
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from amphora_agent import locks
from tools.lab import bird as bird_mod
from tools.lab.localstack import octavia as octavia_stack
from tools.lab import netns

ROOT = Path(__file__).resolve().parents[3]
HARNESS = Path(__file__).resolve().parent / 'harness.sh'
PLUGIN = ROOT / 'devstack'
RABBIT = 'rabbit://guest:guest@127.0.0.1:5672/'
ROUTER_ASN, SE_ASN = 65000, 65001
VIP_SUBNET = '5e0a1c52-0000-4000-8000-0000000000d4'
MEMBER_SUBNET = '5e0a1c52-0000-4000-8000-0000000001d4'

# The unit's set (etc/systemd/dsr-agent.service) plus CAP_SYS_ADMIN (the
# SE's interface is in a namespace): NET_ADMIN 12, NET_RAW 13, SYS_ADMIN
# 21, PERFMON 38, BPF 39.
AGENT_CAPS = sum(1 << n for n in (12, 13, 21, 38, 39))

# ~4 minutes on a quiet 2-core host; the ceiling leaves room for a loaded
# one (each phase starts several Python processes).
pytestmark = pytest.mark.timeout(600)


def _run(argv, check=True, timeout=120, **kw):
    out = subprocess.run([str(a) for a in argv], capture_output=True,
                         text=True, timeout=timeout, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f'{argv} failed ({out.returncode}):\n'
                             f'{out.stdout[-3000:]}\n{out.stderr[-5000:]}')
    return out


def _mysql(statement):
    return _run(['mariadb', '-uroot', '-h127.0.0.1', '-N', '-e', statement])


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def _pids_mentioning(*texts):
    found = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                cmdline = f.read()
        except OSError:
            continue
        if any(t.encode() in cmdline for t in texts) and _alive(pid):
            found.append(int(pid))
    return found


def _mode(path):
    st = os.stat(path)
    return (stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name,
            grp.getgrgid(st.st_gid).gr_name)


class DevStack:
    """One deployment: the harness' environment, the names it owns, and
    the fallback clean-up for a test that fails before `clean`."""

    def __init__(self, topo):
        self.topo = topo
        self.tag = secrets.token_hex(3)
        self.root = Path(tempfile.mkdtemp(prefix=f'dsrdv{self.tag}-'))
        self.root.chmod(0o755)      # the service users read the venv
        self.stack_user = f'dsrdv{self.tag}s'
        self.agent_user = f'dsrdv{self.tag}a'
        self.vhost = f'dsrdv-{self.tag}'
        self.db = f'octavia_dsr_dv{self.tag}'
        self.namespace = f'dsrdv-{self.tag}'
        self.venv = self.root / 'venv'
        self.state = self.root / 'harness'
        self.octavia_conf = self.root / 'etc/octavia/octavia.conf'
        self.conf_dir = self.root / 'etc/octavia-dsr'
        self.run_dir = Path(f'/run/octavia-dsr-dv{self.tag}')
        self.state_dir = self.root / 'var/lib/octavia-dsr'
        self.pin_dir = Path(f'/sys/fs/bpf/octavia-dsr-dv{self.tag}')
        self.member_pins = Path(f'/sys/fs/bpf/octavia-dsr-dv{self.tag}-m')
        self.data_dir = self.root / 'data/octavia-dsr'
        self.systemd_dir = self.root / 'systemd'
        self.sockets = {k: str(self.root / f'oc/run/{k}.sock')
                        for k in ('status', 'stats', 'get')}
        se = topo.ses[0]
        self.se = se
        self.peers = [f'{se.gw4} {ROUTER_ASN}', f'{se.gw6} {ROUTER_ASN}']
        self.env = {
            'PATH': f'{self.venv}/bin:/usr/local/sbin:/usr/local/bin:'
                    '/usr/sbin:/usr/bin:/sbin:/bin',
            'LANG': 'C.UTF-8',
            'HOME': '/root',
            # DevStack's globals
            'DEST': str(self.root / 'opt/stack'),
            'DATA_DIR': str(self.root / 'data'),
            'STACK_USER': self.stack_user,
            'HOST_IP': '127.0.0.1',
            'SERVICE_HOST': '127.0.0.1',
            'ENABLE_DEBUG_LOG_LEVEL': 'False',
            'SYSTEMD_DIR': str(self.systemd_dir),
            'DEVSTACK_VENV': str(self.venv),
            'ENABLED_SERVICES': '',
            'OCTAVIA_CONF': str(self.octavia_conf),
            'HARNESS_STATE': str(self.state),
            'HARNESS_TRANSPORT_URL': RABBIT + self.vhost,
            # local.conf
            'DSR_NODE': 'all',
            'OCTAVIA_DSR_DIR': str(ROOT),
            'OCTAVIA_DSR_CONF_DIR': str(self.conf_dir),
            'OCTAVIA_DSR_RUN_DIR': str(self.run_dir),
            'OCTAVIA_DSR_STATE_DIR': str(self.state_dir),
            'OCTAVIA_DSR_PIN_DIR': str(self.pin_dir),
            # The test session's lock folder (tests/conftest.py), not the
            # host's /run/octavia-dsr.
            locks.LOCK_DIR_ENV: locks.default_lock_dir(),
            'OCTAVIA_DSR_DB_NAME': self.db,
            'OCTAVIA_DSR_REDIS_NAMESPACE': self.namespace,
            'OCTAVIA_DSR_SE_GROUP': f'g-dv{self.tag}',
            'OCTAVIA_DSR_AGENT_USER': self.agent_user,
            'OCTAVIA_DSR_SE_ID': f'se-dv{self.tag}',
            'OCTAVIA_DSR_SE_NETNS': se.ns,
            'OCTAVIA_DSR_SE_INTERFACE': se.ifname,
            'OCTAVIA_DSR_XDP_MODE': 'generic',
            'OCTAVIA_DSR_TUNNEL_SOURCE4': se.ipv4,
            'OCTAVIA_DSR_TUNNEL_SOURCE6': se.ipv6,
            'OCTAVIA_DSR_BGP_LOCAL_ASN': str(SE_ASN),
            'OCTAVIA_DSR_BGP_PEERS': ','.join(self.peers),
        }
        self.stack = None
        self.bird = None

    # -------------------------------------------------------------- set-up
    def prepare(self):
        """What exists before DevStack runs the plugin: the stack user, the
        global venv (DevStack's has pip, setuptools and wheel), Octavia's
        octavia.conf, a vhost."""
        _run(['useradd', '--system', '--user-group', '--no-create-home',
              '--shell', '/usr/sbin/nologin', self.stack_user])
        # Debian's python of the same version (this venv's lives under
        # /root, out of the service users' reach), seeing our packages.
        base = '/usr/bin/python%d.%d' % sys.version_info[:2]
        _run([base, '-m', 'venv', '--without-pip', self.venv])
        pth = (self.venv / 'lib' / ('python%d.%d' % sys.version_info[:2])
               / 'site-packages' / 'lab-site-packages.pth')
        pth.write_text('\n'.join(site.getsitepackages()) + '\n')
        # wheel: DevStack's venv has it; setuptools' editable build needs it.
        _run([self.venv / 'bin/python', '-m', 'pip', 'install', '-q',
              'wheel'], timeout=180)
        for args in (('add_vhost', self.vhost),
                     ('set_permissions', '-p', self.vhost, 'guest', '.*',
                      '.*', '.*')):
            _run(['rabbitmqctl', '-q', *args])
        # Octavia's DevStack plugin sets no provider list (Octavia's
        # default applies) and no driver-agent sockets (here: private
        # paths instead of /var/run/octavia).
        self.octavia_conf.parent.mkdir(parents=True)
        self.octavia_conf.write_text(f"""[DEFAULT]
transport_url = {RABBIT}{self.vhost}

[api_settings]
bind_host = 127.0.0.1
api_handler = queue_producer

[driver_agent]
status_socket_path = {self.sockets['status']}
stats_socket_path = {self.sockets['stats']}
get_socket_path = {self.sockets['get']}
""")

    def phase(self, *args, timeout=240):
        """Run a phase through the harness; its output is returned and
        kept in harness/<mode>-<phase>.log."""
        out = subprocess.run(['bash', HARNESS, PLUGIN, *args], env=self.env,
                             capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / f'{"-".join(args)}.log').write_text(
            out.stdout + out.stderr)
        assert out.returncode == 0, (
            f'{" ".join(args)} failed ({out.returncode}):\n'
            f'{out.stderr[-6000:]}')
        return out.stdout + out.stderr

    def pid(self, service):
        return int((self.state / 'pids' / service).read_text())

    def log(self, service):
        path = self.state / 'logs' / f'{service}.log'
        return path.read_text(errors='replace') if path.exists() else ''

    def dsrctl(self, host, *args):
        return _run([sys.executable, '-m', 'amphora_agent.cmd.dsrctl',
                     '--netns', self.topo.ns(host), '--pin-dir',
                     self.member_pins / host, '--decap-pin-dir',
                     self.member_pins / f'{host}-decap', *args])

    # ---------------------------------------------------- fallback clean-up
    def close(self):
        errors = []

        def attempt(fn, *a):
            try:
                fn(*a)
            except Exception as exc:  # noqa: BLE001
                errors.append(f'{fn.__name__}{a}: {exc!r}')

        for pidfile in (self.state / 'pids').glob('*'):
            attempt(_kill, int(pidfile.read_text()))
        for pid in _pids_mentioning(str(self.run_dir), str(self.root)):
            attempt(_kill, pid)
        if self.stack is not None:
            attempt(self.stack.stop)
        if self.bird is not None:
            attempt(self.bird.stop)
        for host in [m.name for m in self.topo.members] + [self.se.name]:
            ns_ = self.topo.ns(host)
            _run(['ip', '-n', ns_, 'link', 'set', 'dev', 'eth0', 'xdp',
                  'off'], check=False)
            _run(['tc', '-n', ns_, 'qdisc', 'del', 'dev', 'eth0', 'clsact'],
                 check=False)
        for pins in (self.pin_dir, self.member_pins):
            shutil.rmtree(pins, ignore_errors=True)
        _run(['mariadb', '-uroot', '-h127.0.0.1', '-e',
              f'DROP DATABASE IF EXISTS {self.db}'], check=False)
        _run(['rabbitmqctl', '-q', 'delete_vhost', self.vhost], check=False)
        attempt(_delete_redis_keys, self.namespace)
        for user in (self.agent_user, self.stack_user):
            _run(['userdel', user], check=False)
            _run(['groupdel', user], check=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        keep = Path(tempfile.gettempdir()) / 'dsr-devstack-logs'
        shutil.rmtree(keep, ignore_errors=True)
        if self.state.exists():
            shutil.copytree(self.state, keep, ignore_dangling_symlinks=True,
                            ignore=shutil.ignore_patterns('pids'))
        shutil.rmtree(self.root, ignore_errors=True)
        return errors


def _kill(pid):
    if _alive(pid):
        os.kill(pid, 9)


def _redis():
    import redis
    return redis.Redis(host='127.0.0.1', port=6379, socket_timeout=10)


def _delete_redis_keys(namespace):
    client = _redis()
    keys = list(client.scan_iter(match=f'{namespace}*'))
    if keys:
        client.delete(*keys)


def _ini(path):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(path)
    return parser


@pytest.fixture
def devstack(make_topology):
    topo = make_topology(n_se=1, n_members=2)
    ds = DevStack(topo)
    try:
        ds.prepare()
        yield ds
    finally:
        errors = ds.close()
    assert not errors, errors


# ------------------------------------------------------------------ checks

def check_post_config(ds):
    octavia = _ini(ds.octavia_conf)
    providers = octavia['api_settings']['enabled_provider_drivers']
    names = [p.split(':')[0] for p in providers.split(',')]
    # Appended to Octavia's own default list: amphora stays enabled.
    assert names == ['amphora', 'octavia', 'dsr'], providers
    assert 'default_provider_driver' not in octavia['api_settings']
    assert octavia['dsr_provider']['transport_url'] == RABBIT + ds.vhost
    assert octavia['dsr_provider']['default_se_group'] == f'g-dv{ds.tag}'

    ctl_conf = ds.conf_dir / 'dsr-controller.conf'
    agent_conf = ds.conf_dir / 'dsr-agent.conf'
    keys = ds.conf_dir / 'keys'
    assert _mode(ctl_conf) == (0o640, ds.stack_user, ds.stack_user)
    assert _mode(agent_conf) == (0o640, ds.stack_user, ds.agent_user)
    assert _mode(keys / 'controller.key') == (0o600, ds.stack_user,
                                              ds.stack_user)
    # octavia-api signs its changes; the controller trusts that key.
    from dsr_wire import auth
    assert octavia['dsr_provider']['signing_key'] == str(
        keys / 'provider.key')
    assert _mode(keys / 'provider.key') == (0o600, ds.stack_user,
                                            ds.stack_user)
    provider = auth.load_private_key(str(keys / 'provider.key'))
    assert auth.TrustedKeys(_ini(ctl_conf)['dsr_controller'][
        'provider_keys_dir'], 'provider').ids() == [
            auth.key_id(provider.public_key())]
    assert _mode(keys / 'se.key') == (0o600, ds.agent_user, ds.agent_user)
    assert _mode(keys / 'bgp-md5.key')[0] == 0o600
    assert _mode(ds.state_dir) == (0o700, ds.agent_user, ds.agent_user)
    ctl = _ini(ctl_conf)['dsr_controller']
    # The status relay (default on) runs in octavia-driver-agent as a
    # provider agent, its sockets beside the driver agent's; the
    # controller reports through it and looks objects up through the
    # driver agent's get socket, as Octavia has it (never empty).
    assert octavia['driver_agent']['enabled_provider_agents'] == \
        'dsr_status_relay'
    relay = relay_sockets(ds)
    assert [octavia['dsr_provider']['status_relay_socket'],
            octavia['dsr_provider']['stats_relay_socket']] == [
                relay['status'], relay['stats']]
    assert [ctl['octavia_status_socket'], ctl['octavia_stats_socket'],
            ctl['octavia_get_socket']] == [relay['status'], relay['stats'],
                                           ds.sockets['get']]
    assert ds.namespace in ctl['coordination_url']

    # [bgp] peers is multi-valued: oslo.config reads both routers, and
    # TCP-MD5 is on with the generated key.
    from amphora_agent import opts
    from oslo_config import cfg
    conf = cfg.ConfigOpts()
    opts.register_agent_opts(conf)
    conf(args=[], default_config_files=[str(agent_conf)])
    assert conf.bgp.peers == ds.peers
    assert conf.bgp.md5_password == (keys / 'bgp-md5.key').read_text().strip()
    assert conf.agent.netns == ds.se.ns
    assert conf.dataplane.pin_dir == str(ds.pin_dir)

    # Migrated by dsr-db-manage, the local SE enrolled by dsr-manage.
    assert _mysql(f'SELECT COUNT(*) FROM {ds.db}.alembic_version'
                  ).stdout.split() == ['1']
    listed = json.loads(_run([ds.venv / 'bin/dsr-manage', '--config-file',
                              ctl_conf, 'list-ses', '--json']).stdout)
    assert [(r['se_id'], r['se_group']) for r in listed] == [
        (f'se-dv{ds.tag}', f'g-dv{ds.tag}')]

    dropin = (ds.systemd_dir / 'devstack@dsr-agent.service.d' /
              'octavia-dsr.conf').read_text()
    assert ('AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_NET_RAW '
            'CAP_PERFMON CAP_SYS_ADMIN') in dropin, dropin
    assert 'NoNewPrivileges=yes' in dropin


def start_octavia(ds):
    """octavia-api + driver agent with the octavia.conf the plugin wrote
    (its provider list, default provider, [dsr_provider], sockets)."""
    conf = _ini(ds.octavia_conf)
    providers = dict(p.split(':', 1) for p in
                     conf['api_settings']['enabled_provider_drivers']
                     .split(','))
    stack = octavia_stack.OctaviaStack(
        ds.root / 'oc', provider_drivers=providers,
        default_provider=conf['api_settings'].get(
            'default_provider_driver', 'amphora'),
        transport_url=conf['DEFAULT']['transport_url'],
        extra_config={'dsr_provider': dict(conf['dsr_provider']),
                      'driver_agent': {
                          'enabled_provider_agents':
                              conf['driver_agent']['enabled_provider_agents']
                      }},
        start_timeout=180)
    stack.driver_agent_sockets = dict(ds.sockets)
    stack.add_subnet(VIP_SUBNET, cidr='192.0.2.0/24', name='vip')
    stack.add_subnet(MEMBER_SUBNET, cidr='198.19.0.0/16', name='members')
    ds.stack = stack
    stack.start()
    # In DevStack octavia-driver-agent runs as $STACK_USER and its sockets
    # are that user's; here it runs as root: hand them over.
    uid = pwd.getpwnam(ds.stack_user).pw_uid
    for path in ds.sockets.values():
        os.chown(path, uid, -1)
    # The relay's provider agent opens its sockets once Octavia's ORM is
    # warm, after the driver agent's own.
    relay = relay_sockets(ds)
    deadline = time.monotonic() + 60
    while not all(os.path.exists(p) for p in relay.values()):
        assert time.monotonic() < deadline, (
            f'the status relay never opened {relay}: see '
            f'{stack.workdir}/octavia-driver-agent.log')
        time.sleep(0.1)
    for path in relay.values():
        os.chown(path, uid, -1)
    return stack


def relay_sockets(ds):
    run = os.path.dirname(ds.sockets['status'])
    return {k: os.path.join(run, f'dsr-{k}.sock')
            for k in ('status', 'stats')}


def start_members(ds):
    for m in ds.topo.members:
        ds.topo.setup_member(m.name, vips=(netns.VIP4,))
        ds.dsrctl(m.name, 'decap', 'attach', m.ifname, '--address', m.ipv4)
        ds.topo.start_http_server(m.name, binds=(netns.VIP4, m.ipv4))


def create_load_balancer(ds):
    conn = ds.stack.sdk()
    lb = conn.load_balancer.create_load_balancer(
        name=f'dv{ds.tag}', vip_subnet_id=VIP_SUBNET,
        vip_address=netns.VIP4, provider='dsr',
        listeners=[{'name': 'l80', 'protocol': 'TCP', 'protocol_port': 80,
                    'default_pool': {
                        'name': 'p80', 'protocol': 'TCP',
                        'lb_algorithm': 'SOURCE_IP_PORT',
                        'members': [{'address': m.ipv4, 'protocol_port': 80,
                                     'subnet_id': MEMBER_SUBNET}
                                    for m in ds.topo.members]}}])
    last = {}

    def active():
        last['lb'] = conn.load_balancer.get_load_balancer(lb.id)
        return last['lb'].provisioning_status in ('ACTIVE', 'ERROR')
    netns.wait_for(active, 120, 'load balancer ACTIVE', interval=0.3)
    assert last['lb'].provisioning_status == 'ACTIVE', (
        last['lb'], ds.log('dsr-controller')[-3000:])
    return lb


def served_members(ds, attempts=20):
    seen = set()
    for port in range(40000, 40000 + attempts):
        body = ds.topo.http_get(netns.VIP4, 80, source_port=port)
        seen.add(body.split('member=')[1].split()[0])
    return seen


def check_nothing_left(ds, pids):
    for service, pid in pids.items():
        assert not _alive(pid), f'{service} ({pid}) still runs'
    assert _pids_mentioning(str(ds.run_dir), str(ds.conf_dir)) == []
    assert not ds.pin_dir.exists()
    link = _run(['ip', '-n', ds.se.ns, '-d', 'link', 'show', 'eth0']).stdout
    assert 'xdp' not in link, link
    tc = _run(['tc', '-n', ds.se.ns, 'filter', 'show', 'dev', 'eth0',
               'ingress']).stdout
    assert tc.strip() == '', tc
    assert _mysql(f"SHOW DATABASES LIKE '{ds.db}'").stdout.strip() == ''
    assert list(_redis().scan_iter(match=f'{ds.namespace}*')) == []
    for user in (ds.agent_user,):
        assert _run(['getent', 'passwd', user], check=False).returncode == 2
        assert _run(['getent', 'group', user], check=False).returncode == 2
    for path in (ds.conf_dir, ds.run_dir, ds.state_dir, ds.data_dir,
                 ds.systemd_dir / 'devstack@dsr-agent.service.d',
                 ds.systemd_dir / 'devstack@dsr-controller.service.d'):
        assert not path.exists(), path
    octavia = _ini(ds.octavia_conf)
    assert 'dsr_provider' not in octavia
    assert 'enabled_provider_drivers' not in octavia['api_settings']
    assert 'enabled_provider_agents' not in octavia['driver_agent']


# -------------------------------------------------------------------- test

class Laps:
    """Seconds per step, printed at the end (the test's time budget)."""

    def __init__(self):
        self.t0 = self.last = time.monotonic()
        self.laps = []

    def __call__(self, name):
        now = time.monotonic()
        self.laps.append((name, now - self.last))
        self.last = now

    def __str__(self):
        return (', '.join(f'{n} {s:.0f} s' for n, s in self.laps)
                + f'; total {self.last - self.t0:.0f} s')


def test_plugin_phases_serve_a_load_balancer_and_clean_leaves_nothing(
        devstack):
    ds = devstack
    laps = Laps()
    ds.phase('stack', 'install')
    laps('install')
    ds.phase('stack', 'post-config')
    laps('post-config')
    check_post_config(ds)
    # DevStack merges local.conf's [[post-config|...]] after this phase:
    # a small dataplane for the lab (256 listeners lock 101 MiB).
    _run(['bash', '-c', f'source {HARNESS.parent}/ini-config && iniset '
          f'{ds.conf_dir}/dsr-agent.conf dataplane max_listeners 8'])

    start_octavia(ds)
    laps('octavia')
    md5 = (ds.conf_dir / 'keys/bgp-md5.key').read_text().strip()
    ds.bird = bird_mod.BirdRouter(ds.topo, local_asn=ROUTER_ASN)
    ds.bird.add_ses(ds.topo.ses, SE_ASN, hold_time=3, password=md5)
    ds.bird.start()
    start_members(ds)

    ds.phase('stack', 'extra')
    pids = {s: ds.pid(s) for s in ('dsr-controller', 'dsr-agent')}
    for service, pid in pids.items():
        netns.wait_for(lambda: 'READY' in ds.log(service) or
                       not _alive(pid), 120, f'{service} READY')
        assert _alive(pid), ds.log(service)[-4000:]
    # Unprivileged, with the unit's capabilities only.
    status = Path(f'/proc/{pids["dsr-agent"]}/status').read_text()
    assert f'Uid:\t{pwd.getpwnam(ds.agent_user).pw_uid}\t' in status
    assert 'NoNewPrivs:\t1' in status
    assert f'CapAmb:\t{AGENT_CAPS:016x}' in status, status
    ctl_status = Path(f'/proc/{pids["dsr-controller"]}/status').read_text()
    assert f'Uid:\t{pwd.getpwnam(ds.stack_user).pw_uid}\t' in ctl_status
    assert 'CapBnd:\t0000000000000000' in ctl_status
    ds.bird.wait_established(timeout=60)
    laps('extra')

    create_load_balancer(ds)
    bird_mod.wait_route(ds.bird, netns.VIP4, [ds.se.ipv4], timeout=60)
    assert served_members(ds) == {m.name for m in ds.topo.members}
    laps('load balancer')

    ds.phase('unstack')
    # A stop job: the unit's ExecStop hook let the agent drain, and it did
    # (its VIP withdrawn from the router).
    assert 'job stop: the agent drains' in ds.log('dsr-agent')
    netns.wait_for(lambda: ds.bird.kernel_nexthops(netns.VIP4) == [], 15,
                   'the VIP withdrawn')
    laps('unstack')
    ds.stack.stop()
    # What a tier-2 SE has besides XDP: a tc decap program under the
    # plugin's pin directory.  clean must remove it as well.
    _run([sys.executable, '-m', 'amphora_agent.cmd.dsrctl', '--netns',
          ds.se.ns, '--decap-pin-dir', ds.pin_dir / 'decap', 'decap',
          'attach', ds.se.ifname, '--address', ds.se.ipv4])
    assert _run(['tc', '-n', ds.se.ns, 'filter', 'show', 'dev', 'eth0',
                 'ingress']).stdout.strip()
    ds.phase('clean')
    laps('clean')
    check_nothing_left(ds, pids)
    print(f'devstack plugin test: {laps}')
