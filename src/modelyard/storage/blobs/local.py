"""A blob store in a local directory: ``<root>/sha256/ab/abcdef...``.

Durability order on commit: fsync the staged file, rename it into place, fsync the
directory. Only after that may metadata reference the blob. Everything is created 0700
(directories) and 0600 (files): the bytes are for the server to hand out, not other users.
Every store holds a shared lock on ``<root>/.lock`` while open, so a process can tell
whether it has the directory to itself (``exclusive``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import mmap
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from modelyard.domain.errors import InvalidInput, NotFound
from modelyard.domain.manifest import validate_digest_hex
from modelyard.storage.blobs.base import (
    BlobInfo,
    UploadLeftover,
    new_upload_name,
    validate_upload_name,
    verified_digest,
)
from modelyard.storage.private import FILE_MODE, private_dir, private_file
from modelyard.transfer import DIRECT_ALIGN, FileSink, Pipeline

CHUNK_SIZE = 4 * 1024 * 1024
_DIRECT = getattr(os, "O_DIRECT", 0)
_HEX_NAME = re.compile(r"[0-9a-f]{64}")


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = private_dir(root)
        self._objects = private_dir(root / "sha256")
        self._staging = private_dir(root / "staging")
        self._lock = os.open(private_file(root / ".lock"), os.O_RDONLY | os.O_CLOEXEC)
        fcntl.flock(self._lock, fcntl.LOCK_SH)

    def path_of(self, digest: str) -> Path:
        validate_digest_hex(digest)
        return self._objects / digest[:2] / digest

    def stat(self, digest: str) -> BlobInfo | None:
        try:
            found = self.path_of(digest).stat()
        except FileNotFoundError:
            return None
        return BlobInfo(found.st_size, found.st_mtime)

    def url(self, digest: str) -> str | None:
        validate_digest_hex(digest)
        return None  # the server streams local files itself

    def digests(self) -> Iterator[str]:
        for shard in self._objects.iterdir():
            for blob in shard.iterdir() if shard.is_dir() else ():
                if _HEX_NAME.fullmatch(blob.name) and blob.name[:2] == shard.name:
                    yield blob.name

    def uploads(self) -> list[UploadLeftover]:
        found = []
        for staged in self._staging.iterdir():
            with contextlib.suppress(FileNotFoundError):  # committed meanwhile
                if _is_upload_name(staged.name):
                    info = staged.stat()
                    found.append(UploadLeftover(staged.name, info.st_size, info.st_mtime))
        return found

    def remove_upload(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._staging / validate_upload_name(name)).unlink()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[bool]:
        # flock converts a shared lock to an exclusive one by dropping it first, so a
        # refusal leaves none: take the shared one back either way.
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(self._lock, fcntl.LOCK_SH)
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_SH)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._lock)

    def begin_upload(self, digest: str | None) -> _LocalUpload:
        if digest is not None:
            validate_digest_hex(digest)
        staged = self._staging / new_upload_name(digest)
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
        # Replaces a stored blob too (the same bytes, content-addressed): its mtime moves,
        # so a collector's grace period spares what was just uploaded again.
        target = self.path_of(digest)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        os.replace(staged, target)
        _fsync_dir(target.parent)


def _read_range(handle: io.FileIO, start: int, end: int | None) -> Iterator[bytes]:
    """The bytes [start, end) in reads of up to ``CHUNK_SIZE``, with O_DIRECT.

    A read by DMA costs next to no CPU, where filling page-cache pages cost 1.2-1.5 s of
    server CPU per GiB on the benchmark machine, and a big blob read once per deployment
    does not evict what is hot. (MinIO reads objects the same way.) Reads start on a block
    boundary, as O_DIRECT requires. Where the filesystem has no O_DIRECT (tmpfs) or refuses
    an aligned read, it is an ordinary read.
    """
    with handle, contextlib.closing(mmap.mmap(-1, CHUNK_SIZE)) as buffer:
        fd = handle.fileno()
        end = os.fstat(fd).st_size if end is None else end
        direct = _set_direct(fd, True)
        position = start - start % DIRECT_ALIGN
        while position < end and start < end:
            want = min(CHUNK_SIZE, -(-(end - position) // DIRECT_ALIGN) * DIRECT_ALIGN)
            try:
                with memoryview(buffer) as whole, whole[:want] as view:
                    n = os.preadv(fd, [view], position)
            except OSError as exc:
                if not direct or exc.errno != errno.EINVAL:
                    raise
                direct = _set_direct(fd, False)
                continue
            if n <= max(start - position, 0):
                return
            yield buffer[max(start - position, 0) : min(end - position, n)]
            position += n


def _set_direct(fd: int, on: bool) -> bool:
    """Switch O_DIRECT on or off for ``fd``; whether it is now on."""
    if not _DIRECT:
        return False
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | _DIRECT if on else flags & ~_DIRECT)
    except OSError:
        return False
    return on


class _LocalUpload:
    """Hashes and writes on two threads of a ``Pipeline`` while the caller receives."""

    def __init__(self, store: LocalBlobStore, digest: str | None, staged: Path) -> None:
        self._store = store
        self._expected = digest
        self._digest = digest or ""
        self._staged = staged
        self._hash = hashlib.sha256()
        self._file = FileSink(staged, mode=FILE_MODE)
        self._pipeline = Pipeline([self._hash.update], writer=self._file.write_at)
        self._size = 0

    def write(self, chunk: bytes) -> None:
        # Blocks only when every pool buffer is still being hashed or written: backpressure.
        self._pipeline.write(chunk)
        self._size += len(chunk)

    def receive(self, read: Callable[[memoryview], int], limit: int) -> int:
        # The socket's bytes straight into the pool: one copy, the kernel's.
        n = self._pipeline.receive(read, limit)
        self._size += n
        return n

    def commit(self) -> int:
        try:
            self._pipeline.close()
            actual = self._hash.hexdigest()
            self._digest = verified_digest(self._expected, actual)
            self._file.fsync()
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
        self._pipeline.abort()
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._staged.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_upload_name(name: str) -> bool:
    try:
        validate_upload_name(name)
    except InvalidInput:
        return False
    return True
