"""Bundles as use cases: a model's versions exported into one file the registry signs, and
a bundle another registry signed imported here, verified whole before anything is written
(the format and its checks: domain/bundles.py; docs/security.md, Bundles).

Who may: exporting takes ``model.download`` on the model (the bundle holds its files'
bytes); importing takes an admin, since it creates models and versions in this registry's
name with another registry's word for what they are. Only bundles signed by a key an
admin trusts under a name (``SigningService.trust_registry``) are imported.

An import reads the bundle twice: first to verify everything (the signature, every
member's size and sha256, the journal slice, the document against both), then, only if
all holds, to copy the blobs it lacks into the blob store; then its versions register in
one transaction, each in the model's first stage whatever its stage there (kept in its
origin), so this registry's policy and approvals govern what happens next.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, BinaryIO, Final

from modelyard.domain.access import Caller, Permission
from modelyard.domain.bundles import (
    BLOCK,
    DOCUMENT,
    END,
    END_OF_ARCHIVE,
    JOURNAL,
    MANIFEST,
    SIGNATURE,
    SYSTEM,
    BundleDocument,
    BundledVersion,
    BundleImport,
    Layout,
    Manifest,
    Member,
    blob_member,
    check_bundle,
    check_digest,
    check_end,
    check_padding,
    journal_bytes,
    manifest_bytes,
    open_manifest,
    padding,
    read_journal,
    signing_member,
    tar_header,
    tar_size,
)
from modelyard.domain.errors import BundleInvalid, Conflict, DigestMismatch, InvalidInput, NotFound
from modelyard.domain.events import BundleImported, VersionSigned
from modelyard.domain.evidence import AttachmentIn
from modelyard.domain.models import Event, Origin, Version, to_us, utc_from_us
from modelyard.domain.names import validate_model_name
from modelyard.domain.references import Reference, RefKind
from modelyard.domain.signing import PublicKey, Signature, canonical, payload_digest
from modelyard.domain.versions import NewVersion, next_number, validate_new_version
from modelyard.storage.db.store import Reader, Writer, now_us

if TYPE_CHECKING:
    from modelyard.service.registry import Registration, RegistryService

CHUNK: Final = 1024 * 1024
# What may follow a tar's end: the zeros that pad its last record (10 KiB by default).
_MAX_TAIL: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BundleExport:
    """A bundle ready to stream: its size, its digest (the sha256 of its signed manifest),
    the versions it holds, and its bytes, read as they are sent."""

    model: str
    size: int
    digest: str
    versions: tuple[int, ...]
    chunks: Iterator[bytes]


@dataclass(frozen=True, slots=True)
class _Wanted:
    """A version of the bundle to register here, as its registration takes it."""

    spec: NewVersion
    attachments: list[AttachmentIn]
    card: str | None


@dataclass(frozen=True, slots=True)
class _Verified:
    """A bundle read once and found whole: what it says, and where each blob lies in it."""

    manifest: Manifest
    document: BundleDocument
    offsets: dict[str, int]  # blob digest -> offset of its bytes in the bundle


class BundleService:
    def __init__(self, registry: RegistryService) -> None:
        self.registry = registry
        self.db = registry.db

    # -- export ---------------------------------------------------------------------------

    def export(
        self, caller: Caller, model: str, *, stage: str | None = None, history: bool = False
    ) -> BundleExport:
        """The versions of ``model`` in ``stage`` (``history``: all of them), with their
        evidence, checks, signatures and journal, signed by the registry's key."""
        validate_model_name(model)
        self.registry.access.require(caller, Permission.DOWNLOAD, model)
        if stage is None and not history:
            raise InvalidInput("name the stage whose versions to export, or ask for the history")
        with self.db.read() as tx:
            found = tx.get_model(model)
            model_id = tx.model_id(model)
            if found is None or model_id is None:
                raise NotFound(f"model {model!r} not found", code="model_not_found")
            ids = tx.live_version_ids(model_id, None if history else stage)
            if not ids:
                raise NotFound(f"no version of {model} is in {stage}", code="version_not_found")
            published = {k.key_id: k for k in tx.signing_keys()}
            bundled = [
                BundledVersion(
                    version,
                    tuple(tx.attachments(version_id)),
                    tx.card(version_id),
                    tuple(tx.checks(version_id)),
                    # A key no longer published (a disabled user's) vouches for nothing.
                    tuple(s for s in tx.signatures(version_id) if s.key_id in published),
                )
                for version_id, version in zip(ids, tx.load_versions(ids), strict=True)
            ]
            events = tx.events_about(model, {model, *(b.version.reference for b in bundled)})
            head = tx.journal_head()
        used = sorted({s.key_id for b in bundled for s in b.signatures})
        document = BundleDocument(
            found, tuple(bundled), tuple(published[k] for k in used), head, stage, history
        )
        return self._package(document, events)

    def _package(self, document: BundleDocument, events: Sequence[Event]) -> BundleExport:
        text, journal = document.to_bytes(), journal_bytes(events)
        members = [
            Member(DOCUMENT, _sha256(text), len(text)),
            Member(JOURNAL, _sha256(journal), len(journal)),
            *(Member(blob_member(d), d, size) for d, size in sorted(document.blobs.items())),
        ]
        name = document.model.name
        manifest = manifest_bytes(name, utc_from_us(now_us()), members)
        signature = canonical(self.registry.signing.key.sign_payload(manifest))
        size = tar_size([len(manifest), len(signature), *(m.size for m in members)])

        def chunks() -> Iterator[bytes]:
            for part, content in (
                (MANIFEST, manifest),
                (SIGNATURE, signature),
                (DOCUMENT, text),
                (JOURNAL, journal),
            ):
                yield tar_header(part, len(content)) + content + padding(len(content))
            for member in members[2:]:
                yield tar_header(member.name, member.size)
                yield from self._blob(member)
                yield padding(member.size)
            yield END

        numbers = tuple(v.version.version for v in document.versions)
        return BundleExport(name, size, _sha256(manifest), numbers, chunks())

    def _blob(self, member: Member) -> Iterator[bytes]:
        """A blob's bytes as the store holds them; a store that holds another size would
        break the archive's framing, so the stream ends there instead."""
        sent = 0
        for chunk in self.registry.read_blob(member.sha256):
            sent += len(chunk)
            yield chunk
        if sent != member.size:
            raise DigestMismatch(
                f"{member.name}: the blob store holds {sent} bytes, not {member.size}"
            )

    # -- import ---------------------------------------------------------------------------

    def spool(self) -> BinaryIO:
        """A nameless file to receive a bundle in before it is read (twice): in the data
        directory, beside the blobs it will mostly become, when there is one."""
        settings = self.registry.settings
        return tempfile.TemporaryFile(dir=settings.data_dir if settings is not None else None)

    def import_bundle(self, caller: Caller, source: BinaryIO) -> BundleImport:
        """Import the versions of a bundle (a seekable file) that are not here yet.

        Nothing is written unless the whole bundle verifies: a bundle signed by a key not
        trusted here, or with any member other than its manifest says (one changed byte),
        is refused naming the member. Versions keep their numbers (above the model's
        newest, as any import's), land in the model's first stage, and record where they
        came from; a version imported before is left as it is (``already``).
        """
        self.registry.access.require(caller, Permission.ADMIN)
        with self.db.read() as tx:
            trusted = self.registry.signing.trusted_registries(tx)
        verified = _read(source, {key_id: key for key_id, (_, key) in trusted.items()})
        manifest, document = verified.manifest, verified.document
        registry = trusted[manifest.key_id][0]
        with self.db.read() as tx:
            new, already = _plan(tx, document)
        done = BundleImport(
            manifest.model, manifest.digest, manifest.key_id, registry, (), tuple(already)
        )
        if not new:
            return done
        # Each version checked as its registration will check it, before a blob is copied;
        # then copied, so that the registration's scan reads the bytes.
        wanted = {b.version.version: self._spec(b, manifest, registry) for b in new}
        for want in wanted.values():
            validate_new_version(want.spec)
            self.registry.evidence.prepare(want.attachments, want.card)
        self._copy_blobs(caller, source, verified, new)
        prepared = {
            number: self.registry.prepare_registration(
                manifest.model,
                want.spec,
                caller=caller,
                attachments=want.attachments,
                card=want.card,
            )
            for number, want in wanted.items()
        }
        with self.db.write() as tx:
            new, already = _plan(tx, document)  # again, under the lock: a race imports once
            if new:
                self._write(tx, caller, verified, registry, new, prepared, already)
        return replace(done, imported=tuple(b.version.version for b in new), already=tuple(already))

    def _write(
        self,
        tx: Writer,
        caller: Caller,
        verified: _Verified,
        registry: str,
        new: list[BundledVersion],
        prepared: dict[int, Registration],
        already: list[int],
    ) -> None:
        """The model (if it is new here), each version, its carried signatures, and the
        import's event, in the one transaction ``tx``."""
        manifest, model = verified.manifest, verified.document.model
        if tx.model_id(model.name) is None:
            origin = Origin(
                SYSTEM,
                registry,
                model.name,
                created_at=model.created_at,
                key_id=manifest.key_id,
                bundle=manifest.digest,
            )
            self.registry._create_model(
                tx, model.name, caller, model.description, dict(model.tags), origin
            )
        for bundled in new:
            registration = prepared[bundled.version.version]
            version, version_id = self.registry.write_registration(tx, caller, registration)
            self._carry_signatures(tx, caller, version, version_id, bundled, registry)
        numbers = [b.version.version for b in new]
        event = BundleImported(
            model.name, manifest.digest, manifest.key_id, registry, numbers, already
        )
        tx.append_event(caller, event, now=now_us())

    def _copy_blobs(
        self, caller: Caller, source: BinaryIO, verified: _Verified, new: list[BundledVersion]
    ) -> None:
        """Copy into the blob store the blobs of ``new`` it lacks, from the bundle verified
        already (the store checks each digest again as it commits)."""
        wanted = {d: s for bundled in new for d, s in bundled.blobs.items()}
        with self.db.read() as tx:
            held = tx.blob_sizes(sorted(wanted))
        for digest, size in sorted(wanted.items()):
            if digest in held:
                continue
            upload = self.registry.begin_blob_upload(caller, digest)
            try:
                source.seek(verified.offsets[digest])
                for chunk in _exactly(source, size, blob_member(digest)):
                    upload.write(chunk)
            except BaseException:
                upload.abort()
                raise
            self.registry.finish_blob_upload(upload)

    def _spec(self, bundled: BundledVersion, manifest: Manifest, registry: str) -> _Wanted:
        """A bundled version as a registration here: its metadata and number, its origin,
        its attachments and card."""
        v = bundled.version
        spec = NewVersion(
            files=list(v.files),
            params=dict(v.params),
            metrics=dict(v.metrics),
            tags=dict(v.tags),
            description=v.description,
            dataset=v.dataset,
            source=v.source,
            environment=v.environment,
            run=v.run,
            framework=v.framework,
            format=v.format,
            origin=bundled.origin(manifest, registry),
            number=v.version,
        )
        attachments = [AttachmentIn(a.path, a.size, a.sha256) for a in bundled.attachments]
        return _Wanted(spec, attachments, bundled.card.text if bundled.card else None)

    def _carry_signatures(
        self,
        tx: Writer,
        caller: Caller,
        version: Version,
        version_id: int,
        bundled: BundledVersion,
        registry: str,
    ) -> None:
        """Keep the signatures the bundle carried (verified with the keys it publishes), as
        the other registry's: they count for no policy here, and verify downloads only
        with keys trusted here."""
        for theirs in bundled.signatures:
            kept = Signature(
                theirs.key_id, theirs.signer, theirs.bundle, theirs.created_at, registry
            )
            tx.insert_signature(version_id, kept, to_us(theirs.created_at))
            signed = VersionSigned(
                version.model,
                version.version,
                theirs.signer,
                theirs.key_id,
                payload_digest(theirs.bundle),
                None,
                origin=registry,
            )
            tx.append_event(caller, signed, now=now_us())


