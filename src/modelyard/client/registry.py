"""The Python SDK: ``modelyard.connect(url_or_directory)`` returns a ``Registry``.

A URL talks to a server over HTTP; a directory path opens the same registry in-process and
drives the server's own app, with no server. ``Registry`` builds every REST request and
parses every answer, once, for both: a transport only carries them (``client/transport``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlencode

from modelyard.client import direct, sse
from modelyard.client.capture import capture_environment, capture_source
from modelyard.client.credentials import token_for
from modelyard.client.hashing import BackgroundHash, HashCache, cache_dir, file_stamp
from modelyard.client.http import HttpTransport
from modelyard.client.progress import NoProgress, Progress
from modelyard.client.transport import Advance, FileBody, Request, Response, Transport
from modelyard.domain.access import (
    Grant,
    Identity,
    NewToken,
    Permission,
    Principal,
    PrincipalKind,
    Role,
    Token,
)
from modelyard.domain.checks import CheckResult
from modelyard.domain.comparison import Comparison, GateResult
from modelyard.domain.delivery import Delivery, ProbeResult
from modelyard.domain.errors import (
    Conflict,
    DigestMismatch,
    Forbidden,
    InvalidInput,
    InvalidPath,
    MissingBlobs,
    ModelyardError,
    NotFound,
    Unavailable,
    error_from_problem,
)
from modelyard.domain.evidence import Attachment, Card, Comment
from modelyard.domain.gc import GcReport
from modelyard.domain.journal import Checkpoint, JournalReport, verify_chain
from modelyard.domain.lifecycle import Promotion, TransitionRequest
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import (
    DatasetRef,
    Environment,
    Event,
    Model,
    Origin,
    Page,
    SourceRef,
    T,
    Version,
    version_page_from_dict,
)
from modelyard.domain.names import validate_file_path
from modelyard.domain.online import OnlineReport, OnlineSeries, aware_iso
from modelyard.domain.projection import Projection, compare
from modelyard.domain.references import RefKind, parse_reference
from modelyard.domain.versions import NewVersion
from modelyard.domain.webhooks import NewSubscription, Subscription
from modelyard.transfer import FileSink, Pipeline

if TYPE_CHECKING:
    from modelyard.domain.advisories import DumpLoaded, DumpSummary
    from modelyard.domain.bundles import BundleImport, ExportedBundle
    from modelyard.domain.signing import (
        PublicKey,
        PublishedKey,
        Signature,
        Verified,
        VersionSignatures,
    )
    from modelyard.flavors import Predictor

# Matched to the server's limits (service.blobs.MAX_INLINE_FILE / MAX_INLINE_TOTAL),
# with headroom in the total for base64 and the rest of the JSON body.
INLINE_FILE_LIMIT = 64 * 1024
INLINE_TOTAL_LIMIT = 1024 * 1024
# How often a request naming uploaded blobs sends them again when garbage collection took
# them first (``Registry._naming_blobs``), and an upload whose bytes it took meanwhile.
_RESENDS = 2


USER_AGENT = "modelyard-client"
# Downloads follow a registry's redirect to its object store (the token stays behind).
REDIRECT = {"Modelyard-Redirect": "allow"}
# An event stream that cannot connect tries again after 0.5 s, then twice as late, up to 30 s.
RECONNECT_FIRST = 0.5
RECONNECT_LAST = 30.0


def connect(
    target: str | os.PathLike[str],
    *,
    token: str | None = None,
    progress: Progress | None = None,
    database_url: str | None = None,
) -> Registry:
    """Open a registry: an ``http(s)://`` URL of a server, or a local data directory.

    The token is ``token``, else $MODELYARD_TOKEN, else what ``modelyard login`` saved for
    that URL or directory. An empty registry needs none in-process or over loopback
    (single-user local mode); once it has users, a directory needs a token too.
    """
    text = os.fspath(target)
    return Registry(
        open_transport(text, database_url), token=token or token_for(text), progress=progress
    )


def open_transport(target: str, database_url: str | None = None) -> Transport:
    """How ``connect`` reaches ``target``: HTTP for a URL, the app in-process for a path."""
    if target.startswith(("http://", "https://")):
        return HttpTransport(target)
    # Imported here so that HTTP-only users never load the server-side stack.
    from modelyard.client.local import open_local

    return open_local(Path(target), database_url)


class Registry:
    def __init__(
        self,
        transport: Transport,
        *,
        token: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        self._transport = transport
        self._headers = {"User-Agent": USER_AGENT}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._progress: Progress = progress or NoProgress()
        self._hashes = HashCache()
        self._direct: bool | None = None  # whether the registry takes direct uploads

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()
        self._hashes.close()

    # -- requests: every operation below is one of these ------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content: Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> Response:
        """Send a request with a JSON ``body`` or streamed ``content``; the answer.

        Raises the error the registry answered for a status of 400 or more.
        """
        sent = {**self._headers, **(headers or {})}
        data: bytes | Iterable[bytes] = b""
        if content is not None:
            data = content
        elif body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        query = _encode_query(params) if params else ""
        response = self._transport.send(Request(method, path, query, sent, data, stream))
        if response.status >= 400:
            try:
                raise _error_from(response.status, response.read())
            finally:
                response.close()
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return json.loads(self._send(method, path, **kwargs).body)

    # -- registering ----------------------------------------------------------------------

    def register(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        dataset: str | DatasetRef | None = None,
        description: str = "",
        run: str | None = None,
        framework: str | None = None,
        format: str | None = None,
        source: SourceRef | Literal["auto"] | None = "auto",
        environment: Environment | Literal["auto"] | None = "auto",
        attachments: Sequence[str | os.PathLike[str]] = (),
        card: str | os.PathLike[str] | None = None,
        card_from_previous: bool = False,
        origin: Origin | None = None,
        number: int | None = None,
    ) -> Version:
        """Register the file or directory at ``path`` as the next version of ``name``.

        Only files the registry does not already hold are uploaded. ``source`` (git) and
        ``environment`` (Python, platform, packages) are captured ("auto") unless given,
        or left out with None.

        ``attachments``: files or directories of evaluation evidence (plots, reports,
        metric tables), kept beside the model's files, outside its manifest. ``card``:
        the model card, Markdown text (a ``str``) or a file to read (a ``Path``); without
        one, a MODEL_CARD.md among the files or attachments is the card, else, with
        ``card_from_previous``, the previous version's. All of it is registered in one
        transaction with the version.

        ``origin``: for an import, where the version was first made (another registry's
        name, number, time and creator), kept beside this registry's own; with it,
        ``number`` keeps the number it had there, if that lies above the model's latest.
        """
        files = _collect(Path(path))
        evidence = _collect_all(attachments) if attachments else {}
        sent: dict[str, Path] = {}
        entries, inline = self._send_files(files, sent)
        attached = self._attachment_items(evidence, sent) if evidence else []
        spec = NewVersion(
            files=entries,
            params={k: _param_text(v) for k, v in (params or {}).items()},
            metrics=dict(metrics or {}),
            tags=dict(tags or {}),
            description=description,
            dataset=DatasetRef.parse(dataset) if isinstance(dataset, str) else dataset,
            source=capture_source(Path.cwd().resolve()) if source == "auto" else source,
            environment=capture_environment() if environment == "auto" else environment,
            run=run,
            framework=framework,
            format=format,
            origin=origin,
            number=number,
        )
        body = _registration(spec, inline)
        if attached:
            body["attachments"] = attached
        if card is not None:
            body["card"] = _card_text(card)
        if card_from_previous:
            body["card_from_previous"] = True
        path = f"/api/v1/models/{_seg(name)}/versions"
        return Version.from_dict(self._naming_blobs(path, body, sent))

    def log_model(
        self,
        model: Any,
        name: str,
        *,
        input_example: Any = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        dataset: str | DatasetRef | None = None,
        description: str = "",
        run: str | None = None,
        attachments: Sequence[str | os.PathLike[str]] = (),
        card: str | os.PathLike[str] | None = None,
        unsafe_pickle: bool = False,
        init_kwargs: dict[str, Any] | None = None,
    ) -> Version:
        """Save ``model`` in its framework's safe format with a descriptor and its
        signature (inferred from ``input_example``), and register it as the next version of
        ``name``, with the git source and the Python environment this runs in.

        A model no safe format holds is refused unless ``unsafe_pickle=True``; then it is
        pickled and the version's format is ``pickle``. ``init_kwargs``: PyTorch only, the
        arguments that rebuild the model's class.
        """
        from modelyard.flavors import FLAVORS, save_model

        with tempfile.TemporaryDirectory(prefix="modelyard-model-") as staging:
            descriptor = save_model(
                model,
                staging,
                input_example=input_example,
                unsafe_pickle=unsafe_pickle,
                init_kwargs=init_kwargs,
            )
            flavor = FLAVORS[descriptor.flavor]
            return self.register(
                name,
                staging,
                metrics=metrics,
                params=params,
                tags=tags,
                dataset=dataset,
                description=description,
                run=run,
                framework=flavor.framework,
                format=descriptor.format,
                attachments=attachments,
                card=card,
            )

    def load_model(self, reference: str | Version, *, unsafe_pickle: bool = False) -> Predictor:
        """Download a version (verified, into the content-addressed cache: a version already
        there costs a stat per file) and load it by its ``modelyard.yaml``. A version in a
        protected stage loads only if its signatures verify (``verify``).

        A pickled model loads only with ``unsafe_pickle=True``.
        """
        from modelyard.flavors import load_directory
        from modelyard.flavors.core import require_descriptor

        version = reference if isinstance(reference, Version) else self.resolve(reference)
        require_descriptor(version)
        directory = model_cache(version)
        self.download(version, directory, verify=None)
        return load_directory(directory, version, unsafe_pickle=unsafe_pickle)

    def _attachment_items(
        self, files: dict[str, Path], sent: dict[str, Path]
    ) -> list[dict[str, object]]:
        """Send attachments' bytes as files are sent; their entries for a request body."""
        entries, inline = self._send_files(files, sent)
        return _file_items(entries, inline)

    def _naming_blobs(self, path: str, body: dict[str, Any], sent: dict[str, Path]) -> Any:
        """POST a request that names blobs sent before it (``sent``: digest -> file).

        Garbage collection may take an uploaded blob before a version names it (an upload
        older than its grace period, or a run with none, on any replica): the registry
        then answers ``missing_blobs``, and those bytes are sent again and the request made
        again, twice at most. A blob missing that was not sent from here is the caller's
        error and raises at once.
        """
        for attempt in range(_RESENDS + 1):
            try:
                return self._json("POST", path, body=body)
            except MissingBlobs as exc:
                missing = [str(d).removeprefix("sha256:") for d in exc.details.get("missing", ())]
                if attempt == _RESENDS or not missing or not all(d in sent for d in missing):
                    raise
                again = {d: (sent[d], sent[d].stat().st_size) for d in missing}
                total = sum(size for _, size in again.values())
                with self._progress.task("uploading", total) as advance:
                    for digest, (local, size) in again.items():
                        self._upload_file(digest, local, size, advance)
        raise AssertionError("unreachable")

    def _upload_file(
        self, digest: str | None, local: Path, size: int, advance: Advance
    ) -> tuple[str, str | None]:
        """Upload a file: named by ``digest``, or (None) by what it hashes to. Returns the
        digest the registry stored it under and, when unnamed, what it hashed to here.

        Sent again (twice at most) when the registry answers ``blob_collected``: garbage
        collection took the bytes between their publication and their record.
        """
        for attempt in range(_RESENDS + 1):
            try:
                if digest is not None:
                    return self._upload_blob(digest, FileBody(local, size, advance), size), None
                # One pass each end, at once: this process hashes on a thread while the
                # file goes out (the kernel sends it), the registry hashes what arrives.
                with BackgroundHash(local) as hashing:
                    stored = self._upload_blob(None, FileBody(local, size, advance), size)
                    return stored, hashing.result()
            except Conflict as exc:
                if exc.code != "blob_collected" or attempt == _RESENDS:
                    raise
        raise AssertionError("unreachable")

    def _send_files(
        self, files: dict[str, Path], sent: dict[str, Path] | None = None
    ) -> tuple[list[FileEntry], dict[str, bytes]]:
        """Get every file's bytes to the registry at the least cost; return the manifest.

        - Small files ride inline in the registration request.
        - Files whose digest the hash cache knows: ask which the registry lacks, send those.
        - Other files: hash while sending, in one pass; the registry names the blob and the
          name must match our own hash.

        ``sent`` gets the digest and file of every blob not inline, which the request that
        names them may have to send again (``_naming_blobs``).
        """
        entries: dict[str, FileEntry] = {}
        inline: dict[str, bytes] = {}
        known: dict[str, tuple[Path, int, str]] = {}  # rel -> (path, size, digest)
        unknown: dict[str, tuple[Path, int, str]] = {}  # rel -> (path, size, stamp)
        inline_total = 0
        for rel, local in files.items():
            stamp = file_stamp(local)
            size = local.stat().st_size
            if size <= INLINE_FILE_LIMIT and inline_total + size <= INLINE_TOTAL_LIMIT:
                content = local.read_bytes()
                digest = hashlib.sha256(content).hexdigest()
                inline[digest] = content
                inline_total += size
                entries[rel] = FileEntry(rel, len(content), digest)
            elif (cached := self._hashes.lookup(local, stamp)) is not None:
                known[rel] = (local, size, cached)
            else:
                unknown[rel] = (local, size, stamp)

        known_digests = sorted({d for _, _, d in known.values()})
        missing = set(self._missing_blobs(known_digests)) if known_digests else set()
        to_send = {d: (p, n) for p, n, d in known.values() if d in missing}
        total = sum(n for _, n in to_send.values()) + sum(n for _, n, _ in unknown.values())
        with self._progress.task("uploading", total) as advance:
            direct = bool(to_send or unknown) and self._direct_uploads()
            for digest, (local, size) in to_send.items():
                if direct:
                    self._upload_direct(str(local), local, size, advance, digest)
                else:
                    self._upload_file(digest, local, size, advance)
            for rel, (local, size, stamp) in unknown.items():
                if direct:
                    stored = self._upload_direct(rel, local, size, advance)
                else:
                    stored, hashed = self._upload_file(None, local, size, advance)
                    if stored != hashed:
                        raise DigestMismatch(
                            f"{rel}: the registry stored sha256:{stored} but the file hashes"
                            f" to sha256:{hashed}; was it modified while uploading?"
                        )
                if sent is not None:
                    sent[stored] = local
                self._hashes.store(local, stamp, stored)
                entries[rel] = FileEntry(rel, size, stored)
        for rel, (local, size, digest) in known.items():
            entries[rel] = FileEntry(rel, size, digest)
            if sent is not None:  # held already, or sent above: either may be collected
                sent[digest] = local
        return [entries[rel] for rel in files], inline

    # -- evidence: attachments, the model card, comments ---------------------------------

    def attach(
        self, reference: str, paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]
    ) -> list[Attachment]:
        """Attach files or directories of evaluation evidence to a version, after its
        registration. Attachments are never replaced (a path attached already raises
        Conflict) and the version's manifest digest does not change."""
        listed = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
        version = self.resolve(reference)
        sent: dict[str, Path] = {}
        body = {"attachments": self._attachment_items(_collect_all(listed), sent)}
        data = self._naming_blobs(f"{_version_path(version)}/attachments", body, sent)
        return [Attachment.from_dict(a) for a in data["items"]]

    def attachments(self, reference: str) -> list[Attachment]:
        """A version's attachments, by path (viewers may list and read them)."""
        data = self._json("GET", f"{_version_path(self.resolve(reference))}/attachments")
        return [Attachment.from_dict(a) for a in data["items"]]

    def download_attachment(self, reference: str, path: str, dest: str | os.PathLike[str]) -> Path:
        """Write one attachment to ``dest`` (a file, or a directory to put it in under its
        own name), verified against its digest; returns where it was written."""
        version = self.resolve(reference)
        found = {a.path: a for a in self.attachments(f"{version.model}/{version.version}")}
        if path not in found:
            raise _no_attachment(version, path)
        attachment = found[path]
        target = Path(dest)
        if target.is_dir():
            target = target / validate_file_path(path).rsplit("/", 1)[-1]
        url = f"{_version_path(version)}/attachments/{_seg(path, '/')}"
        response = self._send("GET", url, stream=True)
        entry = FileEntry(path, attachment.size, attachment.sha256)
        with self._progress.task("downloading", attachment.size) as advance:
            try:
                _write_verified(target, entry, response, advance)
            finally:
                response.close()
        return target

    def card(self, reference: str) -> Card | None:
        """A version's model card (its newest revision), or None."""
        try:
            return Card.from_dict(
                self._json("GET", f"{_version_path(self.resolve(reference))}/card")
            )
        except NotFound as exc:
            if exc.code == "card_not_found":
                return None
            raise

    def set_card(self, reference: str, text: str | os.PathLike[str]) -> Card:
        """Edit a version's model card: Markdown text, or (a ``Path``) a file to read. A
        new revision; every edit is journaled."""
        path = f"{_version_path(self.resolve(reference))}/card"
        return Card.from_dict(self._json("PUT", path, body={"text": _card_text(text)}))

    def card_history(self, reference: str) -> list[Card]:
        """Every revision of a version's card, oldest first."""
        data = self._json("GET", f"{_version_path(self.resolve(reference))}/card/history")
        return [Card.from_dict(c) for c in data["items"]]

    def comment(self, on: str | int, body: str) -> Comment:
        """Comment (Markdown) on a version (a reference) or a promotion request (its id)."""
        return Comment.from_dict(self._json("POST", self._comments_path(on), body={"body": body}))

    def comments(self, on: str | int) -> list[Comment]:
        """The comments on a version (its requests' included) or a request, oldest first."""
        return [Comment.from_dict(c) for c in self._json("GET", self._comments_path(on))["items"]]

    def _comments_path(self, on: str | int) -> str:
        if isinstance(on, int):
            return f"/api/v1/requests/{on}/comments"
        return f"{_version_path(self.resolve(on))}/comments"

    def _direct_uploads(self) -> bool:
        """Whether the registry takes bytes at its object store (presigned URLs): asked
        once per Registry. A registry that cannot say (older) takes them itself."""
        if self._direct is None:
            try:
                self._direct = bool(self._json("GET", "/api/v1/blobs/direct-uploads")["enabled"])
            except Unavailable:
                raise
            except ModelyardError:  # older (404, 405), or not allowed to: the usual upload
                self._direct = False
        return self._direct

    def _upload_direct(
        self, rel: str, local: Path, size: int, advance: Advance, expected: str | None = None
    ) -> str:
        """Send a file's parts to the object store itself and have the registry verify
        and publish them; continues an upload a dead run began. Returns the digest."""
        digest, sums = direct.hash_parts(local, size)
        if expected is not None and digest != expected:
            raise DigestMismatch(f"{rel}: the file changed since it was hashed; register again")
        body = {"digest": f"sha256:{digest}", "size": size, "parts": sums}
        plan = self._json("POST", "/api/v1/blobs/direct-uploads", body=body)
        if plan["created"] is None:  # this registry takes the bytes itself after all
            return self._upload_blob(digest, FileBody(local, size, advance), size)
        parts = [direct.PartToSend(**p) for p in plan["parts"]]
        advance(size - sum(p.size for p in parts))  # already there: nothing to send
        if plan["created"]:
            direct.send_parts(local, parts, advance)
            done = {"digest": f"sha256:{digest}", "size": size}
            self._json("POST", "/api/v1/blobs/direct-uploads/complete", body=done)
        return digest

    def _missing_blobs(self, digests: list[str]) -> list[str]:
        body = {"digests": [f"sha256:{d}" for d in digests]}
        data = self._json("POST", "/api/v1/blobs/missing", body=body)
        return [d.removeprefix("sha256:") for d in data["missing"]]

    def _upload_blob(self, digest: str | None, chunks: FileBody, size: int) -> str:
        """Upload ``size`` bytes; with no ``digest`` the registry names the blob by what
        they hash to. Returns the digest it stored them under."""
        method, path = (
            ("POST", "/api/v1/blobs/uploads")
            if digest is None
            else ("PUT", f"/api/v1/blobs/sha256:{digest}")
        )
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        answer = self._json(method, path, content=chunks, headers=headers)
        return str(answer["digest"]).removeprefix("sha256:")

    # -- reading --------------------------------------------------------------------------

    def resolve(self, reference: str, *, as_of: datetime | None = None) -> Version:
        """'churn', 'churn/42', 'churn@champion' or 'churn@sha256:...' -> the version.

        ``as_of``: what the reference pointed to at that moment (from the journal).
        """
        params = {"as_of": as_of.isoformat()} if as_of is not None else None
        path = f"/api/v1/resolve/{_seg(reference, '/@:')}"
        return Version.from_dict(self._json("GET", path, params=params))

    def resolve_if_changed(
        self, reference: str, etag: str | None = None
    ) -> tuple[Version | None, str | None]:
        """A poller's resolve: (None, etag) while the answer still has ``etag`` (the
        registry's 304, no body), else (the version, its new ETag)."""
        path = f"/api/v1/resolve/{_seg(reference, '/@:')}"
        headers = {"If-None-Match": etag} if etag else None
        response = self._send("GET", path, headers=headers)
        new_etag = response.headers.get("etag")
        if response.status == 304:
            return None, new_etag or etag
        return Version.from_dict(json.loads(response.body)), new_etag

    def download(
        self,
        reference: str | Version,
        dest: str | os.PathLike[str],
        *,
        verify: bool | None = False,
    ) -> Version:
        """Write every file of the version under ``dest``, each checked against its sha256
        and written atomically. Files already present with the right content are left alone.

        ``verify=True``: first check the version's signatures (``verify``), so that the
        digests the bytes are checked against are the signed ones; ``None``: so only when
        the version's stage is protected (what ``load_model`` and serve-model do).
        """
        version = reference if isinstance(reference, Version) else self.resolve(reference)
        if verify is not False:
            self._verify(version, required=bool(verify))
        root = Path(dest)
        root.mkdir(parents=True, exist_ok=True)
        targets = {entry.path: _inside(root, entry.path) for entry in version.files}
        todo = [e for e in version.files if not self._already_there(targets[e.path], e)]
        total = sum(e.size for e in todo)
        with self._progress.task("downloading", total) as advance:
            for entry in todo:
                # Perhaps answered by a redirect to the object store: verified all the same.
                response = self._send(
                    "GET", f"/api/v1/blobs/sha256:{entry.sha256}", headers=REDIRECT, stream=True
                )
                try:
                    _write_verified(targets[entry.path], entry, response, advance)
                finally:
                    response.close()
                # Verified: remember the digest, so checking the file again costs a stat.
                target = targets[entry.path]
                self._hashes.store(target, file_stamp(target), entry.sha256)
        return version

    # -- signatures ------------------------------------------------------------------------

    def public_keys(self) -> list[PublishedKey]:
        """The public keys the registry publishes: its own and its users' (``key_id`` is
        the sha256 of the DER public key)."""
        from modelyard.domain.signing import PublishedKey

        return [PublishedKey.from_dict(k) for k in self._json("GET", "/api/v1/keys")["items"]]

    def signatures(self, reference: str | Version) -> VersionSignatures:
        """A version's signatures (Sigstore bundles, OpenSSF model-signing v1.0) and
        whether its stage is protected."""
        from modelyard.domain.signing import VersionSignatures

        version = reference if isinstance(reference, Version) else self.resolve(reference)
        return VersionSignatures.from_dict(
            self._json("GET", f"{_version_path(version)}/signatures")
        )

    def register_key(self, pem_file: str | os.PathLike[str]) -> PublishedKey:
        """Register a public key to you (a PEM file; of a private key, only its public part
        is sent): the versions it signs count as signed by you, e.g. for a policy's
        ``signed_by``."""
        from modelyard.domain.signing import PublishedKey, public_key_of

        key = public_key_of(_read_key_file(pem_file), os.fspath(pem_file))
        return PublishedKey.from_dict(self._json("POST", "/api/v1/keys", body={"pem": key.pem}))

    def sign(self, reference: str | Version, key_file: str | os.PathLike[str]) -> Signature:
        """Sign a version's files with your private key (a PEM file, which never leaves this
        machine) and add the signature; its public part must be registered to you."""
        from modelyard.domain.signing import Signature, SigningKey

        key = SigningKey.from_pem(_read_key_file(key_file), os.fspath(key_file))
        version = reference if isinstance(reference, Version) else self.resolve(reference)
        body = {"bundle": key.sign(version.reference, version.files)}
        return Signature.from_dict(
            self._json("POST", f"{_version_path(version)}/signatures", body=body)
        )

    def trust_registry(self, name: str, pem_file: str | os.PathLike[str]) -> PublishedKey:
        """Trust another registry's public key (a PEM file) under ``name`` (admins): its
        bundles may be imported here, and its signatures verify downloads."""
        from modelyard.domain.signing import PublishedKey, public_key_of

        key = public_key_of(_read_key_file(pem_file), os.fspath(pem_file))
        body = {"name": name, "pem": key.pem}
        return PublishedKey.from_dict(self._json("POST", "/api/v1/keys/trusted", body=body))

    def distrust_registry(self, key_id: str) -> None:
        """Stop trusting another registry's key (admins)."""
        self._send("DELETE", f"/api/v1/keys/trusted/{_seg(key_id)}").close()

    def sign_as_registry(self, reference: str | Version) -> Signature:
        """Have the registry sign a version already in a protected stage (admins): one
        promoted before the registry signed, which protected downloads would refuse."""
        from modelyard.domain.signing import Signature

        version = reference if isinstance(reference, Version) else self.resolve(reference)
        return Signature.from_dict(
            self._json("POST", f"{_version_path(version)}/signatures/registry")
        )

    def verify(self, reference: str | Version) -> Verified:
        """Check that trusted keys signed exactly the version's files; else ``SignatureInvalid``
        naming the file or the key. Trusted: the keys in the PEM file $MODELYARD_TRUSTED_KEYS
        names (pinned: a registry whose database is not to be trusted cannot publish keys
        of its own), else the registry's own published keys (users' keys attest for
        policies, not for downloads)."""
        version = reference if isinstance(reference, Version) else self.resolve(reference)
        verified = self._verify(version, required=True)
        assert verified is not None
        return verified

    def _verify(self, version: Version, *, required: bool) -> Verified | None:
        """``verify``, or (not ``required``) None for a version outside protected stages."""
        from modelyard.domain.signing import verify_version

        found = self.signatures(version)
        if not required and not found.protected:
            return None
        return verify_version(
            version.reference, version.files, found.signatures, self._trusted_keys()
        )

    def _trusted_keys(self) -> list[PublicKey]:
        from modelyard.domain.signing import read_pem_keys

        pinned = os.environ.get("MODELYARD_TRUSTED_KEYS")
        if pinned:
            return read_pem_keys(_read_key_file(pinned), f"MODELYARD_TRUSTED_KEYS ({pinned})")
        return [key.public_key() for key in self.public_keys() if key.speaks_for_a_registry]

    # -- bundles ---------------------------------------------------------------------------

    def export_bundle(
        self,
        model: str,
        dest: str | os.PathLike[str],
        *,
        stage: str | None = None,
        history: bool = False,
    ) -> ExportedBundle:
        """Write a bundle of ``model``'s versions in ``stage`` (``history``: all of them,
        with their whole history) to ``dest``: one file, signed by the registry, that
        another registry imports (``import_bundle``) with no network between them. It is
        written under a temporary name beside ``dest``, then renamed: a cut transfer
        leaves no bundle behind."""
        from modelyard.domain.bundles import ExportedBundle

        params: dict[str, Any] = {"history": True} if history else {}
        if stage is not None:
            params["stage"] = stage
        response = self._send(
            "GET", f"/api/v1/models/{_seg(model)}/bundle", params=params, stream=True
        )
        target = Path(dest)
        partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
        try:
            size = int(response.headers.get("content-length") or 0)
            with self._progress.task("exporting", size) as advance, partial.open("wb") as out:
                for chunk in _chunks_of(response):
                    out.write(chunk)
                    advance(len(chunk))
                written = out.tell()
                out.flush()
                os.fsync(out.fileno())
            if size and written != size:
                raise InvalidInput(f"{model}'s bundle ended after {written} of {size} bytes")
            os.replace(partial, target)
        finally:
            response.close()
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        versions = response.headers.get("modelyard-bundle-versions") or ""
        return ExportedBundle(
            model,
            os.fspath(target),
            response.headers.get("modelyard-bundle", "").removeprefix("sha256:"),
            written,
            tuple(int(n) for n in versions.split(",") if n),
        )

    def import_bundle(self, path: str | os.PathLike[str]) -> BundleImport:
        """Import a bundle another registry exported (admins): the registry verifies all
        of it (signed by a registry it trusts, every byte as the manifest says) before it
        writes anything, and imports only the versions it does not hold yet."""
        from modelyard.domain.bundles import MEDIA_TYPE, BundleImport

        local = Path(path)
        size = local.stat().st_size
        headers = {"Content-Length": str(size), "Content-Type": MEDIA_TYPE}
        with self._progress.task("importing", size) as advance:
            body = FileBody(local, size, advance)
            answer = self._json("POST", "/api/v1/bundles", content=body, headers=headers)
        return BundleImport.from_dict(answer)

    def _already_there(self, target: Path, entry: FileEntry) -> bool:
        if not target.is_file() or target.stat().st_size != entry.size:
            return False
        return self._hashes.sha256(target, lambda _: None) == entry.sha256

    def versions(
        self,
        name: str | None = None,
        *,
        filter: str | None = None,
        order_by: str | None = None,
        page_token: str | None = None,
        limit: int | None = None,
    ) -> Page[Version]:
        """One page of versions (of one model, or of all), filtered with the search language."""
        path = f"/api/v1/models/{_seg(name)}/versions" if name else "/api/v1/versions"
        data = self._json("GET", path, params=_query(filter, order_by, page_token, limit))
        return version_page_from_dict(data)

    def search(
        self, filter: str | None = None, *, order_by: str | None = None, limit: int | None = None
    ) -> Iterator[Version]:
        """Every version matching ``filter``, across models, fetching page after page."""
        return _every_item(
            lambda token: self.versions(
                filter=filter, order_by=order_by, page_token=token, limit=limit
            )
        )

    def update_version(
        self,
        reference: str,
        *,
        description: str | None = None,
        tags: Mapping[str, str | None] | None = None,
    ) -> Version:
        """Edit a version's description and tags (a tag set to None is removed)."""
        version = self.resolve(reference)
        patch = dict(tags) if tags is not None else None
        path = f"/api/v1/models/{_seg(version.model)}/versions/{version.version}"
        return Version.from_dict(self._json("PATCH", path, body=_patch_body(description, patch)))

    # -- models ---------------------------------------------------------------------------

    def create_model(
        self,
        name: str,
        *,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        origin: Origin | None = None,
    ) -> Model:
        """``origin``: where an import found the model (see ``register``)."""
        body: dict[str, Any] = {"name": name, "description": description, "tags": dict(tags or {})}
        if origin is not None:
            body["origin"] = origin.as_dict()
        return Model.from_dict(self._json("POST", "/api/v1/models", body=body))

    def model(self, name: str) -> Model:
        return Model.from_dict(self._json("GET", f"/api/v1/models/{_seg(name)}"))

    def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: Mapping[str, str | None] | None = None,
    ) -> Model:
        patch = dict(tags) if tags is not None else None
        body = _patch_body(description, patch)
        return Model.from_dict(self._json("PATCH", f"/api/v1/models/{_seg(name)}", body=body))

    def delete_model(self, name: str) -> None:
        self._send("DELETE", f"/api/v1/models/{_seg(name)}")

    def models(
        self,
        *,
        filter: str | None = None,
        order_by: str | None = None,
        page_token: str | None = None,
        limit: int | None = None,
    ) -> Page[Model]:
        params = _query(filter, order_by, page_token, limit)
        data = self._json("GET", "/api/v1/models", params=params)
        return Page([Model.from_dict(m) for m in data["items"]], data["next_page_token"])

    # -- aliases --------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int) -> Version:
        """Point ``name@alias`` at ``version`` (creates or moves the alias)."""
        path = f"/api/v1/models/{_seg(name)}/aliases/{_seg(alias)}"
        return Version.from_dict(self._json("PUT", path, body={"version": version}))

    def delete_alias(self, name: str, alias: str) -> None:
        self._send("DELETE", f"/api/v1/models/{_seg(name)}/aliases/{_seg(alias)}")

    # -- garbage collection ---------------------------------------------------------------

    def collect_garbage(
        self, *, dry_run: bool = False, grace: timedelta = timedelta(hours=1)
    ) -> GcReport:
        """Remove blobs no version references and uploads never committed (admins).

        Blobs a hard delete released go at once, others once older than ``grace`` (which
        spares uploads in flight and blobs not registered yet). ``dry_run``: what would go.
        """
        body = {"dry_run": dry_run, "grace_seconds": grace.total_seconds()}
        return GcReport.from_dict(self._json("POST", "/api/v1/gc", body=body))

    # -- known vulnerabilities ------------------------------------------------------------

    def load_advisories(self, path: str | os.PathLike[str]) -> DumpLoaded:
        """Load OSV's PyPI dump (``all.zip``, as downloaded) into the registry in place of
        the one in force (admins): every version's environment is matched against it, the
        live ones before this returns (their ``advisories`` check)."""
        from modelyard.domain.advisories import DumpLoaded  # the matcher's: when used

        local = Path(path)
        size = local.stat().st_size
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        with self._progress.task("loading", size) as advance:
            body = FileBody(local, size, advance)
            data = self._json("PUT", "/api/v1/advisories", content=body, headers=headers)
        return DumpLoaded.from_dict(data)

    def advisories(self) -> DumpSummary | None:
        """The OSV dump the registry matches environments against; None: none is loaded."""
        from modelyard.domain.advisories import DumpSummary

        dump = self._json("GET", "/api/v1/advisories")["dump"]
        return None if dump is None else DumpSummary.from_dict(dump)

    # -- journal --------------------------------------------------------------------------

    def events(self, *, after: int = 0, limit: int = 100, wait: float = 0) -> list[Event]:
        """The events after ``after`` that you may see. ``wait`` (seconds, at most 60): a
        long poll; when there is none yet, answer as soon as one is committed."""
        params: dict[str, Any] = {"after": after, "limit": limit}
        if wait:
            params["wait"] = wait
        data = self._json("GET", "/api/v1/events", params=params)
        return [Event.from_dict(e) for e in data["items"]]

    def stream_events(
        self,
        *,
        after: int | None = None,
        model: str | None = None,
        kinds: Sequence[str] | None = None,
    ) -> Iterator[Event]:
        """The events you may see as they are committed, without end: from ``after``
        (None: from now; 0: the whole journal), of one ``model`` or all, of the ``kinds``
        given (``version.stage``, a family ``alias.*``, or ``*``) or all.

        A dropped connection, or a server restarting, is resumed where it stopped (the
        stream's ``Last-Event-ID``): no event is missed or given twice.
        """
        for item in self._follow(after, model, kinds):
            if isinstance(item, Event):
                yield item

    def watch(
        self,
        reference: str,
        *,
        current: Version | None = None,
        on_connection: Callable[[bool], None] | None = None,
    ) -> Iterator[Version]:
        """Each version ``reference`` points at: the one it points at now (unless it is
        ``current``, already handled), then each one it moves to, as it moves.

        ``churn@production`` follows the stage (promotions, rollbacks), ``churn@champion``
        the alias, ``churn`` the newest version. A reference that points at nothing yet
        is waited for. Between two reads several moves may have happened: the version it
        points at then is the one given (a deployment wants where it is, not each step).
        ``on_connection(True)`` is called each time the event stream opens and
        ``on_connection(False)`` each time it drops: a follower may poll while it is down.
        """
        model = parse_reference(reference).model
        last = current
        # The stream is positioned before the reference is read, so a move between the
        # two arrives as an event: nothing is missed at the start or at a reconnection.
        for _ in self._follow(None, model, on_connection=on_connection):
            try:
                version = self.resolve(reference)
            except NotFound:
                continue  # nothing there (yet, or any more): wait for the next move
            if last is None or not same_version(version, last):
                last = version
                yield version

    def _follow(
        self,
        after: int | None,
        model: str | None,
        kinds: Sequence[str] | None = None,
        *,
        on_connection: Callable[[bool], None] | None = None,
    ) -> Iterator[int | Event]:
        """The event stream, reconnecting for ever: the position (seq) each time a
        connection is open, then its events. Errors other than an unreachable or
        unavailable registry (401, 403, 400) are raised."""
        position, delay = after, RECONNECT_FIRST
        while True:
            headers = {"Accept": "text/event-stream"}
            if position is not None:
                headers["Last-Event-ID"] = str(position)
            params = {"model": model, "kinds": ",".join(kinds) if kinds else None}
            params = {k: v for k, v in params.items() if v is not None}
            try:
                response = self._send(
                    "GET", "/api/v1/events/stream", params=params, headers=headers, stream=True
                )
                try:
                    for message in sse.messages(_chunks_of(response)):
                        if message.id is not None:
                            position = int(message.id)
                        if message.data:
                            yield Event.from_dict(json.loads(message.data))
                        elif position is not None:  # the stream's opening: where it starts
                            delay = RECONNECT_FIRST  # connected: the next drop starts over
                            if on_connection is not None:
                                on_connection(True)
                            yield position
                finally:
                    response.close()
            except Unavailable:
                pass  # unreachable or restarting: try again, later and later
            if on_connection is not None:
                on_connection(False)
            # Ended (the server's longest stream, or the server stopping) or refused: a
            # pause first, so that a server ending streams at once is not asked in a loop.
            time.sleep(delay)
            delay = min(delay * 2, RECONNECT_LAST)

    def journal_head(self) -> Checkpoint:
        """The journal's newest event, as the registry records it (admins): keep
        ``str(head)`` (``SEQ:HASH``) outside the registry, and pass it to
        ``verify_journal(checkpoint=...)`` later."""
        data = self._json("GET", "/api/v1/events/head")
        return Checkpoint(int(data["seq"]), str(data["hash"]))

    def verify_journal(
        self, *, checkpoint: Checkpoint | None = None, state: bool = False
    ) -> JournalReport:
        """Read the whole journal and recompute its hash chain here, trusting only the events.

        The chain must reach the head the registry recorded (read first: events appended
        since only extend it), which catches deleted newest events, and hold ``checkpoint``
        exactly. ``state``: also replay the journal and compare the models, versions and
        aliases it implies with those the registry serves, naming every difference.
        Needs an admin: others are shown only the events of their models, not the chain.
        """
        identity = self.whoami()
        if identity.registry_role is not Role.ADMIN or identity.model is not None:
            raise Forbidden(
                "verifying the journal reads all of it, which takes an admin token"
                f" ({identity.name} is not registry-wide admin)",
                permission=str(Permission.ADMIN),
            )
        for _ in range(3):
            head = self.journal_head()
            events = list(self._all_events())
            report = verify_chain(events, head=head, checkpoint=checkpoint)
            if not state or not report.ok:
                return report
            models = _every_item(lambda token: self.models(page_token=token, limit=1000))
            differences = compare(Projection.replay(events), models, self.search())
            if self.journal_head() == report.head:  # nothing changed while the tables were read
                if not differences:
                    return report
                reason = f"{len(differences)} difference(s) between the tables and the journal"
                return replace(report, ok=False, reason=reason, differences=tuple(differences))
        raise Conflict(
            "the registry kept changing while its tables were compared with the journal;"
            " try again when it is quieter",
            code="journal_moving",
        )

    def _all_events(self) -> Iterator[Event]:
        after = 0
        while True:
            page = self.events(after=after, limit=1000)
            yield from page
            if len(page) < 1000:
                return
            after = page[-1].seq

    # -- checks ---------------------------------------------------------------------------

    def report_check(
        self, reference: str, name: str, status: str, *, url: str | None = None
    ) -> CheckResult:
        """Report the result of check ``name`` on a version: pass, fail or pending, with a
        details ``url``. Takes the checker role; the latest report counts."""
        version = self.resolve(reference)
        path = f"{_checks_path(version)}/{_seg(name)}"
        return CheckResult.from_dict(self._json("PUT", path, body={"status": status, "url": url}))

    def accept_scan(self, reference: str, reason: str) -> CheckResult:
        """Accept the open findings of the registry's scan of a version, saying why (an
        admin): its ``scan`` check passes, and the journal keeps the reason."""
        path = f"{_checks_path(self.resolve(reference))}/scan/accept"
        return CheckResult.from_dict(self._json("POST", path, body={"reason": reason}))

    def checks(self, reference: str) -> list[CheckResult]:
        """The latest result of every check reported on a version, by name."""
        data = self._json("GET", _checks_path(self.resolve(reference)))
        return [CheckResult.from_dict(c) for c in data["items"]]

    # -- online metrics -------------------------------------------------------------------

    def log_online_metrics(
        self,
        reference: str,
        metrics: Mapping[str, float],
        *,
        window: tuple[datetime, datetime] | None = None,
        at: datetime | None = None,
    ) -> OnlineReport:
        """Report what a version does in production: values observed over ``window``
        (start, end), or at ``at``, else now. Takes the checker role (a serving or
        monitoring service account); policies and gates read the newest value of each
        key as ``online.metrics.K``. ``NAME/N`` costs one request, an alias two."""
        body: dict[str, Any] = {"metrics": dict(metrics)}
        if window is not None:
            start, end = window
            body["window"] = {
                "start": aware_iso(start, "window start"),
                "end": aware_iso(end, "window end"),
            }
        if at is not None:
            body["at"] = aware_iso(at, "time 'at'")
        path = self._online_path(reference)
        return OnlineReport.from_dict(self._json("POST", path, body=body))

    def online_metrics(
        self,
        reference: str,
        key: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        page_token: str | None = None,
        limit: int | None = None,
    ) -> OnlineSeries:
        """A page of a version's online series (oldest first by window end; ``key``,
        ``since`` and ``until`` narrow it) with the newest value of each metric."""
        params: dict[str, Any] = {"key": key, "page_token": page_token, "limit": limit}
        if since is not None:
            params["since"] = aware_iso(since, "'since' time")
        if until is not None:
            params["until"] = aware_iso(until, "'until' time")
        query = {k: v for k, v in params.items() if v is not None}
        data = self._json("GET", self._online_path(reference), params=query)
        return OnlineSeries.from_dict(data)

    def _online_path(self, reference: str) -> str:
        """``NAME/N`` is its own path; an alias or a stage is resolved first."""
        ref = parse_reference(reference)
        if ref.kind is RefKind.NUMBER:
            assert isinstance(ref.value, int)
            model, number = ref.model, ref.value
        else:
            version = self.resolve(reference)
            model, number = version.model, version.version
        return f"/api/v1/models/{_seg(model)}/versions/{number}/online-metrics"

    # -- lifecycle ------------------------------------------------------------------------

    def promote(
        self, reference: str, to: str, *, comment: str = "", override: str | None = None
    ) -> Promotion:
        """Promote into stage ``to``: executed at once, or (protected stage) a request opened.

        A policy that refuses raises PolicyFailed with every failed rule in ``details``.
        Admins may ``override`` with a reason.
        """
        version = self.resolve(reference)
        path = f"/api/v1/models/{_seg(version.model)}/versions/{version.version}/promote"
        body = {"to": to, "comment": comment, "override": override}
        return Promotion.from_dict(self._json("POST", path, body=body))

    def requests(
        self, model: str | None = None, *, status: str = "open"
    ) -> list[TransitionRequest]:
        """The promotion queue: open requests (``status="all"`` for every one)."""
        params = {"status": status, **({"model": model} if model else {})}
        data = self._json("GET", "/api/v1/requests", params=params)
        return [TransitionRequest.from_dict(r) for r in data["items"]]

    def request(self, request_id: int) -> TransitionRequest:
        """One promotion request, with its approvals."""
        return TransitionRequest.from_dict(self._json("GET", f"/api/v1/requests/{request_id}"))

    def approve(self, request_id: int, *, comment: str = "") -> TransitionRequest:
        return self._decide(request_id, "approve", comment)

    def reject(self, request_id: int, *, comment: str = "") -> TransitionRequest:
        return self._decide(request_id, "reject", comment)

    def cancel(self, request_id: int, *, comment: str = "") -> TransitionRequest:
        return self._decide(request_id, "cancel", comment)

    def rollback(self, name: str, *, stage: str = "production", comment: str = "") -> Version:
        """Put back the version that held ``stage`` before the current one."""
        body = {"stage": stage, "comment": comment}
        path = f"/api/v1/models/{_seg(name)}/rollback"
        return Version.from_dict(self._json("POST", path, body=body))

    def _decide(self, request_id: int, decision: str, comment: str) -> TransitionRequest:
        path = f"/api/v1/requests/{request_id}/{decision}"
        return TransitionRequest.from_dict(self._json("POST", path, body={"comment": comment}))

    def archive(self, reference: str) -> Version:
        return self._version_action(reference, "archive")

    def restore(self, reference: str) -> Version:
        """Bring an archived version back to the first stage."""
        return self._version_action(reference, "restore")

    def _version_action(self, reference: str, action: str) -> Version:
        version = self.resolve(reference)
        path = f"/api/v1/models/{_seg(version.model)}/versions/{version.version}/{action}"
        return Version.from_dict(self._json("POST", path))

    def delete_version(self, reference: str, *, hard: bool = False) -> None:
        """Soft delete (hidden, kept), or with ``hard`` erase (admins)."""
        version = self.resolve(reference)
        path = f"/api/v1/models/{_seg(version.model)}/versions/{version.version}"
        self._send("DELETE", path, params={"hard": hard})

    def history(self, name: str) -> list[Event]:
        """Stage moves, alias changes, requests, approvals and policies of a model."""
        data = self._json("GET", f"/api/v1/models/{_seg(name)}/history")
        return [Event.from_dict(e) for e in data["items"]]

    def policy(self, model: str | None = None) -> dict[str, Any]:
        """The policy in force for ``model`` (or the registry's) and its stages."""
        data: dict[str, Any] = self._json("GET", _policy_path(model))
        return data

    def apply_policy(self, model: str | None, text: str) -> dict[str, Any]:
        """Store a new version of a model's (or, with None, the registry's) policy (YAML)."""
        data: dict[str, Any] = self._json("PUT", _policy_path(model), body={"text": text})
        return data

    # -- identity and access --------------------------------------------------------------

    def whoami(self) -> Identity:
        """Who this connection acts as, its registry-wide role, teams and token limits."""
        return Identity.from_dict(self._json("GET", "/api/v1/whoami"))

    def create_user(self, name: str, *, description: str = "") -> Principal:
        return self._create_principal(PrincipalKind.USER, name, description)

    def create_service_account(self, name: str, *, description: str = "") -> Principal:
        """An identity for a pipeline or CI job; give it a token with ``create_token``."""
        return self._create_principal(PrincipalKind.SERVICE_ACCOUNT, name, description)

    def create_team(self, name: str, *, description: str = "") -> Principal:
        return self._create_principal(PrincipalKind.TEAM, name, description)

    def _create_principal(self, kind: PrincipalKind, name: str, description: str) -> Principal:
        body = {"name": name, "description": description}
        return Principal.from_dict(self._json("POST", f"/api/v1/{kind.collection}", body=body))

    def users(self) -> list[Principal]:
        return self._principals(PrincipalKind.USER)

    def service_accounts(self) -> list[Principal]:
        return self._principals(PrincipalKind.SERVICE_ACCOUNT)

    def teams(self) -> list[Principal]:
        return self._principals(PrincipalKind.TEAM)

    def _principals(self, kind: PrincipalKind) -> list[Principal]:
        data = self._json("GET", f"/api/v1/{kind.collection}")
        return [Principal.from_dict(p) for p in data["items"]]

    def set_password(self, user: str, password: str) -> None:
        """Set a user's password for the web UI (your own, or as an admin anyone's); it ends
        their web sessions. At least 12 characters; the registry keeps only a hash."""
        path = f"/api/v1/{PrincipalKind.USER.collection}/{_seg(user)}/password"
        self._send("PUT", path, body={"password": password})

    def disable_user(self, name: str) -> None:
        """Disable a user and revoke its tokens; its name stays in the history."""
        self._send("DELETE", f"/api/v1/{PrincipalKind.USER.collection}/{_seg(name)}")

    def disable_service_account(self, name: str) -> None:
        self._send("DELETE", f"/api/v1/{PrincipalKind.SERVICE_ACCOUNT.collection}/{_seg(name)}")

    def delete_team(self, name: str) -> None:
        self._send("DELETE", f"/api/v1/{PrincipalKind.TEAM.collection}/{_seg(name)}")

    def add_team_member(self, team: str, member: str) -> Principal:
        return self._membership("PUT", team, member)

    def remove_team_member(self, team: str, member: str) -> Principal:
        return self._membership("DELETE", team, member)

    def _membership(self, method: str, team: str, member: str) -> Principal:
        path = f"/api/v1/teams/{_seg(team)}/members/{_seg(member)}"
        return Principal.from_dict(self._json(method, path))

    def create_token(
        self,
        *,
        principal: str | None = None,
        name: str = "",
        expires: datetime | timedelta | None = None,
        model: str | None = None,
        read_only: bool = False,
    ) -> NewToken:
        """A token for yourself or (admins) ``principal``; ``.token`` is the secret, shown once.

        ``expires``: a moment or a duration from now. ``model``: the token works on that
        model only. ``read_only``: it can read but never change anything.
        """
        if isinstance(expires, timedelta):
            expires = datetime.now(UTC) + expires
        body = {
            "principal": principal,
            "name": name,
            "expires_at": expires.isoformat() if expires else None,
            "model": model,
            "read_only": read_only,
        }
        return NewToken.from_dict(self._json("POST", "/api/v1/tokens", body=body))

    def tokens(self, principal: str | None = None) -> list[Token]:
        """Your tokens; admins may name anyone, or ``"*"`` for everyone's."""
        params = {"principal": principal} if principal else None
        data = self._json("GET", "/api/v1/tokens", params=params)
        return [Token.from_dict(t) for t in data["items"]]

    def revoke_token(self, token_id: str) -> Token:
        return Token.from_dict(self._json("DELETE", f"/api/v1/tokens/{_seg(token_id)}"))

    def grant(
        self,
        role: str | Role,
        principal: str,
        *,
        model: str | None = None,
        kind: str | PrincipalKind | None = None,
    ) -> Grant:
        """Grant ``role`` on ``model``, or registry-wide without one. ``kind`` is checked."""
        role = role if isinstance(role, Role) else Role.parse(role)
        parsed = PrincipalKind.parse(kind)
        body = {"role": role.label, "kind": parsed.value if parsed else None}
        return Grant.from_dict(self._json("PUT", _grant_path(principal, model), body=body))

    def revoke(
        self,
        principal: str,
        *,
        model: str | None = None,
        kind: str | PrincipalKind | None = None,
    ) -> None:
        parsed = PrincipalKind.parse(kind)
        params = {"kind": parsed.value} if parsed else None
        self._send("DELETE", _grant_path(principal, model), params=params)

    def grants(self, model: str | None = None) -> list[Grant]:
        """Who holds which role on ``model`` (with the registry-wide roles), or all grants."""
        path = f"/api/v1/models/{_seg(model)}/grants" if model else "/api/v1/grants"
        return [Grant.from_dict(g) for g in self._json("GET", path)["items"]]

    def protect_aliases(self, model: str, aliases: list[str]) -> Model:
        """Set which aliases only maintainers may move (default: champion, production)."""
        path = f"/api/v1/models/{_seg(model)}/protected-aliases"
        return Model.from_dict(self._json("PUT", path, body={"aliases": aliases}))

    # -- webhooks -------------------------------------------------------------------------

    def create_webhook(
        self,
        url: str,
        events: Sequence[str],
        *,
        model: str | None = None,
        description: str = "",
    ) -> NewSubscription:
        """Subscribe ``url`` to ``events`` (kinds such as ``version.stage``, families such
        as ``version.*``, or ``*``) of ``model``, or (admins) of every model.

        ``.secret`` signs every delivery (Standard Webhooks); it is shown this once.
        """
        body = {"url": url, "events": list(events), "model": model, "description": description}
        return NewSubscription.from_dict(self._json("POST", "/api/v1/webhooks", body=body))

    def webhooks(self, model: str | None = None) -> list[Subscription]:
        """The webhooks you may manage (of ``model`` only, when given)."""
        params = {"model": model} if model else None
        data = self._json("GET", "/api/v1/webhooks", params=params)
        return [Subscription.from_dict(s) for s in data["items"]]

    def webhook(self, webhook_id: int) -> Subscription:
        return Subscription.from_dict(self._json("GET", _webhook_path(webhook_id)))

    def update_webhook(
        self,
        webhook_id: int,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | None = None,
    ) -> Subscription:
        """Change what is given: the URL, the events, the description."""
        body = {
            "url": url,
            "events": list(events) if events is not None else None,
            "description": description,
        }
        return Subscription.from_dict(self._json("PATCH", _webhook_path(webhook_id), body=body))

    def disable_webhook(self, webhook_id: int, reason: str = "") -> Subscription:
        """Stop deliveries until ``enable_webhook``."""
        path = _webhook_path(webhook_id, "disable")
        return Subscription.from_dict(self._json("POST", path, body={"reason": reason}))

    def enable_webhook(self, webhook_id: int) -> Subscription:
        return Subscription.from_dict(self._json("POST", _webhook_path(webhook_id, "enable")))

    def rotate_webhook_secret(self, webhook_id: int) -> NewSubscription:
        """A new signing secret, shown this once; the old one signs nothing from now on."""
        path = _webhook_path(webhook_id, "rotate-secret")
        return NewSubscription.from_dict(self._json("POST", path))

    def delete_webhook(self, webhook_id: int) -> None:
        """Unsubscribe; the delivery log goes too."""
        self._send("DELETE", _webhook_path(webhook_id))

    def test_webhook(self, webhook_id: int) -> ProbeResult:
        """Send a signed ``webhook.test`` now: the answer's status and latency (never its
        body); ``error_class`` says why there was no 2xx."""
        return ProbeResult.from_dict(self._json("POST", _webhook_path(webhook_id, "test")))

    def webhook_deliveries(
        self,
        webhook_id: int,
        *,
        limit: int | None = None,
        before: int | None = None,
        first_seq: int | None = None,
        last_seq: int | None = None,
    ) -> list[Delivery]:
        """The webhook's deliveries, newest first, with their attempts (``before``: a
        delivery's id, for older ones; ``first_seq``/``last_seq``: the events')."""
        params = {
            key: value
            for key, value in (
                ("limit", limit),
                ("before", before),
                ("first_seq", first_seq),
                ("last_seq", last_seq),
            )
            if value is not None
        }
        data = self._json("GET", _webhook_path(webhook_id, "deliveries"), params=params)
        return [Delivery.from_dict(d) for d in data["items"]]

    def redeliver_webhook(
        self, webhook_id: int, first_seq: int, last_seq: int | None = None
    ) -> int:
        """Send the event ``first_seq`` (to ``last_seq``) again; how many were queued."""
        body = {"first_seq": first_seq, "last_seq": last_seq}
        return int(self._json("POST", _webhook_path(webhook_id, "redeliver"), body=body)["queued"])

    # -- champion vs challenger -----------------------------------------------------------

    def compare(self, a: str, b: str) -> Comparison:
        """Two versions side by side (any references, even of different models): metrics
        with deltas (b - a), params, lineage, environment and files that differ."""
        return Comparison.from_dict(self._json("GET", "/api/v1/compare", params={"a": a, "b": b}))

    def gate(
        self,
        challenger: str,
        *,
        against: str,
        metrics: Sequence[str],
        min_delta: float = 0.0,
        lower_is_better: bool = False,
    ) -> GateResult:
        """Whether ``challenger`` beats ``against`` by at least ``min_delta`` on every metric.

        ``against``: an alias or stage of the challenger's model ("production") or any
        reference. Each metric is ``NAME`` (higher is better) or ``NAME:lower``;
        ``lower_is_better`` only turns around those named without a direction. A missing
        metric fails; ``GateResult.passed`` is the verdict.
        """
        params = {
            "challenger": challenger,
            "against": against,
            "metric": list(metrics),
            "min_delta": min_delta,
            "lower_is_better": lower_is_better,
        }
        return GateResult.from_dict(self._json("GET", "/api/v1/gate", params=params))


