"""Enrolled service engines: one Ed25519 public key per SE, in one group.

Revision ID: 0004
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'se_keys',
        sa.Column('se_id', sa.String(128), primary_key=True),
        sa.Column('se_group', sa.String(64), nullable=False, index=True),
        sa.Column('key_id', sa.String(16), nullable=False),
        sa.Column('public_key', sa.String(64), nullable=False),
        sa.Column('enrolled_at', sa.Double, nullable=False))


def downgrade():
    op.drop_table('se_keys')
