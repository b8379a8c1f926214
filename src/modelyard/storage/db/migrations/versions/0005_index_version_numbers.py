"""An index on version numbers: `version = N` across models walked every version.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_versions_number"), "versions", ["number"])


def downgrade() -> None:
    op.drop_index(op.f("ix_versions_number"), table_name="versions")
