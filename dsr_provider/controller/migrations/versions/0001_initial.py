"""Initial schema: desired state, pending statuses, agent states.

Revision ID: 0001
Revises:
"""

from alembic import op
import sqlalchemy as sa

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'se_groups',
        sa.Column('name', sa.String(64), primary_key=True),
        sa.Column('generation', sa.BigInteger, nullable=False),
        sa.Column('published_generation', sa.BigInteger, nullable=False))
    for table, parent in (('load_balancers', 'se_group'),
                          ('listeners', 'loadbalancer_id'),
                          ('pools', 'loadbalancer_id'),
                          ('members', 'pool_id'),
                          ('health_monitors', 'pool_id')):
        width = 64 if parent == 'se_group' else 36
        op.create_table(
            table,
            sa.Column('id', sa.String(36), primary_key=True),
            sa.Column(parent, sa.String(width), nullable=False),
            sa.Column('doc', sa.Text, nullable=False))
        op.create_index(f'ix_{table}_{parent}', table, [parent])
    op.create_table(
        'pending_statuses',
        sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
        sa.Column('se_group', sa.String(64), nullable=False),
        sa.Column('generation', sa.BigInteger, nullable=False),
        sa.Column('status', sa.Text, nullable=False),
        sa.Column('wait_for', sa.Text),
        sa.Column('created_at', sa.Float, nullable=False))
    op.create_index('ix_pending_statuses_se_group', 'pending_statuses',
                    ['se_group'])
    op.create_table(
        'agent_states',
        sa.Column('se_id', sa.String(128), primary_key=True),
        sa.Column('se_group', sa.String(64), nullable=False),
        sa.Column('applied_generation', sa.BigInteger),
        sa.Column('rejected_generation', sa.BigInteger),
        sa.Column('error', sa.Text),
        sa.Column('member_statuses', sa.Text),
        sa.Column('stats', sa.Text),
        sa.Column('updated_at', sa.Float, nullable=False))
    op.create_index('ix_agent_states_se_group', 'agent_states', ['se_group'])


def downgrade():
    for table in ('agent_states', 'pending_statuses', 'health_monitors',
                  'members', 'pools', 'listeners', 'load_balancers',
                  'se_groups'):
        op.drop_table(table)
