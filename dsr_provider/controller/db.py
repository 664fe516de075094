"""Database engine, sessions and schema migrations (alembic)."""

import contextlib
import os

from alembic import command
from alembic.config import Config
import sqlalchemy as sa
from sqlalchemy import orm

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          'migrations')


def engine(url):
    kwargs = {'pool_pre_ping': True}
    if url.startswith('sqlite'):
        kwargs['connect_args'] = {'check_same_thread': False}
    return sa.create_engine(url, **kwargs)


def upgrade(url, revision='head'):
    """Bring the schema to `revision` (idempotent)."""
    cfg = Config()
    cfg.set_main_option('script_location', MIGRATIONS)
    cfg.set_main_option('sqlalchemy.url', url.replace('%', '%%'))
    eng = engine(url)
    with eng.begin() as connection:
        cfg.attributes['connection'] = connection
        command.upgrade(cfg, revision)
    eng.dispose()


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
