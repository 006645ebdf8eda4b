"""Initial schema: zones, hosts, instance types, images, key pairs, VPCs, vSwitches,
security groups, instances, disks, NICs, operations, API tokens, settings.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-26 07:24:52.508880
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_tokens',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_created_at'), ['created_at'], unique=False)

    op.create_table('images',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('description', sa.String(length=256), nullable=False),
    sa.Column('format', sa.String(length=8), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('virtual_size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('min_disk_gib', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=False),
    sa.Column('path', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_images')),
    sa.UniqueConstraint('name', name=op.f('uq_images_name'))
    )
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_images_created_at'), ['created_at'], unique=False)

    op.create_table('instance_types',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('vcpus', sa.Integer(), nullable=False),
    sa.Column('memory_mib', sa.Integer(), nullable=False),
    sa.Column('description', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_instance_types'))
    )
    with op.batch_alter_table('instance_types', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instance_types_created_at'), ['created_at'], unique=False)

    op.create_table('key_pairs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('public_key', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.String(length=128), nullable=False),
    sa.Column('key_type', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_key_pairs')),
    sa.UniqueConstraint('name', name=op.f('uq_key_pairs_name'))
    )
    with op.batch_alter_table('key_pairs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_key_pairs_created_at'), ['created_at'], unique=False)

    op.create_table('settings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_settings'))
    )
    op.create_table('vpcs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('description', sa.String(length=256), nullable=False),
    sa.Column('cidr_block', sa.String(length=43), nullable=False),
    sa.Column('vni', sa.Integer(), nullable=False),
    sa.Column('bridge_name', sa.String(length=15), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vpcs')),
    sa.UniqueConstraint('bridge_name', name=op.f('uq_vpcs_bridge_name')),
    sa.UniqueConstraint('vni', name=op.f('uq_vpcs_vni'))
    )
    with op.batch_alter_table('vpcs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vpcs_created_at'), ['created_at'], unique=False)

    op.create_table('zones',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('description', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_zones'))
    )
    with op.batch_alter_table('zones', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_zones_created_at'), ['created_at'], unique=False)

    op.create_table('hosts',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('zone_id', sa.String(length=64), nullable=False),
    sa.Column('underlay_address', sa.String(length=64), nullable=False),
    sa.Column('virt_type', sa.String(length=8), nullable=False),
    sa.Column('agent_version', sa.String(length=32), nullable=False),
    sa.Column('capacity_vcpus', sa.Integer(), nullable=False),
    sa.Column('capacity_memory_mib', sa.BigInteger(), nullable=False),
    sa.Column('capacity_disk_gib', sa.BigInteger(), nullable=False),
    sa.Column('cpu_overcommit', sa.Float(), nullable=True),
    sa.Column('memory_overcommit', sa.Float(), nullable=True),
    sa.Column('disk_overcommit', sa.Float(), nullable=True),
    sa.Column('allocated_vcpus', sa.Integer(), nullable=False),
    sa.Column('allocated_memory_mib', sa.BigInteger(), nullable=False),
    sa.Column('allocated_disk_gib', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('generation', sa.BigInteger(), nullable=False),
    sa.Column('generation_applied', sa.BigInteger(), nullable=False),
    sa.Column('generation_seen', sa.BigInteger(), nullable=False),
    sa.Column('last_heartbeat', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_errors', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['zone_id'], ['zones.id'], name=op.f('fk_hosts_zone_id_zones')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hosts')),
    sa.UniqueConstraint('name', name=op.f('uq_hosts_name')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_hosts_token_hash'))
    )
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hosts_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_hosts_zone_id'), ['zone_id'], unique=False)

    op.create_table('security_groups',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('description', sa.String(length=256), nullable=False),
    sa.Column('vpc_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['vpc_id'], ['vpcs.id'], name=op.f('fk_security_groups_vpc_id_vpcs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_security_groups'))
    )
    with op.batch_alter_table('security_groups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_security_groups_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_security_groups_vpc_id'), ['vpc_id'], unique=False)

    op.create_table('vswitches',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('description', sa.String(length=256), nullable=False),
    sa.Column('vpc_id', sa.String(length=32), nullable=False),
    sa.Column('zone_id', sa.String(length=64), nullable=False),
    sa.Column('cidr_block', sa.String(length=43), nullable=False),
    sa.Column('gateway_ip', sa.String(length=39), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['vpc_id'], ['vpcs.id'], name=op.f('fk_vswitches_vpc_id_vpcs')),
    sa.ForeignKeyConstraint(['zone_id'], ['zones.id'], name=op.f('fk_vswitches_zone_id_zones')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vswitches'))
    )
    with op.batch_alter_table('vswitches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vswitches_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_vswitches_vpc_id'), ['vpc_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_vswitches_zone_id'), ['zone_id'], unique=False)

    op.create_table('instances',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('description', sa.String(length=256), nullable=False),
    sa.Column('hostname', sa.String(length=64), nullable=False),
    sa.Column('instance_type_id', sa.String(length=64), nullable=False),
    sa.Column('vcpus', sa.Integer(), nullable=False),
    sa.Column('memory_mib', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.String(length=32), nullable=False),
    sa.Column('vpc_id', sa.String(length=32), nullable=False),
    sa.Column('vswitch_id', sa.String(length=32), nullable=False),
    sa.Column('zone_id', sa.String(length=64), nullable=False),
    sa.Column('host_id', sa.String(length=32), nullable=False),
    sa.Column('key_pair_id', sa.String(length=32), nullable=True),
    sa.Column('user_data', sa.Text(), nullable=True),
    sa.Column('client_token', sa.String(length=64), nullable=True),
    sa.Column('deletion_protection', sa.Boolean(), nullable=False),
    sa.Column('desired_power', sa.String(length=16), nullable=False),
    sa.Column('force_stop', sa.Boolean(), nullable=False),
    sa.Column('stop_timeout_s', sa.Integer(), nullable=False),
    sa.Column('delete_requested_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delete_generation', sa.BigInteger(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=False),
    sa.Column('observed_power', sa.String(length=16), nullable=True),
    sa.Column('observed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reconcile_retries', sa.Integer(), nullable=False),
    sa.Column('domain_uuid', sa.String(length=36), nullable=True),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_instances_host_id_hosts')),
    sa.ForeignKeyConstraint(['instance_type_id'], ['instance_types.id'], name=op.f('fk_instances_instance_type_id_instance_types')),
    sa.ForeignKeyConstraint(['zone_id'], ['zones.id'], name=op.f('fk_instances_zone_id_zones')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_instances')),
    sa.UniqueConstraint('client_token', name=op.f('uq_instances_client_token'))
    )
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instances_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_host_id'), ['host_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_image_id'), ['image_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_key_pair_id'), ['key_pair_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_name'), ['name'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_vpc_id'), ['vpc_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_vswitch_id'), ['vswitch_id'], unique=False)

    op.create_table('disks',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('instance_id', sa.String(length=32), nullable=False),
    sa.Column('role', sa.String(length=8), nullable=False),
    sa.Column('size_gib', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.String(length=32), nullable=True),
    sa.Column('device', sa.String(length=8), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], name=op.f('fk_disks_image_id_images')),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], name=op.f('fk_disks_instance_id_instances'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_disks'))
    )
    with op.batch_alter_table('disks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_disks_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_disks_instance_id'), ['instance_id'], unique=False)

    op.create_table('nics',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('instance_id', sa.String(length=32), nullable=False),
    sa.Column('vswitch_id', sa.String(length=32), nullable=False),
    sa.Column('ip', sa.String(length=39), nullable=False),
    sa.Column('mac', sa.String(length=17), nullable=False),
    sa.Column('tap_name', sa.String(length=15), nullable=False),
    sa.Column('device_index', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], name=op.f('fk_nics_instance_id_instances'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vswitch_id'], ['vswitches.id'], name=op.f('fk_nics_vswitch_id_vswitches')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_nics')),
    sa.UniqueConstraint('mac', name=op.f('uq_nics_mac')),
    sa.UniqueConstraint('tap_name', name=op.f('uq_nics_tap_name')),
    sa.UniqueConstraint('vswitch_id', 'ip', name=op.f('uq_nics_vswitch_id_ip'))
    )
    with op.batch_alter_table('nics', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_nics_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_nics_instance_id'), ['instance_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_nics_vswitch_id'), ['vswitch_id'], unique=False)

    op.create_table('operations',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('instance_id', sa.String(length=32), nullable=False),
    sa.Column('host_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('force', sa.Boolean(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_operations_host_id_hosts')),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], name=op.f('fk_operations_instance_id_instances'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_operations'))
    )
    with op.batch_alter_table('operations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_operations_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_operations_host_id'), ['host_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_operations_instance_id'), ['instance_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_operations_outcome'), ['outcome'], unique=False)

    op.create_table('nic_security_groups',
    sa.Column('nic_id', sa.String(length=32), nullable=False),
    sa.Column('security_group_id', sa.String(length=32), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['nic_id'], ['nics.id'], name=op.f('fk_nic_security_groups_nic_id_nics'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['security_group_id'], ['security_groups.id'], name=op.f('fk_nic_security_groups_security_group_id_security_groups')),
    sa.PrimaryKeyConstraint('nic_id', 'security_group_id', name=op.f('pk_nic_security_groups'))
    )
    with op.batch_alter_table('nic_security_groups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_nic_security_groups_security_group_id'), ['security_group_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('nic_security_groups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_nic_security_groups_security_group_id'))

    op.drop_table('nic_security_groups')
    with op.batch_alter_table('operations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_operations_outcome'))
        batch_op.drop_index(batch_op.f('ix_operations_instance_id'))
        batch_op.drop_index(batch_op.f('ix_operations_host_id'))
        batch_op.drop_index(batch_op.f('ix_operations_created_at'))

    op.drop_table('operations')
    with op.batch_alter_table('nics', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_nics_vswitch_id'))
        batch_op.drop_index(batch_op.f('ix_nics_instance_id'))
        batch_op.drop_index(batch_op.f('ix_nics_created_at'))

    op.drop_table('nics')
    with op.batch_alter_table('disks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_disks_instance_id'))
        batch_op.drop_index(batch_op.f('ix_disks_created_at'))

    op.drop_table('disks')
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_vswitch_id'))
        batch_op.drop_index(batch_op.f('ix_instances_vpc_id'))
        batch_op.drop_index(batch_op.f('ix_instances_status'))
        batch_op.drop_index(batch_op.f('ix_instances_name'))
        batch_op.drop_index(batch_op.f('ix_instances_key_pair_id'))
        batch_op.drop_index(batch_op.f('ix_instances_image_id'))
        batch_op.drop_index(batch_op.f('ix_instances_host_id'))
        batch_op.drop_index(batch_op.f('ix_instances_created_at'))

    op.drop_table('instances')
    with op.batch_alter_table('vswitches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vswitches_zone_id'))
        batch_op.drop_index(batch_op.f('ix_vswitches_vpc_id'))
        batch_op.drop_index(batch_op.f('ix_vswitches_created_at'))

    op.drop_table('vswitches')
    with op.batch_alter_table('security_groups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_security_groups_vpc_id'))
        batch_op.drop_index(batch_op.f('ix_security_groups_created_at'))

    op.drop_table('security_groups')
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hosts_zone_id'))
        batch_op.drop_index(batch_op.f('ix_hosts_created_at'))

    op.drop_table('hosts')
    with op.batch_alter_table('zones', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_zones_created_at'))

    op.drop_table('zones')
    with op.batch_alter_table('vpcs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vpcs_created_at'))

    op.drop_table('vpcs')
    op.drop_table('settings')
    with op.batch_alter_table('key_pairs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_key_pairs_created_at'))

    op.drop_table('key_pairs')
    with op.batch_alter_table('instance_types', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instance_types_created_at'))

    op.drop_table('instance_types')
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_images_created_at'))

    op.drop_table('images')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_created_at'))

    op.drop_table('api_tokens')