def _every_item(fetch: Callable[[str | None], Page[T]]) -> Iterator[T]:
    """Every item of a listing, fetching page after page (``fetch(page_token)``)."""
    token: str | None = None
    while True:
        page = fetch(token)
        yield from page.items
        if page.next_page_token is None:
            return
        token = page.next_page_token


def _registration(spec: NewVersion, inline: dict[str, bytes]) -> dict[str, Any]:
    """The body that registers ``spec``; ``inline`` holds the bytes of small files by digest."""
    return {
        "files": _file_items(spec.files, inline),
        "params": spec.params,
        "metrics": spec.metrics,
        "tags": spec.tags,
        "description": spec.description,
        "dataset": spec.dataset.as_dict() if spec.dataset else None,
        "source": spec.source.as_dict() if spec.source else None,
        "environment": spec.environment.as_dict() if spec.environment else None,
        "run": spec.run,
        "framework": spec.framework,
        "format": spec.format,
        **({"origin": spec.origin.as_dict()} if spec.origin else {}),
        **({"number": spec.number} if spec.number is not None else {}),
    }


def _file_items(entries: Sequence[FileEntry], inline: dict[str, bytes]) -> list[dict[str, object]]:
    """Files (or attachments) as a request names them, small ones with their bytes."""
    items = []
    for entry in entries:
        item: dict[str, object] = entry.as_dict()
        if entry.sha256 in inline:
            item["content"] = base64.b64encode(inline[entry.sha256]).decode("ascii")
        items.append(item)
    return items


