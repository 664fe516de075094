"""Timestamps as DOUBLE.

0001 declared them sa.Float, which MySQL/MariaDB store as a 4-byte FLOAT:
at today's epoch (~1.8e9 s) that rounds to multiples of 128 s, so the
reporter's apply timeout fired at random.

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_COLUMNS = (('pending_statuses', 'created_at'),
            ('agent_states', 'updated_at'))


def upgrade():
    for table, column in _COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=sa.Double,
                               existing_type=sa.Float, existing_nullable=False)


def downgrade():
    for table, column in _COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=sa.Float,
                               existing_type=sa.Double,
                               existing_nullable=False)