def _plan(tx: Reader, document: BundleDocument) -> tuple[list[BundledVersion], list[int]]:
    """The bundle's versions to import, and those imported before; refused (409
    ``number_taken``) when a number is another version's here, or not above the newest."""
    name = document.model.name
    model = tx.get_model(name)
    latest = (model.latest_version or 0) if model is not None else 0
    new: list[BundledVersion] = []
    already: list[int] = []
    for bundled in document.versions:
        theirs = bundled.version
        found = tx.resolve_id(Reference(name, RefKind.NUMBER, theirs.version))
        if found is None:
            latest = next_number(name, latest, theirs.version)
            new.append(bundled)
            continue
        here = tx.load_versions([found])[0]
        if not _imported_as(here, theirs):
            raise Conflict(
                f"{here.reference} exists here and is not the version the bundle holds: a"
                " bundle's versions keep their numbers",
                code="number_taken",
            )
        already.append(theirs.version)
    return new, already


def _imported_as(here: Version, theirs: Version) -> bool:
    """Whether ``here`` is ``theirs``, imported from a bundle before (by any key: the files
    and the number are the same)."""
    origin = here.origin
    return (
        origin is not None
        and origin.system == SYSTEM
        and origin.name == theirs.model
        and origin.version == str(theirs.version)
        and here.manifest_digest == theirs.manifest_digest
    )


