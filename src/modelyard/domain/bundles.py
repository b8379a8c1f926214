"""Bundles: versions of one model with their evidence and their journal, in one file that
another registry imports with no network between the two (docs/security.md, Bundles).

A bundle is a plain tar (POSIX ustar; a size from 8 GiB in GNU's base-256, as GNU tar and
bsdtar read it) of a fixed layout, in this order:

    manifest.json        an in-toto statement naming every member below, its sha256 and size
    manifest.sig         a Sigstore bundle whose DSSE envelope signs manifest.json, made with
                         the exporting registry's key (domain/signing.py)
    bundle.json          the model and its versions: metadata, attachments, card, checks,
                         signatures, and the public keys of those signatures
    journal.jsonl        the journal's events about them, one a line, hashes included
    blobs/sha256/<hex>   the bytes of each file and attachment, once

A reader never uses a member's name as a path: each member must be the one the manifest
names next, of the size it gives, or the bundle is refused, naming the member. Everything
here is pure: the service reads and writes the bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from modelyard.domain.checks import CheckResult
from modelyard.domain.errors import BundleInvalid, SignatureInvalid
from modelyard.domain.events import UndecodableEvent
from modelyard.domain.evidence import Attachment, Card
from modelyard.domain.journal import Checkpoint, verify_slice
from modelyard.domain.models import Event, Model, Origin, SourceCheck, Version, iso, parse_iso
from modelyard.domain.projection import Projection, compare
from modelyard.domain.signing import (
    STATEMENT_TYPE,
    PublicKey,
    PublishedKey,
    Signature,
    canonical,
    check_manifest,
    open_bundle,
    open_envelope,
)

MEDIA_TYPE: Final = "application/vnd.modelyard.bundle.v1+tar"
PREDICATE_TYPE: Final = "https://modelyard.dev/bundle/v1"
SYSTEM: Final = "modelyard"  # an imported version's origin.system
MANIFEST: Final = "manifest.json"
SIGNATURE: Final = "manifest.sig"
DOCUMENT: Final = "bundle.json"
JOURNAL: Final = "journal.jsonl"
_BLOB = re.compile(r"blobs/sha256/([0-9a-f]{64})")
BLOCK: Final = 512
END: Final = b"\0" * (2 * BLOCK)
END_OF_ARCHIVE: Final = "the end of the archive"  # how refusals name what follows the members

# Caps, checked against what the manifest declares before a byte of a member is read.
MAX_MANIFEST: Final = 16 * 1024 * 1024
MAX_SIGNATURE: Final = 24 * 1024 * 1024  # the manifest again, in base64
MAX_DOCUMENT: Final = 256 * 1024 * 1024
MAX_JOURNAL: Final = 256 * 1024 * 1024
MAX_MEMBERS: Final = 100_000
MAX_BLOB: Final = 1 << 40  # 1 TiB: a size field can say far more
_CAPS: Final = {
    MANIFEST: MAX_MANIFEST,
    SIGNATURE: MAX_SIGNATURE,
    DOCUMENT: MAX_DOCUMENT,
    JOURNAL: MAX_JOURNAL,
}


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a bundle, as its manifest lists it."""

    name: str
    sha256: str
    size: int


def blob_member(digest: str) -> str:
    return f"blobs/sha256/{digest}"


# -- the tar framing --------------------------------------------------------------------------


def tar_header(name: str, size: int) -> bytes:
    """A ustar header for a regular file: mode 0644, owner 0, time 0 (a bundle's bytes
    depend on its content alone)."""
    raw = name.encode("ascii")
    if len(raw) > 100:
        raise ValueError(f"{name!r}: a member name takes at most 100 bytes")
    block = bytearray(BLOCK)
    block[0 : len(raw)] = raw
    block[100:108] = b"0000644\0"
    block[108:116] = block[116:124] = b"0000000\0"
    block[124:136] = b"%011o\0" % size if size < 8**11 else b"\x80" + size.to_bytes(11, "big")
    block[136:148] = b"00000000000\0"
    block[148:156] = b" " * 8
    block[156:157] = b"0"
    block[257:265] = b"ustar\x0000"
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def padding(size: int) -> bytes:
    """The zeros that fill a member's last block."""
    return b"\0" * (-size % BLOCK)


def tar_size(sizes: Iterable[int]) -> int:
    """The size of the tar of members of these sizes, its end included."""
    return sum(BLOCK + size + (-size % BLOCK) for size in sizes) + len(END)


