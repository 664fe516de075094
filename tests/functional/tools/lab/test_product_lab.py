"""tools/lab/product_lab.py: the controller database a lab gets from the
host's schema template is the one "dsr-db-manage upgrade" makes."""

import functools
import types
import uuid

import pytest

from dsr_provider.controller import db as db_mod
from tools.lab.localstack import octavia as localstack
from tools.lab.localstack import schema_template
from tools.lab.localstack import services
from tools.lab import product_lab


@pytest.fixture(scope='module', autouse=True)
def mariadb():
    services.ensure('mariadb')


@pytest.fixture
def lab_like(tmp_path):
    """What ProductLab.create_database uses of a lab, for databases that
    are dropped afterwards."""
    made = []

    def make():
        name = f'dsrctl_tmpltest_{uuid.uuid4().hex[:12]}'
        made.append(name)
        return types.SimpleNamespace(
            controller_db=name, controller_db_port=localstack.DB_PORT,
            controller_db_url=product_lab.db_url(name, localstack.DB_PORT),
            agents=types.SimpleNamespace(root=str(tmp_path)),
            mysql=functools.partial(product_lab.mysql,
                                    port=localstack.DB_PORT))
    yield make
    for name in made:
        localstack._sql(f'DROP DATABASE IF EXISTS `{name}`')


def _schema(database):
    tables = sorted(t for (t,) in localstack._sql('SHOW TABLES', database))
    return {t: localstack._sql(f'SHOW CREATE TABLE `{t}`', database)[0][1]
            for t in tables}


def test_a_lab_database_from_the_template_equals_a_migrated_one(
        lab_like, monkeypatch):
    copied, migrated = lab_like(), lab_like()
    product_lab.ProductLab.create_database(copied)
    template = product_lab.controller_schema_key().name()
    assert template in [n for (n,) in localstack._sql('SHOW DATABASES')]
    monkeypatch.setenv(schema_template.ENV_SWITCH, '0')
    product_lab.ProductLab.create_database(migrated)
    assert _schema(copied.controller_db) == _schema(migrated.controller_db)
    for lab in (copied, migrated):
        assert db_mod.current(lab.controller_db_url) == (db_mod.head(),)


def test_the_template_key_follows_the_migrations(monkeypatch):
    key = product_lab.controller_schema_key()
    real = schema_template.scripts_digest
    monkeypatch.setattr(schema_template, 'scripts_digest',
                        lambda root: real(root) + 'another revision')
    assert product_lab.controller_schema_key().name() != key.name()
