"""Chain version 2: each event records the chain version its hash was computed with.

Existing events are version 1 (their hashes leave out the model); new ones are written
with version 2, which covers the model too.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("chain", sa.SmallInteger(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("chain")
