"""Networking: outbound NAT per vSwitch, elastic IPs.

Revision ID: 0002_net
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002_net'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('vswitches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('nat_enabled', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    op.create_table(
        'eips',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('ip', sa.String(length=39), nullable=False),
        sa.Column('instance_id', sa.String(length=32), nullable=True),
        sa.Column('associated_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_eips')),
        sa.UniqueConstraint('instance_id', name=op.f('uq_eips_instance_id')),
        sa.UniqueConstraint('ip', name=op.f('uq_eips_ip')),
    )
    with op.batch_alter_table('eips', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_eips_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('eips', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_eips_created_at'))
    op.drop_table('eips')
    with op.batch_alter_table('vswitches', schema=None) as batch_op:
        batch_op.drop_column('nat_enabled')
