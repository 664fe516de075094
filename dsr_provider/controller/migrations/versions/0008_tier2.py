"""Tier 2: a load balancer's L7 SE group, L7 policies and rules, the
ready L7 service engines of each L7 group, which groups are L7 groups, and
a second group a status waits for.

Revision ID: 0008
Revises: 0007
"""

from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('load_balancers') as batch:
        batch.add_column(sa.Column('l7_se_group', sa.String(64)))
        batch.create_index('ix_load_balancers_l7_se_group', ['l7_se_group'])
    with op.batch_alter_table('se_groups') as batch:
        batch.add_column(sa.Column('role', sa.String(16)))
    with op.batch_alter_table('pending_statuses') as batch:
        batch.add_column(sa.Column('also_se_group', sa.String(64)))
        batch.add_column(sa.Column('also_generation', sa.BigInteger))
    op.create_table(
        'l7policies',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('listener_id', sa.String(36), nullable=False, index=True),
        sa.Column('doc', sa.Text, nullable=False),
        sa.Column('rejected', sa.Text))
    op.create_table(
        'l7rules',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('l7policy_id', sa.String(36), nullable=False, index=True),
        sa.Column('doc', sa.Text, nullable=False),
        sa.Column('rejected', sa.Text))
    op.create_table(
        'l7_se_members',
        sa.Column('l7_se_group', sa.String(64), primary_key=True),
        sa.Column('se_id', sa.String(128), primary_key=True),
        sa.Column('tunnel_addresses', sa.Text, nullable=False),
        sa.Column('draining', sa.Boolean, nullable=False))


def downgrade():
    op.drop_table('l7_se_members')
    op.drop_table('l7rules')
    op.drop_table('l7policies')
    with op.batch_alter_table('pending_statuses') as batch:
        batch.drop_column('also_generation')
        batch.drop_column('also_se_group')
    with op.batch_alter_table('se_groups') as batch:
        batch.drop_column('role')
    with op.batch_alter_table('load_balancers') as batch:
        batch.drop_index('ix_load_balancers_l7_se_group')
        batch.drop_column('l7_se_group')
