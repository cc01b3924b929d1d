"""messages keep tool calls and tool results; personas get actions

Revision ID: 4bf162406c27
Revises: d366021ab7c9
Create Date: 2026-12-12 00:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '4bf162406c27'
down_revision = 'd366021ab7c9'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tool_calls', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('tool_call_id', sa.String(length=128), nullable=True))

    with op.batch_alter_table('personas', schema=None) as batch_op:
        batch_op.add_column(sa.Column('actions', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('personas', schema=None) as batch_op:
        batch_op.drop_column('actions')

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('tool_call_id')
        batch_op.drop_column('tool_calls')
