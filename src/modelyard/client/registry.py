"""The Python SDK: ``modelyard.connect(url_or_directory)`` returns a ``Registry``.

A URL talks to a server over REST; a directory path opens the same registry in-process,
with no server. Both behave identically because everything here sits on a Transport.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from modelyard.client.capture import capture_environment, capture_source
from modelyard.client.credentials import token_for
from modelyard.client.hashing import CHUNK, HashCache, file_stamp
from modelyard.client.http import HttpTransport
from modelyard.client.progress import NoProgress, Progress
from modelyard.client.transport import Advance, Transport
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
from modelyard.domain.comparison import Comparison, GateResult
from modelyard.domain.errors import DigestMismatch, Forbidden, InvalidInput, InvalidPath
from modelyard.domain.journal import JournalReport, verify_chain
from modelyard.domain.lifecycle import Promotion, TransitionRequest
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import (
    DatasetRef,
    Environment,
    Event,
    Model,
    Page,
    SourceRef,
    Version,
)
from modelyard.domain.names import validate_file_path
from modelyard.domain.versions import NewVersion
from modelyard.transfer import FileSink, Pipeline

# Matched to the server's limits (service.registry.MAX_INLINE_FILE / MAX_INLINE_TOTAL),
# with headroom in the total for base64 and the rest of the JSON body.
INLINE_FILE_LIMIT = 64 * 1024
INLINE_TOTAL_LIMIT = 1024 * 1024


def connect(
    target: str | os.PathLike[str],
    *,
    token: str | None = None,
    progress: Progress | None = None,
    database_url: str | None = None,
) -> Registry:
    """Open a registry: an ``http(s)://`` URL of a server, or a local data directory.

    Over HTTP the token is ``token``, else $MODELYARD_TOKEN, else what ``modelyard login``
    saved for that URL. A directory needs none: whoever can open it owns the registry.
    """
    text = os.fspath(target)
    transport: Transport
    if text.startswith(("http://", "https://")):
        transport = HttpTransport(text, token=token or token_for(text))
    else:
        # Imported here so that HTTP-only users never load the server-side stack.
        from modelyard.client.local import LocalTransport

        transport = LocalTransport(Path(text), database_url)
    return Registry(transport, progress=progress)


class Registry:
    def __init__(self, transport: Transport, *, progress: Progress | None = None) -> None:
        self._transport = transport
        self._progress: Progress = progress or NoProgress()
        self._hashes = HashCache()

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
    ) -> Version:
        """Register the file or directory at ``path`` as the next version of ``name``.

        Only files the registry does not already hold are uploaded. ``source`` (git) and
        ``environment`` (Python, platform, packages) are captured ("auto") unless given,
        or left out with None.
        """
        files = _collect(Path(path))
        entries, inline = self._send_files(files)
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
        )
        return self._transport.register_version(name, spec, inline)

    def _send_files(self, files: dict[str, Path]) -> tuple[list[FileEntry], dict[str, bytes]]:
        """Get every file's bytes to the registry at the least cost; return the manifest.

        - Small files ride inline in the registration request.
        - Files whose digest the hash cache knows: ask which the registry lacks, send those.
        - Other files: hash while sending, in one pass; the registry names the blob and the
          name must match our own hash.
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
        missing = set(self._transport.missing_blobs(known_digests)) if known_digests else set()
        to_send = {d: (p, n) for p, n, d in known.values() if d in missing}
        total = sum(n for _, n in to_send.values()) + sum(n for _, n, _ in unknown.values())
        with self._progress.task("uploading", total) as advance:
            for digest, (local, size) in to_send.items():
                self._transport.upload_blob(digest, _read_chunks(local, advance), size)
            for rel, (local, size, stamp) in unknown.items():
                hasher = hashlib.sha256()
                chunks = _read_chunks(local, advance, hasher)
                stored = self._transport.upload_blob(None, chunks, size)
                if stored != hasher.hexdigest():
                    raise DigestMismatch(
                        f"{rel}: the registry stored sha256:{stored} but the file hashes to"
                        f" sha256:{hasher.hexdigest()}; was it modified while uploading?"
                    )
                self._hashes.store(local, stamp, stored)
                entries[rel] = FileEntry(rel, size, stored)
        for rel, (_, size, digest) in known.items():
            entries[rel] = FileEntry(rel, size, digest)
        return [entries[rel] for rel in files], inline

    # -- reading --------------------------------------------------------------------------

    def resolve(self, reference: str, *, as_of: datetime | None = None) -> Version:
        """'churn', 'churn/42', 'churn@champion' or 'churn@sha256:...' -> the version.

        ``as_of``: what the reference pointed to at that moment (from the journal).
        """
        return self._transport.resolve(reference, as_of)

    def download(self, reference: str | Version, dest: str | os.PathLike[str]) -> Version:
        """Write every file of the version under ``dest``, verified and atomically.

        Files already present with the right content are left alone.
        """
        version = reference if isinstance(reference, Version) else self.resolve(reference)
        root = Path(dest)
        root.mkdir(parents=True, exist_ok=True)
        targets = {entry.path: _inside(root, entry.path) for entry in version.files}
        todo = [e for e in version.files if not self._already_there(targets[e.path], e)]
        total = sum(e.size for e in todo)
        with self._progress.task("downloading", total) as advance:
            for entry in todo:
                chunks = self._transport.read_file(version, entry.path, entry.sha256)
                _write_verified(targets[entry.path], entry, chunks, advance)
        return version

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
        return self._transport.list_versions(name, filter, order_by, page_token, limit)

    def search(
        self, filter: str | None = None, *, order_by: str | None = None, limit: int | None = None
    ) -> Iterator[Version]:
        """Every version matching ``filter``, across models, fetching page after page."""
        token: str | None = None
        while True:
            page = self.versions(filter=filter, order_by=order_by, page_token=token, limit=limit)
            yield from page.items
            if page.next_page_token is None:
                return
            token = page.next_page_token

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
        return self._transport.update_version(version.model, version.version, description, patch)

    # -- models ---------------------------------------------------------------------------

    def create_model(
        self, name: str, *, description: str = "", tags: Mapping[str, str] | None = None
    ) -> Model:
        return self._transport.create_model(name, description, dict(tags or {}))

    def model(self, name: str) -> Model:
        return self._transport.get_model(name)

    def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: Mapping[str, str | None] | None = None,
    ) -> Model:
        patch = dict(tags) if tags is not None else None
        return self._transport.update_model(name, description, patch)

    def delete_model(self, name: str) -> None:
        self._transport.delete_model(name)

    def models(
        self,
        *,
        filter: str | None = None,
        order_by: str | None = None,
        page_token: str | None = None,
        limit: int | None = None,
    ) -> Page[Model]:
        return self._transport.list_models(filter, order_by, page_token, limit)

    # -- aliases --------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int) -> Version:
        """Point ``name@alias`` at ``version`` (creates or moves the alias)."""
        return self._transport.set_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        self._transport.delete_alias(name, alias)

    # -- journal --------------------------------------------------------------------------

    def events(self, *, after: int = 0, limit: int = 100) -> list[Event]:
        return self._transport.events(after, limit)

    def verify_journal(self) -> JournalReport:
        """Read the whole journal and recompute its hash chain here, trusting only the events.

        Needs an admin: others are shown only the events of their models, not the chain.
        """
        identity = self.whoami()
        if identity.registry_role is not Role.ADMIN or identity.model is not None:
            raise Forbidden(
                "verifying the journal reads all of it, which takes an admin token"
                f" ({identity.name} is not registry-wide admin)",
                permission=str(Permission.ADMIN),
            )
        return verify_chain(self._all_events())

    def _all_events(self) -> Iterator[Event]:
        after = 0
        while True:
            page = self._transport.events(after, 1000)
            yield from page
            if len(page) < 1000:
                return
            after = page[-1].seq

    # -- lifecycle ------------------------------------------------------------------------

    def promote(
        self, reference: str, to: str, *, comment: str = "", override: str | None = None
    ) -> Promotion:
        """Promote into stage ``to``: executed at once, or (protected stage) a request opened.

        A policy that refuses raises PolicyFailed with every failed rule in ``details``.
        Admins may ``override`` with a reason.
        """
        version = self.resolve(reference)
        return self._transport.promote(version.model, version.version, to, comment, override)

    def requests(
        self, model: str | None = None, *, status: str = "open"
    ) -> list[TransitionRequest]:
        """The promotion queue: open requests (``status="all"`` for every one)."""
        return self._transport.requests(model, status)

    def approve(self, request_id: int, *, comment: str = "") -> TransitionRequest:
        return self._transport.decide(request_id, "approve", comment)

    def reject(self, request_id: int, *, comment: str = "") -> TransitionRequest:
        return self._transport.decide(request_id, "reject", comment)

    def cancel(self, request_id: int, *, comment: str = "") -> TransitionRequest:
        return self._transport.decide(request_id, "cancel", comment)

    def rollback(self, name: str, *, stage: str = "production", comment: str = "") -> Version:
        """Put back the version that held ``stage`` before the current one."""
        return self._transport.rollback(name, stage, comment)

    def archive(self, reference: str) -> Version:
        version = self.resolve(reference)
        return self._transport.archive(version.model, version.version, False)

    def restore(self, reference: str) -> Version:
        """Bring an archived version back to the first stage."""
        version = self.resolve(reference)
        return self._transport.archive(version.model, version.version, True)

    def delete_version(self, reference: str, *, hard: bool = False) -> None:
        """Soft delete (hidden, kept), or with ``hard`` erase (admins)."""
        version = self.resolve(reference)
        self._transport.delete_version(version.model, version.version, hard)

    def history(self, name: str) -> list[Event]:
        """Stage moves, alias changes, requests, approvals and policies of a model."""
        return self._transport.history(name)

    def policy(self, model: str | None = None) -> dict[str, Any]:
        """The policy in force for ``model`` (or the registry's) and its stages."""
        return self._transport.policy(model)

    def apply_policy(self, model: str | None, text: str) -> dict[str, Any]:
        """Store a new version of a model's (or, with None, the registry's) policy (YAML)."""
        return self._transport.apply_policy(model, text)

    # -- identity and access --------------------------------------------------------------

    def whoami(self) -> Identity:
        """Who this connection acts as, its registry-wide role, teams and token limits."""
        return self._transport.whoami()

    def create_user(self, name: str, *, description: str = "") -> Principal:
        return self._transport.create_principal(PrincipalKind.USER, name, description)

    def create_service_account(self, name: str, *, description: str = "") -> Principal:
        """An identity for a pipeline or CI job; give it a token with ``create_token``."""
        return self._transport.create_principal(PrincipalKind.SERVICE_ACCOUNT, name, description)

    def create_team(self, name: str, *, description: str = "") -> Principal:
        return self._transport.create_principal(PrincipalKind.TEAM, name, description)

    def users(self) -> list[Principal]:
        return self._transport.principals(PrincipalKind.USER)

    def service_accounts(self) -> list[Principal]:
        return self._transport.principals(PrincipalKind.SERVICE_ACCOUNT)

    def teams(self) -> list[Principal]:
        return self._transport.principals(PrincipalKind.TEAM)

    def disable_user(self, name: str) -> None:
        """Disable a user and revoke its tokens; its name stays in the history."""
        self._transport.remove_principal(PrincipalKind.USER, name)

    def disable_service_account(self, name: str) -> None:
        self._transport.remove_principal(PrincipalKind.SERVICE_ACCOUNT, name)

    def delete_team(self, name: str) -> None:
        self._transport.remove_principal(PrincipalKind.TEAM, name)

    def add_team_member(self, team: str, member: str) -> Principal:
        return self._transport.set_membership(team, member, True)

    def remove_team_member(self, team: str, member: str) -> Principal:
        return self._transport.set_membership(team, member, False)

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
        return self._transport.create_token(principal, name, expires, model, read_only)

    def tokens(self, principal: str | None = None) -> list[Token]:
        """Your tokens; admins may name anyone, or ``"*"`` for everyone's."""
        return self._transport.tokens(principal)

    def revoke_token(self, token_id: str) -> Token:
        return self._transport.revoke_token(token_id)

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
        return self._transport.set_grant(principal, role, model, PrincipalKind.parse(kind))

    def revoke(
        self,
        principal: str,
        *,
        model: str | None = None,
        kind: str | PrincipalKind | None = None,
    ) -> None:
        self._transport.revoke_grant(principal, model, PrincipalKind.parse(kind))

    def grants(self, model: str | None = None) -> list[Grant]:
        """Who holds which role on ``model`` (with the registry-wide roles), or all grants."""
        return self._transport.grants(model)

    def protect_aliases(self, model: str, aliases: list[str]) -> Model:
        """Set which aliases only maintainers may move (default: champion, production)."""
        return self._transport.set_protected_aliases(model, aliases)

    # -- champion vs challenger -----------------------------------------------------------

    def compare(self, a: str, b: str) -> Comparison:
        """Two versions side by side (any references, even of different models): metrics
        with deltas (b - a), params, lineage, environment and files that differ."""
        return self._transport.compare(a, b)

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
        reference. A missing metric fails; ``GateResult.passed`` is the verdict.
        """
        return self._transport.gate(challenger, against, list(metrics), min_delta, lower_is_better)


def _read_chunks(path: Path, advance: Advance, hasher: Any = None) -> Iterator[bytes]:
    """A file in 1 MiB chunks, reporting progress and optionally feeding a hash."""
    with path.open("rb", buffering=0) as handle:
        while chunk := handle.read(CHUNK):
            if hasher is not None:
                hasher.update(chunk)
            advance(len(chunk))
            yield chunk


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


def _inside(root: Path, relative: str) -> Path:
    """Where a version's file goes under ``root``; refuses any path that would escape it."""
    validate_file_path(relative)
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise InvalidPath(f"refusing to write {relative!r} outside {root}")
    return target


def _write_verified(
    target: Path, entry: FileEntry, chunks: Iterator[bytes], advance: Advance
) -> None:
    """Write to a temporary name, verify the sha256, then rename into place.

    This thread receives while a ``Pipeline`` hashes and writes on two others, so a
    download costs about the slowest of the three, not their sum.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    digest = hashlib.sha256()
    sink = FileSink(partial)
    pipeline = Pipeline([digest.update, sink.write])
    try:
        try:
            for chunk in chunks:
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