def read_header(block: bytes) -> tuple[str, int] | None:
    """(name, size) of a member's header, or None at the end of the archive (a zero block).

    Only what ``tar_header`` writes is read: a regular file of a plain ASCII name with no
    prefix. A link, a directory, a device, a pax or GNU extension header is refused.
    """
    if len(block) != BLOCK:
        raise BundleInvalid("the bundle ends inside a tar header: it is cut short")
    if block == bytes(BLOCK):
        return None
    if block[257:263] != b"ustar\0":
        raise BundleInvalid("not a bundle: a bundle is a POSIX (ustar) tar archive")
    stated = block[148:156].split(b"\0")[0].strip()
    summed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if not re.fullmatch(rb"[0-7]{1,7}", stated) or int(stated, 8) != summed:
        raise BundleInvalid("a tar header's checksum does not match: the bundle is damaged")
    raw = block[:100].rstrip(b"\0")
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        raise BundleInvalid(f"member {raw[:100]!r}: not a name of the bundle's layout") from None
    if block[156:157] not in (b"0", b"\0") or any(block[345:500]) or b"\0" in raw:
        raise BundleInvalid(
            f"member {name!r}: only regular files of the bundle's layout are read",
            member=name,
        )
    field = block[124:136]
    if field[0] & 0x80:
        size = int.from_bytes(field[1:], "big")
    elif re.fullmatch(rb"[0-7]{1,12}", field.rstrip(b"\0 ")):
        size = int(field.rstrip(b"\0 "), 8)
    else:
        raise BundleInvalid(f"member {name!r}: its size field is not a number", member=name)
    return name, size


def signing_member(expected: str, block: bytes) -> int:
    """The size of manifest.json or manifest.sig, the bundle's first two members, from its
    header, checked against its cap before it is read."""
    header = _header_of(expected, block)
    if header is None or header[0] != expected:
        found = END_OF_ARCHIVE if header is None else repr(header[0][:120])
        raise BundleInvalid(f"a bundle holds {expected} here, not {found}", member=expected)
    if header[1] > _CAPS[expected]:
        raise BundleInvalid(f"{expected}: {header[1]} bytes is beyond its cap", member=expected)
    return header[1]


def check_padding(name: str, pad: bytes) -> None:
    """A member's last block is filled with zeros: a changed byte there is refused too."""
    if any(pad):
        raise BundleInvalid(f"{name}: the padding after its bytes is not zeros", member=name)


def _header_of(expected: str, block: bytes) -> tuple[str, int] | None:
    """``read_header``, its refusal naming the member expected there."""
    try:
        return read_header(block)
    except BundleInvalid as exc:
        named = exc.details.get("member", expected)
        raise BundleInvalid(f"the tar header of {expected}: {exc.message}", member=named) from None


# -- the signed manifest ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Manifest:
    """A bundle's manifest once its signature verified: which registry key signed it, for
    which model, and every member after the two that sign."""

    model: str
    created_at: datetime
    members: tuple[Member, ...]
    key_id: str
    digest: str  # sha256 of manifest.json: the bundle's name in an imported origin

    @property
    def blobs(self) -> dict[str, int]:
        """digest -> size of every blob member."""
        return {found.group(1): m.size for m in self.members if (found := _BLOB.fullmatch(m.name))}


def manifest_bytes(model: str, created_at: datetime, members: Sequence[Member]) -> bytes:
    """manifest.json: an in-toto statement whose subject is the model, with a sha256 over
    the members' digests in order, and whose predicate lists each member."""
    root = hashlib.sha256(b"".join(bytes.fromhex(m.sha256) for m in members)).hexdigest()
    return canonical(
        {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": model, "digest": {"sha256": root}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "model": model,
                "created_at": iso(created_at),
                "members": [{"name": m.name, "sha256": m.sha256, "size": m.size} for m in members],
            },
        }
    )


