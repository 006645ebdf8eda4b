"""Spec fragments: hosts.local_generation and vpcs.net_generation.

A host's spec is assembled from its own part (cached per local generation) and
one part per VPC it has a port in (cached per the VPC's net generation and the
host's local generation), so a peer's change in one VPC recompiles that VPC's
part only (controller/services/spec_cache.py).

Revision ID: 0008_specfrag
Revises: 0007_projnames
"""

import sqlalchemy as sa
from alembic import op

revision = '0008_specfrag'
down_revision = '0007_projnames'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('local_generation', sa.BigInteger(), server_default='1',
                                      nullable=False))
    with op.batch_alter_table('vpcs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('net_generation', sa.BigInteger(), server_default='1',
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('vpcs', schema=None) as batch_op:
        batch_op.drop_column('net_generation')
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_column('local_generation')
