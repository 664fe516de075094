"""Migrated schema templates: migrate once per host, copy per lab.

Every lab used to run its tools' migrations (octavia-db-manage upgrade
head, neutron-db-manage upgrade heads, keystone-manage db_sync): seconds of
imports and DDL each, paid again by every lab of a CI run.  The schema a
migration produces depends only on the tool, its version and its migration
scripts, so it is built once into a template keyed by those three and each
lab's database is a copy of it (schema and rows: alembic_version, Octavia's
lookup tables...).

    name = mysql_template("octavia", key, migrate)   # migrate(db_name)
    copy_mysql(name, "octavia_ls_1234_ab12cd34")      # the lab's database

    path = sqlite_template("keystone", key, migrate)  # migrate(db_path)
    shutil.copyfile(path, workdir / "keystone.db")

Rules:
* key = TemplateKey(tool, version, digest of the migration scripts):
  tool_key() reads both from the interpreter that runs the tool (its own
  venv).  A changed script, an upgrade or another venv -> another template.
* One builder per template per host: an exclusive flock on a file named
  after the template (a killed builder's lock goes with its process);
  others wait for it, then use what it built.
* A template is complete only once its build finished: MariaDB templates
  are built into a temporary database, then a marker table (holding the
  key) is written and everything moves into the template's name in ONE
  atomic RENAME TABLE; a database of that name without the marker (a
  build interrupted between CREATE DATABASE and the rename) is dropped and
  rebuilt.  SQLite templates are built into a temporary file and renamed
  onto the template's path (atomic).  So an interrupted build is never
  used.
* DSR_LAB_SCHEMA_TEMPLATES=0 in the environment: every lab migrates its
  own database, as before (e.g. to compare start times).

Templates stay on the host (a few MB each; a new key makes a new one):
databases dsr_tmpl_<tool>_<digest>, files in TEMPLATE_DIR.  Build
databases of processes that died are dropped by the next build.
"""

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
from pathlib import Path
import secrets
import subprocess
import tempfile

from tools.lab.localstack import octavia as localstack

TEMPLATE_PREFIX = "dsr_tmpl_"
BUILD_PREFIX = "dsr_tmpl_build_"
MARKER_TABLE = "dsr_template_complete"
TEMPLATE_DIR = Path(tempfile.gettempdir()) / "dsr-schema-templates"
ENV_SWITCH = "DSR_LAB_SCHEMA_TEMPLATES"
# The package folder whose files decide each tool's schema.
MIGRATION_DIRS = {
    "octavia": ("octavia", "octavia/db/migration"),
    "neutron": ("neutron", "neutron/db/migration"),
    "keystone": ("keystone", "keystone/common/sql/migrations"),
}


def enabled(environ=None):
    """False when DSR_LAB_SCHEMA_TEMPLATES=0: labs migrate their own."""
    value = (os.environ if environ is None else environ).get(ENV_SWITCH, "1")
    return value.strip().lower() not in ("0", "no", "false", "off")


@dataclasses.dataclass(frozen=True)
class TemplateKey:
    tool: str
    version: str
    digest: str       # sha256 of the migration scripts (scripts_digest)

    def name(self):
        """dsr_tmpl_<tool>_<24 hex>: a MariaDB name (<= 64 chars) that
        changes with any part of the key."""
        if not self.tool.isalnum():
            raise ValueError(f"tool must be alphanumeric: {self.tool!r}")
        whole = hashlib.sha256(json.dumps(
            [self.tool, self.version, self.digest]).encode()).hexdigest()
        return f"{TEMPLATE_PREFIX}{self.tool.lower()}_{whole[:24]}"

    def text(self):
        return f"{self.tool} {self.version} {self.digest}"


def scripts_digest(root):
    """sha256 over every file under root (relative path and bytes, in
    path order), byte-code caches aside: adding, removing, renaming or
    editing a migration changes it."""
    root = Path(root)
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts
                   and p.suffix not in (".pyc", ".pyo"))
    if not files:
        raise FileNotFoundError(f"no migration scripts under {root}")
    for path in files:
        rel = path.relative_to(root).as_posix().encode()
        data = path.read_bytes()
        h.update(b"%d:%s%d:" % (len(rel), rel, len(data)))
        h.update(data)
    return h.hexdigest()


_LOCATE = (
    "import importlib.metadata as m, importlib.util as u, sys\n"
    "spec = u.find_spec(sys.argv[1])\n"
    "print(m.version(sys.argv[1]))\n"
    "print(spec.submodule_search_locations[0])\n")


@functools.lru_cache(maxsize=None)
def tool_key(tool, python):
    """The TemplateKey of `tool` as the interpreter `python` (the venv
    that runs the tool) has it installed.  Asks that interpreter: its
    site-packages are not necessarily this process's."""
    dist, rel = MIGRATION_DIRS[tool]
    out = subprocess.run([str(python), "-I", "-c", _LOCATE, dist],
                         capture_output=True, text=True, timeout=60,
                         check=True, stdin=subprocess.DEVNULL).stdout
    version, package_dir = out.splitlines()[:2]
    scripts = Path(package_dir).parent / rel
    return TemplateKey(tool, version, scripts_digest(scripts))


