"""Agents' ring ABI and BGP sessions, for the fleet view (dsr-status).

Revision ID: 0007
Revises: 0006
"""

from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('agent_states') as batch:
        batch.add_column(sa.Column('ring_abi', sa.Integer))
        batch.add_column(sa.Column('bgp', sa.Text))


def downgrade():
    with op.batch_alter_table('agent_states') as batch:
        batch.drop_column('bgp')
        batch.drop_column('ring_abi')
