"""The fields of a refused update of a running object (load balancer,
listener, pool): Octavia holds them, the SEs do not run them, so the object
stays ERROR, also as the parent of a later change, until an accepted
update sends them again.

Revision ID: 0011
Revises: 0010
"""

from alembic import op
import sqlalchemy as sa

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

_TABLES = ('load_balancers', 'listeners', 'pools')


def upgrade():
    for table in _TABLES:
        op.add_column(table, sa.Column('diverged', sa.Text))


def downgrade():
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column('diverged')
