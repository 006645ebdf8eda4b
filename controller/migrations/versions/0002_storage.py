"""Cloud storage: data disk columns, snapshots, storage operations, snapshot policies.

Revision ID: 0002_storage
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002_storage'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('snapshot_policies',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('hours', sa.String(length=128), nullable=False),
    sa.Column('weekdays', sa.String(length=32), nullable=False),
    sa.Column('retention_days', sa.Integer(), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('last_run_slot', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_snapshot_policies')),
    sa.UniqueConstraint('name', name=op.f('uq_snapshot_policies_name'))
    )
    with op.batch_alter_table('snapshot_policies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_snapshot_policies_created_at'), ['created_at'], unique=False)

    op.create_table('snapshots',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('description', sa.String(length=256), nullable=False),
    sa.Column('disk_id', sa.String(length=32), nullable=False),
    sa.Column('disk_role', sa.String(length=8), nullable=False),
    sa.Column('disk_size_gib', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.String(length=32), nullable=True),
    sa.Column('host_id', sa.String(length=32), nullable=False),
    sa.Column('zone_id', sa.String(length=64), nullable=True),
    sa.Column('instance_id', sa.String(length=32), nullable=True),
    sa.Column('policy_id', sa.String(length=32), nullable=True),
    sa.Column('retention_days', sa.Integer(), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=False),
    sa.Column('accomplished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_snapshots'))
    )
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_snapshots_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_snapshots_disk_id'), ['disk_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_snapshots_host_id'), ['host_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_snapshots_policy_id'), ['policy_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_snapshots_status'), ['status'], unique=False)

    op.create_table('storage_operations',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('host_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('disk_id', sa.String(length=32), nullable=False),
    sa.Column('snapshot_id', sa.String(length=32), nullable=False),
    sa.Column('image_id', sa.String(length=32), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_storage_operations'))
    )
    with op.batch_alter_table('storage_operations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_storage_operations_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_storage_operations_disk_id'), ['disk_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_storage_operations_host_id'), ['host_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_storage_operations_outcome'), ['outcome'], unique=False)

    op.create_table('disk_snapshot_policies',
    sa.Column('disk_id', sa.String(length=32), nullable=False),
    sa.Column('policy_id', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['disk_id'], ['disks.id'], name=op.f('fk_disk_snapshot_policies_disk_id_disks'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['policy_id'], ['snapshot_policies.id'], name=op.f('fk_disk_snapshot_policies_policy_id_snapshot_policies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('disk_id', name=op.f('pk_disk_snapshot_policies'))
    )
    with op.batch_alter_table('disk_snapshot_policies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_disk_snapshot_policies_policy_id'), ['policy_id'], unique=False)

    with op.batch_alter_table('disks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name', sa.String(length=128), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('description', sa.String(length=256), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('zone_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('host_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('delete_with_instance', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column('source_snapshot_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('status', sa.String(length=16), nullable=False, server_default='In_use'))
        batch_op.add_column(sa.Column('status_reason', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('attached_to', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('observed_size_bytes', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('chain_depth', sa.Integer(), nullable=True))
        batch_op.alter_column('instance_id',
               existing_type=sa.VARCHAR(length=32),
               nullable=True)
        batch_op.create_index(batch_op.f('ix_disks_host_id'), ['host_id'], unique=False)


def downgrade() -> None:

    with op.batch_alter_table('disks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_disks_host_id'))
        batch_op.alter_column('instance_id',
               existing_type=sa.VARCHAR(length=32),
               nullable=False)
        batch_op.drop_column('chain_depth')
        batch_op.drop_column('observed_size_bytes')
        batch_op.drop_column('attached_to')
        batch_op.drop_column('status_reason')
        batch_op.drop_column('status')
        batch_op.drop_column('source_snapshot_id')
        batch_op.drop_column('delete_with_instance')
        batch_op.drop_column('host_id')
        batch_op.drop_column('zone_id')
        batch_op.drop_column('description')
        batch_op.drop_column('name')

    with op.batch_alter_table('disk_snapshot_policies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_disk_snapshot_policies_policy_id'))

    op.drop_table('disk_snapshot_policies')
    with op.batch_alter_table('storage_operations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_storage_operations_outcome'))
        batch_op.drop_index(batch_op.f('ix_storage_operations_host_id'))
        batch_op.drop_index(batch_op.f('ix_storage_operations_disk_id'))
        batch_op.drop_index(batch_op.f('ix_storage_operations_created_at'))

    op.drop_table('storage_operations')
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_snapshots_status'))
        batch_op.drop_index(batch_op.f('ix_snapshots_policy_id'))
        batch_op.drop_index(batch_op.f('ix_snapshots_host_id'))
        batch_op.drop_index(batch_op.f('ix_snapshots_disk_id'))
        batch_op.drop_index(batch_op.f('ix_snapshots_created_at'))

    op.drop_table('snapshots')
    with op.batch_alter_table('snapshot_policies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_snapshot_policies_created_at'))

    op.drop_table('snapshot_policies')
