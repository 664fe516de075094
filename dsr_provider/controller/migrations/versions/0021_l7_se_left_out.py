"""Why the leader left each L7 SE out of the L4 pools (not ready, its
seal not fresh, kept out by flap damping...), for dsr-status: the
leader's verdict of its last look, written when it changes.

Revision ID: 0021
Revises: 0020
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'l7_se_left_out',
        sa.Column('l7_se_group', sa.String(64), primary_key=True),
        sa.Column('se_id', sa.String(128), primary_key=True),
        sa.Column('reason', sa.Text().with_variant(
            mysql.LONGTEXT(), 'mysql', 'mariadb'), nullable=False),
        sa.Column('since', sa.Double(), nullable=False))


def downgrade():
    op.drop_table('l7_se_left_out')
