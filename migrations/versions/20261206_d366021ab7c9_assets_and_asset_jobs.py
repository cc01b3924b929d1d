"""assets and asset jobs: generated files (stored by content hash) and the jobs that make
them, the system of record of each generation (lease, attempts, idempotency key)

Revision ID: d366021ab7c9
Revises: 5949eb9f185d
Create Date: 2026-12-06 03:19:10.071323

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'd366021ab7c9'
down_revision = '5949eb9f185d'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('assets',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('category', sa.String(length=16), nullable=False),
    sa.Column('format', sa.String(length=8), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('style', sa.String(length=200), nullable=True),
    sa.Column('provider', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('content_type', sa.String(length=64), nullable=True),
    sa.Column('storage_key', sa.String(length=300), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('cost', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_assets_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assets'))
    )
    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.create_index('ix_assets_sha256', ['sha256'], unique=False)
        batch_op.create_index('ix_assets_user_created', ['user_id', 'created_at', 'id'], unique=False)

    op.create_table('asset_jobs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('asset_id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('api_key_id', sa.Uuid(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('progress', sa.Integer(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('request', sa.JSON(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('request_hash', sa.String(length=64), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('error_kind', sa.String(length=40), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('lease_owner', sa.String(length=200), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=True),
    sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_asset_jobs_api_key_id_api_keys'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['asset_id'], ['assets.id'], name=op.f('fk_asset_jobs_asset_id_assets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_asset_jobs_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_asset_jobs')),
    sa.UniqueConstraint('user_id', 'idempotency_key', name='uq_asset_jobs_user_idempotency_key')
    )
    with op.batch_alter_table('asset_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_asset_jobs_asset_id', ['asset_id'], unique=False)
        batch_op.create_index('ix_asset_jobs_status_lease', ['status', 'lease_expires_at'], unique=False)
        batch_op.create_index('ix_asset_jobs_user_created', ['user_id', 'created_at', 'id'], unique=False)



def downgrade():
    with op.batch_alter_table('asset_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_asset_jobs_user_created')
        batch_op.drop_index('ix_asset_jobs_status_lease')
        batch_op.drop_index('ix_asset_jobs_asset_id')

    op.drop_table('asset_jobs')
    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.drop_index('ix_assets_user_created')
        batch_op.drop_index('ix_assets_sha256')

    op.drop_table('assets')
