"""Instance operations: the batch a batch-created instance belongs to.

Revision ID: 0004_ops
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = '0004_ops'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('batch_id', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_instances_batch_id'), ['batch_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_batch_id'))
        batch_op.drop_column('batch_id')