def _card_text(card: str | os.PathLike[str]) -> str:
    """A card given as text (a str) or as a file to read (a path)."""
    if isinstance(card, str):
        return card
    try:
        return Path(card).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{os.fspath(card)} is not UTF-8 text") from None


def _no_attachment(version: Version, path: str) -> NotFound:
    return NotFound(f"{version.reference} has no attachment {path!r}", code="attachment_not_found")


def _version_path(version: Version) -> str:
    return f"/api/v1/models/{_seg(version.model)}/versions/{version.version}"


def _seg(value: str, safe: str = "") -> str:
    """Quote a path segment so that user input can never change the URL's shape."""
    return quote(value, safe=safe)


def _checks_path(version: Version) -> str:
    return f"/api/v1/models/{_seg(version.model)}/versions/{version.version}/checks"


def _webhook_path(webhook_id: int, action: str = "") -> str:
    path = f"/api/v1/webhooks/{int(webhook_id)}"
    return f"{path}/{action}" if action else path


def _grant_path(principal: str, model: str | None) -> str:
    if model is None:
        return f"/api/v1/grants/{_seg(principal)}"
    return f"/api/v1/models/{_seg(model)}/grants/{_seg(principal)}"


def _policy_path(model: str | None) -> str:
    return f"/api/v1/models/{_seg(model)}/policy" if model else "/api/v1/policy"


