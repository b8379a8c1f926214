"""Queries over blob records: who holds which bytes, and what garbage collection may take.

Mixed into ``Reader`` and ``Writer`` (store.py). A blob row says the registry holds those
bytes (in the blob store, or inline in ``content``); ``blob_possession`` says which
principals proved they hold them too, by uploading them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, exists, insert, or_, select, update

from modelyard.storage.db.tables import (
    blob_possession,
    blobs,
    models,
    version_attachments,
    version_files,
    versions,
)

_BATCH = 500


@dataclass(frozen=True, slots=True)
class BlobRecord:
    digest: str
    size: int
    released: bool  # by a hard delete: collectable at once


def _referenced() -> Any:
    """Whether a version names the blob: as one of its files or one of its attachments."""
    return or_(
        exists().where(version_files.c.sha256 == blobs.c.digest),
        exists().where(version_attachments.c.sha256 == blobs.c.digest),
    )


class BlobReader:
    conn: Connection

    def models_holding_blobs(self, digests: Sequence[str]) -> dict[str, set[str]]:
        """For each of ``digests`` held by some version, the names of those models."""
        held: dict[str, set[str]] = defaultdict(set)
        unique = sorted(set(digests))
        for start in range(0, len(unique), _BATCH):
            stmt = (
                select(version_files.c.sha256, models.c.name)
                .distinct()
                .join(versions, versions.c.id == version_files.c.version_id)
                .join(models, models.c.id == versions.c.model_id)
                .where(version_files.c.sha256.in_(unique[start : start + _BATCH]))
            )
            for digest, model in self.conn.execute(stmt):
                held[digest].add(model)
        return dict(held)

    def possessed_blobs(self, principal_id: int, digests: Sequence[str]) -> set[str]:
        """Those of ``digests`` the principal has uploaded."""
        unique = sorted(set(digests))
        found: set[str] = set()
        for start in range(0, len(unique), _BATCH):
            stmt = select(blob_possession.c.digest).where(
                blob_possession.c.principal_id == principal_id,
                blob_possession.c.digest.in_(unique[start : start + _BATCH]),
            )
            found.update(self.conn.execute(stmt).scalars())
        return found

    def unreferenced_blobs(self, after: str, cutoff_us: int, limit: int) -> list[BlobRecord]:
        """Recorded blobs no version names, past ``after`` in digest order: those released
        by a hard delete, and those recorded before ``cutoff_us`` (the grace period)."""
        stmt = (
            select(
                blobs.c.digest,
                blobs.c.size,
                blobs.c.released_at.is_not(None),
            )
            .where(
                blobs.c.digest > after,
                ~_referenced(),
                or_(blobs.c.released_at.is_not(None), blobs.c.created_at < cutoff_us),
            )
            .order_by(blobs.c.digest)
            .limit(limit)
        )
        rows = self.conn.execute(stmt)
        return [BlobRecord(d, size, bool(gone)) for d, size, gone in rows]


class BlobWriter(BlobReader):
    def record_uploaded_blob(
        self, digest: str, size: int, principal_id: int | None, now: int
    ) -> None:
        """Note an upload of ``digest``: the row (new, or its age reset so the grace period
        runs again, and no longer released) and the uploader's possession."""
        known = self.conn.execute(select(blobs.c.size).where(blobs.c.digest == digest)).first()
        if known is None:
            self.conn.execute(insert(blobs).values(digest=digest, size=size, created_at=now))
        else:
            self.conn.execute(
                update(blobs)
                .where(blobs.c.digest == digest)
                .values(created_at=now, released_at=None)
            )
        if principal_id is not None:
            owned = select(blob_possession.c.digest).where(
                blob_possession.c.digest == digest, blob_possession.c.principal_id == principal_id
            )
            if self.conn.execute(owned).first() is None:
                self.conn.execute(
                    insert(blob_possession).values(
                        digest=digest, principal_id=principal_id, created_at=now
                    )
                )

    def release_blobs(self, digests: Sequence[str], now: int) -> None:
        """After a hard delete: those of ``digests`` no version names any more are
        collectable at once (no grace period: no upload is waiting to be registered)."""
        unique = sorted(set(digests))
        for start in range(0, len(unique), _BATCH):
            self.conn.execute(
                update(blobs)
                .where(
                    blobs.c.digest.in_(unique[start : start + _BATCH]),
                    ~_referenced(),
                )
                .values(released_at=now)
            )

    def delete_blob_records(self, digests: Sequence[str]) -> None:
        """Forget blobs, and who possessed them."""
        for start in range(0, len(digests), _BATCH):
            batch = list(digests[start : start + _BATCH])
            self.conn.execute(delete(blob_possession).where(blob_possession.c.digest.in_(batch)))
            self.conn.execute(delete(blobs).where(blobs.c.digest.in_(batch)))
