"""The generation of each load balancer's last accepted change, per tier:
what its SEs must have applied to run it as desired (dsr-status compares
it with each SE's applied generation, after the change's status was
reported too).  Null: no change since this revision.

Revision ID: 0020
Revises: 0019
"""

from alembic import op
import sqlalchemy as sa

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('load_balancers') as batch:
        batch.add_column(sa.Column('changed_generation', sa.BigInteger(),
                                   nullable=True))
        batch.add_column(sa.Column('l4_changed_generation', sa.BigInteger(),
                                   nullable=True))


def downgrade():
    with op.batch_alter_table('load_balancers') as batch:
        batch.drop_column('l4_changed_generation')
        batch.drop_column('changed_generation')
