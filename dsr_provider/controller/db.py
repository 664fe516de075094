"""Database engine, sessions and schema migrations (alembic).

Migrations run only from ``dsr-db-manage upgrade`` (dsr_provider/cmd/
db_manage.py), once per deployment, never from a starting controller:
controllers started together would race on DDL (MySQL DDL is not
transactional).  A controller calls require_head() and refuses to run on a
schema that is not the one its code expects.
"""

import contextlib
import os

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
import sqlalchemy as sa
from sqlalchemy import orm

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          'migrations')
# Serialises concurrent "dsr-db-manage upgrade" runs (deployment tools on
# several hosts): the second waits, then finds the schema at head.
LOCK_NAME = 'octavia_dsr_migrations'
LOCK_TIMEOUT = 600


class SchemaNotCurrent(RuntimeError):
    """The database schema is not the revision this code needs."""


def engine(url):
    kwargs = {'pool_pre_ping': True}
    if url.startswith('sqlite'):
        kwargs['connect_args'] = {'check_same_thread': False}
    return sa.create_engine(url, **kwargs)


def _config(url=None):
    cfg = Config()
    cfg.set_main_option('script_location', MIGRATIONS)
    if url is not None:
        cfg.set_main_option('sqlalchemy.url', url.replace('%', '%%'))
    return cfg


def is_mysql(dialect_name):
    """Whether a SQLAlchemy dialect is MySQL's or MariaDB's (SQLAlchemy
    names MariaDB 'mariadb' in a mariadb:// URL, 'mysql' in a mysql://
    one)."""
    return dialect_name in ('mysql', 'mariadb')


@contextlib.contextmanager
def _migration_lock(connection):
    """A server-side named lock where the database has one (MySQL/MariaDB,
    PostgreSQL); SQLite serialises writers itself."""
    dialect = connection.dialect.name
    if is_mysql(dialect):
        got = connection.execute(sa.text('SELECT GET_LOCK(:n, :t)'), {
            'n': LOCK_NAME, 't': LOCK_TIMEOUT}).scalar()
        if got != 1:
            raise SchemaNotCurrent(f'another schema upgrade holds the lock '
                                   f'{LOCK_NAME!r} for over {LOCK_TIMEOUT} s')
        try:
            yield
        finally:
            connection.execute(sa.text('SELECT RELEASE_LOCK(:n)'),
                               {'n': LOCK_NAME})
    elif dialect == 'postgresql':
        key = sa.text('SELECT pg_advisory_lock(hashtext(:n))')
        connection.execute(key, {'n': LOCK_NAME})
        try:
            yield
        finally:
            connection.execute(sa.text(
                'SELECT pg_advisory_unlock(hashtext(:n))'), {'n': LOCK_NAME})
    else:
        yield


def upgrade(url, revision='head'):
    """Bring the schema to ``revision`` (idempotent: at that revision
    already, nothing happens).  Returns the revisions (before, after),
    read under the lock."""
    cfg = _config(url)
    eng = engine(url)
    try:
        # The lock on a connection of its own, released only after the
        # migrations' transaction committed: held by the migrating
        # connection, it was released before that commit, and a second
        # upgrade waiting on it read the revision before the last stamp
        # and ran the last migration again ("table already exists").
        with eng.connect() as lock_connection, \
                _migration_lock(lock_connection):
            with eng.begin() as connection:
                before = _heads(connection)
                cfg.attributes['connection'] = connection
                command.upgrade(cfg, revision)
                after = _heads(connection)
            return before, after
    finally:
        eng.dispose()


def _heads(connection):
    return tuple(MigrationContext.configure(connection).get_current_heads())


def head():
    """The newest revision this code knows."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current(url):
    """The revisions the database is at (empty: no schema yet)."""
    eng = engine(url)
    try:
        with eng.connect() as connection:
            return _heads(connection)
    finally:
        eng.dispose()


def history():
    """[(revision, down_revision, message)], newest first."""
    script = ScriptDirectory.from_config(_config())
    return [(rev.revision, rev.down_revision, rev.doc)
            for rev in script.walk_revisions()]


def require_head(url):
    """Raise SchemaNotCurrent (naming the fix) unless the database is at
    this code's head revision."""
    want = head()
    have = current(url)
    if have == (want,):
        return
    if not have:
        state = 'has no octavia-dsr schema yet'
    else:
        known = {rev for rev, _, _ in history()}
        newer = [r for r in have if r not in known]
        state = (f'is at revision {", ".join(have)}' +
                 (' (newer than this code: upgrade the code)' if newer
                  else ''))
    raise SchemaNotCurrent(
        f'the database {sa.engine.make_url(url).render_as_string()} '
        f'{state}; this code needs revision {want}: run '
        f'"dsr-db-manage --config-file <dsr-controller.conf> upgrade" once '
        f'for the deployment, then start the controllers')


class Database:
    def __init__(self, url):
        self.url = url
        self.engine = engine(url)
        self._sessions = orm.sessionmaker(self.engine,
                                          expire_on_commit=False)

    @contextlib.contextmanager
    def session(self):
        """A transaction: committed on success, rolled back on error."""
        with self._sessions() as session:
            with session.begin():
                yield session
