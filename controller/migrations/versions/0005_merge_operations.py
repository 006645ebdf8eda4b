"""Merge the instance-operations, placement, migration and events revisions into one head.

Revision ID: 0005
Revises: 0004_ops, 0004_place, 0004_migrate, 0004_obs
"""

from __future__ import annotations

revision = '0005'
down_revision = ('0004_ops', '0004_place', '0004_migrate', '0004_obs')
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
