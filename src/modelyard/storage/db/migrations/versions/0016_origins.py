"""Origins: where an import found a model or version (another registry's name, number,
time and creator), kept beside this registry's own.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("models", "versions"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("origin", sa.Text(), nullable=True))


def downgrade() -> None:
    for table in ("models", "versions"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("origin")
