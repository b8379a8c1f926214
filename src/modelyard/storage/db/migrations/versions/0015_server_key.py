"""The fingerprint of the secret key the registry's servers use.

Replicas sharing a database must share the key too: a page token, a sign-in or a webhook
secret that one signed or sealed, another with a different key cannot read. The first
server records a fingerprint (a key derived from the secret, never the secret) and a
server started with another key is refused.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_key",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("server_key")
