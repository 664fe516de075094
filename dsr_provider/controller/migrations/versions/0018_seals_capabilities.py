"""Whether an L7 SE seals its tooz capabilities (dsr_wire/capability_seal.py),
from its signed report_state: an unsealed entry of one that does was not
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
        batch.add_column(sa.Column('seals_capabilities', sa.Boolean,
                                   nullable=True))


def downgrade():
    with op.batch_alter_table('agent_states') as batch:
        batch.drop_column('seals_capabilities')