@contextlib.contextmanager
def _build_lock(name):
    """Exclusive per-host lock for building template `name`."""
    TEMPLATE_DIR.mkdir(mode=0o700, exist_ok=True)
    with open(TEMPLATE_DIR / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file closes
        yield


# -- MariaDB -----------------------------------------------------------------
def _connect(database=None):
    import pymysql
    from pymysql.constants import CLIENT
    return pymysql.connect(
        host=localstack.DB_HOST, port=localstack.DB_PORT,
        user=localstack.DB_USER, database=database, connect_timeout=10,
        autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS)


def _run(statements, database=None):
    """Execute statements in one session (one round trip)."""
    conn = _connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute(";\n".join(statements))
            while cur.nextset():
                pass
    finally:
        conn.close()


def _tables(database):
    return [name for name, kind in
            localstack._sql("SHOW FULL TABLES", database)
            if kind == "BASE TABLE"]


def is_complete(tables, marker_rows, key):
    """The completeness rule: the marker table is there and names this
    key (it moves in with the rest in one RENAME TABLE)."""
    return MARKER_TABLE in tables and [r[0] for r in marker_rows] == [
        key.text()]


def mysql_template_complete(key):
    import pymysql
    name = key.name()
    try:
        tables = _tables(name)
        rows = (localstack._sql(f"SELECT template_key FROM "
                                f"`{MARKER_TABLE}`", name)
                if MARKER_TABLE in tables else ())
    except pymysql.err.OperationalError as e:
        # 1049 unknown database: none yet, or a builder is replacing an
        # interrupted one right now.
        if e.args[0] == 1049:
            return False
        raise
    return is_complete(tables, rows, key)


def sweep_build_databases():
    """Drop dsr_tmpl_build_<pid>_<hex> databases of dead processes."""
    dropped = []
    for (name,) in localstack._sql("SHOW DATABASES"):
        parts = name[len(BUILD_PREFIX):].split("_")
        if (name.startswith(BUILD_PREFIX) and len(parts) == 2
                and parts[0].isdigit()
                and not localstack._pid_alive(int(parts[0]))):
            localstack._sql(f"DROP DATABASE IF EXISTS `{name}`")
            dropped.append(name)
    return dropped


def mysql_template(key, migrate, charset="utf8mb4"):
    """The name of key's complete template database, built first if this
    host has none: migrate(database_name) migrates an empty database."""
    name = key.name()
    if mysql_template_complete(key):
        return name
    with _build_lock(name):
        if mysql_template_complete(key):     # built while we waited
            return name
        sweep_build_databases()
        build = f"{BUILD_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
        localstack._sql(f"CREATE DATABASE `{build}` CHARACTER SET {charset}")
        try:
            migrate(build)
            localstack._sql(
                f"CREATE TABLE `{MARKER_TABLE}` (template_key TEXT NOT NULL)",
                build)
            localstack._sql(f"INSERT INTO `{MARKER_TABLE}` VALUES "
                            f"('{key.text()}')", build)
            # A template without the marker is an interrupted build.
            localstack._sql(f"DROP DATABASE IF EXISTS `{name}`")
            localstack._sql(f"CREATE DATABASE `{name}` CHARACTER SET "
                            f"{charset}")
            localstack._sql("RENAME TABLE " + ", ".join(
                f"`{build}`.`{t}` TO `{name}`.`{t}`"
                for t in _tables(build)))
        finally:
            localstack._sql(f"DROP DATABASE IF EXISTS `{build}`")
    return name


def copy_mysql(template, target):
    """Fill the existing, empty database `target` with template's tables
    (SHOW CREATE TABLE keeps the foreign keys CREATE TABLE ... LIKE drops)
    and rows, the marker aside.  Faster than mariadb-dump | mariadb on
    these hosts (docs/benchmarks.md, "CI wall time")."""
    conn = _connect(template)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW FULL TABLES")
            tables = [t for t, kind in cur.fetchall()
                      if kind == "BASE TABLE" and t != MARKER_TABLE]
            ddl = []
            for table in tables:
                cur.execute(f"SHOW CREATE TABLE `{table}`")
                ddl.append(cur.fetchone()[1])
    finally:
        conn.close()
    _run(["SET FOREIGN_KEY_CHECKS = 0", *ddl, *(
        f"INSERT INTO `{target}`.`{t}` SELECT * FROM `{template}`.`{t}`"
        for t in tables), "SET FOREIGN_KEY_CHECKS = 1"], database=target)


# -- SQLite -------------------------------------------------------------------
def sqlite_template(key, migrate):
    """Path of key's complete SQLite template, built first if missing:
    migrate(path) migrates an empty database file at path.  The file
    appears under its name only by rename, once migrate() returned."""
    name = key.name()
    path = TEMPLATE_DIR / f"{name}.sqlite"
    if path.exists():
        return path
    with _build_lock(name):
        if path.exists():
            return path
        build = TEMPLATE_DIR / f"{name}.build-{os.getpid()}"
        build.unlink(missing_ok=True)
        try:
            migrate(build)
            os.replace(build, path)
        finally:
            build.unlink(missing_ok=True)
    return path
