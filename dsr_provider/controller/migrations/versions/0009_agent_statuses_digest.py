"""A digest of what an agent reported that operating statuses depend on,
so the leader recomputes them only when one changed.

Revision ID: 0009
Revises: 0008
"""

from alembic import op
import sqlalchemy as sa

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('agent_states') as batch:
        batch.add_column(sa.Column('statuses_digest', sa.String(32)))


def downgrade():
    with op.batch_alter_table('agent_states') as batch:
        batch.drop_column('statuses_digest')
