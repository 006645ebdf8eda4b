"""Host maintenance flag; migrations (live and cold moves of instances between hosts).

Revision ID: 0004_migrate
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004_migrate'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('maintenance', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    # maintenance used to be a host state; it is a flag now, the state is liveness only
    op.execute("UPDATE hosts SET maintenance = true, state = 'ready' WHERE state = 'maintenance'")
    op.create_table(
        'migrations',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('instance_id', sa.String(length=32), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('source_host_id', sa.String(length=32), nullable=False),
        sa.Column('target_host_id', sa.String(length=32), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('drain_host_id', sa.String(length=32), nullable=True),
        sa.Column('freeze_generation', sa.BigInteger(), nullable=True),
        sa.Column('disks', sa.Text(), nullable=False),
        sa.Column('vcpus', sa.Integer(), nullable=False),
        sa.Column('memory_mib', sa.BigInteger(), nullable=False),
        sa.Column('disk_gib', sa.BigInteger(), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('duration_s', sa.Float(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_migrations')),
    )
    with op.batch_alter_table('migrations', schema=None) as batch_op:
        for col in ('instance_id', 'source_host_id', 'target_host_id', 'state',
                    'drain_host_id', 'created_at'):
            batch_op.create_index(batch_op.f(f'ix_migrations_{col}'), [col], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('migrations', schema=None) as batch_op:
        for col in ('instance_id', 'source_host_id', 'target_host_id', 'state',
                    'drain_host_id', 'created_at'):
            batch_op.drop_index(batch_op.f(f'ix_migrations_{col}'))
    op.drop_table('migrations')
    op.execute("UPDATE hosts SET state = 'maintenance' WHERE maintenance = true")
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_column('maintenance')
