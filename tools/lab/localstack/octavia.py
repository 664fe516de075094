"""A real Octavia API on this machine, without Keystone, Neutron or Nova.

    from tools.lab.localstack.octavia import OctaviaStack

    with OctaviaStack("/tmp/x", provider_drivers={"noop_driver": "no-op"},
                      default_provider="noop_driver") as stack:
        stack.add_subnet("7f6d...", "192.0.2.0/24")
        conn = stack.sdk()                        # openstacksdk Connection
        conn.load_balancer.create_load_balancer(vip_subnet_id="7f6d...")
        subprocess.run(["openstack", "loadbalancer", "list"],
                       env=stack.cli_env())       # or: . stack.openrc_path
        lib = stack.driver_library()              # octavia_lib DriverLibrary

What start() does (see OctaviaStack.start): makes sure MariaDB (and RabbitMQ
when transport_url is rabbit://) answer, creates a database with a unique
name, writes octavia.conf (auth_strategy = noauth, noop network / compute /
amphora drivers, the given providers, driver-agent sockets in the workdir),
copies the host's migrated schema template into it (schema_template.py:
`octavia-db-manage upgrade head` runs once per host and Octavia version),
starts the Octavia API (octavia_api.py
beside this file: threaded wsgiref or gunicorn) on 127.0.0.1:<free port> and
`octavia-driver-agent`, both in their own process groups (forked from
this process's Octavia zygote, octavia_zygote.py, which imported Octavia
once: ~6 CPU-seconds a lab less), starts a Neutron
stub (neutron_stub.py) in a thread of this process, and returns once the API
answers a database-backed request and the driver agent answers a `get` over
its socket.  stop() ends what start() started, by PID / process group, and
drops the database.

Command line, for a manual session (blocks until Ctrl-C):

    .venv/bin/python -m tools.lab.localstack.octavia --workdir /tmp/octavia \\
        [--provider noop_driver=noop] [--subnet ID=CIDR]
    . /tmp/octavia/openrc && openstack loadbalancer list
"""

import atexit
import configparser
import importlib.metadata
import io
import json
import os
from pathlib import Path
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

from tools.lab.localstack import cli_zygote
from tools.lab.localstack.neutron_stub import NeutronStub
from tools.lab.localstack import octavia_zygote
from tools.lab.localstack import schema_template
from tools.lab.localstack import services

HERE = Path(__file__).resolve().parent
API_RUNNER = HERE / "octavia_api.py"

DEFAULT_PROVIDERS = {"dsr": "DSR L3 Direct Server Return"}
DEFAULT_TRANSPORT_URL = "rabbit://guest:guest@127.0.0.1:5672/"
# noauth has no token to take a project from: requests without X-Project-Id
# get this one (octavia_api.py adds it).  Stable, so demos print the same.
DEFAULT_PROJECT_ID = uuid.uuid5(uuid.NAMESPACE_DNS,
                                "localstack.octavia-dsr").hex
DB_HOST, DB_PORT, DB_USER = "127.0.0.1", 3306, "root"
DB_PREFIX = "octavia_ls_"
# Unix socket paths are limited to 107 bytes (sun_path).
_SUN_PATH_MAX = 107


