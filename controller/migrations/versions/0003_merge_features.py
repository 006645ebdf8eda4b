"""Merge the security-group, networking and storage revisions into one head.

Revision ID: 0003
Revises: 0002_sg, 0002_net, 0002_storage
"""

from __future__ import annotations

revision = '0003'
down_revision = ('0002_sg', '0002_net', '0002_storage')
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
