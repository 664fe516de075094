"""Tombstones of deleted objects: a redelivered create or update of one is
ignored, and a second delete of one whose delete failed waits for the SEs.

Revision ID: 0010
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'tombstones',
        sa.Column('kind', sa.String(16), primary_key=True),
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('parent_id', sa.String(36)),
        sa.Column('se_groups', sa.Text, nullable=False),
        sa.Column('outcome', sa.String(16)),
        sa.Column('deleted_at', sa.Double, nullable=False, index=True))


def downgrade():
    op.drop_table('tombstones')
