"""Advisories: the OSV dump versions' environments are matched against, and its entries.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "advisory_dump",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("packages", sa.Integer(), nullable=False),
        sa.Column("advisories", sa.Integer(), nullable=False),
        sa.Column("modified", sa.String(length=64), nullable=True),
        sa.Column("loaded_at", sa.BigInteger(), nullable=False),
        sa.Column("loaded_by", sa.String(length=256), nullable=False),
        sa.Column("pending_from", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_advisory_dump")),
    )
    op.create_table(
        "advisory_packages",
        sa.Column("package", sa.String(length=256), nullable=False),
        sa.Column("entries", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("package", name=op.f("pk_advisory_packages")),
    )


def downgrade() -> None:
    op.drop_table("advisory_packages")
    op.drop_table("advisory_dump")
