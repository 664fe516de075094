"""Private RabbitMQ, Redis and MariaDB instances for outage tests.

Each instance runs from its own temporary folder on its own port on
127.0.0.1, in its own process group, so a test can stop it (kill -9: a
crash, the worst case) and start it again on the same port and data folder
without touching the machine's shared services (5672, 6379, 3306).

    from tools.lab.localstack import private_services as ps
    with ps.Redis() as redis:            # started, answers on redis.port
        ...redis.url...
        redis.stop()                     # kill -9 of the PID we started
        redis.start()                    # same port, same folder

RabbitMQ keeps its Mnesia folder across a restart (durable queues and
definitions survive, messages of non-durable queues do not); Redis runs
without persistence (--save '' --appendonly no: a restart loses every key,
like a failover to an empty replica); MariaDB keeps its datadir (InnoDB
crash recovery on start).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from tools.lab.localstack import octavia as _octavia
from tools.lab.localstack import services

HOST = '127.0.0.1'
RABBITMQ_SERVER = '/usr/lib/rabbitmq/bin/rabbitmq-server'


class PrivateServiceError(RuntimeError):
    pass


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class _Instance:
    """One private server: start(), stop() (SIGKILL), start() again."""

    name = None
    start_timeout = 30.0

    def __init__(self, port=None, workdir=None):
        self.port = port or free_port()
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix=f'{self.name}-')
        self.log_path = os.path.join(self.workdir, f'{self.name}.log')
        self._proc = None
        self._launched = 0.0
        self.starts = 0

    # -- what each server needs --------------------------------------------
    def argv(self):
        raise NotImplementedError

    def env(self):
        return dict(os.environ)

    def prepare(self):
        """Once, before the first start (e.g. initialise a datadir)."""

    def answers(self):
        raise NotImplementedError

    # -- lifecycle ----------------------------------------------------------
    @property
    def running(self):
        return self._proc is not None and self._proc.running()

    def start(self):
        """Start and wait until the server answers."""
        self.launch()
        return self.wait_ready()

    def launch(self):
        """Start the server without waiting for it.

        The server gets SIGTERM when the THREAD that launched it ends (so
        it dies with a killed test run): launch from a long-lived thread.
        """
        if self.running:
            return self
        if self.starts == 0:
            self.prepare()
        if self.answers():
            raise PrivateServiceError(
                f'{self.name}: something else answers on {HOST}:{self.port}')
        self._proc = _octavia._Proc.start(self.name, self.argv(),
                                          self.log_path, self.env(),
                                          self.workdir)
        self._launched = time.monotonic()
        return self

    def wait_ready(self):
        deadline = self._launched + self.start_timeout
        while not self.answers():
            if not self._proc.running() or time.monotonic() > deadline:
                self.stop()
                raise PrivateServiceError(
                    f'{self.name} did not answer on {HOST}:{self.port} within '
                    f'{self.start_timeout:.0f} s; last lines of '
                    f'{self.log_path}:\n{_octavia._tail(self.log_path)}')
            time.sleep(0.1)   # polling a port, not synchronisation
        self.starts += 1
        return self

    def stop(self):
        """kill -9 the process group we started (a crash) and wait for it."""
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._proc.stop(timeout=10)
        self._proc = None
        deadline = time.monotonic() + 10
        while self.answers():
            if time.monotonic() > deadline:
                raise PrivateServiceError(
                    f'{self.name} still answers on {HOST}:{self.port} after '
                    'its process group died')
            time.sleep(0.05)

    def close(self):
        try:
            self.stop()
        finally:
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()


class Redis(_Instance):
    name = 'redis'
    start_timeout = 10.0

    def argv(self):
        return ['redis-server', '--bind', HOST, '--port', str(self.port),
                '--save', '', '--appendonly', 'no', '--dir', self.workdir,
                '--daemonize', 'no', '--logfile', '']

    def answers(self):
        return services.redis_answers(self.port)

    def url(self, **options):
        """A tooz coordination URL: redis://127.0.0.1:PORT?opt=value&..."""
        query = '&'.join(f'{k}={v}' for k, v in options.items())
        return f'redis://{HOST}:{self.port}' + (f'?{query}' if query else '')


