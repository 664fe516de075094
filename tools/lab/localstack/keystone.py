"""A real Keystone (from PyPI) on SQLite, for an Octavia API with keystone
auth.

    from tools.lab.localstack.keystone import KeystoneServer

    ks = KeystoneServer("/tmp/ks",
                        python="/path/to/venv-with-keystone/bin/python")
    ks.start()                       # database (a copy of the host's
                                     # db_sync'ed template), fernet keys,
                                     # bootstrap, gunicorn
                                     # (= prepare(), any thread, then
                                     # serve(), the thread that lives on)
    ks.add_service_user("octavia")   # admin on project "service"
    ks.add_endpoint("octavia", "load-balancer", "http://127.0.0.1:9876")
    ... ks.auth_url, ks.admin_password ...
    ks.stop()

Keystone needs its own interpreter (`python`: a venv holding keystone and
gunicorn): its requirements are not the product's.  Everything lives in
workdir (keystone.conf, keystone.db, key repositories, keystone.log); the
server is gunicorn on 127.0.0.1:<free port> (a two-line module in workdir
clears sys.argv, which keystone.wsgi.api parses), in its own process group,
stopped by PID.  `keystone-manage bootstrap` creates the admin user and
project and the roles admin, manager, member, reader and service.

Client side (users, services, endpoints) uses keystoneauth1 from the calling
interpreter.
"""

import atexit
import concurrent.futures
from pathlib import Path
import secrets
import shutil
import subprocess
import time
import urllib.request

from tools.lab.localstack.octavia import _free_listening_socket
from tools.lab.localstack.octavia import _Proc
from tools.lab.localstack.octavia import _tail
from tools.lab.localstack.octavia import StackError
from tools.lab.localstack import schema_template

REGION = "RegionOne"
# keystone.wsgi.api parses sys.argv (gunicorn's arguments): clear it first.
_APP_MODULE = '''"""Written by tools/lab/localstack/keystone.py."""
import sys
sys.argv = ["keystone-api"]
from keystone.wsgi.api import application  # noqa: E402,F401
'''
DOMAIN = "Default"          # name of the default domain
DOMAIN_ID = "default"


