"""Queries a bundle's export reads, mixed into ``Reader`` (store.py)."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Connection, select

from modelyard.domain.models import Event
from modelyard.storage.db.lifecycle import event_from_row
from modelyard.storage.db.tables import events, versions


class BundlesReader:
    conn: Connection

    def live_version_ids(self, model_id: int, stage: str | None = None) -> list[int]:
        """The ids of a model's versions that are not deleted (those in ``stage``), oldest
        first."""
        stmt = select(versions.c.id).where(
            versions.c.model_id == model_id, versions.c.deleted_at.is_(None)
        )
        if stage is not None:
            stmt = stmt.where(versions.c.stage == stage)
        return list(self.conn.execute(stmt.order_by(versions.c.number)).scalars())

    def events_about(self, model: str, subjects: Collection[str]) -> list[Event]:
        """The events of a model about these subjects (the model, its versions), in order."""
        stmt = (
            select(events)
            .where(events.c.model == model, events.c.subject.in_(sorted(subjects)))
            .order_by(events.c.seq)
        )
        return [event_from_row(r) for r in self.conn.execute(stmt)]