def _read(source: BinaryIO, trusted: dict[str, PublicKey]) -> _Verified:
    """Read a bundle through once, verifying as it goes: the signed manifest first, then
    each member against it; only the document and the journal are kept in memory."""
    manifest_data = _small(source, MANIFEST)
    signature_data = _small(source, SIGNATURE)
    manifest = open_manifest(manifest_data, signature_data, trusted.values())
    layout = Layout(manifest)
    kept: dict[str, bytes] = {}
    offsets: dict[str, int] = {}
    while (member := layout.next(_read_up_to(source, BLOCK))) is not None:
        offsets[member.sha256] = source.tell()
        digest = hashlib.sha256()
        parts: list[bytes] = []
        for chunk in _exactly(source, member.size, member.name):
            digest.update(chunk)
            if member.name in (DOCUMENT, JOURNAL):
                parts.append(chunk)
        check_padding(member.name, _read_up_to(source, -member.size % BLOCK))
        check_digest(member, digest.hexdigest())
        if member.name in (DOCUMENT, JOURNAL):
            kept[member.name] = b"".join(parts)
    tail = _read_up_to(source, _MAX_TAIL + 1)
    if len(tail) > _MAX_TAIL:
        raise BundleInvalid(
            "more than a tar record follows the end of the bundle", member=END_OF_ARCHIVE
        )
    check_end(tail)
    document = BundleDocument.from_bytes(kept[DOCUMENT])
    check_bundle(manifest, document, read_journal(kept[JOURNAL]))
    return _Verified(manifest, document, offsets)


def _small(source: BinaryIO, name: str) -> bytes:
    """manifest.json or manifest.sig, whole (within its cap), its padding checked."""
    size = signing_member(name, _read_up_to(source, BLOCK))
    data = b"".join(_exactly(source, size, name))
    check_padding(name, _read_up_to(source, -size % BLOCK))
    return data


def _read_up_to(source: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes (fewer at the end of the file)."""
    parts: list[bytes] = []
    left = size
    while left > 0:
        chunk = source.read(min(left, CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _exactly(source: BinaryIO, size: int, name: str) -> Iterator[bytes]:
    """``size`` bytes of a member, a chunk at a time; a bundle that ends first is cut short."""
    left = size
    while left > 0:
        chunk = source.read(min(left, CHUNK))
        if not chunk:
            raise BundleInvalid(f"{name}: the bundle ends inside it: it is cut short", member=name)
        left -= len(chunk)
        yield chunk


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