class KeystoneServer:
    """keystone-manage + gunicorn serving keystone.wsgi.api:application."""

    def __init__(self, workdir, python, admin_password=None, workers=1,
                 start_timeout=300.0):
        self.workdir = Path(workdir).resolve()
        self.python = str(python)
        self.bindir = Path(self.python).parent
        self.admin_password = admin_password or secrets.token_hex(12)
        self.workers = workers
        self.start_timeout = start_timeout
        self.conf_path = self.workdir / "keystone.conf"
        self.log_path = self.workdir / "keystone.log"
        self.url = None
        self.auth_url = None
        self.service_passwords = {}
        self._proc = None
        self._listener = None
        self._session = None
        self._prepared = False
        self._started = False

    # -- config -------------------------------------------------------------
    def config_text(self):
        return "\n".join([
            "# Written by tools/lab/localstack/keystone.py",
            "[DEFAULT]",
            f"log_file = {self.log_path}",
            "[database]",
            f"connection = sqlite:///{self.workdir / 'keystone.db'}",
            "[identity]",
            # bcrypt's minimum cost: tempest creates a user per role per
            # test class and every token issue hashes the password; at the
            # default cost (12) that is ~0.3 s each of single-threaded
            # Keystone on a loaded 2-core host.  Test-only passwords.
            "password_hash_rounds = 4",
            "[cache]",
            # Token validation and role lookups served from memory (one
            # worker process): each uncached request costs Keystone seconds
            # on a loaded 2-core host, and tempest makes a thousand.
            "enabled = true",
            "backend = dogpile.cache.memory",
            "[token]",
            "provider = fernet",
            "[fernet_tokens]",
            f"key_repository = {self.workdir / 'fernet-keys'}",
            "[fernet_receipts]",
            f"key_repository = {self.workdir / 'fernet-keys'}",
            "[credential]",
            f"key_repository = {self.workdir / 'credential-keys'}",
            "",
        ])

    def _manage(self, *args, timeout=None, conf_path=None):
        # start_timeout bounds each run: db_sync took over 120 s on this
        # 2-core host at load 28.
        timeout = timeout or self.start_timeout
        tool = self.bindir / "keystone-manage"
        log_path = self.workdir / f"keystone-manage-{args[0]}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.run(
                [str(tool), "--config-file",
                 str(conf_path or self.conf_path), *args],
                stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.workdir, timeout=timeout)
        if proc.returncode != 0:
            raise StackError(
                f"keystone-manage {args[0]} failed (rc {proc.returncode}):\n"
                f"{_tail(log_path)}")

    # -- lifecycle ----------------------------------------------------------
    def start(self):
        """prepare() then serve()."""
        self.prepare()
        return self.serve()

    def prepare(self):
        """Configuration, database, keys and bootstrap (keystone-manage:
        the slow part).  May run in another thread; serve() must not: the
        server dies with the thread that starts it (setpriv --pdeathsig is
        bound to the calling thread)."""
        if self._prepared:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config_text())
        (self.workdir / "keystone_app.py").write_text(_APP_MODULE)
        self._started = True
        atexit.register(self.stop)
        try:
            # Held until serve() hands it to gunicorn: bootstrap writes the
            # endpoint URL, so the port is chosen first.
            self._listener = _free_listening_socket()
            port = self._listener.getsockname()[1]
            self.url = f"http://127.0.0.1:{port}"
            self.auth_url = f"{self.url}/v3"
            # The key repositories need no database: set them up while
            # db_sync runs (each keystone-manage is seconds of imports).
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                jobs = [pool.submit(self._database)] + [
                    pool.submit(self._manage, what, "--keystone-user",
                                "root", "--keystone-group", "root")
                    for what in ("fernet_setup", "credential_setup")]
                for job in jobs:
                    job.result()
            self._manage("bootstrap",
                         "--bootstrap-password", self.admin_password,
                         "--bootstrap-username", "admin",
                         "--bootstrap-project-name", "admin",
                         "--bootstrap-role-name", "admin",
                         "--bootstrap-service-name", "keystone",
                         "--bootstrap-region-id", REGION,
                         "--bootstrap-admin-url", self.auth_url,
                         "--bootstrap-public-url", self.auth_url,
                         "--bootstrap-internal-url", self.auth_url)
            self._prepared = True
        except BaseException:
            self.stop()
            raise
        return self

    def _database(self):
        """keystone.db: a copy of the host's db_sync'ed template
        (schema_template.py), or its own db_sync with
        DSR_LAB_SCHEMA_TEMPLATES=0."""
        if not schema_template.enabled():
            return self._manage("db_sync")
        key = schema_template.tool_key("keystone", self.python)

        def migrate(path):
            # Only [database] matters to db_sync.
            conf = self.workdir / "db-sync-template.conf"
            conf.write_text(f"[database]\nconnection = sqlite:///{path}\n")
            self._manage("db_sync", conf_path=conf)
        template = schema_template.sqlite_template(key, migrate)
        shutil.copyfile(template, self.workdir / "keystone.db")

    def serve(self):
        """gunicorn on the prepared port; returns when Keystone answers."""
        if self._proc is not None:
            return self
        self.prepare()
        deadline = time.monotonic() + self.start_timeout
        try:
            env = {"PATH": f"{self.bindir}:/usr/sbin:/usr/bin:/sbin:/bin",
                   "PYTHONUNBUFFERED": "1",
                   "OS_KEYSTONE_CONFIG_FILES": str(self.conf_path)}
            listener, self._listener = self._listener, None
            try:
                self._proc = _Proc.start(
                    "keystone",
                    [self.python, "-m", "gunicorn", "--bind",
                     f"fd://{listener.fileno()}", "--workers",
                     str(self.workers), "--worker-class", "gthread",
                     # One request at a time: SQLite allows one writer
                     # and concurrent token issues (each updates the
                     # user's last_active_at) failed "database is locked".
                     "--threads", "1", "--timeout", "120",
                     # No keep-alive (see neutron_server.py).
                     "--keep-alive", "0",
                     "--graceful-timeout", "5", "--pythonpath",
                     str(self.workdir), "keystone_app:application"],
                    self.workdir / "gunicorn.log", env, self.workdir,
                    pass_fds=(listener.fileno(),))
            finally:
                listener.close()
            self._wait(deadline)
            self._ensure_project("service")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, deadline):
        last = None
        while time.monotonic() < deadline:
            self._proc.check()
            try:
                with urllib.request.urlopen(self.auth_url, timeout=2) as r:
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.1)   # polling interval while gunicorn imports
        raise StackError(f"Keystone at {self.auth_url} not ready ({last}); "
                         f"last lines of {self._proc.log_path}:\n"
                         f"{_tail(self._proc.log_path)}")

    def stop(self):
        """Stop the server (by PID / process group).  The SQLite database
        and keys stay in workdir: the caller removes workdir."""
        if not self._started:
            return
        if self._proc is not None:
            self._proc.stop()
            self._proc = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._session = None
        self._prepared = False
        self._started = False
        atexit.unregister(self.stop)

    # -- identity API ---------------------------------------------------------
    def admin_auth(self):
        return {"auth_url": self.auth_url, "username": "admin",
                "password": self.admin_password, "project_name": "admin",
                "user_domain_name": DOMAIN, "project_domain_name": DOMAIN}

    def client(self):
        """python-keystoneclient v3 Client as the bootstrap admin."""
        from keystoneauth1.identity import v3
        from keystoneauth1 import session
        from keystoneclient.v3 import client
        if self._session is None:
            self._session = session.Session(auth=v3.Password(
                **self.admin_auth()))
        return client.Client(session=self._session)

    def _ensure_project(self, name):
        ks = self.client()
        found = ks.projects.list(name=name)
        return found[0] if found else ks.projects.create(name, DOMAIN_ID)

    def _role(self, name):
        ks = self.client()
        found = ks.roles.list(name=name)
        return found[0] if found else ks.roles.create(name)

    def add_service_user(self, name, roles=("admin", "service")):
        """A user on project "service" (what services authenticate as);
        returns its auth options for keystonemiddleware / keystoneauth."""
        ks = self.client()
        password = secrets.token_hex(12)
        project = self._ensure_project("service")
        user = ks.users.create(name, domain=DOMAIN_ID, password=password,
                               default_project=project)
        for role in roles:
            ks.roles.grant(self._role(role), user=user, project=project)
        self.service_passwords[name] = password
        return self.service_auth(name)

    def service_auth(self, name):
        return {"auth_url": self.auth_url, "auth_type": "password",
                "username": name, "password": self.service_passwords[name],
                "project_name": "service", "user_domain_name": DOMAIN,
                "project_domain_name": DOMAIN}

    def add_endpoint(self, name, service_type, url):
        """Register a service and its public/internal/admin endpoints."""
        ks = self.client()
        service = ks.services.create(name, type=service_type)
        for interface in ("public", "internal", "admin"):
            ks.endpoints.create(service, url, interface=interface,
                                region=REGION)
        return service


