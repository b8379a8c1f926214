"""Blobs as use cases: ask, upload, read, and collect what nothing references.

Blobs belong to no model until a version names them. A digest alone is no read key: a
caller may name an existing blob (in a registration, or learn that the registry holds it)
only when they may read a version holding it or proved they have the bytes by uploading
them (``blob_possession``, per principal), as the Docker registry's cross-repository
mount requires. To anyone else such a blob is "missing": they upload it, which proves
possession, and the server keeps one copy.

Garbage collection removes blob records and bytes no version names, and uploads never
committed. A grace period spares a blob uploaded but not yet registered and an upload in
flight; a hard delete releases its blobs for collection at once. Deciding and deleting
happen under the journal lock, the lock registrations and upload records take, so a
registration never names a blob being collected.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modelyard.domain.access import Caller, Permission, Role
from modelyard.domain.errors import (
    Conflict,
    DigestMismatch,
    InvalidInput,
    MissingBlobs,
    NotFound,
    TooLarge,
)
from modelyard.domain.events import GarbageCollected
from modelyard.domain.gc import GcReport
from modelyard.domain.manifest import FileEntry, validate_digest_hex
from modelyard.service.access import AccessControl
from modelyard.storage.blobs import BlobStore, BlobUpload
from modelyard.storage.blobs.base import ReceivingUpload
from modelyard.storage.db.store import Database, Reader, Writer, now_us
from modelyard.transfer import MAX_PARTS, part_ranges, part_size

if TYPE_CHECKING:
    from modelyard.config import Settings
    from modelyard.domain.keys import ServerKey
    from modelyard.storage.blobs.s3 import DirectPart, S3BlobStore

DEFAULT_GRACE_SECONDS = 3600.0
MAX_INLINE_FILE = 64 * 1024
MAX_INLINE_TOTAL = 4 * 1024 * 1024
_BATCH = 500
MAX_DIRECT_SIZE = sum(part_size(n) for n in range(1, MAX_PARTS + 1))
RECEIVE_BUFFER = 1024 * 1024  # what a store without ReceivingUpload is handed at a time
# Not a principal name (those have no ':'), so the journal cannot confuse it with one.
START_UP = Caller.local_user("modelyard:start-up")


@dataclass(frozen=True, slots=True)
class DirectPlan:
    """The answer to a direct upload's start: nothing to send (``created`` False), no
    direct transfers here (None: upload through the server), or the parts to send."""

    size: int
    created: bool | None
    parts: list[DirectPart] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PendingBlob:
    """An upload begun by a caller: the store's upload, and who is proving possession."""

    upload: BlobUpload
    caller: Caller

    @property
    def digest(self) -> str:
        return self.upload.digest

    def write(self, chunk: bytes) -> None:
        self.upload.write(chunk)

    def receive(self, read: Callable[[memoryview], int], limit: int) -> int:
        """Read up to ``limit`` bytes with ``read`` (a socket's ``recv_into``) into the
        upload: in place where the store allows it, else through a buffer of our own."""
        if isinstance(self.upload, ReceivingUpload):
            return self.upload.receive(read, limit)
        buffer = bytearray(RECEIVE_BUFFER)
        done = 0
        with memoryview(buffer) as whole:
            while done < limit:
                with whole[: min(RECEIVE_BUFFER, limit - done)] as view:
                    n = read(view)
                if n <= 0:
                    break
                self.upload.write(bytes(whole[:n]))
                done += n
        return done

    def abort(self) -> None:
        self.upload.abort()


