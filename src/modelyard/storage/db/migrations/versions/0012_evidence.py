"""Evidence: a version's attachments, its model card's revisions, and comments.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _version_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["version_id"],
        ["versions.id"],
        name=op.f(f"fk_{table}_version_id_versions"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "version_attachments",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(length=128), nullable=False),
        sa.Column("attached_by", sa.String(length=256), nullable=False),
        sa.Column("attached_at", sa.BigInteger(), nullable=False),
        _version_fk("version_attachments"),
        sa.PrimaryKeyConstraint("version_id", "path", name=op.f("pk_version_attachments")),
    )
    op.create_index(
        op.f("ix_version_attachments_sha256"), "version_attachments", ["sha256"], unique=False
    )
    op.create_table(
        "version_cards",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("updated_by", sa.String(length=256), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        _version_fk("version_cards"),
        sa.PrimaryKeyConstraint("version_id", "revision", name=op.f("pk_version_cards")),
    )
    op.create_table(
        "comments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("author", sa.String(length=256), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name=op.f("fk_comments_model_id_models"),
            ondelete="CASCADE",
        ),
        _version_fk("comments"),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["transition_requests.id"],
            name=op.f("fk_comments_request_id_transition_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comments")),
    )
    op.create_index(op.f("ix_comments_model_id_id"), "comments", ["model_id", "id"])
    op.create_index(op.f("ix_comments_version_id"), "comments", ["version_id"])
    op.create_index(op.f("ix_comments_request_id"), "comments", ["request_id"])


def downgrade() -> None:
    op.drop_table("comments")
    op.drop_table("version_cards")
    op.drop_index(op.f("ix_version_attachments_sha256"), table_name="version_attachments")
    op.drop_table("version_attachments")