def _query(
    filter: str | None, order_by: str | None, page_token: str | None, limit: int | None
) -> dict[str, Any]:
    params = {"filter": filter, "order_by": order_by, "page_token": page_token, "limit": limit}
    return {k: v for k, v in params.items() if v is not None}


def _patch_body(description: str | None, tags: dict[str, str | None] | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if description is not None:
        body["description"] = description
    if tags is not None:
        body["tags"] = tags
    return body


def _encode_query(params: Mapping[str, Any]) -> str:
    """Lists repeat the key, booleans are 'true'/'false', None is empty."""
    pairs = []
    for key, value in params.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, bool):
                item = "true" if item else "false"
            pairs.append((key, "" if item is None else str(item)))
    return urlencode(pairs)


def _error_from(status: int, body: bytes) -> ModelyardError:
    try:
        problem = json.loads(body)
        if not isinstance(problem, dict):
            raise ValueError
    except ValueError:
        problem = {"detail": f"HTTP {status}: {body[:200].decode(errors='replace')}"}
    return error_from_problem(status, problem)


def model_cache(version: Version) -> Path:
    """Where ``load_model`` keeps a version: under the cache directory, by its manifest
    digest, so every reference to one content shares one verified copy."""
    return cache_dir() / "models" / version.manifest_digest.removeprefix("sha256:")


