"""Placement: deployment sets and instance membership.

Revision ID: 0004_place
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004_place'
down_revision = '0003'
branch_labels = None
depends_on = None

LIVE_MEMBER = sa.text("deployment_set_id IS NOT NULL AND deleted_at IS NULL")


def upgrade() -> None:
    op.create_table(
        'deployment_sets',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('description', sa.String(length=256), nullable=False),
        sa.Column('strategy', sa.String(length=32), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_deployment_sets')),
    )
    with op.batch_alter_table('deployment_sets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deployment_sets_created_at'), ['created_at'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_deployment_sets_name'), ['name'], unique=False)
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deployment_set_id', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_instances_deployment_set_id'),
                              ['deployment_set_id'], unique=False)
    op.create_index('uq_instances_deployment_set_host', 'instances',
                    ['deployment_set_id', 'host_id'], unique=True,
                    sqlite_where=LIVE_MEMBER, postgresql_where=LIVE_MEMBER)


def downgrade() -> None:
    op.drop_index('uq_instances_deployment_set_host', table_name='instances')
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_deployment_set_id'))
        batch_op.drop_column('deployment_set_id')
    with op.batch_alter_table('deployment_sets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deployment_sets_name'))
        batch_op.drop_index(batch_op.f('ix_deployment_sets_created_at'))
    op.drop_table('deployment_sets')
