"""Online metrics: every reported value per version, and the newest of each key.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "online_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("start_at", sa.BigInteger(), nullable=False),
        sa.Column("end_at", sa.BigInteger(), nullable=False),
        sa.Column("reporter", sa.String(length=256), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["versions.id"],
            name=op.f("fk_online_metrics_version_id_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_online_metrics")),
    )
    op.create_index(
        op.f("ix_online_metrics_version_id_key_end_at"),
        "online_metrics",
        ["version_id", "key", "end_at"],
    )
    op.create_table(
        "online_metrics_latest",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("end_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["versions.id"],
            name=op.f("fk_online_metrics_latest_version_id_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "key", name=op.f("pk_online_metrics_latest")),
    )
    op.create_index(
        op.f("ix_online_metrics_latest_key_value"), "online_metrics_latest", ["key", "value"]
    )


def downgrade() -> None:
    op.drop_table("online_metrics_latest")
    op.drop_table("online_metrics")
