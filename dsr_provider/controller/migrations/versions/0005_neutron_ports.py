"""Neutron port integration: what the controller added to ports, and the
port (and refusal) of each member.

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'neutron_owned',
        sa.Column('port_id', sa.String(36), primary_key=True),
        sa.Column('kind', sa.String(16), primary_key=True),
        sa.Column('value', sa.String(64), primary_key=True))
    op.create_table(
        'neutron_member_ports',
        sa.Column('member_id', sa.String(36), primary_key=True),
        sa.Column('subnet_id', sa.String(36)),
        sa.Column('address', sa.String(64), nullable=False),
        sa.Column('port_id', sa.String(36), index=True),
        sa.Column('reason', sa.Text),
        sa.Column('checked_at', sa.Double, nullable=False))


def downgrade():
    op.drop_table('neutron_member_ports')
    op.drop_table('neutron_owned')
