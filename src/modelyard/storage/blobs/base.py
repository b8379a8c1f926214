"""The blob store interface: every backend (local directory now, S3 later) implements it.

Blobs are keyed by the hex sha256 of their bytes. An upload is streamed into a staging
area, verified against the digest the client claimed, made durable and only then
published under its digest, so a reader can never see a partial or wrong blob.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class BlobUpload(Protocol):
    """An upload in progress: write chunks, then commit (verify + publish) or abort."""

    @property
    def digest(self) -> str:
        """The expected digest, or for an unnamed upload the computed one (after commit)."""
        ...

    def write(self, chunk: bytes) -> None: ...

    def commit(self) -> int:
        """Verify the digest, make the blob durable and visible; return its size.

        Raises DigestMismatch (and discards the bytes) when the content does not match.
        """
        ...

    def abort(self) -> None: ...


class BlobStore(Protocol):
    def exists(self, digest: str) -> bool: ...

    def size(self, digest: str) -> int | None:
        """The blob's size, or None when the store does not have it."""
        ...

    def begin_upload(self, digest: str | None) -> BlobUpload:
        """Start an upload expected to hash to ``digest``; None: whatever it hashes to."""
        ...

    def read(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield the bytes [start, end) in large chunks; raise NotFound if absent."""
        ...

    def delete(self, digest: str) -> None: ...

    def check(self) -> None:
        """Raise if the store cannot be used (readiness probe)."""
        ...
