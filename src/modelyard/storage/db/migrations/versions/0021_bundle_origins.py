"""Bundle origins: the other registries whose keys an admin trusts (their bundles import,
their signatures verify downloads), and which signatures a bundle carried from one.

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("signing_keys") as batch:
        batch.add_column(sa.Column("registry", sa.String(length=64), nullable=True))
    with op.batch_alter_table("version_signatures") as batch:
        batch.add_column(sa.Column("origin", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("version_signatures") as batch:
        batch.drop_column("origin")
    with op.batch_alter_table("signing_keys") as batch:
        batch.drop_column("registry")
