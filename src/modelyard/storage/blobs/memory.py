"""A blob store in memory: the second backend of the conformance suite, and a store for
tests that need no disk. It keeps the contract's every promise (verified, invisible until
committed, leftovers listed) so that the interface is proven generic before S3 arrives.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator

from modelyard.domain.errors import DigestMismatch, NotFound
from modelyard.domain.manifest import validate_digest_hex
from modelyard.storage.blobs.base import (
    BlobInfo,
    UploadLeftover,
    new_upload_name,
    validate_upload_name,
    verified_digest,
)

CHUNK_SIZE = 4 * 1024 * 1024


class MemoryBlobStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blobs: dict[str, tuple[bytes, float]] = {}
        self._staged: dict[str, _MemoryUpload] = {}

    def stat(self, digest: str) -> BlobInfo | None:
        validate_digest_hex(digest)
        with self._lock:
            found = self._blobs.get(digest)
        return None if found is None else BlobInfo(len(found[0]), found[1])

    def begin_upload(self, digest: str | None) -> _MemoryUpload:
        if digest is not None:
            validate_digest_hex(digest)
        upload = _MemoryUpload(self, digest, new_upload_name(digest))
        with self._lock:
            self._staged[upload.name] = upload
        return upload

    def read(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        validate_digest_hex(digest)
        with self._lock:
            found = self._blobs.get(digest)
        if found is None:
            raise NotFound(f"blob sha256:{digest} not found", code="blob_not_found")
        data = memoryview(found[0])[start:end]
        return (bytes(data[i : i + CHUNK_SIZE]) for i in range(0, len(data), CHUNK_SIZE))

    def url(self, digest: str) -> str | None:
        validate_digest_hex(digest)
        return None

    def digests(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._blobs))

    def delete(self, digest: str) -> None:
        validate_digest_hex(digest)
        with self._lock:
            self._blobs.pop(digest, None)

    def uploads(self) -> list[UploadLeftover]:
        with self._lock:
            staged = list(self._staged.values())
        return [UploadLeftover(u.name, len(u.data), u.modified) for u in staged]

    def remove_upload(self, name: str) -> None:
        validate_upload_name(name)
        with self._lock:
            self._staged.pop(name, None)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[bool]:
        yield True  # no other process can share a dictionary

    def check(self) -> None:
        return None

    def close(self) -> None:
        return None

    def _publish(self, upload: _MemoryUpload) -> bool:
        """Publish ``upload``'s bytes unless it was removed as a leftover meanwhile."""
        with self._lock:
            if self._staged.pop(upload.name, None) is None:
                return False
            self._blobs[upload.digest] = (bytes(upload.data), time.time())
            return True

    def _discard(self, upload: _MemoryUpload) -> None:
        with self._lock:
            self._staged.pop(upload.name, None)


class _MemoryUpload:
    def __init__(self, store: MemoryBlobStore, digest: str | None, name: str) -> None:
        self.name = name
        self.data = bytearray()
        self.modified = time.time()
        self._store = store
        self._expected = digest
        self._digest = digest or ""

    @property
    def digest(self) -> str:
        return self._digest

    def write(self, chunk: bytes) -> None:
        self.data += chunk
        self.modified = time.time()

    def commit(self) -> int:
        actual = hashlib.sha256(self.data).hexdigest()
        try:
            self._digest = verified_digest(self._expected, actual)
        except DigestMismatch:
            self.abort()
            raise
        if not self._store._publish(self):
            raise NotFound("the upload was removed as a leftover before it was committed")
        return len(self.data)

    def abort(self) -> None:
        self._store._discard(self)
        self.data = bytearray()
