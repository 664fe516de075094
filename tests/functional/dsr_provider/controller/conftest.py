"""Fixtures of the controller's functional tests: a migrated database of
its own on the real MariaDB, dropped afterwards."""

import uuid

import pytest

from dsr_provider.controller import db as db_mod
from dsr_provider.controller import store as store_mod
from tools.lab import product_lab


@pytest.fixture
def mariadb_url():
    """The URL of a new database at this code's schema head."""
    name = f'dsr_test_{uuid.uuid4().hex[:12]}'
    out = product_lab.mysql(f'CREATE DATABASE {name}')
    assert out.returncode == 0, out.stderr
    try:
        url = product_lab.db_url(name)
        db_mod.upgrade(url)
        yield url
    finally:
        product_lab.mysql(f'DROP DATABASE IF EXISTS {name}')


@pytest.fixture
def mariadb_store(mariadb_url):
    """A Store (default SE group g1) on mariadb_url."""
    database = db_mod.Database(mariadb_url)
    try:
        yield store_mod.Store(database, 'g1')
    finally:
        database.engine.dispose()
