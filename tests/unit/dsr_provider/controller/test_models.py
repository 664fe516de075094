"""Column types of the controller's schema on each database it supports
(the functional test_db checks that the migrations build the same)."""

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite

from dsr_provider.controller import models

# Text columns that stay TEXT (65,535 bytes on MySQL/MariaDB): one
# sentence each, written by the controller (a refusal's reason) or one
# Neutron fault message.
BOUNDED = {(table, 'rejected') for table in (
    'load_balancers', 'listeners', 'pools', 'members', 'health_monitors',
    'l7policies', 'l7rules')} | {('neutron_member_ports', 'reason')}

# The MariaDB dialect under both of its SQLAlchemy names (mariadb:// URLs
# name it 'mariadb').
MYSQL = mysql.dialect()
MARIADB = sa.create_engine('mariadb+pymysql://u@h/d').dialect


def _text_columns():
    for table in models.Base.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, (sa.Text, models.JSONText)):
                yield table.name, column


def _compiled(column, dialect):
    return column.type.compile(dialect=dialect)


def test_the_mariadb_dialect_is_named_both_ways():
    assert {MYSQL.name, MARIADB.name} == {'mysql', 'mariadb'}


@pytest.mark.parametrize('dialect', [MYSQL, MARIADB], ids=lambda d: d.name)
def test_text_that_can_outgrow_64_kb_is_longtext_on_mysql(dialect):
    types = {(table, column.name): _compiled(column, dialect)
             for table, column in _text_columns()}
    assert BOUNDED <= types.keys()
    assert {key for key, compiled in types.items()
            if compiled != 'LONGTEXT'} == BOUNDED
    for key in ('stats', 'member_statuses', 'rejected_objects', 'bgp',
                'error', 'helpers'):
        assert types['agent_states', key] == 'LONGTEXT'
    assert types['pending_statuses', 'status'] == 'LONGTEXT'
    assert types['listeners', 'doc'] == 'LONGTEXT'


@pytest.mark.parametrize('dialect', [sqlite.dialect(), postgresql.dialect()],
                         ids=lambda d: d.name)
def test_other_databases_keep_their_unbounded_text(dialect):
    assert {_compiled(column, dialect) for _, column in _text_columns()} \
        == {'TEXT'}


def test_both_names_of_mariadb_are_mysql_to_the_controller():
    """A mariadb:// URL names its dialect 'mariadb': the migration lock,
    the changes' READ COMMITTED and the carried statistics' upsert must
    take it for MySQL's (they checked 'mysql' alone)."""
    from dsr_provider.controller import db
    assert db.is_mysql(MARIADB.name) and MARIADB.name == 'mariadb'
    assert db.is_mysql(sa.create_engine('mysql+pymysql://u@h/d').dialect.name)
    assert not db.is_mysql('sqlite') and not db.is_mysql('postgresql')
