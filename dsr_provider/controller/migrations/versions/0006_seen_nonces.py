"""Nonces of accepted agent messages, shared by every controller of the
deployment: a message replayed to another controller, or after a restart,
is refused.

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'seen_nonces',
        sa.Column('digest', sa.String(64), primary_key=True),
        sa.Column('expires_at', sa.Double, nullable=False, index=True))


def downgrade():
    op.drop_table('seen_nonces')
