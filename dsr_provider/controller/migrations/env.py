"""Alembic environment: the URL comes from the caller (db.upgrade)."""

from alembic import context
import sqlalchemy as sa

from dsr_provider.controller import models

config = context.config
target_metadata = models.Base.metadata


def _migrate(connection):
    context.configure(connection=connection,
                      target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    connection = config.attributes.get('connection')
    if connection is not None:
        _migrate(connection)
        return
    engine = sa.create_engine(config.get_main_option('sqlalchemy.url'))
    with engine.connect() as connection:
        _migrate(connection)


run_migrations_online()
