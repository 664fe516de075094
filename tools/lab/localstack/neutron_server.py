"""A real Neutron API (from PyPI) without agents, on a private MariaDB
database.

    from tools.lab.localstack.neutron_server import NeutronServer

    neutron = NeutronServer("/tmp/nw", python=VENV_PYTHON,
                            keystone_auth=ks.add_service_user("neutron"))
    neutron.start()        # db (a copy of the host's migrated template,
                           # schema_template.py), gunicorn
                           # (= prepare() then serve(): the migrations
                           # need no Keystone, keystone_auth may be set
                           # in between)
    ... neutron.url ...
    neutron.stop()         # by PID / process group; drops the database

For clients that create networks, subnets and ports (octavia-tempest-plugin,
Octavia's allowed-address-pairs network driver): unlike neutron_stub.py it
accepts writes.  ML2 with no mechanism driver: nothing is wired, the API
and its database are real.  keystone_auth: keystonemiddleware options
(auth_url, username, password, ...); None serves noauth.  ipam_driver:
an IPAM driver of the checkout's, ``module:Class``
(tools/tempest/neutron_ipam.py); the server gets the checkout on its path
and the class as the ``neutron.ipam_drivers`` alias IPAM_ALIAS (Neutron
takes a bare class path too, but stevedore warns on every allocation).

Neutron needs its own interpreter (`python`: a venv holding neutron, pymysql
and gunicorn).  The WSGI entry point neutron.wsgi.api reads sys.argv, so a
two-line module written to workdir clears it before the import.
"""

import atexit
import os
from pathlib import Path
import secrets
import subprocess
import time
import urllib.error
import urllib.request

from tools.lab.localstack.octavia import _free_listening_socket
from tools.lab.localstack.octavia import _pid_alive
from tools.lab.localstack.octavia import _Proc
from tools.lab.localstack.octavia import _sql
from tools.lab.localstack.octavia import _tail
from tools.lab.localstack.octavia import DB_HOST
from tools.lab.localstack.octavia import DB_PORT
from tools.lab.localstack.octavia import DB_USER
from tools.lab.localstack.octavia import StackError
from tools.lab.localstack import schema_template

DB_PREFIX = "neutron_ls_"
ROOT = Path(__file__).resolve().parents[3]
IPAM_ALIAS = "dsr_lab"

_APP_MODULE = '''"""Written by tools/lab/localstack/neutron_server.py."""
import sys
sys.argv = ["neutron-api"]
from neutron.wsgi.api import application  # noqa: E402,F401
'''


def sweep_stale_databases():
    """Drop neutron_ls_<pid>_<hex> databases whose creating process is gone."""
    dropped = []
    for (name,) in _sql("SHOW DATABASES"):
        parts = name[len(DB_PREFIX):].split("_")
        if (name.startswith(DB_PREFIX) and len(parts) == 2
                and parts[0].isdigit() and not _pid_alive(int(parts[0]))):
            _sql(f"DROP DATABASE IF EXISTS `{name}`")
            dropped.append(name)
    return dropped


