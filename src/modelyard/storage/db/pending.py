"""Pending versions' rows: numbers given to versions whose files are still being copied.

A row is written when the number is given (``lock_model`` counts it among the numbers
given, so no other registration takes it), touched as the copy progresses, deleted by the
transaction that registers the version, and marked failed when the copy fails: a number
is given once.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Connection, and_, delete, insert, select, update

from modelyard.domain.models import PendingVersion, utc_from_us
from modelyard.storage.db.tables import pending_versions


def _row(model_id: int, number: int) -> ColumnElement[bool]:
    return and_(pending_versions.c.model_id == model_id, pending_versions.c.number == number)


class PendingReader:
    conn: Connection

    def pending_version(self, model: str, model_id: int, number: int) -> PendingVersion | None:
        found = self.conn.execute(select(pending_versions).where(_row(model_id, number))).first()
        if found is None:
            return None
        return PendingVersion(
            model=model,
            version=number,
            status=found.status,
            message=found.message,
            source=found.source,
            run=found.run,
            creator=found.creator,
            created_at=utc_from_us(found.created_at),
            updated_at=utc_from_us(found.updated_at),
        )


class PendingWriter:
    conn: Connection

    def insert_pending(
        self, model_id: int, number: int, source: str, run: str | None, creator: str, now: int
    ) -> None:
        self.conn.execute(
            insert(pending_versions).values(
                model_id=model_id,
                number=number,
                status="pending",
                message="",
                source=source,
                run=run,
                creator=creator,
                created_at=now,
                updated_at=now,
            )
        )

    def take_pending(self, model_id: int, number: int) -> bool:
        """Delete a pending number's row as its version is registered; False if there is
        none still pending (it failed, or was never given)."""
        where = and_(_row(model_id, number), pending_versions.c.status == "pending")
        return bool(self.conn.execute(delete(pending_versions).where(where)).rowcount)

    def touch_pending(self, model_id: int, number: int, now: int) -> None:
        self.conn.execute(
            update(pending_versions).where(_row(model_id, number)).values(updated_at=now)
        )

    def fail_pending(self, model_id: int, number: int, message: str, now: int) -> None:
        self.conn.execute(
            update(pending_versions)
            .where(_row(model_id, number))
            .values(status="failed", message=message, updated_at=now)
        )
