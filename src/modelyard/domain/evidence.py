"""A version's evidence: attachments, its model card and comments.

A version is three things: its model files (the immutable manifest), its attachments and
its mutable metadata. Attachments are evaluation evidence that is not part of the loadable
model (plots, reports, metric tables, logs): content-addressed blobs like files, append-only
(a path once attached is never replaced) and outside the manifest, so attaching never
changes the manifest digest. The card is the version's Markdown model card; every edit is
a new revision. Comments are Markdown notes on a version or on a promotion request.

What the server stores about an attachment's type it decides itself, from the extension
and the first bytes (``media_type``): a client's word on it is never asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from modelyard.domain.errors import InvalidInput, InvalidPath, TooLarge
from modelyard.domain.manifest import FileEntry, validate_digest_hex
from modelyard.domain.models import iso, parse_iso
from modelyard.domain.names import path_key, validate_file_path, validate_text

MAX_ATTACHMENTS_PER_VERSION: Final = 1000
MAX_CARD: Final = 256 * 1024  # characters of Markdown
MAX_COMMENT: Final = 16 * 1024
CARD_FILE: Final = "MODEL_CARD.md"
# How many first bytes decide a media type (the longest signature and a text sample).
SNIFF_BYTES: Final = 1024


class CardSource(StrEnum):
    """Where a card revision came from."""

    FILE = "file"  # MODEL_CARD.md among the version's files
    ATTACHMENT = "attachment"  # MODEL_CARD.md among its attachments
    EDITED = "edited"  # text given by someone (at registration or later)
    PREVIOUS = "previous"  # the previous version's card, carried over


@dataclass(frozen=True, slots=True)
class AttachmentIn:
    """An attachment as a caller submits it: a path, the blob it names, and (small
    attachments) its bytes inline."""

    path: str
    size: int
    sha256: str
    content: bytes | None = None

    @property
    def entry(self) -> FileEntry:
        return FileEntry(self.path, self.size, self.sha256)


@dataclass(frozen=True, slots=True)
class Attachment:
    path: str
    sha256: str
    size: int
    media_type: str  # decided by the server (media_type below)
    attached_by: str
    attached_at: datetime

    @property
    def entry(self) -> FileEntry:
        return FileEntry(self.path, self.size, self.sha256)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "media_type": self.media_type,
            "attached_by": self.attached_by,
            "attached_at": iso(self.attached_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attachment:
        return cls(
            path=data["path"],
            sha256=data["sha256"],
            size=int(data["size"]),
            media_type=data["media_type"],
            attached_by=data["attached_by"],
            attached_at=parse_iso(data["attached_at"]),
        )


@dataclass(frozen=True, slots=True)
class Card:
    """One revision of a version's model card (the newest is the card)."""

    text: str
    revision: int
    source: str  # a CardSource value
    updated_by: str
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "revision": self.revision,
            "source": self.source,
            "updated_by": self.updated_by,
            "updated_at": iso(self.updated_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Card:
        return cls(
            text=data["text"],
            revision=int(data["revision"]),
            source=data["source"],
            updated_by=data["updated_by"],
            updated_at=parse_iso(data["updated_at"]),
        )


@dataclass(frozen=True, slots=True)
class Comment:
    """A note on a version (``request_id`` None) or on a promotion request (then
    ``version`` is the request's version, so a version's discussion includes its reviews)."""

    id: int
    model: str
    version: int | None
    request_id: int | None
    author: str
    body: str
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "request_id": self.request_id,
            "author": self.author,
            "body": self.body,
            "created_at": iso(self.created_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comment:
        version, request_id = data.get("version"), data.get("request_id")
        return cls(
            id=int(data["id"]),
            model=data["model"],
            version=None if version is None else int(version),
            request_id=None if request_id is None else int(request_id),
            author=data["author"],
            body=data["body"],
            created_at=parse_iso(data["created_at"]),
        )


# -- validation -------------------------------------------------------------------------------


def validate_attachments(
    files: Sequence[AttachmentIn], existing: Iterable[str] = ()
) -> list[AttachmentIn]:
    """Check paths, digests and sizes; refuse a path given twice (or differing only in case
    from another, or from one ``existing``, which would make them one file on download)."""
    if not files:
        raise InvalidInput("attach at least one file")
    taken = {path_key(path): path for path in existing}
    if len(taken) + len(files) > MAX_ATTACHMENTS_PER_VERSION:
        raise TooLarge(f"a version may have at most {MAX_ATTACHMENTS_PER_VERSION} attachments")
    seen = dict(taken)
    for item in files:
        validate_file_path(item.path)
        validate_digest_hex(item.sha256)
        if isinstance(item.size, bool) or not isinstance(item.size, int) or item.size < 0:
            raise InvalidInput(f"attachment {item.path!r} has an invalid size {item.size!r}")
        key = path_key(item.path)
        if key in seen:
            raise InvalidPath(f"attachment paths {seen[key]!r} and {item.path!r} are one file")
        seen[key] = item.path
    return sorted(files, key=lambda f: f.path)


def validate_card(text: str) -> str:
    return validate_text(text, "a model card", MAX_CARD)


def validate_comment(body: str) -> str:
    if isinstance(body, str) and not body.strip():
        raise InvalidInput("a comment cannot be empty")
    return validate_text(body, "a comment", MAX_COMMENT)


def card_text(content: bytes, where: str) -> str:
    """A MODEL_CARD.md's bytes as the card's text: UTF-8, within the card's limits."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{where} is not UTF-8 text, so it cannot be the model card") from None
    return validate_card(text)


def card_file(paths: Iterable[str]) -> str | None:
    """The path of the card among a version's files or attachments: MODEL_CARD.md (any
    case) at the top, else the shallowest one below."""
    found = [p for p in paths if p.rsplit("/", 1)[-1].casefold() == CARD_FILE.casefold()]
    return min(found, key=lambda p: (p.count("/"), p)) if found else None


# -- media types --------------------------------------------------------------------------------

# Binary formats, by the signature their first bytes must carry.
_SIGNATURES: Final[dict[str, tuple[tuple[bytes, ...], str]]] = {
    "png": ((b"\x89PNG\r\n\x1a\n",), "image/png"),
    "jpg": ((b"\xff\xd8\xff",), "image/jpeg"),
    "jpeg": ((b"\xff\xd8\xff",), "image/jpeg"),
    "gif": ((b"GIF87a", b"GIF89a"), "image/gif"),
    "pdf": ((b"%PDF-",), "application/pdf"),
}
# Text formats: the first bytes must be text (UTF-8, no NUL).
_TEXT: Final[dict[str, str]] = {
    "svg": "image/svg+xml",
    "html": "text/html",
    "htm": "text/html",
    "md": "text/markdown",
    "markdown": "text/markdown",
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
    "json": "application/json",
    "txt": "text/plain",
    "log": "text/plain",
}
OCTET_STREAM: Final = "application/octet-stream"
# What the REST download may label with its own type: formats a browser shows without
# running anything. HTML, SVG and the rest are served as bytes to save; the UI has safe
# views of its own for them (a sandboxed frame, an <img>).
INERT_TYPES: Final = frozenset(
    {"image/png", "image/jpeg", "image/gif", "application/pdf", "text/plain", "text/csv"}
)


def media_type(path: str, head: bytes) -> str:
    """The type of an attachment, from its extension confirmed by its first bytes; a file
    whose bytes do not fit its extension is application/octet-stream."""
    name = path.rsplit("/", 1)[-1]
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if extension in _SIGNATURES:
        signatures, kind = _SIGNATURES[extension]
        return kind if head.startswith(signatures) else OCTET_STREAM
    if extension in _TEXT and _is_text(head[:SNIFF_BYTES]):
        kind = _TEXT[extension]
        if kind == "image/svg+xml" and b"<svg" not in head.lower():
            return OCTET_STREAM
        return kind
    return OCTET_STREAM


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still text.
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True