def open_manifest(manifest: bytes, signature: bytes, trusted: Iterable[PublicKey]) -> Manifest:
    """The manifest, once manifest.sig verifies with a trusted key and signs exactly
    manifest.json; else ``BundleInvalid`` naming the member at fault."""
    keys = list(trusted)
    try:
        envelope = json.loads(signature)
        if not isinstance(envelope, dict):
            raise ValueError
    except ValueError:
        raise BundleInvalid(
            f"{SIGNATURE} is not a Sigstore bundle (JSON)", member=SIGNATURE
        ) from None
    try:
        key, payload = open_envelope(envelope, keys)
    except SignatureInvalid as exc:
        untrusted = bool(exc.details.get("untrusted"))
        raise BundleInvalid(
            f"{SIGNATURE}: {exc.message}"
            + (
                "; an admin trusts a registry's key with"
                " 'modelyard keys add --registry NAME --key KEY.pem'"
                if untrusted
                else ""
            ),
            code="bundle_untrusted" if untrusted else None,
            member=SIGNATURE,
        ) from None
    if payload != manifest:
        raise BundleInvalid(
            f"{MANIFEST} is not the manifest {SIGNATURE} signs: it was altered", member=MANIFEST
        )
    return _manifest_of(payload, key.key_id)


def _manifest_of(payload: bytes, key_id: str) -> Manifest:
    try:
        document = json.loads(payload)
        if document["_type"] != STATEMENT_TYPE or document["predicateType"] != PREDICATE_TYPE:
            raise ValueError("not a bundle's statement")
        predicate = document["predicate"]
        members = tuple(
            Member(str(m["name"]), str(m["sha256"]), int(m["size"])) for m in predicate["members"]
        )
        model, created = str(predicate["model"]), parse_iso(predicate["created_at"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BundleInvalid(
            f"{MANIFEST} is not a bundle's manifest ({PREDICATE_TYPE})", member=MANIFEST
        ) from None
    _check_members(members)
    return Manifest(model, created, members, key_id, hashlib.sha256(payload).hexdigest())


def _check_members(members: Sequence[Member]) -> None:
    """The layout: the document, the journal, then blobs each named by its digest, each
    once, of sizes within the caps."""
    if len(members) > MAX_MEMBERS:
        raise BundleInvalid(f"{MANIFEST} lists more than {MAX_MEMBERS} members", member=MANIFEST)
    names = [m.name for m in members]
    if names[:2] != [DOCUMENT, JOURNAL]:
        raise BundleInvalid(f"{MANIFEST} must list {DOCUMENT} and {JOURNAL} first", member=MANIFEST)
    seen: set[str] = set()
    for member in members:
        found = _BLOB.fullmatch(member.name)
        if member.name in seen:
            raise BundleInvalid(f"{MANIFEST} lists {member.name!r} twice", member=member.name)
        if member.name not in (DOCUMENT, JOURNAL) and (
            found is None or found.group(1) != member.sha256
        ):
            raise BundleInvalid(
                f"{MANIFEST} lists {member.name[:120]!r}, which is not a member of the"
                " bundle's layout (a blob is blobs/sha256/ and its own digest)",
                member=member.name,
            )
        if not re.fullmatch(r"[0-9a-f]{64}", member.sha256):
            raise BundleInvalid(f"{member.name}: not a sha256 in {MANIFEST}", member=member.name)
        if not 0 <= member.size <= _CAPS.get(member.name, MAX_BLOB):
            raise BundleInvalid(
                f"{member.name}: {member.size} bytes is beyond what a bundle takes",
                member=member.name,
            )
        seen.add(member.name)


class Layout:
    """The members a bundle must hold after the manifest and its signature, checked as
    they come: each is the one the manifest names next, of its size; at the end none is
    missing."""

    def __init__(self, manifest: Manifest) -> None:
        self._members = manifest.members
        self._next = 0

    def next(self, block: bytes) -> Member | None:
        """The member a header block announces; None at the end of the archive, once
        every member came."""
        expected = END_OF_ARCHIVE
        if self._next < len(self._members):
            expected = self._members[self._next].name
        header = _header_of(expected, block)
        if header is None:
            self.end()
            return None
        return self.member(*header)

    def member(self, name: str, size: int) -> Member:
        """The member a header announces, or ``BundleInvalid`` naming it."""
        shown = name[:120]
        if self._next >= len(self._members):
            listed = {m.name for m in self._members}
            what = "a second" if name in listed else "an unknown member"
            raise BundleInvalid(f"{what} {shown!r}: the manifest lists no more", member=name)
        expected = self._members[self._next]
        if name != expected.name:
            earlier = {m.name for m in self._members[: self._next]}
            if name in earlier or name in (MANIFEST, SIGNATURE):
                why = "it is there twice"
            elif any(m.name == name for m in self._members):
                why = f"out of order: the manifest names {expected.name} here"
            else:
                why = "not a member the manifest lists (never a path to write to)"
            raise BundleInvalid(f"member {shown!r}: {why}", member=name)
        if size != expected.size:
            raise BundleInvalid(
                f"{name}: {size} bytes, but the manifest says {expected.size}", member=name
            )
        self._next += 1
        return expected

    def end(self) -> None:
        if self._next < len(self._members):
            missing = self._members[self._next].name
            raise BundleInvalid(f"{missing} is missing: the bundle is cut short", member=missing)


def check_digest(member: Member, sha256: str) -> None:
    if sha256 != member.sha256:
        raise BundleInvalid(
            f"{member.name}: its bytes hash to sha256:{sha256}, but the manifest says"
            f" sha256:{member.sha256}; it was altered",
            member=member.name,
        )


def check_end(tail: bytes) -> None:
    """After the end of the archive, only the zeros tar pads a record with."""
    if any(tail):
        raise BundleInvalid(
            "bytes that are not zeros follow the end of the bundle's tar archive",
            member=END_OF_ARCHIVE,
        )


# -- bundle.json and journal.jsonl ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BundledVersion:
    """A version as a bundle carries it: its metadata and its evidence, as the source
    registry holds them."""

    version: Version
    attachments: tuple[Attachment, ...] = ()
    card: Card | None = None
    checks: tuple[CheckResult, ...] = ()
    signatures: tuple[Signature, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version.as_dict(),
            "attachments": [a.as_dict() for a in self.attachments],
            "card": self.card.as_dict() if self.card else None,
            "checks": [c.as_dict() for c in self.checks],
            "signatures": [s.as_dict() for s in self.signatures],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BundledVersion:
        return cls(
            Version.from_dict(data["version"]),
            tuple(Attachment.from_dict(a) for a in data["attachments"]),
            Card.from_dict(data["card"]) if data["card"] else None,
            tuple(CheckResult.from_dict(c) for c in data["checks"]),
            tuple(Signature.from_dict(s) for s in data["signatures"]),
        )

    @property
    def blobs(self) -> dict[str, int]:
        """digest -> size of the blobs it names, its files' and its attachments'."""
        named = [*self.version.files, *(a.entry for a in self.attachments)]
        return {e.sha256: e.size for e in named}

    def origin(self, manifest: Manifest, registry: str) -> Origin:
        """Where an import records it came from: the registry (by the name its key is
        trusted under), its number, creator and stage there, its checks' results there,
        the key and the bundle."""
        v = self.version
        return Origin(
            SYSTEM,
            registry,
            v.model,
            version=str(v.version),
            created_at=v.created_at,
            created_by=v.creator,
            key_id=manifest.key_id,
            bundle=manifest.digest,
            stage=v.stage,
            checks=tuple(
                SourceCheck(c.name, c.status.value, c.reporter, c.reported_at, c.url)
                for c in self.checks
            ),
        )


@dataclass(frozen=True, slots=True)
class BundleDocument:
    """bundle.json: the model, the versions (oldest first), the public keys their
    signatures name, the source's journal head when it exported, and what was asked for
    (a stage's versions, or with ``history`` all of them)."""

    model: Model
    versions: tuple[BundledVersion, ...]
    keys: tuple[PublishedKey, ...]
    journal_head: Checkpoint
    stage: str | None
    history: bool

    def to_bytes(self) -> bytes:
        return canonical(
            {
                "model": self.model.as_dict(),
                "versions": [v.as_dict() for v in self.versions],
                "keys": [k.as_dict() for k in self.keys],
                "journal_head": str(self.journal_head),
                "stage": self.stage,
                "history": self.history,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> BundleDocument:
        try:
            found = json.loads(data)
            return cls(
                Model.from_dict(found["model"]),
                tuple(BundledVersion.from_dict(v) for v in found["versions"]),
                tuple(PublishedKey.from_dict(k) for k in found["keys"]),
                Checkpoint.parse(found["journal_head"]),
                found["stage"],
                bool(found["history"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise BundleInvalid(f"{DOCUMENT} is not a bundle's document", member=DOCUMENT) from None

    @property
    def blobs(self) -> dict[str, int]:
        return {d: s for v in self.versions for d, s in v.blobs.items()}


def journal_bytes(events: Iterable[Event]) -> bytes:
    return b"".join(canonical(e.as_dict()) + b"\n" for e in events)


def read_journal(data: bytes) -> list[Event]:
    try:
        return [Event.from_dict(json.loads(line)) for line in data.splitlines()]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BundleInvalid(f"{JOURNAL} is not a journal's events", member=JOURNAL) from None


def check_bundle(manifest: Manifest, document: BundleDocument, events: Sequence[Event]) -> None:
    """Everything a bundle says agrees: the document is the manifest's model, its versions'
    files are blobs of the bundle (all of them used), the journal slice holds together and
    replays to the document's versions, and every signature carried verifies with the key
    the bundle publishes for it."""
    name = manifest.model
    if document.model.name != name or not document.versions:
        raise BundleInvalid(f"{DOCUMENT} is not the versions of {name}", member=DOCUMENT)
    numbers = [v.version.version for v in document.versions]
    if numbers != sorted(set(numbers)) or any(v.version.model != name for v in document.versions):
        raise BundleInvalid(f"{DOCUMENT}: versions of {name}, each once, in order", member=DOCUMENT)
    if document.blobs != manifest.blobs:
        odd = sorted(document.blobs.items() ^ manifest.blobs.items())[0][0]
        raise BundleInvalid(
            f"{DOCUMENT} and {MANIFEST} disagree about blob sha256:{odd} (a file or attachment"
            " that is not in the bundle, at another size, or a blob nothing names)",
            member=DOCUMENT,
        )
    _check_journal(document, events)
    keys = {k.key_id: k for k in document.keys}
    for bundled in document.versions:
        version = bundled.version
        for signature in bundled.signatures:
            try:
                key = keys[signature.key_id].public_key()
                check_manifest(
                    open_bundle(signature.bundle, [key]), version.files, version.reference
                )
            except (KeyError, SignatureInvalid) as exc:
                why = exc.message if isinstance(exc, SignatureInvalid) else "its key is not in it"
                raise BundleInvalid(
                    f"{DOCUMENT}: {version.reference}'s signature by key {signature.key_id}: {why}",
                    member=DOCUMENT,
                ) from None


def _check_journal(document: BundleDocument, events: Sequence[Event]) -> None:
    """The slice holds together, is about the bundle's model and versions only, and
    replays to exactly the document's model and versions (the projection ``journal verify
    --state`` compares the tables with): their files, metadata and stages."""
    report = verify_slice(events)
    if not report.ok:
        raise BundleInvalid(
            f"{JOURNAL}: event {report.first_broken_seq}: {report.reason}", member=JOURNAL
        )
    name = document.model.name
    held = {name, *(v.version.reference for v in document.versions)}
    for event in events:
        if event.model != name or event.subject not in held:
            raise BundleInvalid(
                f"{JOURNAL}: event {event.seq} is about {event.subject[:120]!r}, which the"
                " bundle does not hold",
                member=JOURNAL,
            )
        if event.seq > document.journal_head.seq:
            raise BundleInvalid(f"{JOURNAL}: event {event.seq} is past the head", member=JOURNAL)
    try:
        projection = Projection.replay(events)
    except UndecodableEvent as exc:
        raise BundleInvalid(f"{JOURNAL}: {exc}", member=JOURNAL) from None
    # Aliases are not the bundle's (their events are not in the slice).
    model = replace(document.model, aliases={})
    found = compare(projection, [model], [v.version for v in document.versions])
    if found:
        d = found[0]
        raise BundleInvalid(
            f"{DOCUMENT}: {d.row} {d.field} is {d.tables!r}, but {JOURNAL} says {d.journal!r}",
            member=DOCUMENT,
        )


# -- what an import did ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BundleImport:
    """What importing a bundle did: the versions imported, and those imported before
    (a bundle imported again imports nothing: ``already`` holds them all)."""

    model: str
    bundle: str
    key_id: str
    registry: str
    imported: tuple[int, ...]
    already: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "bundle": f"sha256:{self.bundle}",
            "key_id": self.key_id,
            "registry": self.registry,
            "imported": list(self.imported),
            "already": list(self.already),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BundleImport:
        return cls(
            data["model"],
            str(data["bundle"]).removeprefix("sha256:"),
            data["key_id"],
            data["registry"],
            tuple(data["imported"]),
            tuple(data["already"]),
        )


@dataclass(frozen=True, slots=True)
class ExportedBundle:
    """What an export wrote: where, the bundle's digest (its signed manifest's sha256, as
    the importing registry records it), its size and the versions it holds."""

    model: str
    path: str
    digest: str
    size: int
    versions: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "path": self.path,
            "bundle": f"sha256:{self.digest}",
            "size": self.size,
            "versions": list(self.versions),
        }