def octavia_stack_class():
    """OctaviaStack with keystone auth and the allowed-address-pairs network
    driver on a real Neutron (a function: importing
    tools.lab.localstack.octavia at module level is fine, the class is built
    on demand to keep this module's import light)."""
    from tools.lab.localstack.octavia import OctaviaStack

    class KeystoneOctaviaStack(OctaviaStack):
        """Octavia as a gate runs it: `auth_strategy = keystone` with the
        keystone default roles enforced, VIP ports allocated in Neutron.

        keystone: a started KeystoneServer; octavia_auth: the service
        user's options (KeystoneServer.add_service_user('octavia'));
        neutron_url: the Neutron endpoint.  Other arguments: OctaviaStack.
        """

        def __init__(self, workdir, keystone, octavia_auth, neutron_url,
                     **kw):
            extra = kw.pop('extra_config', None) or {}
            auth = {k: str(v) for k, v in octavia_auth.items()}
            base = {
                'api_settings': {'auth_strategy': 'keystone'},
                'keystone_authtoken': {
                    'www_authenticate_uri': keystone.auth_url, **auth},
                'service_auth': dict(auth),
                # The service user in [neutron] itself: left out, Octavia
                # copies [service_auth] into [neutron] on first use without
                # a lock, and two API threads doing it at once made a load
                # balancer create fail "password is a required attribute"
                # (tier-2 tempest, four workers, CI rehearsal 12).
                'neutron': {'endpoint_override': neutron_url,
                            'region_name': REGION, **auth},
                'controller_worker': {
                    'network_driver': 'allowed_address_pairs_driver'},
                'oslo_policy': {'enforce_scope': 'True',
                                'enforce_new_defaults': 'True'},
            }
            for section, opts in extra.items():
                base.setdefault(section, {}).update(opts)
            super().__init__(workdir, extra_config=base, **kw)
            self.keystone = keystone

        def _wait_api(self, deadline):
            # The unauthenticated probe of OctaviaStack gets 401: ask as
            # the bootstrap admin.
            url = f"{self.api_url}/v2/lbaas/loadbalancers"
            last = None
            while time.monotonic() < deadline:
                self._api.check()
                try:
                    token = self.keystone.client().session.get_token()
                    req = urllib.request.Request(
                        url, headers={"X-Auth-Token": token})
                    with urllib.request.urlopen(req, timeout=5) as r:
                        if r.status == 200:
                            return
                        last = f"HTTP {r.status}"
                except OSError as e:
                    last = repr(e)
                time.sleep(0.1)   # polling interval while the API imports
            raise StackError(f"Octavia API at {self.api_url} not ready "
                             f"({last}); last lines of {self._api.log_path}:"
                             f"\n{_tail(self._api.log_path)}")

    return KeystoneOctaviaStack
