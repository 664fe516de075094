"""The whole product on one machine: a real octavia-api with the `dsr`
provider and octavia-driver-agent (tools/lab/localstack), a real dsr-controller
process, dsr-agents on the SEs, a BIRD router, members and a client in
network namespaces; users drive it with the real `openstack` CLI."""

import concurrent.futures
import hashlib
from importlib import metadata
import os
import shutil
import subprocess
import sys
import threading

from dsr_provider.controller import db as db_mod
from dsr_provider.controller import enrolment
from dsr_wire import auth
from tools.lab import agent_lab
from tools.lab.localstack import octavia as octavia_stack
from tools.lab.localstack import schema_template
from tools.lab import netns

# The CLI finds subnets by id (a UUID) or name.
VIP_SUBNET = '5e0a1c52-0000-4000-8000-000000000004'
VIP6_SUBNET = '5e0a1c52-0000-4000-8000-000000000006'
MEMBER_SUBNET = '5e0a1c52-0000-4000-8000-000000000104'
MEMBER6_SUBNET = '5e0a1c52-0000-4000-8000-000000000106'


# The product's logs are copied here when a lab closes (its root goes).
LOG_KEEP_DIR = '/tmp/dsr-e2e-logs'


def mysql(statement, port=3306):
    return subprocess.run(['mariadb', '-uroot', '-h', '127.0.0.1', '-P',
                           str(port), '-e', statement], capture_output=True,
                          text=True, timeout=60)


def db_url(database, port=3306):
    """SQLAlchemy URL of a database on the MariaDB server at port."""
    return f'mysql+pymysql://root@127.0.0.1:{port}/{database}'


