"""MariaDB schema templates (tools/lab/localstack/schema_template.py) on
the machine's MariaDB: built once under a lock, never used when a build
was interrupted, and copied with their foreign keys and rows.  A fake
migration (a few tables with a foreign key and rows) under a key no real
tool has; the labs' own tests prove real Octavia / Neutron schemas work
from their copies."""

import multiprocessing
import uuid

import pytest

from tools.lab.localstack import octavia as localstack
from tools.lab.localstack import schema_template as st
from tools.lab.localstack import services


@pytest.fixture(scope='module', autouse=True)
def mariadb():
    services.ensure('mariadb')


@pytest.fixture
def key(tmp_path, monkeypatch):
    monkeypatch.setattr(st, 'TEMPLATE_DIR', tmp_path / 'tmpl')
    k = st.TemplateKey('citest', '0', uuid.uuid4().hex)
    yield k
    localstack._sql(f'DROP DATABASE IF EXISTS `{k.name()}`')


@pytest.fixture
def target():
    name = f'dsr_tmpltest_{uuid.uuid4().hex[:12]}'
    localstack._sql(f'CREATE DATABASE `{name}`')
    yield name
    localstack._sql(f'DROP DATABASE IF EXISTS `{name}`')


def _migrate(database):
    for statement in (
            'CREATE TABLE status (name VARCHAR(16) PRIMARY KEY)',
            "INSERT INTO status VALUES ('ACTIVE'), ('ERROR')",
            'CREATE TABLE lb (id INT AUTO_INCREMENT PRIMARY KEY, '
            'status VARCHAR(16) NOT NULL, '
            'FOREIGN KEY (status) REFERENCES status (name))',
            'CREATE TABLE alembic_version (version_num VARCHAR(32))',
            "INSERT INTO alembic_version VALUES ('head1')"):
        localstack._sql(statement, database)


def _databases(prefix):
    return [n for (n,) in localstack._sql('SHOW DATABASES')
            if n.startswith(prefix)]


def test_copy_has_rows_and_enforced_foreign_keys(key, target):
    built = []

    def migrate(database):
        built.append(database)
        _migrate(database)
    name = st.mysql_template(key, migrate)
    assert name == key.name() and built and built[0] != name
    assert st.mysql_template(key, migrate) == name and len(built) == 1
    st.copy_mysql(name, target)
    assert sorted(t for (t,) in localstack._sql('SHOW TABLES', target)) == [
        'alembic_version', 'lb', 'status']       # no marker in the lab
    assert localstack._sql('SELECT * FROM alembic_version', target) == (
        ('head1',),)
    localstack._sql("INSERT INTO lb (status) VALUES ('ACTIVE')", target)
    import pymysql
    with pytest.raises(pymysql.err.IntegrityError):
        localstack._sql("INSERT INTO lb (status) VALUES ('GONE')", target)


def test_interrupted_build_is_never_used(key, target):
    def interrupted(database):
        _migrate(database)
        raise KeyboardInterrupt      # killed before the rename

    with pytest.raises(KeyboardInterrupt):
        st.mysql_template(key, interrupted)
    assert not st.mysql_template_complete(key)
    assert _databases(key.name()) == []
    # What a builder killed between CREATE DATABASE and RENAME TABLE
    # leaves: the template's name without the marker (a partial schema).
    localstack._sql(f'CREATE DATABASE `{key.name()}`')
    localstack._sql('CREATE TABLE status (name VARCHAR(16))', key.name())
    assert not st.mysql_template_complete(key)
    built = []
    st.mysql_template(key, lambda db: (built.append(db), _migrate(db)))
    assert built and st.mysql_template_complete(key)
    st.copy_mysql(key.name(), target)
    assert localstack._sql('SELECT COUNT(*) FROM status', target) == ((2,),)


def test_build_databases_of_dead_builders_are_swept():
    ctx = multiprocessing.get_context('fork')
    child = ctx.Process(target=lambda: None)
    child.start()
    child.join()
    dead = f'{st.BUILD_PREFIX}{child.pid}_{uuid.uuid4().hex[:8]}'
    live = f'{st.BUILD_PREFIX}1_{uuid.uuid4().hex[:8]}'      # init: alive
    for name in (dead, live):
        localstack._sql(f'CREATE DATABASE `{name}`')
    try:
        st.sweep_build_databases()
        assert _databases(dead) == [] and _databases(live) == [live]
    finally:
        for name in (dead, live):
            localstack._sql(f'DROP DATABASE IF EXISTS `{name}`')


def _build_in_child(template_dir, key, queue):
    st.TEMPLATE_DIR = template_dir

    def migrate(database):
        queue.put(('built', database))
        _migrate(database)
    queue.put(('name', st.mysql_template(key, migrate)))


def test_concurrent_labs_build_once(key, target):
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()
    children = [ctx.Process(target=_build_in_child,
                            args=(st.TEMPLATE_DIR, key, queue))
                for _ in range(3)]
    for c in children:
        c.start()
    for c in children:
        c.join(timeout=120)
        assert c.exitcode == 0
    events = [queue.get(timeout=5) for _ in range(4)]
    assert sorted(kind for kind, _ in events) == ['built', 'name', 'name',
                                                  'name']
    assert {v for kind, v in events if kind == 'name'} == {key.name()}