def _write_private(path, text):
    """Write ``text`` readable by owner and group only (0640), also when
    the file existed wider: it may hold credentials."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    os.fchmod(fd, 0o640)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class StackError(RuntimeError):
    pass


def _tail(path, n=40):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def _free_listening_socket(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(128)
    return s


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def registered_providers():
    """Provider names registered under the octavia.api.drivers entry point."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(
        group="octavia.api.drivers")})


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sql(statement, database=None):
    import pymysql   # installed with octavia (oslo.db's MySQL driver)
    conn = pymysql.connect(host=DB_HOST, port=DB_PORT, user=DB_USER,
                           database=database, connect_timeout=10,
                           autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall()
    finally:
        conn.close()


def sweep_stale_databases():
    """Drop octavia_ls_<pid>_<hex> databases whose creating process is gone.

    A stack whose Python process was killed (SIGKILL, OOM) cannot drop its
    database; its processes die with it (parent-death signal).  Databases of
    live processes (another session's stack) are left alone.  Returns the
    names dropped.
    """
    dropped = []
    for (name,) in _sql("SHOW DATABASES"):
        if not name.startswith(DB_PREFIX):
            continue
        parts = name[len(DB_PREFIX):].split("_")
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        if not _pid_alive(int(parts[0])):
            _sql(f"DROP DATABASE IF EXISTS `{name}`")
            dropped.append(name)
    return dropped


class _Proc:
    """A process we started in its own process group, with a log file: a
    subprocess (start) or a child of the Octavia zygote (forked)."""

    def __init__(self, name, popen, log_path, log=None):
        self.name = name
        self.popen = popen          # poll() and returncode
        self.log_path = Path(log_path)
        self._log = log
        self.pid = self.pgid = popen.pid
        self._terminated = False

    @classmethod
    def start(cls, name, argv, log_path, env, cwd, pass_fds=(),
              pdeathsig=True):
        setpriv = shutil.which("setpriv") if pdeathsig else None
        if setpriv:
            # If this process dies without stop(), the child gets SIGTERM
            # (PR_SET_PDEATHSIG survives exec; bound to the calling thread).
            argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]
        log = open(log_path, "ab")
        try:
            popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env, cwd=cwd,
                pass_fds=pass_fds, start_new_session=True, close_fds=True)
        except BaseException:
            log.close()
            raise
        return cls(name, popen, log_path, log)

    @classmethod
    def forked(cls, zygote, kind, name, argv, log_path, env, cwd, fds=()):
        return cls(name, zygote.spawn(kind, argv, env, cwd, log_path, fds),
                   log_path)

    def running(self):
        return self.popen.poll() is None

    def check(self):
        if not self.running():
            raise StackError(
                f"{self.name} (pid {self.pid}) exited with "
                f"{self.popen.returncode}; last lines of {self.log_path}:\n"
                f"{_tail(self.log_path)}")

    def terminate(self):
        """SIGTERM the leader (once), without waiting."""
        if self.running() and not self._terminated:
            self._terminated = True
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self, timeout=10.0):
        """SIGTERM the leader, wait for the whole group, then SIGKILL it."""
        self.terminate()
        deadline = time.monotonic() + timeout
        killed = False
        while True:
            if self.popen.poll() is not None and not _group_alive(self.pgid):
                break
            if time.monotonic() > deadline:
                if killed:
                    raise StackError(f"{self.name}: process group {self.pgid} "
                                     f"survives SIGKILL")
                # Leader gone but children left, or nobody listened.
                try:
                    os.killpg(self.pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                killed = True
                deadline = time.monotonic() + 5
            time.sleep(0.02)   # polling a process table, not synchronisation
        if self._log is not None:
            self._log.close()
        return not killed


class OctaviaStack:
    """Octavia API + driver agent + Neutron stub on a private database.

    Attributes valid after start(): api_url, conf_path, openrc_path,
    driver_agent_sockets ({'status': path, 'stats': path, 'get': path}),
    neutron_url, db_name, db_url, pids ({'api': pid, 'driver_agent': pid}),
    start_seconds (wall time of the last start()), timings (seconds from
    the start of start() to: migrated, api_ready, agent_ready).
    """

    def __init__(self, workdir, provider_drivers=None,
                 default_provider="dsr", transport_url=DEFAULT_TRANSPORT_URL,
                 db_name=None, project_id=DEFAULT_PROJECT_ID,
                 server="wsgiref", extra_config=None, env=None,
                 python=None, debug=False, ensure_services=True,
                 check_providers=True, start_timeout=60.0,
                 kill_with_parent=True):
        """
        workdir: folder for octavia.conf, openrc, logs and the driver-agent
            sockets (created if missing; must be short enough for sun_path).
        provider_drivers: {name: description} -> enabled_provider_drivers.
            Each name must be an `octavia.api.drivers` entry point.
        default_provider: must be one of provider_drivers.
        transport_url: [DEFAULT] transport_url (None: not written).
        db_name: MariaDB database to create (default: unique per stack).
            It must not exist yet; stop() drops it.
        project_id: project given to requests that carry no X-Project-Id.
        server: 'wsgiref' (threaded, in-process) or 'gunicorn'.
        extra_config: {section: {option: value}} merged over the generated
            config, e.g. the DSR provider's own section.
        env: extra environment for the API and the driver agent (the
            provider driver runs inside the API process).
        python: interpreter of the venv holding octavia (default: this one).
        kill_with_parent: start the API and the agent under
            `setpriv --pdeathsig TERM`, so they die with this process even
            when stop() never runs (SIGKILL).  Linux ties that signal to the
            THREAD that started them: call start() from a thread that lives
            as long as the stack (the main thread), or pass False.  With
            the zygote (threaded API) they die with it, and it with this
            process, whichever thread started it (octavia_zygote.py).
        """
        self.workdir = Path(workdir).resolve()
        self.provider_drivers = dict(provider_drivers or DEFAULT_PROVIDERS)
        self.default_provider = default_provider
        self.transport_url = transport_url
        self.db_name = db_name or (
            f"{DB_PREFIX}{os.getpid()}_{secrets.token_hex(4)}")
        self.project_id = project_id
        if server not in ("wsgiref", "gunicorn"):
            raise ValueError(f"server must be wsgiref or gunicorn: {server!r}")
        self.server = server
        self.extra_config = extra_config or {}
        self.extra_env = dict(env or {})
        self.python = python or sys.executable
        self._cli = None          # cli_zygote.CliZygote, on first use
        self.bindir = Path(self.python).parent
        self.debug = debug
        self.ensure_services = ensure_services
        self.check_providers = check_providers
        self.start_timeout = start_timeout
        self.kill_with_parent = kill_with_parent

        self.conf_path = self.workdir / "octavia.conf"
        self.openrc_path = self.workdir / "openrc"
        self.clouds_yaml_path = self.workdir / "clouds.yaml"
        rundir = self.workdir / "run"
        self.driver_agent_sockets = {
            "status": str(rundir / "status.sock"),
            "stats": str(rundir / "stats.sock"),
            "get": str(rundir / "get.sock"),
        }
        self.db_url = (f"mysql+pymysql://{DB_USER}@{DB_HOST}:{DB_PORT}/"
                       f"{self.db_name}")
        self.neutron = NeutronStub(project_id=self.project_id or "")
        self.api_url = None
        self.neutron_url = None
        self.start_seconds = None
        self.timings = {}
        self._api = None
        self._agent = None
        self._db_created = False
        self._started = False

    # -- database -----------------------------------------------------------
    def _sql(self, statement, database=None):
        return _sql(statement, database)

    def database_exists(self):
        return bool(self._sql("SELECT 1 FROM information_schema.SCHEMATA "
                              f"WHERE SCHEMA_NAME = '{self.db_name}'"))

    # -- config -------------------------------------------------------------
    def _validate(self):
        if self.default_provider not in self.provider_drivers:
            raise ValueError(f"default_provider {self.default_provider!r} "
                             f"not in provider_drivers "
                             f"{sorted(self.provider_drivers)}")
        for name, desc in self.provider_drivers.items():
            if any(c in f"{name}{desc}" for c in ",:"):
                raise ValueError("provider names/descriptions cannot contain "
                                 f"',' or ':' (DictOpt): {name!r}: {desc!r}")
        if self.check_providers:
            known = registered_providers()
            missing = sorted(set(self.provider_drivers) - set(known))
            if missing:
                raise StackError(
                    f"provider(s) {missing} have no 'octavia.api.drivers' "
                    f"entry point in this environment (known: {known}); "
                    "is the project installed (pip install -e .)?")
        if not self.db_name.replace("_", "").isalnum():
            raise ValueError(f"db_name must be [A-Za-z0-9_]: {self.db_name}")
        longest = max(self.driver_agent_sockets.values(), key=len)
        if len(longest.encode()) > _SUN_PATH_MAX:
            raise ValueError(f"workdir too long for a unix socket path "
                             f"({len(longest)} > {_SUN_PATH_MAX}): {longest}")

    def config(self):
        """The octavia.conf content as {section: {option: value}}."""
        drivers = ",".join(f"{n}:{d}"
                           for n, d in self.provider_drivers.items())
        cfg = {
            "DEFAULT": {
                "debug": str(self.debug),
                "use_stderr": "True",
            },
            "api_settings": {
                "bind_host": "127.0.0.1",
                "auth_strategy": "noauth",
                "enabled_provider_drivers": drivers,
                "default_provider_driver": self.default_provider,
            },
            "database": {
                "connection": self.db_url,
                "max_pool_size": "5",
            },
            "controller_worker": {
                "network_driver": "network_noop_driver",
                "compute_driver": "compute_noop_driver",
                "amphora_driver": "amphora_noop_driver",
                "volume_driver": "volume_noop_driver",
                "image_driver": "image_noop_driver",
            },
            "driver_agent": {
                "status_socket_path": self.driver_agent_sockets["status"],
                "stats_socket_path": self.driver_agent_sockets["stats"],
                "get_socket_path": self.driver_agent_sockets["get"],
                "provider_agent_shutdown_timeout": "5",
            },
            "oslo_concurrency": {
                "lock_path": str(self.workdir / "lock"),
            },
            # Octavia's local certificate manager: the API validates
            # TERMINATED_HTTPS container references against this store,
            # which the lab's L7 SEs read too (tools/lab/l7_ses.py).
            "certificates": {
                "cert_manager": "local_cert_manager",
                "storage_path": str(self.cert_storage_path),
            },
        }
        if self.transport_url:
            cfg["DEFAULT"]["transport_url"] = self.transport_url
        for section, opts in self.extra_config.items():
            cfg.setdefault(section, {}).update(
                {k: str(v) for k, v in opts.items()})
        return cfg

    @property
    def cert_storage_path(self):
        """[certificates] storage_path: where LocalCertManager.store_cert
        (with this path in [certificates]) puts test certificates."""
        return self.workdir / "certificates"

    def _write_config(self):
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str
        for section, opts in self.config().items():
            if section != "DEFAULT":
                parser.add_section(section)
            for k, v in opts.items():
                parser.set(section, k, v)
        # It holds the broker and database credentials: owner and group
        # only, from its creation.
        buf = io.StringIO()
        buf.write("# Written by tools/lab/localstack/octavia.py\n")
        parser.write(buf)
        _write_private(self.conf_path, buf.getvalue())

    def cli_env(self, base=None):
        """Environment for the `openstack` CLI against this stack."""
        env = dict(os.environ if base is None else base)
        for k in [k for k in env if k.startswith("OS_")]:
            del env[k]       # a stray OS_CLOUD / OS_AUTH_URL would win
        env.update(self._os_vars())
        env["PATH"] = f"{self.bindir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def _os_vars(self):
        return {
            "OS_AUTH_TYPE": "none",
            "OS_ENDPOINT": self.api_url,
            # Without this the CLI sends Neutron look-ups to OS_ENDPOINT too.
            "OS_NETWORK_ENDPOINT_OVERRIDE": self.neutron_url,
            "OS_LOAD_BALANCER_ENDPOINT_OVERRIDE": self.api_url,
        }

    def _write_openrc(self):
        note = (f"gives requests without X-Project-Id the project "
                f"{self.project_id}" if self.project_id else
                "refuses to create objects for requests without X-Project-Id")
        lines = ["# Source me: . openrc   (written by tools/lab/localstack/"
                 "octavia.py)",
                 f"# noauth: the API {note}.",
                 "unset OS_CLOUD OS_AUTH_URL OS_TOKEN OS_USERNAME OS_PASSWORD "
                 "OS_PROJECT_NAME OS_PROJECT_ID"]
        lines += [f"export {k}={v}" for k, v in self._os_vars().items()]
        lines.append(f"export PATH={self.bindir}:$PATH")
        _write_private(self.openrc_path, "\n".join(lines) + "\n")
        # clouds.yaml for openstacksdk users: OS_CLIENT_CONFIG_FILE=... and
        # openstack.connect(cloud='octavia-localstack').
        cloud = {"clouds": {"octavia-localstack": {
            "auth_type": "none",
            "auth": {"endpoint": self.api_url},
            "load_balancer_endpoint_override": self.api_url,
            "network_endpoint_override": self.neutron_url,
        }}}
        _write_private(self.clouds_yaml_path,
                       json.dumps(cloud, indent=2) + "\n")

    # -- lifecycle ----------------------------------------------------------
    def _env(self):
        env = dict(os.environ)
        env.update(self.extra_env)
        env["PATH"] = f"{self.bindir}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _tool(self, name):
        path = self.bindir / name
        if path.exists():
            return str(path)
        found = shutil.which(name)
        if not found:
            raise StackError(f"{name} not found beside {self.python} nor on "
                             "PATH: pip install octavia==19.0.0")
        return found

    def start(self):
        if self._started:
            return self
        t0 = time.monotonic()
        deadline = t0 + self.start_timeout
        self.timings = {}
        self._validate()
        if self.ensure_services:
            names = ["mariadb"]
            if (self.transport_url or "").startswith("rabbit"):
                names.append("rabbitmq")
            services.ensure(*names)
        sweep_stale_databases()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "lock").mkdir(exist_ok=True)
        self.cert_storage_path.mkdir(mode=0o700, exist_ok=True)
        rundir = Path(self.driver_agent_sockets["get"]).parent
        rundir.mkdir(exist_ok=True)
        for path in self.driver_agent_sockets.values():
            Path(path).unlink(missing_ok=True)
        self._started = True
        atexit.register(self.stop)
        try:
            self._sql(f"CREATE DATABASE `{self.db_name}` "
                      "CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
            self._db_created = True
            self.neutron.start()
            self.neutron_url = self.neutron.url
            self._write_config()
            env = self._env()
            # The API and the agent import for seconds; the schema migration
            # runs meanwhile.  Neither touches the database before a request.
            listener = _free_listening_socket()
            port = listener.getsockname()[1]
            self.api_url = f"http://127.0.0.1:{port}"
            api_args = ["--config-file", str(self.conf_path),
                        "--server", self.server]
            if self.project_id:
                api_args += ["--default-project-id", self.project_id]
            agent_args = ["--config-file", str(self.conf_path)]
            api_log = self.workdir / "octavia-api.log"
            agent_log = self.workdir / "octavia-driver-agent.log"
            zygote = self._zygote(env)
            try:
                if zygote is not None:
                    self._api = _Proc.forked(
                        zygote, "api", "octavia-api", api_args, api_log,
                        env, self.workdir, fds=(listener.fileno(),))
                else:
                    fd_args = ["--fd", str(listener.fileno())]
                    self._api = _Proc.start(
                        "octavia-api",
                        [self.python, str(API_RUNNER), *api_args, *fd_args],
                        api_log, env, self.workdir,
                        pass_fds=(listener.fileno(),),
                        pdeathsig=self.kill_with_parent)
            finally:
                listener.close()     # the child has its own copy
            if zygote is not None:
                self._agent = _Proc.forked(
                    zygote, "driver_agent", "octavia-driver-agent",
                    agent_args, agent_log, env, self.workdir)
            else:
                self._agent = _Proc.start(
                    "octavia-driver-agent",
                    [self._tool("octavia-driver-agent"), *agent_args],
                    agent_log, env, self.workdir,
                    pdeathsig=self.kill_with_parent)
            self._migrate(env, deadline)
            self.timings["migrated"] = time.monotonic() - t0
            self._write_openrc()
            self._wait_api(deadline)
            self.timings["api_ready"] = time.monotonic() - t0
            self._wait_agent(deadline)
            self.timings["agent_ready"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _zygote(self, env):
        """This process's Octavia zygote (octavia_zygote.py) for the
        threaded API, or None: gunicorn execs its own server; a stack that
        may outlive this process (kill_with_parent=False) cannot be its
        child; DSR_LAB_OCTAVIA_ZYGOTE=0 turns it off."""
        if (self.server != "wsgiref" or not self.kill_with_parent
                or os.environ.get("DSR_LAB_OCTAVIA_ZYGOTE", "1") == "0"):
            return None
        return octavia_zygote.shared(self.python, env.get("PYTHONPATH"))

    def _migrate(self, env, deadline):
        """The lab's schema: a copy of this host's migrated template
        (schema_template.py), or its own migration with
        DSR_LAB_SCHEMA_TEMPLATES=0."""
        if not schema_template.enabled():
            return self._upgrade(self.conf_path, env, deadline)
        key = schema_template.tool_key("octavia", self.python)

        def migrate(database):
            # Only [database] matters to octavia-db-manage.
            conf = self.workdir / "db-manage-template.conf"
            _write_private(conf, "[database]\nconnection = mysql+pymysql://"
                           f"{DB_USER}@{DB_HOST}:{DB_PORT}/{database}\n")
            self._upgrade(conf, env, deadline)
        template = schema_template.mysql_template(key, migrate)
        schema_template.copy_mysql(template, self.db_name)

    def _upgrade(self, conf_path, env, deadline):
        log = self.workdir / "db-manage.log"
        with open(log, "wb") as f:
            proc = subprocess.run(
                [self._tool("octavia-db-manage"), "--config-file",
                 str(conf_path), "upgrade", "head"],
                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                env=env, cwd=self.workdir,
                timeout=max(5.0, deadline - time.monotonic()))
        if proc.returncode != 0:
            raise StackError(f"octavia-db-manage upgrade head failed "
                             f"(rc {proc.returncode}):\n{_tail(log)}")

    def _wait_api(self, deadline):
        # A database-backed request: proves app, config and schema together.
        url = f"{self.api_url}/v2/lbaas/loadbalancers"
        last = None
        while time.monotonic() < deadline:
            self._api.check()
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}: {e.read()[:300]!r}"
                if e.code < 500:
                    break
            except (OSError, ValueError) as e:     # refused, timeout, reset
                last = repr(e)
            time.sleep(0.05)   # polling interval while the API imports
        raise StackError(f"Octavia API at {self.api_url} not ready ({last}); "
                         f"last lines of {self._api.log_path}:\n"
                         f"{_tail(self._api.log_path)}")

    def _wait_agent(self, deadline):
        last = None
        while time.monotonic() < deadline:
            self._agent.check()
            if all(os.path.exists(p)
                   for p in self.driver_agent_sockets.values()):
                try:
                    lib = self.driver_library()
                    # A real round trip through the get socket and the DB.
                    if lib.get_loadbalancer(str(uuid.uuid4())) is None:
                        return
                except Exception as e:   # refused between bind and listen
                    last = repr(e)
            time.sleep(0.05)
        raise StackError(f"driver agent not ready ({last}); last lines of "
                         f"{self._agent.log_path}:\n"
                         f"{_tail(self._agent.log_path)}")

    def stop(self):
        """Stop everything start() started and drop the database.

        Safe to call twice and after a failed start().  Raises StackError if
        a process group survives SIGKILL or the database cannot be dropped.
        """
        if not self._started:
            return
        errors = []
        # Both exit gracefully at once (a second or more each).
        for attr in ("_api", "_agent"):
            if getattr(self, attr) is not None:
                getattr(self, attr).terminate()
        for attr in ("_api", "_agent"):
            proc = getattr(self, attr)
            if proc is not None:
                try:
                    proc.stop()
                except StackError as e:
                    errors.append(str(e))
                setattr(self, attr, None)
        self.neutron.stop()
        if self._cli is not None:
            self._cli.stop()
            self._cli = None
        if self._db_created:
            try:
                self._sql(f"DROP DATABASE IF EXISTS `{self.db_name}`")
                self._db_created = False
            except Exception as e:
                errors.append(f"DROP DATABASE {self.db_name}: {e!r}")
        for path in self.driver_agent_sockets.values():
            Path(path).unlink(missing_ok=True)
        self._started = False
        atexit.unregister(self.stop)
        if errors:
            raise StackError("; ".join(errors))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- helpers ------------------------------------------------------------
    @property
    def pids(self):
        return {name: proc.pid for name, proc in
                (("api", self._api), ("driver_agent", self._agent))
                if proc is not None}

    @property
    def log_paths(self):
        return {"api": self.workdir / "octavia-api.log",
                "driver_agent": self.workdir / "octavia-driver-agent.log",
                "db_manage": self.workdir / "db-manage.log"}

    def add_subnet(self, subnet_id=None, cidr="192.0.2.0/24", ip_version=None,
                   **kw):
        """Make the Neutron stub know a subnet (and its network)."""
        return self.neutron.add_subnet(subnet_id, cidr, ip_version, **kw)

    def add_network(self, network_id=None, **kw):
        return self.neutron.add_network(network_id, **kw)

    def add_port(self, port_id=None, **kw):
        return self.neutron.add_port(port_id, **kw)

    def sdk(self, project_id=None):
        """An openstacksdk Connection to this stack (no auth).

        project_id: send X-Project-Id (default: the API adds self.project_id).
        """
        import openstack
        conn = openstack.connect(
            auth_type="none", auth={"endpoint": self.api_url},
            load_balancer_endpoint_override=self.api_url,
            network_endpoint_override=self.neutron_url)
        if project_id:
            conn.session.additional_headers["X-Project-Id"] = project_id
        return conn

    def driver_library(self):
        """octavia_lib DriverLibrary bound to this stack's agent sockets."""
        from octavia_lib.api.drivers import driver_lib
        return driver_lib.DriverLibrary(
            status_socket=self.driver_agent_sockets["status"],
            stats_socket=self.driver_agent_sockets["stats"],
            get_socket=self.driver_agent_sockets["get"])

    def report_loadbalancer_status(self, lb_id, provisioning_status,
                                   operating_status=None, timeout=10.0):
        """Act as the provider: push an LB status through the status socket.

        For providers that never report (noop_driver).  Waits (polling, with
        a deadline) until the driver agent's get socket sees the LB: the API
        calls the provider before it commits, so an early update finds no
        row.  provisioning_status DELETED finishes a delete.
        """
        lib = self.driver_library()
        deadline = time.monotonic() + timeout
        while lib.get_loadbalancer(lb_id) is None:
            if time.monotonic() > deadline:
                raise StackError(f"load balancer {lb_id} not visible to the "
                                 f"driver agent within {timeout} s")
            time.sleep(0.05)
        record = {"id": lb_id, "provisioning_status": provisioning_status}
        if operating_status:
            record["operating_status"] = operating_status
        lib.update_loadbalancer_status({"loadbalancers": [record]})

    def openstack(self, *args, check=True, timeout=60, json_output=False):
        """Run the real `openstack` CLI against this stack: forked from a
        process that imported it once (cli_zygote.py), or, with
        DSR_LAB_CLI_ZYGOTE=0, the console script in a new process."""
        argv = list(args)
        if json_output:
            argv += ["-f", "json"]
        if os.environ.get("DSR_LAB_CLI_ZYGOTE", "1") != "0":
            if self._cli is None:
                self._cli = cli_zygote.CliZygote(self.python, self.workdir)
            proc = self._cli.run(argv, self.cli_env(), timeout)
        else:
            proc = subprocess.run([self._tool("openstack"), *argv],
                                  env=self.cli_env(), capture_output=True,
                                  text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise StackError(f"{' '.join(args)} failed ({proc.returncode}):"
                             f"\n{proc.stderr.strip()}")
        if json_output and proc.returncode == 0:
            return json.loads(proc.stdout or "null")
        return proc


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description="Run a local Octavia stack "
                                "until interrupted.")
    p.add_argument("--workdir", required=True)
    p.add_argument("--provider", action="append", default=[],
                   metavar="NAME=DESCRIPTION",
                   help="enabled provider (repeatable; default dsr)")
    p.add_argument("--default-provider")
    p.add_argument("--subnet", action="append", default=[],
                   metavar="ID=CIDR", help="subnet for the Neutron stub")
    p.add_argument("--server", choices=("wsgiref", "gunicorn"),
                   default="wsgiref")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    providers = dict(x.split("=", 1) if "=" in x else (x, x)
                     for x in args.provider) or None
    default = args.default_provider or next(iter(providers or
                                                 DEFAULT_PROVIDERS))
    stack = OctaviaStack(args.workdir, provider_drivers=providers,
                         default_provider=default, server=args.server,
                         debug=args.debug)
    stack.start()
    for spec in args.subnet:
        sid, cidr = spec.split("=", 1)
        stack.add_subnet(sid, cidr)
    print(f"Octavia API {stack.api_url}  (started in "
          f"{stack.start_seconds:.1f} s)\nNeutron stub {stack.neutron_url}\n"
          f"config {stack.conf_path}\n. {stack.openrc_path}\n"
          f"driver agent sockets {stack.driver_agent_sockets}\n"
          "Ctrl-C stops it.", flush=True)
    try:
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