def db_manage_upgrade(url, folder):
    """The real "dsr-db-manage upgrade" of the database at url (its
    configuration file written, private, in folder)."""
    path = os.path.join(folder, 'db-manage.conf')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, 'w') as f:
        f.write(f'[dsr_controller]\ndatabase_connection = {url}\n')
    out = subprocess.run([sys.executable, '-m', 'dsr_provider.cmd.db_manage',
                          '--config-file', path, 'upgrade'],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def controller_schema_key():
    """The template key of the controller's schema: this tree's migrations,
    the code that runs them (dsr_provider/controller/db.py) and the
    alembic and SQLAlchemy that do."""
    digest = hashlib.sha256()
    digest.update(schema_template.scripts_digest(
        os.path.join(os.path.dirname(db_mod.__file__), 'migrations')).encode())
    with open(db_mod.__file__, 'rb') as f:
        digest.update(f.read())
    version = ' '.join(f'{dist} {metadata.version(dist)}'
                       for dist in ('alembic', 'SQLAlchemy'))
    return schema_template.TemplateKey('dsrcontroller', version,
                                       digest.hexdigest())


class _Agents(agent_lab.AgentLab):
    """AgentLab whose agents use other broker / coordination URLs."""

    def __init__(self, topo, rabbit_url=None, redis_url=None,
                 agent_config=None, plain_members=()):
        super().__init__(topo, fake_controller=False,
                         plain_members=plain_members)
        self._rabbit_url = rabbit_url
        self._redis_url = redis_url
        self._agent_config = agent_config or {}

    def config_file(self, se):
        path = super().config_file(se)
        if self._agent_config:
            # oslo.config: a later value of a single-valued option wins.
            with open(path, 'a') as f:
                for section, options in self._agent_config.items():
                    f.write(f'\n[{section}]\n')
                    f.write(agent_lab.option_lines(options))
        return path

    @property
    def transport_url(self):
        return self._rabbit_url or super().transport_url

    @property
    def redis_url(self):
        if self._redis_url is None:
            return super().redis_url
        sep = '&' if '?' in self._redis_url else '?'
        return f'{self._redis_url}{sep}namespace=dsrlab-{self.tag}'


class ProductLab:
    # [dsr_controller] options of the labs: quick to see an SE fail.
    CONTROLLER_DEFAULTS = {'apply_timeout': 20, 'stats_interval': 1}

    def __init__(self, topo, rabbit_url=None, redis_url=None,
                 controller_db_port=3306, agent_config=None,
                 status_relay=False, plain_members=(),
                 controller_config=None):
        """rabbit_url: the broker of the driver -> controller changes and
        the controller <-> agent RPC (default: a private vhost on the
        machine's RabbitMQ); octavia-api's own RPC stays on the machine's.
        redis_url: tooz URL base (with its options) of the agents and
        controllers (default: the machine's Redis).
        controller_db_port: MariaDB on 127.0.0.1 holding the controller's
        database (octavia-api's own database stays on 3306).
        agent_config: {section: {option: value}} over the agents' config
        (e.g. {'dataplane': {'max_listeners': 64}}).
        controller_config: {option: value} over the controllers'
        [dsr_controller] (e.g. {'apply_timeout': 60}).
        plain_members: members the lab leaves plain (see
        agent_lab.AgentLab), e.g. for tools/lab/l7_ses.L7SEs.
        status_relay: the controller sends statuses and statistics through
        dsr_provider.status_relay (started beside octavia-driver-agent)
        instead of the driver agent's own sockets."""
        self.topo = topo
        self.agents = _Agents(topo, rabbit_url, redis_url, agent_config,
                              plain_members)
        self.tag = self.agents.tag
        self.workdir = os.path.join(self.agents.root, 'os')
        self.controller_db = f'dsrctl_{self.tag}'
        self.controller_db_port = controller_db_port
        self.controllers = {}
        self.controller_config = self.CONTROLLER_DEFAULTS | (
            controller_config or {})
        self.stack = None
        self.status_relay = status_relay
        self.relay = None
        run = os.path.join(self.workdir, 'run')
        self.relay_sockets = {'status': os.path.join(run, 'dsr-status.sock'),
                              'stats': os.path.join(run, 'dsr-stats.sock')}

    @property
    def controller_db_url(self):
        return db_url(self.controller_db, self.controller_db_port)

    def mysql(self, statement):
        """A statement on the MariaDB server of the controller database."""
        return mysql(statement, self.controller_db_port)

    def start(self):
        self.agents.start()
        self.stack = octavia_stack.OctaviaStack(
            self.workdir, provider_drivers={'dsr': 'DSR'},
            default_provider='dsr',
            transport_url=agent_lab.RABBIT + self.agents.vhost,
            extra_config={'dsr_provider': {
                'default_se_group': self.agents.se_group,
                'signing_key': self.agents.provider_key,
                'transport_url': self.agents.transport_url,
                'status_relay_socket': self.relay_sockets['status'],
                'stats_relay_socket': self.relay_sockets['stats']}})
        self.stack.add_subnet(VIP_SUBNET, cidr='192.0.2.0/24',
                              name='vip-v4')
        self.stack.add_subnet(VIP6_SUBNET, cidr='2001:db8:f::/64',
                              name='vip-v6')
        self.stack.add_subnet(MEMBER_SUBNET, cidr='198.19.0.0/16',
                              name='members-v4')
        self.stack.add_subnet(MEMBER6_SUBNET, cidr='2001:db8:2::/48',
                              name='members-v6')

        def controller_side():
            self.create_database()
            self.enrol_ses()
            self.start_controller('ctl1')
        # The controller's side (its database, the SEs' keys, the
        # controller) needs nothing of Octavia's -- a leader waits for the
        # driver agent's sockets -- and Octavia's start is mostly its
        # imports: side by side.  Octavia stays on this thread: started
        # as commands (DSR_LAB_OCTAVIA_ZYGOTE=0) its servers' pdeathsig is
        # bound to the thread that starts them.
        # Leaving the block waits for the side (close() must see whatever
        # it started); its failure is raised by result().
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            side = pool.submit(controller_side)
            self.stack.start()
        side.result()
        if self.status_relay:
            self.start_status_relay()
        self.agents.start_agents()

    def create_database(self):
        """The controller database, migrated as a deployment does it: by
        the real "dsr-db-manage upgrade" (controllers never migrate) --
        once per host and schema into a template that each lab copies
        (schema_template.py: about 1 CPU-s of imports a lab otherwise),
        or into the lab's own database on a private MariaDB or with
        DSR_LAB_SCHEMA_TEMPLATES=0."""
        out = self.mysql(f'CREATE DATABASE {self.controller_db}')
        assert out.returncode == 0, out.stderr
        if self.controller_db_port != octavia_stack.DB_PORT or \
                not schema_template.enabled():
            db_manage_upgrade(self.controller_db_url, self.agents.root)
            return
        template = schema_template.mysql_template(
            controller_schema_key(), lambda database: db_manage_upgrade(
                db_url(database, octavia_stack.DB_PORT), self.agents.root))
        schema_template.copy_mysql(template, self.controller_db)

    def enrol_ses(self):
        """What "dsr-manage enrol-se" does for every SE of the lab."""
        database = db_mod.Database(self.controller_db_url)
        try:
            for se in self.topo.ses:
                enrolment.enrol(
                    database, self.agents.se_group,
                    f'{se.name}-{self.tag}',
                    auth.load_public_key(
                        self.agents.se_public_key(se.name)))
        finally:
            database.engine.dispose()

    def start_status_relay(self):
        """dsr_provider.status_relay on octavia-api's configuration."""
        proc = netns.Proc([sys.executable, '-m', 'dsr_provider.status_relay',
                           '--config-file', str(self.stack.conf_path),
                           '--log-file', os.path.join(self.workdir,
                                                      'status-relay.log')])
        try:
            proc.wait_for_line(r'^READY', 60)
        except BaseException:
            netns.kill_proc(proc)
            raise
        self.relay = proc

    # -------------------------------------------------------- controller
    def controller_conf(self, name):
        path = os.path.join(self.agents.root, f'{name}.conf')
        sockets = dict(self.stack.driver_agent_sockets)
        if self.status_relay:
            sockets.update(self.relay_sockets)
        options = agent_lab.option_lines(self.controller_config)
        # It holds the broker and database credentials.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, 'w') as f:
            f.write(f"""[DEFAULT]
transport_url = {self.agents.transport_url}
log_file = {os.path.join(self.agents.root, name + '.log')}

[dsr_controller]
controller_id = {name}-{self.tag}
database_connection = {self.controller_db_url}
default_se_group = {self.agents.se_group}
coordination_url = {self.agents.redis_url}
leader_group = controllers-{self.tag}
{options}\
octavia_status_socket = {sockets['status']}
octavia_stats_socket = {sockets['stats']}
octavia_get_socket = {sockets['get']}
signing_key = {self.agents.controller_key}
provider_keys_dir = {self.agents.provider_keys_dir}
""")
        return path

    def start_controller(self, name):
        proc = netns.Proc([sys.executable, '-m',
                           'dsr_provider.controller.service',
                           '--config-file', self.controller_conf(name)])
        try:
            proc.wait_for_line(r'^READY', 60)
        except BaseException:
            netns.kill_proc(proc)
            raise
        self.controllers[name] = proc
        return proc

    # --------------------------------------------------------------- CLI
    def openstack(self, *args, check=True, timeout=90):
        return self.stack.openstack(*args, check=check, timeout=timeout)

    def openstack_json(self, *args, timeout=90):
        return self.stack.openstack(*args, json_output=True,
                                    timeout=timeout)

    # ---------------------------------------------------------- teardown
    def close(self):
        # Controllers take a few seconds to stop gracefully: meanwhile stop
        # Octavia.
        stopping = [threading.Thread(target=netns.kill_proc, args=(proc,))
                    for proc in self.controllers.values()]
        if self.relay is not None:
            stopping.append(threading.Thread(target=netns.kill_proc,
                                             args=(self.relay,)))
        for t in stopping:
            t.start()
        if self.stack is not None:
            try:
                self.stack.stop()
            except Exception:  # noqa: BLE001
                pass
        for t in stopping:
            t.join()
        self.mysql(f'DROP DATABASE IF EXISTS {self.controller_db}')
        # One directory per lab: labs run side by side (pytest-xdist).
        keep = os.path.join(LOG_KEEP_DIR,
                            os.path.basename(self.agents.root.rstrip('/')))
        shutil.rmtree(keep, ignore_errors=True)
        os.makedirs(keep, exist_ok=True)
        for root, _dirs, files in os.walk(self.agents.root):
            for name in files:
                if name.endswith('.log'):
                    shutil.copy(os.path.join(root, name), keep)
        self.agents.close()
