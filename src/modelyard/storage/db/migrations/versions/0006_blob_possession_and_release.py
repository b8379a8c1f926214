"""Blob possession (who uploaded which bytes) and the release of a hard-deleted version's blobs.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("blobs") as batch_op:
        batch_op.add_column(sa.Column("released_at", sa.BigInteger(), nullable=True))
    op.create_table(
        "blob_possession",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("principal_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["digest"],
            ["blobs.digest"],
            name=op.f("fk_blob_possession_digest_blobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["principal_id"],
            ["principals.id"],
            name=op.f("fk_blob_possession_principal_id_principals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("digest", "principal_id", name=op.f("pk_blob_possession")),
    )
    op.create_index(op.f("ix_blob_possession_principal_id"), "blob_possession", ["principal_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_blob_possession_principal_id"), table_name="blob_possession")
    op.drop_table("blob_possession")
    with op.batch_alter_table("blobs") as batch_op:
        batch_op.drop_column("released_at")
