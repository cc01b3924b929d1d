"""asset jobs keep the id of the request that made them

Revision ID: 7c1e5a9d2b40
Revises: 4bf162406c27
Create Date: 2026-12-06 10:10:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '7c1e5a9d2b40'
down_revision = '4bf162406c27'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('asset_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_id', sa.String(length=128), nullable=True))


def downgrade():
    with op.batch_alter_table('asset_jobs', schema=None) as batch_op:
        batch_op.drop_column('request_id')
