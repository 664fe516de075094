"""The controller's schema on the databases it supports: MariaDB (the
production choice, the running server) and a SQLite file (the single-host
default).  Migrations must produce exactly the models' schema, and epoch
timestamps must survive a round trip to sub-millisecond precision -- the
reporter's apply timeout compares them with time.time()."""

import time
import uuid

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
import pytest

from dsr_provider.controller import db
from dsr_provider.controller import models
from tools.localstack import octavia as localstack


@pytest.fixture(params=['mariadb', 'sqlite'])
def database_url(request, tmp_path):
    if request.param == 'sqlite':
        yield f'sqlite:///{tmp_path}/dsr.sqlite'
        return
    name = f'dsr_dbtest_{uuid.uuid4().hex[:12]}'
    localstack._sql(f'CREATE DATABASE {name}')
    try:
        yield (f'mysql+pymysql://{localstack.DB_USER}@{localstack.DB_HOST}:'
               f'{localstack.DB_PORT}/{name}')
    finally:
        localstack._sql(f'DROP DATABASE IF EXISTS {name}')


def test_migrations_produce_the_models_schema(database_url):
    db.upgrade(database_url)
    database = db.Database(database_url)
    try:
        with database.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(
                connection, opts={'compare_type': True}), models.Base.metadata)
    finally:
        database.engine.dispose()
    assert diff == []


def _round_trip_timestamps(database_url):
    database = db.Database(database_url)
    now = time.time()
    try:
        with database.session() as s:
            s.add(models.PendingStatus(se_group='g', generation=1,
                                       status={}, created_at=now))
            s.add(models.AgentState(se_id='se1', se_group='g',
                                    updated_at=now))
        with database.session() as s:
            created = s.query(models.PendingStatus.created_at).scalar()
            updated = s.query(models.AgentState.updated_at).scalar()
    finally:
        database.engine.dispose()
    return created - now, updated - now


def test_epoch_timestamps_keep_sub_millisecond_precision(database_url):
    db.upgrade(database_url)
    for error in _round_trip_timestamps(database_url):
        assert abs(error) < 1e-3


def test_upgrade_from_0001_converts_float_timestamps(database_url):
    db.upgrade(database_url, '0001')
    db.upgrade(database_url)
    for error in _round_trip_timestamps(database_url):
        assert abs(error) < 1e-3
