"""The L7 SEs' flap penalties (controller/l7_damping.py), kept by the
leader so that the next one goes on from them: before, a new leader
started with none and let a crash-looping L7 SE back into the L4 pools.

Revision ID: 0023
Revises: 0022
"""

from alembic import op
import sqlalchemy as sa

revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'l7_flap_penalties',
        sa.Column('l7_se_group', sa.String(64), primary_key=True),
        sa.Column('se_id', sa.String(128), primary_key=True),
        sa.Column('penalty', sa.Double(), nullable=False),
        sa.Column('at', sa.Double(), nullable=False),
        sa.Column('suppressed', sa.Boolean(), nullable=False))


def downgrade():
    op.drop_table('l7_flap_penalties')
