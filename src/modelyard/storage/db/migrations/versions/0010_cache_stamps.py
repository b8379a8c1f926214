"""Cache stamps: per-model ones read from the journal, and one for who may do what.

A cached resolve holds while its model has no newer event (``max(seq)`` of the model's
events, one index seek on ``(model, seq)``, which also serves every query the ``(model)``
index did). ``journal_head.identity_seq`` is the seq of the newest event that may change
authentication or authorization; token, grant and local-mode caches hold while it stays.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("journal_head") as batch_op:
        batch_op.add_column(
            sa.Column("identity_seq", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute("UPDATE journal_head SET identity_seq = seq")
    op.create_index(op.f("ix_events_model_seq"), "events", ["model", "seq"])
    op.drop_index(op.f("ix_events_model"), table_name="events")


def downgrade() -> None:
    op.create_index(op.f("ix_events_model"), "events", ["model"])
    op.drop_index(op.f("ix_events_model_seq"), table_name="events")
    with op.batch_alter_table("journal_head") as batch_op:
        batch_op.drop_column("identity_seq")
