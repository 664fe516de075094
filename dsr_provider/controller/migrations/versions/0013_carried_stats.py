"""Listener counters an SE counted before its current ones (earlier
dataplane runs, an SE revoked or moved): in the database, so that every
controller that leads computes the same listener totals.

Revision ID: 0013
Revises: 0012
"""

from alembic import op
import sqlalchemy as sa

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'carried_stats',
        sa.Column('se_id', sa.String(128), primary_key=True),
        sa.Column('se_group', sa.String(64), primary_key=True),
        sa.Column('listener_id', sa.String(36), primary_key=True,
                  index=True),
        sa.Column('bytes_in', sa.BigInteger, nullable=False),
        sa.Column('bytes_out', sa.BigInteger, nullable=False),
        sa.Column('request_errors', sa.BigInteger, nullable=False),
        sa.Column('total_connections', sa.BigInteger, nullable=False))


def downgrade():
    op.drop_table('carried_stats')