class BlobService:
    """Mixed into RegistryService: ``service.missing_blobs``, ``service.collect_garbage``..."""

    db: Database
    blobs: BlobStore
    access: AccessControl
    key: ServerKey
    settings: Settings | None

    # -- asking and uploading --------------------------------------------------------------

    def missing_blobs(self, caller: Caller, digests: Sequence[str]) -> list[str]:
        stored = self.stored_blobs(caller, digests)
        return [d for d in dict.fromkeys(digests) if d not in stored]

    def stored_blobs(self, caller: Caller, digests: Sequence[str]) -> dict[str, int]:
        """The sizes of those of ``digests`` the caller may name; to them, the others are
        missing (held or not: existence is not revealed to who cannot read it)."""
        self.access.require_anywhere(caller, Permission.REGISTER)
        if len(digests) > 10_000:
            raise InvalidInput("ask about at most 10000 digests at a time")
        for digest in digests:
            validate_digest_hex(digest)
        with self.db.read() as tx:
            sizes = tx.blob_sizes(digests)
            nameable = self._nameable(tx, caller, list(sizes))
        return {d: size for d, size in sizes.items() if d in nameable}

    def _nameable(self, tx: Reader, caller: Caller, digests: Sequence[str]) -> set[str]:
        """Those of ``digests`` the caller may name: uploaded by them, or held by a version
        of a model they may read."""
        if caller.local or not digests:
            return set(digests)
        owned = tx.possessed_blobs(caller.principal_id, digests) if caller.principal_id else set()
        holders = tx.models_holding_blobs([d for d in digests if d not in owned])
        roles = self.access.roles(caller, sorted({m for ms in holders.values() for m in ms}), tx)
        readable = {m for m, role in roles.items() if role is not None and role >= Role.READER}
        return owned | {d for d, ms in holders.items() if ms & readable}

    def begin_blob_upload(self, caller: Caller, digest: str | None = None) -> PendingBlob:
        """Start an upload named by its digest, or (None) named by what it hashes to.

        Anyone who may register a version somewhere may upload: blobs belong to no model
        until a version names them.
        """
        self.access.require_anywhere(caller, Permission.REGISTER)
        upload = self.blobs.begin_upload(None if digest is None else validate_digest_hex(digest))
        return PendingBlob(upload, caller)

    def finish_blob_upload(self, pending: PendingBlob) -> tuple[int, bool]:
        """Verify and publish the bytes, then record the blob and that the caller has it.

        Returns its size and whether it is new to the caller: False only when they could
        name these bytes before (to anyone else the registry never admits holding them).
        """
        size = pending.upload.commit()
        return self._record_upload(pending.caller, pending.digest, size)

    def _record_upload(self, caller: Caller, digest: str, size: int) -> tuple[int, bool]:
        with self.db.write(unjournaled="blob.recorded") as tx:
            if self.blobs.stat(digest) is None:
                # Collected between its publication and this record (rare): start again.
                raise Conflict(
                    f"blob sha256:{digest} was collected while it was uploaded; upload it again",
                    code="blob_collected",
                )
            known = bool(tx.blob_sizes([digest])) and bool(self._nameable(tx, caller, [digest]))
            tx.record_uploaded_blob(digest, size, caller.principal_id, now_us())
        return size, not known

    def _require_blobs(
        self,
        tx: Writer,
        caller: Caller,
        entries: Sequence[FileEntry],
        inline: Mapping[str, bytes],
    ) -> None:
        """Record the ``inline`` bytes, then check that the registry holds every blob the
        entries name, at their sizes, and that the caller may name each (a version's
        files, or an attachment's bytes: one rule).

        A digest is no read key: naming a blob takes its bytes (inline, or uploaded before)
        or reader on a model holding it. To others it is missing, not denied.
        """
        tx.record_inline_blobs(inline)
        stored = tx.blob_sizes([e.sha256 for e in entries])
        named = stored.keys() - inline.keys()
        nameable = inline.keys() | self._nameable(tx, caller, sorted(named))
        missing = sorted({e.sha256 for e in entries} - (stored.keys() & nameable))
        if missing:
            raise MissingBlobs(
                f"{len(missing)} blob(s) named are not on the server; upload them first",
                missing=[f"sha256:{d}" for d in missing],
            )
        for entry in entries:
            if stored[entry.sha256] != entry.size:
                raise InvalidInput(
                    f"{entry.path}: {entry.size} bytes were announced but blob"
                    f" sha256:{entry.sha256} has {stored[entry.sha256]}",
                    code="size_mismatch",
                )

    # -- direct transfers: the client and the store, the server out of the data path -------

    def direct_transfers(self) -> bool:
        """Whether bytes may go between client and store by presigned URLs (an S3 store,
        unless --proxy-transfers)."""
        return self._direct_store() is not None

    def _direct_store(self) -> S3BlobStore | None:
        if self.settings is not None and self.settings.proxy_transfers:
            return None
        from modelyard.storage.blobs.s3 import S3BlobStore

        return self.blobs if isinstance(self.blobs, S3BlobStore) else None

    def begin_direct_upload(
        self, caller: Caller, digest: str, size: int, checksums: Sequence[str]
    ) -> DirectPlan:
        """Presigned PUTs for the parts of ``digest`` (``size`` bytes) the store still
        lacks, each bound to its SHA-256 (``checksums``, one per part of ``part_ranges``).

        Only for a caller who may upload (register somewhere). One staged upload per caller
        and digest, so a client that died continues where it stopped. ``created=False``:
        the registry holds these bytes and the caller may name them, nothing to send.
        """
        stored = self.stored_blobs(caller, [validate_digest_hex(digest)])  # REGISTER
        if digest in stored:
            return DirectPlan(stored[digest], created=False)
        store = self._direct_store()
        if store is None:
            return DirectPlan(size, created=None)
        if not 0 <= size <= MAX_DIRECT_SIZE:
            raise TooLarge(f"a blob may have at most {MAX_DIRECT_SIZE} bytes")
        ranges = part_ranges(size)
        if len(checksums) != len(ranges):
            raise InvalidInput(
                f"{size} bytes make {len(ranges)} part(s) of part_ranges; {len(checksums)}"
                " checksum(s) were sent",
                code="parts_mismatch",
            )
        for checksum in checksums:
            validate_digest_hex(checksum)
        parts = store.plan_direct(self._direct_name(caller, digest), ranges, list(checksums))
        return DirectPlan(size, created=True, parts=parts)

    def finish_direct_upload(self, caller: Caller, digest: str, size: int) -> tuple[int, bool]:
        """Verify what the client sent (the whole object's SHA-256 and size), publish and
        record it as an upload is: the caller now proves possession. A blob that fails
        verification is deleted (DigestMismatch): the registration naming it is refused."""
        stored = self.stored_blobs(caller, [validate_digest_hex(digest)])  # REGISTER
        if digest in stored:
            return stored[digest], False
        store = self._direct_store()
        if store is None:
            raise Conflict("this registry takes uploads through itself", code="proxy_transfers")
        store_hashes = self.settings is not None and self.settings.s3_store_hashes
        store.finish_direct(
            self._direct_name(caller, digest), digest, size, store_hashes=store_hashes
        )
        return self._record_upload(caller, digest, size)

    def _direct_name(self, caller: Caller, digest: str) -> str:
        """The staged upload's name for this caller and digest: found again by a retry,
        never shared with another caller (who cannot complete or poison it)."""
        who = f"{caller.principal_id}" if caller.principal_id is not None else f"~{caller.name}"
        mac = hmac.new(self.key.derive("direct-uploads"), f"{who}:{digest}".encode(), "sha256")
        return f"{digest}.{mac.hexdigest()[:16]}.part"

    def direct_download_url(self, digest: str, disposition: str) -> str | None:
        """A presigned GET of a blob for a caller already allowed to read it, or None
        (proxy mode, a store that cannot sign, or bytes kept in the database)."""
        store = self._direct_store()
        if store is None:
            return None
        with self.db.read() as tx:
            if tx.blob_content(digest) is not None:
                return None
        return store.url(digest, disposition=disposition)

    # -- reading ---------------------------------------------------------------------------

    def blob_size(self, caller: Caller, digest: str) -> int:
        """The size of a blob the caller may download: one of a version of a model they
        may read. A blob they cannot see answers as one that does not exist."""
        validate_digest_hex(digest)
        with self.db.read() as tx:
            size = tx.blob_sizes([digest]).get(digest)
            judged = size is not None and not caller.local  # local mode may read anything
            holders = sorted(tx.models_holding_blobs([digest]).get(digest, ())) if judged else []
        if judged:
            roles = self.access.roles(caller, holders)
            visible = [m for m, role in roles.items() if role is not None]
            if not visible:
                size = None
            elif all(roles[m] == Role.VIEWER for m in visible):
                self.access.require(caller, Permission.DOWNLOAD, visible[0])  # the 403
        if size is None:
            raise NotFound(f"blob sha256:{digest} not found", code="blob_not_found")
        return size

    def read_blob(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes of a blob, from the database or the blob store; callers check access
        first (blob_size, file_entry)."""
        validate_digest_hex(digest)
        with self.db.read() as tx:
            content = tx.blob_content(digest)
        if content is not None:
            return iter([content[start:end]])
        return self.blobs.read(digest, start, end)

    # -- garbage collection ----------------------------------------------------------------

    def collect_garbage(
        self, caller: Caller, *, grace_seconds: float = DEFAULT_GRACE_SECONDS, dry_run: bool = False
    ) -> GcReport:
        """Remove blobs no version names and uploads never committed, older than the grace
        period (blobs a hard delete released: at once); journaled as ``registry.gc``."""
        self.access.require(caller, Permission.ADMIN)
        if not 0 <= grace_seconds <= 10 * 365 * 86400:
            raise InvalidInput("the grace period must be between 0 seconds and 10 years")
        return self._collect(caller, grace_seconds, dry_run)

    def clean_up_at_start(self) -> GcReport | None:
        """At server start, when no other process has the blob store open (so no upload
        can be in flight): remove every leftover of a crash, with no grace period. None
        when another process shares the store; ``gc`` then collects with its grace."""
        with self.blobs.exclusive() as alone:
            return self._collect(START_UP, 0.0, dry_run=False) if alone else None

    def _collect(self, caller: Caller, grace_seconds: float, dry_run: bool) -> GcReport:
        report = GcReport(dry_run=dry_run, grace_seconds=grace_seconds)
        cutoff = time.time() - grace_seconds
        for leftover in self.blobs.uploads():
            if leftover.modified < cutoff:
                if not dry_run:
                    self.blobs.remove_upload(leftover.name)
                report.add("upload", leftover.name, leftover.size)
        self._collect_records(report, cutoff, dry_run)
        self._collect_unrecorded(report, cutoff, dry_run)
        if not dry_run and (report.blobs or report.uploads):
            with self.db.write() as tx:
                tx.append_event(caller, GarbageCollected(report.counts()), now=now_us())
        return report

    def _collect_records(self, report: GcReport, cutoff: float, dry_run: bool) -> None:
        """Recorded blobs no version names: released ones, and those past the grace."""
        after = ""
        while True:
            with self._batch(dry_run) as tx:
                batch = tx.unreferenced_blobs(after, int(cutoff * 1_000_000), _BATCH)
                if not batch:
                    return
                after = batch[-1].digest
                # Bytes published again just now belong to an upload about to be recorded.
                doomed = [b for b in batch if b.released or not self._fresh(b.digest, cutoff)]
                if isinstance(tx, Writer):
                    tx.delete_blob_records([b.digest for b in doomed])
                    for blob in doomed:
                        self.blobs.delete(blob.digest)  # held inline, or in the store too
            for blob in doomed:
                report.add("blob", f"sha256:{blob.digest}", blob.size)

    def _fresh(self, digest: str, cutoff: float) -> bool:
        info = self.blobs.stat(digest)
        return info is not None and info.modified >= cutoff

    def _collect_unrecorded(self, report: GcReport, cutoff: float, dry_run: bool) -> None:
        """Bytes in the store that no record names: published by an upload whose record
        never came (a crash), once past the grace."""
        stored = list(self.blobs.digests())
        for start in range(0, len(stored), _BATCH):
            batch = stored[start : start + _BATCH]
            with self._batch(dry_run) as tx:
                recorded = tx.blob_sizes(batch)
                for digest in batch:
                    info = self.blobs.stat(digest)
                    if digest in recorded or info is None or info.modified >= cutoff:
                        continue
                    if isinstance(tx, Writer):
                        self.blobs.delete(digest)
                    report.add("blob", f"sha256:{digest}", info.size)

    def _batch(self, dry_run: bool) -> AbstractContextManager[Reader]:
        """A write transaction (under the journal lock), or only a read for a dry run."""
        return self.db.read() if dry_run else self.db.write(unjournaled="blob.collected")


def check_inline(
    entries: Sequence[FileEntry], inline: Mapping[str, bytes], total: int = 0
) -> Mapping[str, bytes]:
    """Check the small files that came inline with a request: each named by an entry,
    within the limits (``total``: inline bytes counted already), and hashing to its digest
    (even when the registry holds the blob already: what is recorded must be the bytes the
    digest names)."""
    named = {e.sha256 for e in entries}
    if total + sum(len(content) for content in inline.values()) > MAX_INLINE_TOTAL:
        raise TooLarge(f"inline file contents may total at most {MAX_INLINE_TOTAL} bytes")
    for digest, content in inline.items():
        if len(content) > MAX_INLINE_FILE:
            raise TooLarge(f"inline files may be at most {MAX_INLINE_FILE} bytes each")
        if digest not in named:
            raise InvalidInput(f"inline content sha256:{digest} is not in the manifest")
        actual = hashlib.sha256(content).hexdigest()
        if actual != digest:
            raise DigestMismatch(
                f"inline content hashes to sha256:{actual}, not sha256:{digest};"
                " nothing was stored",
                expected=f"sha256:{digest}",
                actual=f"sha256:{actual}",
            )
    return inline