class RabbitMQ(_Instance):
    """A RabbitMQ node of its own: node name, AMQP and distribution ports,
    Mnesia and log folders, no plugins.  The default vhost '/' and user
    guest (loopback only) serve the tests.

    ``tls``: {'certfile', 'keyfile', 'cacertfile'} (PEM paths) adds a TLS
    listener on ``tls_port`` (``tls_url``); the plain one stays (readiness
    checks use it)."""

    name = 'rabbitmq'
    start_timeout = 60.0      # 5-11 s on these machines

    def __init__(self, port=None, workdir=None, tls=None):
        super().__init__(port, workdir)
        self.dist_port = free_port()
        self.nodename = f'dsrtest{self.port}@localhost'
        self.tls = tls
        self.tls_port = free_port() if tls else None

    def prepare(self):
        with open(os.path.join(self.workdir, 'rabbitmq.conf'), 'w') as f:
            f.write(f'listeners.tcp.local = {HOST}:{self.port}\n')
            if self.tls:
                f.write(f'listeners.ssl.local = {HOST}:{self.tls_port}\n'
                        f'ssl_options.cacertfile = {self.tls["cacertfile"]}\n'
                        f'ssl_options.certfile = {self.tls["certfile"]}\n'
                        f'ssl_options.keyfile = {self.tls["keyfile"]}\n'
                        'ssl_options.verify = verify_none\n'
                        'ssl_options.fail_if_no_peer_cert = false\n')
        with open(os.path.join(self.workdir, 'enabled_plugins'), 'w') as f:
            f.write('[].\n')
        # An empty env file: the machine's rabbitmq-env.conf names the
        # system node.
        open(os.path.join(self.workdir, 'rabbitmq-env.conf'), 'w').close()

    def env(self):
        env = dict(os.environ)
        d = self.workdir
        env.update({
            'RABBITMQ_CONF_ENV_FILE': os.path.join(d, 'rabbitmq-env.conf'),
            'RABBITMQ_NODENAME': self.nodename,
            'RABBITMQ_NODE_IP_ADDRESS': HOST,
            'RABBITMQ_NODE_PORT': str(self.port),
            'RABBITMQ_DIST_PORT': str(self.dist_port),
            'RABBITMQ_CONFIG_FILE': os.path.join(d, 'rabbitmq.conf'),
            'RABBITMQ_MNESIA_BASE': os.path.join(d, 'mnesia'),
            'RABBITMQ_LOG_BASE': os.path.join(d, 'log'),
            'RABBITMQ_ENABLED_PLUGINS_FILE': os.path.join(d,
                                                          'enabled_plugins'),
            'RABBITMQ_PID_FILE': os.path.join(d, 'rabbitmq.pid'),
            'ERL_EPMD_ADDRESS': HOST,
        })
        return env

    def argv(self):
        return [RABBITMQ_SERVER]

    def answers(self):
        return services.rabbitmq_answers(self.port)

    @property
    def url(self):
        return f'rabbit://guest:guest@{HOST}:{self.port}/'

    @property
    def tls_url(self):
        return f'rabbit://guest:guest@{HOST}:{self.tls_port}/'


class MariaDB(_Instance):
    """mariadbd on its own datadir, port and socket, root without a
    password over TCP from 127.0.0.1."""

    name = 'mariadb'
    start_timeout = 30.0

    def __init__(self, port=None, workdir=None):
        super().__init__(port, workdir)
        self.datadir = os.path.join(self.workdir, 'data')
        self.socket = os.path.join(self.workdir, 'mysqld.sock')
        self.cnf = os.path.join(self.workdir, 'my.cnf')

    def prepare(self):
        with open(self.cnf, 'w') as f:
            f.write(f"""[mysqld]
user = root
datadir = {self.datadir}
socket = {self.socket}
port = {self.port}
bind-address = {HOST}
pid-file = {os.path.join(self.workdir, 'mysqld.pid')}
log-error = {os.path.join(self.workdir, 'mysqld.err')}
skip-name-resolve
innodb_buffer_pool_size = 32M
innodb_log_file_size = 16M
performance_schema = OFF
""")
        out = subprocess.run(
            ['mariadb-install-db', f'--defaults-file={self.cnf}',
             '--auth-root-authentication-method=normal',
             '--skip-test-db'],
            capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise PrivateServiceError(
                f'mariadb-install-db failed ({out.returncode}): '
                f'{out.stderr.strip()[-2000:]}')

    def argv(self):
        return ['mariadbd', f'--defaults-file={self.cnf}']

    def answers(self):
        return services.mariadb_answers(self.port)

    def url(self, database):
        return f'mysql+pymysql://root@{HOST}:{self.port}/{database}'

    def sql(self, statement):
        import pymysql
        conn = pymysql.connect(host=HOST, port=self.port, user='root',
                               connect_timeout=10, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchall()
        finally:
            conn.close()
