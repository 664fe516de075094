"""What each ready L7 SE does not serve (its load balancers and listeners
left ERROR there alone): the L4 pools of those objects leave that SE out,
instead of sending it 1/N of their new connections.

Revision ID: 0015
Revises: 0014
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('l7_se_members') as batch:
        batch.add_column(sa.Column(
            'unserved',
            sa.Text().with_variant(mysql.LONGTEXT(), 'mysql', 'mariadb'),
            nullable=True))


def downgrade():
    with op.batch_alter_table('l7_se_members') as batch:
        batch.drop_column('unserved')
