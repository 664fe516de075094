"""What each SE's dataplane holds against its limits (listeners, member
slots, ring slots, allow-list prefixes, flows), as the SE itself counts
it in its report_state: dsr-status shows each SE's own use beside what
the controller counts for the group.

Revision ID: 0022
Revises: 0021
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('agent_states') as batch:
        batch.add_column(sa.Column(
            'held',
            sa.Text().with_variant(mysql.LONGTEXT(), 'mysql', 'mariadb'),
            nullable=True))


def downgrade():
    with op.batch_alter_table('agent_states') as batch:
        batch.drop_column('held')
