"""Names belong to the project: key-pair, snapshot-policy and image names and instance
client tokens are unique per project instead of region-wide.

* ``key_pairs``, ``snapshot_policies``: UNIQUE (name) -> UNIQUE (project_id, name).
* ``images``: UNIQUE (name) -> UNIQUE (project_id, name), and a partial unique index
  on name among the public images (project NULL), which the constraint does not
  cover (NULLs are distinct).
* ``instances``: UNIQUE (client_token) -> UNIQUE (project_id, client_token).

Existing rows already satisfy the new constraints (the old ones were stricter).
A downgrade restores the region-wide constraints and fails if two projects have
meanwhile used the same name (rename one first).

On SQLite each change is a batch copy of the table; ``controller.db.migration_connection``
runs it with foreign keys off so the copy's DROP TABLE cascades into no child table.

Revision ID: 0007_projnames
Revises: 0006_tenancy
"""

import sqlalchemy as sa
from alembic import op

revision = '0007_projnames'
down_revision = '0006_tenancy'
branch_labels = None
depends_on = None

# table -> the column that was unique region-wide and is now unique per project
PER_PROJECT = (('key_pairs', 'name'), ('snapshot_policies', 'name'), ('images', 'name'),
               ('instances', 'client_token'))
PUBLIC_IMAGE = sa.text('project_id IS NULL')


def upgrade() -> None:
    for table, column in PER_PROJECT:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f'uq_{table}_{column}', type_='unique')
            batch_op.create_unique_constraint(f'uq_{table}_project_id_{column}',
                                              ['project_id', column])
    op.create_index('uq_images_public_name', 'images', ['name'], unique=True,
                    sqlite_where=PUBLIC_IMAGE, postgresql_where=PUBLIC_IMAGE)


def downgrade() -> None:
    op.drop_index('uq_images_public_name', table_name='images')
    for table, column in reversed(PER_PROJECT):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f'uq_{table}_project_id_{column}', type_='unique')
            batch_op.create_unique_constraint(f'uq_{table}_{column}', [column])
