"""A blob store in a local directory: ``<root>/sha256/ab/abcdef...``.

Durability order on commit: fsync the staged file, rename it into place, fsync the
directory. Only after that may metadata reference the blob.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from modelyard.domain.errors import DigestMismatch, NotFound
from modelyard.domain.manifest import validate_digest_hex

CHUNK_SIZE = 1024 * 1024
STALE_UPLOAD_SECONDS = 3600


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._objects = root / "sha256"
        self._staging = root / "staging"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._staging.mkdir(parents=True, exist_ok=True)
        self._sweep_staging()

    def _sweep_staging(self) -> None:
        """Remove uploads a crash left behind. Only old ones: another process sharing this
        directory (the in-process SDK beside a server) may be writing the recent ones."""
        cutoff = time.time() - STALE_UPLOAD_SECONDS
        for leftover in self._staging.glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()

    def path_of(self, digest: str) -> Path:
        validate_digest_hex(digest)
        return self._objects / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        return self.path_of(digest).is_file()

    def size(self, digest: str) -> int | None:
        try:
            return self.path_of(digest).stat().st_size
        except FileNotFoundError:
            return None

    def begin_upload(self, digest: str | None) -> _LocalUpload:
        if digest is not None:
            validate_digest_hex(digest)
        staged = self._staging / f"{digest or 'unnamed'}.{secrets.token_hex(8)}.part"
        return _LocalUpload(self, digest, staged)

    def read(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path = self.path_of(digest)
        try:
            handle = path.open("rb", buffering=0)
        except FileNotFoundError:
            raise NotFound(f"blob sha256:{digest} not found", code="blob_not_found") from None
        return _read_range(handle, start, end)

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path_of(digest).unlink()

    def check(self) -> None:
        probe = self._staging / f".probe-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()

    def _publish(self, staged: Path, digest: str) -> None:
        target = self.path_of(digest)
        if target.is_file():  # content-addressed: the stored blob is these very bytes
            staged.unlink()
            return
        target.parent.mkdir(exist_ok=True)
        os.replace(staged, target)
        _fsync_dir(target.parent)


def _read_range(handle: io.FileIO, start: int, end: int | None) -> Iterator[bytes]:
    with handle:
        handle.seek(start)
        remaining = None if end is None else end - start
        while remaining is None or remaining > 0:
            want = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
            chunk = handle.read(want)
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk


class _LocalUpload:
    def __init__(self, store: LocalBlobStore, digest: str | None, staged: Path) -> None:
        self._store = store
        self._expected = digest
        self._digest = digest or ""
        self._staged = staged
        self._hash = hashlib.sha256()
        self._file = staged.open("wb", buffering=0)
        self._size = 0

    def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._file.write(chunk)
        self._size += len(chunk)

    def commit(self) -> int:
        try:
            actual = self._hash.hexdigest()
            if self._expected is None:
                self._digest = actual
            if actual != self._digest:
                raise DigestMismatch(
                    f"uploaded bytes hash to sha256:{actual}, not the sha256:{self._digest}"
                    " named in the URL; nothing was stored",
                    expected=f"sha256:{self._digest}",
                    actual=f"sha256:{actual}",
                )
            os.fsync(self._file.fileno())
            self._file.close()
            self._store._publish(self._staged, self._digest)
            return self._size
        except BaseException:
            self.abort()
            raise

    @property
    def digest(self) -> str:
        return self._digest

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._staged.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
