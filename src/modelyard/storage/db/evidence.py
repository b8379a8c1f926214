"""Queries over a version's evidence (attachments, card revisions, comments), mixed into
``Reader`` and ``Writer`` (store.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, insert, select

from modelyard.domain.evidence import Attachment, Card, Comment
from modelyard.domain.models import utc_from_us
from modelyard.storage.db.tables import comments, version_attachments, version_cards, versions

_ATTACHMENTS = select(
    version_attachments.c.path,
    version_attachments.c.sha256,
    version_attachments.c.size,
    version_attachments.c.media_type,
    version_attachments.c.attached_by,
    version_attachments.c.attached_at,
)
_CARDS = select(
    version_cards.c.text,
    version_cards.c.revision,
    version_cards.c.source,
    version_cards.c.updated_by,
    version_cards.c.updated_at,
)
_COMMENTS = select(
    comments.c.id,
    versions.c.number,
    comments.c.request_id,
    comments.c.author,
    comments.c.body,
    comments.c.created_at,
).outerjoin(versions, comments.c.version_id == versions.c.id)


def _attachment(row: Any) -> Attachment:
    path, sha256, size, media_type, attached_by, attached_at = row
    return Attachment(path, sha256, size, media_type, attached_by, utc_from_us(attached_at))


def _card(row: Any) -> Card:
    text, revision, source, updated_by, updated_at = row
    return Card(text, revision, source, updated_by, utc_from_us(updated_at))


class EvidenceReader:
    conn: Connection

    def attachments(self, version_id: int) -> list[Attachment]:
        stmt = _ATTACHMENTS.where(version_attachments.c.version_id == version_id)
        rows = self.conn.execute(stmt.order_by(version_attachments.c.path))
        return [_attachment(r) for r in rows]

    def attachment(self, version_id: int, path: str) -> Attachment | None:
        stmt = _ATTACHMENTS.where(
            version_attachments.c.version_id == version_id, version_attachments.c.path == path
        )
        row = self.conn.execute(stmt).first()
        return _attachment(row) if row else None

    def previous_version_id(self, model_id: int, number: int) -> int | None:
        """The newest live version of the model before ``number``, or None."""
        stmt = (
            select(versions.c.id)
            .where(
                versions.c.model_id == model_id,
                versions.c.number < number,
                versions.c.deleted_at.is_(None),
            )
            .order_by(versions.c.number.desc())
            .limit(1)
        )
        found: int | None = self.conn.execute(stmt).scalar()
        return found

    def card(self, version_id: int) -> Card | None:
        """The newest revision of a version's card, or None."""
        stmt = (
            _CARDS.where(version_cards.c.version_id == version_id)
            .order_by(version_cards.c.revision.desc())
            .limit(1)
        )
        row = self.conn.execute(stmt).first()
        return _card(row) if row else None

    def card_history(self, version_id: int) -> list[Card]:
        """Every revision of a version's card, oldest first."""
        stmt = _CARDS.where(version_cards.c.version_id == version_id)
        return [_card(r) for r in self.conn.execute(stmt.order_by(version_cards.c.revision))]

    def comments(
        self,
        model: str,
        model_id: int,
        *,
        version_id: int | None = None,
        request_id: int | None = None,
        limit: int = 1000,
    ) -> list[Comment]:
        """A model's comments (those on one version, or on one request), the newest
        ``limit`` of them, oldest first."""
        stmt = _COMMENTS.where(comments.c.model_id == model_id)
        if version_id is not None:
            stmt = stmt.where(comments.c.version_id == version_id)
        if request_id is not None:
            stmt = stmt.where(comments.c.request_id == request_id)
        rows = self.conn.execute(stmt.order_by(comments.c.id.desc()).limit(limit)).all()
        return [
            Comment(id_, model, number, request, author, body, utc_from_us(created))
            for id_, number, request, author, body, created in reversed(rows)
        ]


class EvidenceWriter(EvidenceReader):
    def insert_attachments(self, version_id: int, attached: Sequence[Attachment], now: int) -> None:
        self.conn.execute(
            insert(version_attachments),
            [
                {
                    "version_id": version_id,
                    "path": a.path,
                    "sha256": a.sha256,
                    "size": a.size,
                    "media_type": a.media_type,
                    "attached_by": a.attached_by,
                    "attached_at": now,
                }
                for a in attached
            ],
        )

    def insert_card(
        self, version_id: int, text: str, source: str, updated_by: str, now: int
    ) -> int:
        """Add the next revision of a version's card; returns its number."""
        newest = select(func.max(version_cards.c.revision)).where(
            version_cards.c.version_id == version_id
        )
        revision = int(self.conn.execute(newest).scalar() or 0) + 1
        self.conn.execute(
            insert(version_cards).values(
                version_id=version_id,
                revision=revision,
                text=text,
                source=source,
                updated_by=updated_by,
                updated_at=now,
            )
        )
        return revision

    def insert_comment(self, values: dict[str, Any]) -> int:
        """model_id, version_id, request_id, author, body, created_at; returns the id."""
        return int(
            self.conn.execute(
                insert(comments).values(**values).returning(comments.c.id)
            ).scalar_one()
        )