def same_version(a: Version, b: Version) -> bool:
    """Whether a watcher has handled ``b`` already when a reference points at ``a``: a model
    deleted and made again numbers from 1 anew, so the number alone is not enough."""
    return (a.reference, a.manifest_digest) == (b.reference, b.manifest_digest)


def _chunks_of(response: Response) -> Iterator[bytes]:
    return response.chunks if response.chunks is not None else iter([response.body])


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _collect(root: Path) -> dict[str, Path]:
    """The files to register, keyed by their path inside the version ('/'-separated)."""
    if not root.exists():
        raise InvalidInput(f"{root} does not exist")
    if root.is_file():
        return {validate_file_path(root.name): root}
    base = root.resolve()
    files: dict[str, Path] = {}
    for directory, subdirs, names in os.walk(root):
        subdirs.sort()
        for name in sorted(names):
            local = Path(directory) / name
            if local.is_symlink() and not local.resolve().is_relative_to(base):
                raise InvalidPath(f"{local} is a symlink that points outside {root}")
            if not local.is_file():
                continue
            rel = local.relative_to(root).as_posix()
            files[validate_file_path(rel)] = local
    if not files:
        raise InvalidInput(f"{root} contains no files")
    return files


def _collect_all(roots: Sequence[str | os.PathLike[str]]) -> dict[str, Path]:
    """The files of several files or directories (each as ``_collect`` names them), as one
    set of paths; two that would take one path are refused."""
    files: dict[str, Path] = {}
    for root in roots:
        for rel, local in _collect(Path(root)).items():
            if rel in files:
                raise InvalidPath(f"{local} and {files[rel]} would both be attached as {rel!r}")
            files[rel] = local
    return files


