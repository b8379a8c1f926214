"""An index of the versions not deleted, by id: what a search walks, newest first.

Every search skips deleted versions, and ``deleted_at`` is the last column of a version's
row, past its environment: on SQLite reading it followed the row's overflow page for
every version walked (a 20,000-version search for 101 matches of a metric and a tag
walked ~1,350 of them). The index holds what the walk needs (id and model), so the rows
are read only for the page itself.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    live = sa.text("deleted_at IS NULL")
    op.create_index(
        "ix_versions_live",
        "versions",
        ["id", "model_id"],
        sqlite_where=live,
        postgresql_where=live,
    )


def downgrade() -> None:
    op.drop_index("ix_versions_live", table_name="versions")
