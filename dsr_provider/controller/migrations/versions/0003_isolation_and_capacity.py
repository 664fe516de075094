"""Isolation and capacity: per-object rejections, agents' limits.

Objects the controller refused for capacity keep the reason in `rejected`
(and stay out of the snapshot); agents report the objects they left out,
their limits, their helpers and whether they can forward.

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_OBJECT_TABLES = ('load_balancers', 'listeners', 'pools', 'members',
                  'health_monitors')
_AGENT_COLUMNS = (('rejected_objects', sa.Text), ('limits', sa.Text),
                  ('helpers', sa.Text), ('serviceable', sa.Boolean))


def upgrade():
    for table in _OBJECT_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('rejected', sa.Text))
    with op.batch_alter_table('agent_states') as batch:
        for name, type_ in _AGENT_COLUMNS:
            batch.add_column(sa.Column(name, type_))


def downgrade():
    with op.batch_alter_table('agent_states') as batch:
        for name, _ in _AGENT_COLUMNS:
            batch.drop_column(name)
    for table in _OBJECT_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column('rejected')
