"""Tenancy: projects (quotas, usage), users, API keys, project_id on every resource.

Every existing resource row lands in the ``default`` project (the column's
server default), whose usage counters are computed from those rows. Existing
images become public (project NULL: shared read-only); existing events stay
visible in ``default``. Existing admin tokens keep no project: admin of all.

Revision ID: 0006_tenancy
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = '0006_tenancy'
down_revision = '0005'
branch_labels = None
depends_on = None

OWNED = ('instances', 'disks', 'snapshots', 'storage_operations', 'snapshot_policies',
         'key_pairs', 'vpcs', 'vswitches', 'security_groups', 'security_group_rules', 'eips',
         'deployment_sets', 'migrations', 'operations')
NULLABLE = ('images', 'events', 'api_tokens')
QUOTAS = ('instances', 'vcpus', 'memory_mib', 'disks', 'disk_gib', 'eips', 'snapshots')


def upgrade() -> None:
    op.create_table(
        'projects',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('description', sa.String(length=256), nullable=False),
        *[sa.Column(f'quota_{q}', sa.Integer(), nullable=True) for q in QUOTAS],
        *[sa.Column(f'used_{q}', sa.Integer(), nullable=False) for q in QUOTAS],
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_projects')))
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_projects_created_at'), ['created_at'], unique=False)
    op.create_table(
        'users',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('project_id', sa.String(length=32), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
        sa.UniqueConstraint('name', name=op.f('uq_users_name')))
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_users_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_users_project_id'), ['project_id'], unique=False)
    for table in OWNED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('project_id', sa.String(length=32), nullable=False,
                                          server_default='default'))
            batch_op.create_index(batch_op.f(f'ix_{table}_project_id'), ['project_id'],
                                  unique=False)
    for table in NULLABLE:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('project_id', sa.String(length=32), nullable=True))
            batch_op.create_index(batch_op.f(f'ix_{table}_project_id'), ['project_id'],
                                  unique=False)
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('user_id', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_api_tokens_user_id'), ['user_id'], unique=False)
    op.execute("UPDATE events SET project_id = 'default'")
    op.execute(
        "INSERT INTO projects (id, description, created_at, "
        + ", ".join(f"used_{q}" for q in QUOTAS) + ") SELECT 'default', "
        "'resources from before projects existed', CURRENT_TIMESTAMP, "
        "(SELECT COUNT(*) FROM instances WHERE deleted_at IS NULL), "
        "(SELECT COALESCE(SUM(vcpus), 0) FROM instances WHERE deleted_at IS NULL), "
        "(SELECT COALESCE(SUM(memory_mib), 0) FROM instances WHERE deleted_at IS NULL), "
        "(SELECT COUNT(*) FROM disks), (SELECT COALESCE(SUM(size_gib), 0) FROM disks), "
        "(SELECT COUNT(*) FROM eips), (SELECT COUNT(*) FROM snapshots)")


def downgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_user_id'))
        batch_op.drop_column('user_id')
    for table in OWNED + NULLABLE:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f'ix_{table}_project_id'))
            batch_op.drop_column('project_id')
    op.drop_table('users')
    op.drop_table('projects')
