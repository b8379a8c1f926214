"""The blob store interface: every backend (local directory, memory, S3 later) implements it.

Shaped like the Docker registry's storage driver: a reader from an offset, a writer that
commits or cancels, stat, a listing of digests, delete, and a URL a client may fetch
directly (an object store's presigned URL; None where the server streams the bytes).

Blobs are keyed by the hex sha256 of their bytes. An upload is streamed into a staging
area, verified against the digest the client claimed, made durable and only then
published under its digest, so a reader can never see a partial or wrong blob. Uploads
that were neither committed nor cancelled (a crash) stay listed by ``uploads()`` until
garbage collection removes them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from modelyard.domain.errors import DigestMismatch, InvalidInput

_UPLOAD_NAME = re.compile(r"(?:[0-9a-f]{64}|unnamed)\.[0-9a-f]{16}\.part")


def new_upload_name(digest: str | None) -> str:
    """A unique name for an upload's staged bytes, telling what it was meant to be."""
    return f"{digest or 'unnamed'}.{secrets.token_hex(8)}.part"


def validate_upload_name(name: str) -> str:
    """Refuse anything but a name ``new_upload_name`` made (no path, no other file)."""
    if not isinstance(name, str) or _UPLOAD_NAME.fullmatch(name) is None:
        raise InvalidInput(f"{name!r} is not the name of an upload")
    return name


def verified_digest(expected: str | None, actual: str) -> str:
    """The digest an upload is published under: what it hashed to when it named none,
    else the one it named, which must be what it hashed to (every store's one rule)."""
    if expected is not None and actual != expected:
        raise DigestMismatch(
            f"uploaded bytes hash to sha256:{actual}, not the sha256:{expected}"
            " named in the URL; nothing was stored",
            expected=f"sha256:{expected}",
            actual=f"sha256:{actual}",
        )
    return actual


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """What ``stat`` tells about a stored blob."""

    size: int
    modified: float  # seconds since the epoch: when these bytes were last published


@dataclass(frozen=True, slots=True)
class UploadLeftover:
    """Staged bytes of an upload not (yet) committed or cancelled: in flight, or a crash's."""

    name: str
    size: int
    modified: float  # seconds since the epoch: the upload's last write


class BlobUpload(Protocol):
    """An upload in progress: write chunks, then commit (verify + publish) or abort (cancel)."""

    @property
    def digest(self) -> str:
        """The expected digest, or for an unnamed upload the computed one (after commit)."""
        ...

    def write(self, chunk: bytes) -> None: ...

    def commit(self) -> int:
        """Verify the digest, make the blob durable and visible; return its size.

        Publishing bytes the store holds already publishes them again (``modified`` moves),
        so a collector honouring a grace period spares a blob that was just re-uploaded.
        Raises DigestMismatch (and discards the bytes) when the content does not match.
        """
        ...

    def abort(self) -> None:
        """Cancel: discard whatever was written. Harmless when repeated."""
        ...


@runtime_checkable
class ReceivingUpload(BlobUpload, Protocol):
    """An upload that lets the bytes be read straight into its own buffers (a socket's
    ``recv_into``), sparing a copy; ``PendingBlob.receive`` copies for any other upload."""

    def receive(self, read: Callable[[memoryview], int], limit: int) -> int:
        """Call ``read`` with free buffer space until ``limit`` bytes or a read of 0;
        return the bytes read."""
        ...


class BlobStore(Protocol):
    def stat(self, digest: str) -> BlobInfo | None:
        """The blob's size and publication time, or None when the store does not have it."""
        ...

    def begin_upload(self, digest: str | None) -> BlobUpload:
        """Start an upload expected to hash to ``digest``; None: whatever it hashes to."""
        ...

    def read(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield the bytes [start, end) in large chunks; raise NotFound if absent."""
        ...

    def url(self, digest: str) -> str | None:
        """A URL the client may fetch the bytes from itself, or None: ask the server."""
        ...

    def digests(self) -> Iterator[str]:
        """Every stored digest, in no particular order (for garbage collection)."""
        ...

    def delete(self, digest: str) -> None:
        """Remove the blob; deleting an absent one is not an error."""
        ...

    def uploads(self) -> list[UploadLeftover]:
        """Uploads begun and neither committed nor cancelled, in flight or left by a crash."""
        ...

    def remove_upload(self, name: str) -> None:
        """Discard the staged bytes of one of ``uploads()``; absent ones are ignored."""
        ...

    def exclusive(self) -> AbstractContextManager[bool]:
        """Hold the store alone while the block runs, if no other process has it open.

        Yields whether that is so: then no upload can be in flight but this process's own,
        and start-up clean-up may remove every leftover without a grace period.
        """
        ...

    def check(self) -> None:
        """Raise if the store cannot be used (readiness probe)."""
        ...

    def close(self) -> None:
        """Let go of the store (for the local one, its shared lock)."""
        ...
