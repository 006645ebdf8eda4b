"""instances.power_serial: counts the starts asked through the API.

A guest that powers itself off while it should run is shown Stopped (its desired power
becomes stopped). The agent holds such a domain stopped until the controller takes
note, and tells a later start from that hold by this serial, which the spec carries:
it changes with every start, never otherwise (agent/records.py ``GuestPower``).

Revision ID: 0009_powerserial
Revises: 0008_specfrag
"""

import sqlalchemy as sa
from alembic import op

revision = '0009_powerserial'
down_revision = '0008_specfrag'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('power_serial', sa.Integer(), server_default='0',
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('power_serial')
