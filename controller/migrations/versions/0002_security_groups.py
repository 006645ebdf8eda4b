"""Security groups: type, inner access policy and rules.

Revision ID: 0002_sg
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002_sg'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('security_groups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('type', sa.String(length=16), nullable=False,
                                      server_default='normal'))
        batch_op.add_column(sa.Column('inner_access_policy', sa.String(length=8), nullable=False,
                                      server_default='accept'))

    op.create_table('security_group_rules',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('security_group_id', sa.String(length=32), nullable=False),
    sa.Column('direction', sa.String(length=8), nullable=False),
    sa.Column('protocol', sa.String(length=8), nullable=False),
    sa.Column('port_min', sa.Integer(), nullable=True),
    sa.Column('port_max', sa.Integer(), nullable=True),
    sa.Column('source_port_min', sa.Integer(), nullable=True),
    sa.Column('source_port_max', sa.Integer(), nullable=True),
    sa.Column('peer_cidr', sa.String(length=43), nullable=True),
    sa.Column('peer_group_id', sa.String(length=32), nullable=True),
    sa.Column('local_cidr', sa.String(length=43), nullable=True),
    sa.Column('policy', sa.String(length=8), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('description', sa.String(length=256), nullable=False),
    sa.Column('fingerprint', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['peer_group_id'], ['security_groups.id'], name=op.f('fk_security_group_rules_peer_group_id_security_groups')),
    sa.ForeignKeyConstraint(['security_group_id'], ['security_groups.id'], name=op.f('fk_security_group_rules_security_group_id_security_groups'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_security_group_rules')),
    sa.UniqueConstraint('security_group_id', 'fingerprint', name=op.f('uq_security_group_rules_security_group_id_fingerprint'))
    )
    with op.batch_alter_table('security_group_rules', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_security_group_rules_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_security_group_rules_peer_group_id'), ['peer_group_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_security_group_rules_security_group_id'), ['security_group_id'], unique=False)


def downgrade() -> None:
    op.drop_table('security_group_rules')
    with op.batch_alter_table('security_groups', schema=None) as batch_op:
        batch_op.drop_column('inner_access_policy')
        batch_op.drop_column('type')
