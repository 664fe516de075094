"""The change messages a controller committed (their message_id): a
redelivered one is ignored instead of undoing later changes.

Revision ID: 0012
Revises: 0011
"""

from alembic import op
import sqlalchemy as sa

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'processed_changes',
        sa.Column('message_id', sa.String(64), primary_key=True),
        sa.Column('processed_at', sa.Double, nullable=False, index=True))


def downgrade():
    op.drop_table('processed_changes')
