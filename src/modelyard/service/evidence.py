"""A version's evidence as use cases: attachments, the model card, comments.

Who may do what: viewers of a model read its evidence (attachments, cards, comments) and
comment, so that whoever may review a promotion can read what they sign off; attaching
takes a contributor, editing the card too (``model.edit``). The model's files stay for
readers. Attachments are blobs like files: uploaded the same way, named only by whoever may
name the blob (a digest is no read key), append-only, outside the manifest.

Every change is journaled in its transaction: ``version.attached``, ``version.card_edited``
and ``comment.added``. At registration the evidence is written by the transaction that
creates the version (``record_new``), so nothing is ever half-registered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from modelyard.domain.access import Caller, Permission
from modelyard.domain.errors import Conflict, Forbidden, InvalidInput, NotFound, TooLarge
from modelyard.domain.events import (
    AttachedState,
    CommentAdded,
    VersionAttached,
    VersionCardEdited,
)
from modelyard.domain.evidence import (
    MAX_CARD,
    SNIFF_BYTES,
    Attachment,
    AttachmentIn,
    Card,
    CardSource,
    Comment,
    card_file,
    card_text,
    media_type,
    validate_attachments,
    validate_card,
    validate_comment,
)
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import Version, utc_from_us
from modelyard.domain.names import validate_file_path, validate_model_name
from modelyard.service.access import AccessControl
from modelyard.service.blobs import BlobService, check_inline
from modelyard.service.checks import version_id_or_404
from modelyard.service.scans import ScanService
from modelyard.storage.db.store import Database, Reader, Writer, now_us

# Reads a range of an attachment's bytes, as a file download does (start, end).
ByteRange = Callable[[int, int | None], Iterator[bytes]]


@dataclass(frozen=True, slots=True)
class NewEvidence:
    """The evidence a registration brings, validated before its transaction opens."""

    attachments: Sequence[AttachmentIn] = ()
    inline: Mapping[str, bytes] = field(default_factory=dict)
    card: str | None = None
    card_from_previous: bool = False


class EvidenceService:
    def __init__(
        self, db: Database, access: AccessControl, blobs: BlobService, scans: ScanService
    ) -> None:
        self.db = db
        self.access = access
        self._blobs = blobs
        self._scans = scans

    # -- attachments ---------------------------------------------------------------------------

    def attach(
        self, caller: Caller, name: str, number: int, files: Sequence[AttachmentIn]
    ) -> list[Attachment]:
        """Attach evidence to a version (an evaluation that finished after registration).

        A path already attached is refused (409 ``attachment_exists``): evidence is never
        replaced. The manifest, and so the version's digest, does not change.
        """
        validate_model_name(name)
        self.access.require(caller, Permission.ATTACH, name)
        new = self.prepare(files)
        scanned = self._scans.scan((), [f.entry for f in new.attachments], new.inline)
        with self.db.write() as tx:
            version_id = version_id_or_404(tx, name, number)
            taken = {a.path for a in tx.attachments(version_id)}
            clash = sorted(f.path for f in new.attachments if f.path in taken)
            if clash:
                raise Conflict(
                    f"{name}/{number} already has an attachment {clash[0]!r}: attachments are"
                    " never replaced; attach the new evidence under another path",
                    code="attachment_exists",
                )
            validate_attachments(new.attachments, existing=taken)
            attached = self._insert(tx, caller, name, number, version_id, new, now_us())
            self._scans.rescan_attached(tx, caller, name, number, version_id, scanned)
            return attached

    def attachments(self, caller: Caller, name: str, number: int) -> list[Attachment]:
        """A version's attachments, by path."""
        validate_model_name(name)
        self.access.require(caller, Permission.VIEW, name)
        with self.db.read() as tx:
            return tx.attachments(version_id_or_404(tx, name, number))

    def open_attachment(
        self, caller: Caller, name: str, number: int, path: str
    ) -> tuple[Attachment, ByteRange]:
        """An attachment and how to read its bytes (a range of them), for a viewer: evidence
        is visible to anyone who may review the model, unlike its files."""
        validate_model_name(name)
        validate_file_path(path)
        self.access.require(caller, Permission.VIEW, name)
        with self.db.read() as tx:
            found = tx.attachment(version_id_or_404(tx, name, number), path)
        if found is None:
            raise NotFound(
                f"{name}/{number} has no attachment {path!r}", code="attachment_not_found"
            )
        digest = found.sha256
        return found, lambda start, end: self._blobs.read_blob(digest, start, end)

    # -- the model card ------------------------------------------------------------------------

    def card(self, caller: Caller, name: str, number: int) -> Card | None:
        """A version's card (its newest revision), or None."""
        validate_model_name(name)
        self.access.require(caller, Permission.VIEW, name)
        with self.db.read() as tx:
            return tx.card(version_id_or_404(tx, name, number))

    def card_history(self, caller: Caller, name: str, number: int) -> list[Card]:
        """Every revision of a version's card, oldest first."""
        validate_model_name(name)
        self.access.require(caller, Permission.VIEW, name)
        with self.db.read() as tx:
            return tx.card_history(version_id_or_404(tx, name, number))

    def set_card(self, caller: Caller, name: str, number: int, text: str) -> Card:
        """Edit a version's card: a new revision (the same text again changes nothing)."""
        validate_model_name(name)
        validate_card(text)
        self.access.require(caller, Permission.EDIT, name)
        with self.db.write() as tx:
            version_id = version_id_or_404(tx, name, number)
            current = tx.card(version_id)
            if current is not None and current.text == text:
                return current
            self._add_card(tx, caller, name, number, version_id, text, CardSource.EDITED)
            card = tx.card(version_id)
            assert card is not None
            return card

    # -- comments ------------------------------------------------------------------------------

    def comment(
        self,
        caller: Caller,
        *,
        model: str,
        version: int | None = None,
        request_id: int | None = None,
        body: str,
    ) -> Comment:
        """Comment on a version, or on a promotion request of the model. Takes viewer:
        reviewers comment on what they review. A read-only token cannot."""
        validate_model_name(model)
        validate_comment(body)
        if (version is None) == (request_id is None):
            raise InvalidInput("a comment is on a version or on a request: name one of them")
        self.access.require(caller, Permission.COMMENT, model)
        if caller.read_only:
            raise Forbidden(
                f"{caller.name}'s token is read-only: commenting changes the registry",
                permission=str(Permission.COMMENT),
            )
        with self.db.write() as tx:
            model_id, number, version_id = self._commented(tx, model, version, request_id)
            now = now_us()
            comment_id = tx.insert_comment(
                {
                    "model_id": model_id,
                    "version_id": version_id,
                    "request_id": request_id,
                    "author": caller.name,
                    "body": body,
                    "created_at": now,
                }
            )
            event = CommentAdded(model, number, comment_id, request_id, _sha256(body), len(body))
            tx.append_event(caller, event, now=now)
            return Comment(
                comment_id, model, number, request_id, caller.name, body, utc_from_us(now)
            )

    def comments(
        self,
        caller: Caller,
        *,
        model: str,
        version: int | None = None,
        request_id: int | None = None,
    ) -> list[Comment]:
        """Comments, oldest first: on one request, on one version (its requests' included),
        or (neither given) on the whole model; the newest 1000."""
        validate_model_name(model)
        self.access.require(caller, Permission.VIEW, model)
        with self.db.read() as tx:
            model_id = _model_id(tx, model)
            version_id = None if version is None else version_id_or_404(tx, model, version)
            if request_id is not None:
                self._request_version(tx, model, request_id)
            return tx.comments(model, model_id, version_id=version_id, request_id=request_id)

    # -- at registration -----------------------------------------------------------------------

    def prepare(
        self,
        attachments: Sequence[AttachmentIn] = (),
        card: str | None = None,
        card_from_previous: bool = False,
        inline_total: int = 0,
    ) -> NewEvidence:
        """Validate evidence before a transaction opens: paths, limits, inline bytes
        (``inline_total``: inline bytes the request carries already)."""
        files = validate_attachments(attachments) if attachments else []
        inline = {f.sha256: f.content for f in files if f.content is not None}
        check_inline([f.entry for f in files], inline, inline_total)
        if card is not None:
            validate_card(card)
            if card_from_previous:
                raise InvalidInput("give a card, or start from the previous version's: not both")
        return NewEvidence(files, inline, card, card_from_previous)

    def record_new(
        self,
        tx: Writer,
        caller: Caller,
        version: Version,
        version_id: int,
        model_id: int,
        new: NewEvidence,
        file_inline: Mapping[str, bytes],
    ) -> None:
        """A new version's attachments and first card, in the transaction registering it.

        The card: the one given, else MODEL_CARD.md among the files, else among the
        attachments, else (if asked) the previous version's.
        """
        now = now_us()
        if new.attachments:
            self._insert(tx, caller, version.model, version.version, version_id, new, now)
        found = self._first_card(tx, version, model_id, new, file_inline)
        if found is not None:
            text, source = found
            self._add_card(tx, caller, version.model, version.version, version_id, text, source)

    def _first_card(
        self,
        tx: Reader,
        version: Version,
        model_id: int,
        new: NewEvidence,
        file_inline: Mapping[str, bytes],
    ) -> tuple[str, CardSource] | None:
        if new.card is not None:
            return new.card, CardSource.EDITED
        sources: tuple[tuple[Sequence[FileEntry], Mapping[str, bytes], CardSource], ...] = (
            (version.files, file_inline, CardSource.FILE),
            ([a.entry for a in new.attachments], new.inline, CardSource.ATTACHMENT),
        )
        for entries, inline, source in sources:
            path = card_file(e.path for e in entries)
            if path is not None:
                entry = next(e for e in entries if e.path == path)
                if entry.size > 4 * MAX_CARD:  # UTF-8 takes at most 4 bytes a character
                    raise TooLarge(f"{path} is too large to be a model card")
                content = self._bytes(tx, entry.sha256, inline, entry.size)
                return card_text(content, path), source
        if new.card_from_previous:
            previous = tx.previous_version_id(model_id, version.version)
            card = tx.card(previous) if previous is not None else None
            if card is not None:
                return card.text, CardSource.PREVIOUS
        return None

    # -- internals -----------------------------------------------------------------------------

    def _insert(
        self,
        tx: Writer,
        caller: Caller,
        name: str,
        number: int,
        version_id: int,
        new: NewEvidence,
        now: int,
    ) -> list[Attachment]:
        """Check the blobs (held, at their sizes, nameable by the caller), decide each type
        from its bytes, write the attachments and journal them."""
        self._blobs._require_blobs(tx, caller, [f.entry for f in new.attachments], new.inline)
        attached = [
            Attachment(
                path=f.path,
                sha256=f.sha256,
                size=f.size,
                media_type=media_type(f.path, self._bytes(tx, f.sha256, new.inline, SNIFF_BYTES)),
                attached_by=caller.name,
                attached_at=utc_from_us(now),
            )
            for f in new.attachments
        ]
        tx.insert_attachments(version_id, attached, now)
        state: list[AttachedState] = [
            {"path": a.path, "sha256": a.sha256, "size": a.size, "media_type": a.media_type}
            for a in attached
        ]
        tx.append_event(caller, VersionAttached(name, number, state), now=now)
        return attached

    def _add_card(
        self,
        tx: Writer,
        caller: Caller,
        name: str,
        number: int,
        version_id: int,
        text: str,
        source: CardSource,
    ) -> None:
        now = now_us()
        revision = tx.insert_card(version_id, text, source.value, caller.name, now)
        event = VersionCardEdited(name, number, revision, source.value, _sha256(text), len(text))
        tx.append_event(caller, event, now=now)

    def _bytes(self, tx: Reader, digest: str, inline: Mapping[str, bytes], limit: int) -> bytes:
        """The first ``limit`` bytes of a blob: inline in this request, in the database, or
        in the blob store (read within the transaction, which sees its own inline blobs)."""
        content = inline.get(digest)
        if content is None:
            content = tx.blob_content(digest)
        if content is not None:
            return content[:limit]
        return b"".join(self._blobs.blobs.read(digest, 0, limit))

    def _commented(
        self, tx: Reader, model: str, version: int | None, request_id: int | None
    ) -> tuple[int, int, int]:
        """(model id, version number, version id) of what a comment is on."""
        model_id = _model_id(tx, model)
        if request_id is not None:
            number, version_id = self._request_version(tx, model, request_id)
            return model_id, number, version_id
        assert version is not None
        return model_id, version, version_id_or_404(tx, model, version)

    def _request_version(self, tx: Reader, model: str, request_id: int) -> tuple[int, int]:
        """(version number, version id) of a request of ``model``; a request of another
        model is not found here."""
        found = tx.requests(request_id=request_id)
        if not found or found[0].model != model:
            raise NotFound(f"request {request_id} not found", code="request_not_found")
        return found[0].version, tx.request_basis(request_id)[0]


def _model_id(tx: Reader, model: str) -> int:
    model_id = tx.model_id(model)
    if model_id is None:
        raise NotFound(f"model {model!r} not found", code="model_not_found")
    return model_id


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
