"""JSON documents and an SE's error as LONGTEXT on MySQL/MariaDB (models.
LONG_TEXT): TEXT holds 65,535 bytes and a strict server refuses a longer
write whole -- an SE's statistics of over 400 listeners and members, its
member statuses of over 1,100 members, a few thousand announced VIPs, the
status of a graph or cascade of 600 objects.  SQLite's and PostgreSQL's
text has no such bound: nothing to do there.  The downgrade fails on a
value longer than TEXT holds.

Revision ID: 0014
Revises: 0013
"""

from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

# {table: ((column, nullable), ...)}
_COLUMNS = {
    'load_balancers': (('doc', False), ('diverged', True)),
    'listeners': (('doc', False), ('diverged', True)),
    'pools': (('doc', False), ('diverged', True)),
    'members': (('doc', False),),
    'health_monitors': (('doc', False),),
    'l7policies': (('doc', False),),
    'l7rules': (('doc', False),),
    'l7_se_members': (('tunnel_addresses', False),),
    'pending_statuses': (('status', False), ('wait_for', True)),
    'tombstones': (('se_groups', False),),
    'agent_states': (('error', True), ('member_statuses', True),
                     ('stats', True), ('rejected_objects', True),
                     ('limits', True), ('helpers', True), ('bgp', True)),
}


def _retype(sql_type):
    if op.get_bind().dialect.name not in ('mysql', 'mariadb'):
        return
    for table, columns in _COLUMNS.items():
        # One statement a table: MariaDB copies the whole table for each
        # change of a column's type (no in-place algorithm for it).
        op.execute(f'ALTER TABLE {table} ' + ', '.join(
            f'MODIFY {column} {sql_type} {"NULL" if nullable else "NOT NULL"}'
            for column, nullable in columns))


def upgrade():
    _retype('LONGTEXT')


def downgrade():
    _retype('TEXT')
