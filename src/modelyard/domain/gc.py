"""The report of a garbage collection: what went (or, in a dry run, would go)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelyard.domain.events import GcCounts

MAX_LISTED = 1000  # removals a report names one by one; its counts cover them all


@dataclass
class GcReport:
    dry_run: bool
    grace_seconds: float
    blobs: int = 0
    blob_bytes: int = 0
    uploads: int = 0
    upload_bytes: int = 0
    removed: list[dict[str, Any]] = field(default_factory=list)
    unlisted: int = 0

    def add(self, kind: str, name: str, size: int) -> None:
        """Count one removal: ``kind`` 'blob' or 'upload' (staged bytes never committed)."""
        if kind == "upload":
            self.uploads += 1
            self.upload_bytes += size
        else:
            self.blobs += 1
            self.blob_bytes += size
        if len(self.removed) < MAX_LISTED:
            self.removed.append({"kind": kind, "name": name, "size": size})
        else:
            self.unlisted += 1

    def counts(self) -> GcCounts:
        """What the journal keeps of a run."""
        return {
            "dry_run": self.dry_run,
            "grace_seconds": self.grace_seconds,
            "blobs": self.blobs,
            "blob_bytes": self.blob_bytes,
            "uploads": self.uploads,
            "upload_bytes": self.upload_bytes,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**self.counts(), "removed": self.removed, "unlisted": self.unlisted}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GcReport:
        return cls(**{k: data[k] for k in (*cls.__dataclass_fields__,) if k in data})
