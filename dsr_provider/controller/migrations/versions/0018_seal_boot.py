"""The run of an L7 agent whose tooz capabilities are its own (the boot id
of its seals, dsr_wire/capability_seal.py), from its signed report_state:
another run's seal, or an unsealed entry of an SE that seals, was not
written by it.

Revision ID: 0018
Revises: 0017
"""

from alembic import op
import sqlalchemy as sa

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('agent_states') as batch:
        batch.add_column(sa.Column('seal_boot', sa.String(64),
                                   nullable=True))


def downgrade():
    with op.batch_alter_table('agent_states') as batch:
        batch.drop_column('seal_boot')