def _read_key_file(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{os.fspath(path)}: {exc.strerror}") from None


def _inside(root: Path, relative: str) -> Path:
    """Where a version's file goes under ``root``; refuses any path that would escape it."""
    validate_file_path(relative)
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise InvalidPath(f"refusing to write {relative!r} outside {root}")
    return target


def _write_verified(target: Path, entry: FileEntry, response: Response, advance: Advance) -> None:
    """Write to a temporary name, verify the sha256, then rename into place.

    This thread receives (straight into the pipeline's buffers where the transport can)
    while a ``Pipeline`` hashes and writes on threads of its own, so a download costs
    about the slowest of the three, not their sum.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    digest = hashlib.sha256()
    sink = FileSink(partial)
    pipeline = Pipeline([digest.update], writer=sink.write_at)
    try:
        try:
            if response.readinto is not None:
                read = response.readinto

                def counted(view: memoryview) -> int:
                    n = read(view)
                    advance(n)
                    return n

                pipeline.receive(counted, entry.size)
            else:
                for chunk in _chunks_of(response):
                    pipeline.write(chunk)
                    advance(len(chunk))
        except BaseException:
            pipeline.abort()
            raise
        pipeline.close()
        sink.close()
        if digest.hexdigest() != entry.sha256:
            raise DigestMismatch(
                f"{entry.path}: downloaded bytes hash to sha256:{digest.hexdigest()},"
                f" expected sha256:{entry.sha256}; nothing was written"
            )
        os.replace(partial, target)
    finally:
        sink.close()
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
