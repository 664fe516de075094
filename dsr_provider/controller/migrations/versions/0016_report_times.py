"""When the last stored report of each kind of an SE was signed: a report
that overtook an older one of its kind (two casts handled at once by the
controller's RPC threads, or by two controllers) is not overwritten by it.

Revision ID: 0016
Revises: 0015
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('agent_states') as batch:
        batch.add_column(sa.Column(
            'report_times',
            sa.Text().with_variant(mysql.LONGTEXT(), 'mysql', 'mariadb'),
            nullable=True))


def downgrade():
    with op.batch_alter_table('agent_states') as batch:
        batch.drop_column('report_times')