class NeutronServer:

    def __init__(self, workdir, python, keystone_auth=None, workers=1,
                 start_timeout=300.0, ipam_driver=None):
        self.workdir = Path(workdir).resolve()
        self.python = str(python)
        self.bindir = Path(self.python).parent
        self.keystone_auth = dict(keystone_auth or {})
        self.workers = workers
        self.start_timeout = start_timeout
        self.ipam_driver = ipam_driver
        self.db_name = f"{DB_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
        self.conf_path = self.workdir / "neutron.conf"
        self.ml2_path = self.workdir / "ml2_conf.ini"
        self.url = None
        self._proc = None
        self._db_created = False
        self._prepared = False
        self._started = False

    def config_text(self):
        db = (f"mysql+pymysql://{DB_USER}@{DB_HOST}:{DB_PORT}/{self.db_name}"
              "?charset=utf8mb4")
        lines = [
            "# Written by tools/lab/localstack/neutron_server.py",
            "[DEFAULT]",
            f"log_file = {self.workdir / 'neutron.log'}",
            "auth_strategy = " + ("keystone" if self.keystone_auth
                                  else "noauth"),
            "core_plugin = ml2",
            # network_ip_availability: Octavia picks a VIP subnet with free
            # addresses when a load balancer names only a network.
            "service_plugins = network_ip_availability",
            "transport_url = fake://",
            "api_paste_config = "
            f"{self.bindir.parent / 'etc/neutron/api-paste.ini'}",
            "notify_nova_on_port_status_changes = false",
            "notify_nova_on_port_data_changes = false",
            "dhcp_agent_notification = false",
            f"state_path = {self.workdir / 'state'}",
            *([f"ipam_driver = {IPAM_ALIAS}"] if self.ipam_driver else []),
            "[database]",
            f"connection = {db}",
            "[oslo_concurrency]",
            f"lock_path = {self.workdir / 'lock'}",
        ]
        if self.keystone_auth:
            lines.append("[keystone_authtoken]")
            lines.append(f"www_authenticate_uri = "
                         f"{self.keystone_auth['auth_url']}")
            lines += [f"{k} = {v}" for k, v in self.keystone_auth.items()]
        return "\n".join(lines) + "\n"

    @staticmethod
    def ml2_text():
        return "\n".join([
            "[ml2]",
            "type_drivers = local,flat,vlan",
            "tenant_network_types = local",
            "mechanism_drivers =",
            "extension_drivers = port_security",
            "[securitygroup]",
            "firewall_driver = noop",
            "",
        ])

    def start(self):
        """prepare() then serve()."""
        self.prepare()
        return self.serve()

    def prepare(self, timeout=None):
        """Database and its migrations (a copy of the host's template
        of neutron-db-manage upgrade heads; it needs no Keystone: run it
        while Keystone starts, set keystone_auth, then serve())."""
        if self._prepared:
            return self
        deadline = time.monotonic() + (timeout or self.start_timeout)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "lock").mkdir(exist_ok=True)
        self.conf_path.write_text(self.config_text())
        self.ml2_path.write_text(self.ml2_text())
        (self.workdir / "neutron_app.py").write_text(_APP_MODULE)
        if self.ipam_driver:
            self._write_ipam_entry_point()
        self._started = True
        atexit.register(self.stop)
        try:
            sweep_stale_databases()
            _sql(f"CREATE DATABASE `{self.db_name}` CHARACTER SET utf8mb4")
            self._db_created = True
            if schema_template.enabled():
                # The host's migrated template (schema_template.py).
                key = schema_template.tool_key("neutron", self.python)
                template = schema_template.mysql_template(
                    key, lambda db: self._upgrade(db, deadline))
                schema_template.copy_mysql(template, self.db_name)
            else:
                self._upgrade(self.db_name, deadline)
            self._prepared = True
        except BaseException:
            self.stop()
            raise
        return self

    def _write_ipam_entry_point(self):
        # workdir is on the server's path: a dist-info there is found by
        # importlib.metadata like an installed package's.
        info = self.workdir / "dsr_lab_ipam-0.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: dsr-lab-ipam\nVersion: 0\n")
        (info / "entry_points.txt").write_text(
            f"[neutron.ipam_drivers]\n{IPAM_ALIAS} = {self.ipam_driver}\n")

    def _upgrade(self, database, deadline):
        """neutron-db-manage upgrade heads on `database` (a config of its
        own: the lab's names its own database)."""
        conf = self.workdir / "db-manage.conf"
        conf.write_text(
            "[database]\nconnection = mysql+pymysql://"
            f"{DB_USER}@{DB_HOST}:{DB_PORT}/{database}?charset=utf8mb4\n")
        log = self.workdir / "db-manage.log"
        with open(log, "ab") as f:
            proc = subprocess.run(
                [str(self.bindir / "neutron-db-manage"),
                 "--config-file", str(self.conf_path),
                 "--config-file", str(self.ml2_path),
                 "--config-file", str(conf), "upgrade", "heads"],
                stdin=subprocess.DEVNULL, stdout=f,
                stderr=subprocess.STDOUT, cwd=self.workdir,
                timeout=max(5.0, deadline - time.monotonic()))
        if proc.returncode != 0:
            raise StackError(f"neutron-db-manage upgrade heads failed "
                             f"(rc {proc.returncode}):\n{_tail(log)}")

    def serve(self):
        """The API under gunicorn, with the keystone_auth set by now."""
        if self._proc is not None:
            return self
        self.prepare()
        deadline = time.monotonic() + self.start_timeout
        self.conf_path.write_text(self.config_text())
        try:
            env = {"PATH": f"{self.bindir}:/usr/sbin:/usr/bin:/sbin:/bin",
                   "PYTHONUNBUFFERED": "1",
                   "OS_NEUTRON_CONFIG_DIR": str(self.workdir),
                   "OS_NEUTRON_CONFIG_FILES":
                       f"{self.conf_path.name};{self.ml2_path.name}"}
            listener = _free_listening_socket()
            self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
            try:
                self._proc = _Proc.start(
                    "neutron",
                    [self.python, "-m", "gunicorn", "--bind",
                     f"fd://{listener.fileno()}", "--workers",
                     str(self.workers), "--worker-class", "gthread",
                     "--threads", "8", "--timeout", "120",
                     # No keep-alive: a client reusing a pooled connection
                     # gunicorn had just closed (2 s idle) got "Connection
                     # reset by peer" (an Octavia member create: HTTP 500).
                     "--keep-alive", "0",
                     "--graceful-timeout", "5", "--pythonpath",
                     f"{self.workdir},{ROOT}", "neutron_app:application"],
                    self.workdir / "gunicorn.log", env, self.workdir,
                    pass_fds=(listener.fileno(),))
            finally:
                listener.close()
            self._wait(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, deadline):
        # Version discovery is unauthenticated and needs the app loaded.
        last = None
        while time.monotonic() < deadline:
            self._proc.check()
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as r:
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.1)   # polling interval while gunicorn imports
        raise StackError(f"Neutron at {self.url} not ready ({last}); last "
                         f"lines of {self._proc.log_path}:\n"
                         f"{_tail(self._proc.log_path)}")

    def stop(self):
        if not self._started:
            return
        errors = []
        if self._proc is not None:
            try:
                self._proc.stop()
            except StackError as e:
                errors.append(str(e))
            self._proc = None
        if self._db_created:
            try:
                _sql(f"DROP DATABASE IF EXISTS `{self.db_name}`")
                self._db_created = False
            except Exception as e:  # noqa: BLE001
                errors.append(f"DROP DATABASE {self.db_name}: {e!r}")
        self._prepared = False
        self._started = False
        atexit.unregister(self.stop)
        if errors:
            raise StackError("; ".join(errors))
