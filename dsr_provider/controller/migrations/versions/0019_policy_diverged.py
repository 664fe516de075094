"""The fields of a refused update of a running L7 policy (its L7 SEs
could not run it), as 0011 keeps them for load balancers, listeners and
pools: the policy stays ERROR, also as the parent of a later rule change,
until an accepted update sends them again.

Revision ID: 0019
Revises: 0018
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('l7policies') as batch:
        batch.add_column(sa.Column(
            'diverged',
            sa.Text().with_variant(mysql.LONGTEXT(), 'mysql', 'mariadb'),
            nullable=True))


def downgrade():
    with op.batch_alter_table('l7policies') as batch:
        batch.drop_column('diverged')
