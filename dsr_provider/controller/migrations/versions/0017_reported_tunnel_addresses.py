"""An L7 SE's tunnel addresses from its signed report_state: the L4 pools
steer to those, not to whatever the (unauthenticated) coordination backend
says.

Revision ID: 0017
Revises: 0016
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('agent_states') as batch:
        batch.add_column(sa.Column(
            'tunnel_addresses',
            sa.Text().with_variant(mysql.LONGTEXT(), 'mysql', 'mariadb'),
            nullable=True))


def downgrade():
    with op.batch_alter_table('agent_states') as batch:
        batch.drop_column('tunnel_addresses')
