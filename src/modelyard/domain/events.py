"""The catalogue of journal events: one typed definition per kind, and the only way in.

The journal is read by the CLI, the REST API, history and time travel, ``journal verify
--state`` and (later) webhooks and the UI, so each kind is defined once here, as a frozen
dataclass, and everyone encodes and decodes through it. Every event has a subject (what it
is about, as a string: ``churn``, ``churn/3``, ``churn@champion``, ``alice``, ``registry``)
and a payload that says what changed in one shape: ``before`` and ``after`` where a state
changes (absent for creation and deletion respectively), plus the context of the change.

The fields of a definition are its subject's parts (``model``, ``version``, ...) and then
its payload's keys, every one written in every event. A field added to an existing kind
needs a default, so that events written before it still decode (the chain covers their
payloads as they were written).

Adding a kind:

1. a dataclass below, subclassing the subject it is about, with ``kind`` and its fields,
   listed in ``CATALOGUE``;
2. its section in ``docs/events.md`` (``tests/test_events.py`` checks that both agree);
3. ``tx.append_event(caller, TheEvent(...), now=now)`` in the service, and a step in
   ``tests/test_events.py::test_every_kind_is_appended`` that makes the service append it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NotRequired, TypedDict, TypeVar

from modelyard.domain.models import Event, Version, environment_key

# -- the shapes that payloads share -----------------------------------------------------------


class ModelState(TypedDict):
    """A model's editable metadata."""

    description: str
    tags: dict[str, str]


class ModelChange(TypedDict, total=False):
    """The fields of a model or version that an edit changed (only those)."""

    description: str
    tags: dict[str, str]


class DatasetState(TypedDict):
    name: str
    version: str | None
    digest: str | None


class SourceState(TypedDict):
    repo: str | None
    commit: str | None
    branch: str | None
    dirty: bool | None


class VersionState(TypedDict):
    """What a registration recorded; enough to replay the version's metadata.

    Registrations journaled before these were recorded lack the ``NotRequired`` keys.
    """

    manifest_digest: str
    files: int
    size: int
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    stage: str
    description: NotRequired[str]
    framework: NotRequired[str | None]
    format: NotRequired[str | None]
    dataset: NotRequired[DatasetState | None]
    source: NotRequired[SourceState | None]
    run: NotRequired[str | None]
    # The environment's key: the sha256 of its canonical JSON (environment_key).
    environment: NotRequired[str | None]
    # Where an import found it (Origin.as_dict), when it came from another registry.
    origin: NotRequired[dict[str, Any]]


class PrincipalState(TypedDict):
    kind: str
    description: str


class CheckState(TypedDict):
    """A check's result as reported; ``reason``: why an admin accepted scan findings."""

    status: str
    url: str | None
    reason: NotRequired[str]


class AttachedState(TypedDict):
    """An attachment as attached: its path, its blob and the type the server decided."""

    path: str
    sha256: str
    size: int
    media_type: str


class GcCounts(TypedDict):
    """What a garbage collection removed, and the grace period it kept."""

    dry_run: bool
    grace_seconds: float
    blobs: int
    blob_bytes: int
    uploads: int
    upload_bytes: int


class WebhookChange(TypedDict, total=False):
    """The fields of a webhook subscription that an update changed (only those)."""

    url: str
    events: list[str]
    description: str


SHAPES: tuple[type, ...] = (
    ModelState,
    ModelChange,
    VersionState,
    DatasetState,
    SourceState,
    PrincipalState,
    CheckState,
    AttachedState,
    GcCounts,
    WebhookChange,
)


# -- subjects ---------------------------------------------------------------------------------


class UndecodableEvent(ValueError):
    """An event whose subject or payload does not fit its kind's definition."""


@dataclass(frozen=True, slots=True)
class JournalEvent:
    """What happened, without the envelope (seq, time, actor, hashes) the journal adds."""

    kind: ClassVar[str]
    # The fields that the subject string carries rather than the payload.
    subject_fields: ClassVar[tuple[str, ...]] = ()
    # Whether the event may change who can do what (users, tokens, grants, the registry):
    # such events move the identity stamp, which the token, grant and local-mode caches
    # are kept under. True unless a kind says otherwise, so a new kind is never missed.
    changes_access: ClassVar[bool] = True

    def subject(self) -> str:
        raise NotImplementedError

    def model_name(self) -> str | None:
        """The model the event concerns (None: users, teams, tokens, the registry)."""
        return None

    def payload(self) -> dict[str, Any]:
        """Every field but the subject's: readers find each key in every event of a kind."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in self.subject_fields
        }

    def describe(self) -> str:
        """One line for people (the CLI's history and journal tables)."""
        return ""

    @classmethod
    def parse_subject(cls, subject: str, model: str | None) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class ModelEvent(JournalEvent):
    """About a model; the subject is its name."""

    model: str
    subject_fields: ClassVar[tuple[str, ...]] = ("model",)
    changes_access: ClassVar[bool] = False  # a model's own state

    def subject(self) -> str:
        return self.model

    def model_name(self) -> str | None:
        return self.model

    @classmethod
    def parse_subject(cls, subject: str, model: str | None) -> dict[str, Any]:
        return {"model": subject}


@dataclass(frozen=True, slots=True)
class VersionEvent(JournalEvent):
    """About a version; the subject is ``MODEL/N``."""

    model: str
    version: int
    subject_fields: ClassVar[tuple[str, ...]] = ("model", "version")
    changes_access: ClassVar[bool] = False  # a model's own state

    def subject(self) -> str:
        return f"{self.model}/{self.version}"

    def model_name(self) -> str | None:
        return self.model

    @classmethod
    def parse_subject(cls, subject: str, model: str | None) -> dict[str, Any]:
        name, _, number = subject.rpartition("/")
        if not name or not number.isdigit():
            raise UndecodableEvent(f"{subject!r} does not name a version (MODEL/N)")
        return {"model": name, "version": int(number)}


@dataclass(frozen=True, slots=True)
class AliasEvent(JournalEvent):
    """About an alias; the subject is ``MODEL@ALIAS``."""

    model: str
    alias: str
    subject_fields: ClassVar[tuple[str, ...]] = ("model", "alias")
    changes_access: ClassVar[bool] = False  # a model's own state

    def subject(self) -> str:
        return f"{self.model}@{self.alias}"

    def model_name(self) -> str | None:
        return self.model

    @classmethod
    def parse_subject(cls, subject: str, model: str | None) -> dict[str, Any]:
        name, _, alias = subject.partition("@")
        if not name or not alias:
            raise UndecodableEvent(f"{subject!r} does not name an alias (MODEL@ALIAS)")
        return {"model": name, "alias": alias}


@dataclass(frozen=True, slots=True)
class ScopeEvent(JournalEvent):
    """About a model, or (``model`` None) the whole registry; the subject is the model's
    name or ``registry``, told apart by the event's model (a model may be named so)."""

    model: str | None
    subject_fields: ClassVar[tuple[str, ...]] = ("model",)

    def subject(self) -> str:
        return self.model or "registry"

    def model_name(self) -> str | None:
        return self.model

    @classmethod
    def parse_subject(cls, subject: str, model: str | None) -> dict[str, Any]:
        return {"model": model}


@dataclass(frozen=True, slots=True)
class RegistryEvent(JournalEvent):
    """About the registry as a whole; the subject is ``registry``. Admins only read these."""

    def subject(self) -> str:
        return "registry"

    @classmethod
    def parse_subject(cls, subject: str, model: str | None) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class PrincipalEvent(JournalEvent):
    """About a user, team or service account; the subject is its name. Admins only read
    these (they concern no model)."""

    principal: str
    subject_fields: ClassVar[tuple[str, ...]] = ("principal",)

    def subject(self) -> str:
        return self.principal

    @classmethod
    def parse_subject(cls, subject: str, model: str | None) -> dict[str, Any]:
        return {"principal": subject}


# -- models -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelCreated(ModelEvent):
    kind: ClassVar[str] = "model.created"
    after: ModelState
    # Where an import found the model (Origin.as_dict), when it came from another registry.
    origin: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ModelUpdated(ModelEvent):
    kind: ClassVar[str] = "model.updated"
    before: ModelChange
    after: ModelChange

    def describe(self) -> str:
        return _changed(self.before, self.after)


@dataclass(frozen=True, slots=True)
class ModelDeleted(ModelEvent):
    kind: ClassVar[str] = "model.deleted"
    before: ModelState | None = None


@dataclass(frozen=True, slots=True)
class ProtectedAliasesSet(ModelEvent):
    kind: ClassVar[str] = "model.protected_aliases"
    before: list[str]
    after: list[str]

    def describe(self) -> str:
        return f"protected aliases {', '.join(self.before) or '-'} → {', '.join(self.after) or '-'}"


@dataclass(frozen=True, slots=True)
class BundleImported(ModelEvent):
    """Versions imported from a bundle another registry signed (``registry``: the name
    its key is trusted under here); ``already``: those of the bundle imported before."""

    kind: ClassVar[str] = "model.bundle_imported"
    bundle: str
    key_id: str
    registry: str
    versions: list[int]
    already: list[int]

    def describe(self) -> str:
        numbers = ", ".join(map(str, self.versions))
        return f"bundle {self.bundle[:12]} from {self.registry}: imported {numbers}"


# -- versions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VersionRegistered(VersionEvent):
    """``scan``: the verdict of the registry's scan of its files and attachments (pass or
    fail; None in registrations journaled before the registry scanned). ``advisories``:
    its ``advisories`` check, pass or fail (None: no OSV dump was loaded)."""

    kind: ClassVar[str] = "version.registered"
    after: VersionState
    scan: str | None = None
    advisories: str | None = None

    def describe(self) -> str:
        return f"{self.after['files']} file(s), {self.after['size']} bytes, {self.after['stage']}"


@dataclass(frozen=True, slots=True)
class VersionUpdated(VersionEvent):
    kind: ClassVar[str] = "version.updated"
    before: ModelChange
    after: ModelChange

    def describe(self) -> str:
        return _changed(self.before, self.after)


@dataclass(frozen=True, slots=True)
class VersionStaged(VersionEvent):
    """A stage change; ``reason`` is promotion, demotion, rollback, override, archive or
    restore, and the other fields say what decided it."""

    kind: ClassVar[str] = "version.stage"
    before: str
    after: str
    reason: str
    protected: bool = False
    comment: str = ""
    evaluation: dict[str, Any] | None = None
    override: str | None = None
    request: int | None = None
    requester: str | None = None
    approvals: list[str] | None = None
    replaces: int | None = None
    replaced_by: int | None = None

    def describe(self) -> str:
        text = f"{self.before} → {self.after} ({self.reason})"
        if self.request is not None:
            text += f", request {self.request} approved by {', '.join(self.approvals or [])}"
        if self.override:
            text += f", override: {self.override}"
        return text


@dataclass(frozen=True, slots=True)
class VersionDeleted(VersionEvent):
    """``hard``: erased with its metadata (and its aliases); else hidden and kept."""

    kind: ClassVar[str] = "version.deleted"
    hard: bool
    stage: str

    def describe(self) -> str:
        return "erased" if self.hard else "deleted (kept, hidden)"


@dataclass(frozen=True, slots=True)
class VersionAttached(VersionEvent):
    """Evidence attached to a version; attachments are never replaced, and the manifest
    (its digest) does not change."""

    kind: ClassVar[str] = "version.attached"
    attachments: list[AttachedState]

    def describe(self) -> str:
        paths = [a["path"] for a in self.attachments]
        more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        return f"attached {', '.join(paths[:3])}{more}"


@dataclass(frozen=True, slots=True)
class VersionCardEdited(VersionEvent):
    """A new revision of a version's model card. The text is kept with the revision; the
    journal holds its digest, which vouches for it."""

    kind: ClassVar[str] = "version.card_edited"
    revision: int
    source: str
    sha256: str
    length: int

    def describe(self) -> str:
        return f"card revision {self.revision} ({self.source}, {self.length} characters)"


@dataclass(frozen=True, slots=True)
class CommentAdded(VersionEvent):
    """A comment on a version, or (``request``) on a promotion request for it. The body is
    kept with the comment; the journal holds its digest."""

    kind: ClassVar[str] = "comment.added"
    comment: int
    request: int | None
    sha256: str
    length: int

    def describe(self) -> str:
        on = f" on request {self.request}" if self.request is not None else ""
        return f"comment {self.comment}{on}"


@dataclass(frozen=True, slots=True)
class VersionSigned(VersionEvent):
    """A signature of the version's manifest kept: the registry's own on promotion into a
    protected stage (``signer`` registry, ``stage`` the stage entered), or a user's.
    ``payload_sha256`` is the digest of the signed statement, which vouches for it."""

    kind: ClassVar[str] = "version.signed"
    signer: str
    key_id: str
    payload_sha256: str
    stage: str | None = None
    # The registry a bundle carried the signature from (None: made here).
    origin: str | None = None

    def describe(self) -> str:
        on = f" on entering {self.stage}" if self.stage else ""
        there = f", carried from {self.origin}" if self.origin else ""
        return f"signed by {self.signer} (key {self.key_id[:12]}){on}{there}"


@dataclass(frozen=True, slots=True)
class VersionAdvisoriesAffected(VersionEvent):
    """Known vulnerabilities newly affect a version in an exclusive or protected stage
    (what runs, or is about to): usually found by evaluating it against a newer OSV dump.
    ``findings`` are the new ones, as its ``advisories`` check lists them; ``severity`` the
    highest of them (``advisories.severity``'s scale); ``dump`` the dump's sha256."""

    kind: ClassVar[str] = "version.advisories_affected"
    stage: str
    severity: str
    findings: list[dict[str, Any]]
    dump: str

    def describe(self) -> str:
        ids = ", ".join(sorted({f["advisory"] for f in self.findings}))
        return f"newly affected in {self.stage} ({self.severity}): {ids}"


# -- aliases ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AliasSet(AliasEvent):
    kind: ClassVar[str] = "alias.set"
    before: int | None
    after: int

    def describe(self) -> str:
        return f"{self.before} → {self.after}"


@dataclass(frozen=True, slots=True)
class AliasDeleted(AliasEvent):
    kind: ClassVar[str] = "alias.deleted"
    before: int
    after: None = None

    def describe(self) -> str:
        return f"{self.before} → None"


# -- promotion requests and policies ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestOpened(VersionEvent):
    kind: ClassVar[str] = "request.opened"
    request: int
    to_stage: str
    comment: str
    evaluation: dict[str, Any]

    def describe(self) -> str:
        verdict = "passed" if self.evaluation.get("passed") else "failed"
        return f"request {self.request} → {self.to_stage}, policy {verdict}"


@dataclass(frozen=True, slots=True)
class RequestApproved(VersionEvent):
    kind: ClassVar[str] = "request.approved"
    request: int
    comment: str

    def describe(self) -> str:
        return f"request {self.request} approved {self.comment}".rstrip()


@dataclass(frozen=True, slots=True)
class VersionCheckReported(VersionEvent):
    """A checker reported the result of a check; the latest report counts."""

    kind: ClassVar[str] = "version.check_reported"
    check: str
    before: CheckState | None
    after: CheckState

    def describe(self) -> str:
        return f"{self.check}: {self.after['status']}"


@dataclass(frozen=True, slots=True)
class RequestClosed(VersionEvent):
    """``status``: executed is not one (see version.stage); rejected, cancelled,
    invalidated or refused."""

    kind: ClassVar[str] = "request.closed"
    request: int
    status: str
    comment: str

    def describe(self) -> str:
        return f"request {self.request} {self.status} {self.comment}".rstrip()


@dataclass(frozen=True, slots=True)
class PolicyApplied(ScopeEvent):
    kind: ClassVar[str] = "policy.applied"
    changes_access: ClassVar[bool] = False  # who approves, not who may act
    version: int
    document: dict[str, Any]

    def describe(self) -> str:
        return f"policy version {self.version}"


# -- identity and access ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrincipalCreated(PrincipalEvent):
    kind: ClassVar[str] = "principal.created"
    after: PrincipalState


@dataclass(frozen=True, slots=True)
class PrincipalDisabled(PrincipalEvent):
    kind: ClassVar[str] = "principal.disabled"


@dataclass(frozen=True, slots=True)
class TeamDeleted(PrincipalEvent):
    kind: ClassVar[str] = "team.deleted"


@dataclass(frozen=True, slots=True)
class TeamMemberAdded(PrincipalEvent):
    """The subject is the team."""

    kind: ClassVar[str] = "team.member_added"
    member: str


@dataclass(frozen=True, slots=True)
class TeamMemberRemoved(PrincipalEvent):
    """The subject is the team."""

    kind: ClassVar[str] = "team.member_removed"
    member: str


@dataclass(frozen=True, slots=True)
class TokenCreated(PrincipalEvent):
    """The subject is the token's holder; ``after`` is the token as listed (no secret)."""

    kind: ClassVar[str] = "token.created"
    after: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TokenRevoked(PrincipalEvent):
    """The subject is the token's holder."""

    kind: ClassVar[str] = "token.revoked"
    token: str


@dataclass(frozen=True, slots=True)
class PasswordSet(PrincipalEvent):
    """The subject is the user; the password itself is in no event. Setting it ends the
    user's web sessions (``sessions_ended`` of them)."""

    kind: ClassVar[str] = "user.password_set"
    sessions_ended: int


@dataclass(frozen=True, slots=True)
class SessionStarted(PrincipalEvent):
    """A sign-in to the web UI; the subject is who signed in, ``session`` its public id."""

    kind: ClassVar[str] = "session.started"
    session: str
    method: str  # password | token
    expires_at: str
    client: str | None

    def describe(self) -> str:
        return f"session {self.session} by {self.method} from {self.client or 'unknown'}"


@dataclass(frozen=True, slots=True)
class SessionEnded(PrincipalEvent):
    """A sign-out; it moves the identity stamp, so the session stops on every replica."""

    kind: ClassVar[str] = "session.ended"
    session: str
    reason: str  # signed_out

    def describe(self) -> str:
        return f"session {self.session} {self.reason.replace('_', ' ')}"


@dataclass(frozen=True, slots=True)
class KeyRegistered(PrincipalEvent):
    """A public key registered to a user or service account: versions it signs count as
    signed by them (a policy's ``signed_by``). The subject is the key's holder."""

    kind: ClassVar[str] = "key.registered"
    key_id: str

    def describe(self) -> str:
        return f"signing key {self.key_id[:12]}"


@dataclass(frozen=True, slots=True)
class GrantSet(ScopeEvent):
    kind: ClassVar[str] = "grant.set"
    principal: str
    before: str | None
    after: str

    def describe(self) -> str:
        return f"{self.principal}: {self.before} → {self.after}"


@dataclass(frozen=True, slots=True)
class GrantRevoked(ScopeEvent):
    kind: ClassVar[str] = "grant.revoked"
    principal: str
    before: str
    after: None = None

    def describe(self) -> str:
        return f"{self.principal}: {self.before} → None"


# -- webhooks ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookEvent(JournalEvent):
    """About a webhook subscription; the subject is ``webhook/ID``. Its model (None: a
    registry-wide subscription, whose events admins only read) is in the payload and in
    the envelope. The signing secret is in no event."""

    webhook: int
    model: str | None
    url: str
    events: list[str]
    subject_fields: ClassVar[tuple[str, ...]] = ("webhook",)
    changes_access: ClassVar[bool] = False  # where events are sent, not who may act

    def subject(self) -> str:
        return f"webhook/{self.webhook}"

    def model_name(self) -> str | None:
        return self.model

    @classmethod
    def parse_subject(cls, subject: str, model: str | None) -> dict[str, Any]:
        prefix, _, number = subject.partition("/")
        if prefix != "webhook" or not number.isdigit():
            raise UndecodableEvent(f"{subject!r} does not name a webhook (webhook/ID)")
        return {"webhook": int(number)}


@dataclass(frozen=True, slots=True)
class WebhookCreated(WebhookEvent):
    kind: ClassVar[str] = "webhook.created"
    description: str

    def describe(self) -> str:
        return f"{self.url} for {', '.join(self.events)}"


@dataclass(frozen=True, slots=True)
class WebhookUpdated(WebhookEvent):
    """``url`` and ``events`` are the subscription's after the change."""

    kind: ClassVar[str] = "webhook.updated"
    before: WebhookChange
    after: WebhookChange

    def describe(self) -> str:
        return "changed " + ", ".join(sorted(self.after))


@dataclass(frozen=True, slots=True)
class WebhookDeleted(WebhookEvent):
    kind: ClassVar[str] = "webhook.deleted"


@dataclass(frozen=True, slots=True)
class WebhookSecretRotated(WebhookEvent):
    """A new signing secret; the old one signs nothing from now on."""

    kind: ClassVar[str] = "webhook.secret_rotated"


@dataclass(frozen=True, slots=True)
class WebhookDisabled(WebhookEvent):
    """Deliveries stop until it is enabled; by a caller, or by the registry itself (actor
    ``modelyard``) when the receiver answered 410 Gone."""

    kind: ClassVar[str] = "webhook.disabled"
    reason: str

    def describe(self) -> str:
        return f"disabled: {self.reason}" if self.reason else "disabled"


@dataclass(frozen=True, slots=True)
class WebhookEnabled(WebhookEvent):
    kind: ClassVar[str] = "webhook.enabled"


E = TypeVar("E", bound=JournalEvent)

# -- the registry -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyTrusted(RegistryEvent):
    """An admin trusts another registry's public key, under a name: bundles it signs may
    be imported, and its signatures verify downloads here."""

    kind: ClassVar[str] = "key.trusted"
    registry: str
    key_id: str

    def describe(self) -> str:
        return f"trusts registry {self.registry} (key {self.key_id[:12]})"


@dataclass(frozen=True, slots=True)
class KeyDistrusted(RegistryEvent):
    """An admin no longer trusts another registry's key: its bundles are refused and its
    signatures verify nothing from now on (those carried already are kept, as history)."""

    kind: ClassVar[str] = "key.distrusted"
    registry: str
    key_id: str

    def describe(self) -> str:
        return f"no longer trusts registry {self.registry} (key {self.key_id[:12]})"


@dataclass(frozen=True, slots=True)
class GarbageCollected(RegistryEvent):
    """A ``modelyard gc`` that removed something (a run that finds nothing is not
    journaled)."""

    kind: ClassVar[str] = "registry.gc"
    after: GcCounts

    def describe(self) -> str:
        a = self.after
        return f"removed {a['blobs']} blob(s), {a['uploads']} upload(s)"


@dataclass(frozen=True, slots=True)
class AdvisoriesLoaded(RegistryEvent):
    """An admin loaded an OSV dump: versions are matched against it from now on (every
    live one again, at once). ``before``: the sha256 of the dump it replaced."""

    kind: ClassVar[str] = "advisories.loaded"
    sha256: str
    size: int
    records: int
    skipped: int
    packages: int
    advisories: int
    before: str | None

    def describe(self) -> str:
        return f"OSV dump {self.sha256[:12]}: {self.advisories} advisories of PyPI packages"


CATALOGUE: Mapping[str, type[JournalEvent]] = {
    cls.kind: cls
    for cls in (
        ModelCreated,
        ModelUpdated,
        ModelDeleted,
        ProtectedAliasesSet,
        BundleImported,
        VersionRegistered,
        VersionUpdated,
        VersionStaged,
        VersionDeleted,
        VersionCheckReported,
        VersionAttached,
        VersionCardEdited,
        CommentAdded,
        VersionSigned,
        VersionAdvisoriesAffected,
        AliasSet,
        AliasDeleted,
        RequestOpened,
        RequestApproved,
        RequestClosed,
        PolicyApplied,
        PrincipalCreated,
        PrincipalDisabled,
        TeamDeleted,
        TeamMemberAdded,
        TeamMemberRemoved,
        TokenCreated,
        TokenRevoked,
        PasswordSet,
        SessionStarted,
        SessionEnded,
        KeyRegistered,
        GrantSet,
        GrantRevoked,
        GarbageCollected,
        AdvisoriesLoaded,
        KeyTrusted,
        KeyDistrusted,
        WebhookCreated,
        WebhookUpdated,
        WebhookDeleted,
        WebhookSecretRotated,
        WebhookDisabled,
        WebhookEnabled,
    )
}


# Each kind's fields, listed once: ``dataclasses.fields`` per event was a third of decoding
# (as-of answers and history decode every event of a model).
_FIELDS: Mapping[str, frozenset[str]] = {
    kind: frozenset(f.name for f in dataclasses.fields(cls)) for kind, cls in CATALOGUE.items()
}


def version_state(version: Version) -> VersionState:
    """What a registration journals of a version, and what ``journal verify --state``
    compares: the same function reads both sides."""
    dataset, source = version.dataset, version.source
    state: VersionState = {
        "manifest_digest": version.manifest_digest,
        "files": len(version.files),
        "size": version.size,
        "metrics": dict(version.metrics),
        "params": dict(version.params),
        "tags": dict(version.tags),
        "stage": version.stage,
        "description": version.description,
        "framework": version.framework,
        "format": version.format,
        "dataset": (
            None
            if dataset is None
            else {"name": dataset.name, "version": dataset.version, "digest": dataset.digest}
        ),
        "source": (
            None
            if source is None
            else {
                "repo": source.repo,
                "commit": source.commit,
                "branch": source.branch,
                "dirty": source.dirty,
            }
        ),
        "run": version.run,
        "environment": (
            None if version.environment is None else environment_key(version.environment)
        ),
    }
    if version.origin is not None:
        state["origin"] = version.origin.as_dict()
    return state


def decode(event: Event) -> JournalEvent:
    """The typed event an envelope carries. Payload keys the definition does not know are
    ignored (older events may carry some); a missing required one is an error."""
    cls = CATALOGUE.get(event.kind)
    if cls is None:
        raise UndecodableEvent(f"event {event.seq}: unknown kind {event.kind!r}")
    known = _FIELDS[event.kind]
    values = {k: v for k, v in event.payload.items() if k in known}
    try:
        values.update(cls.parse_subject(event.subject, event.model))
        return cls(**values)
    except (TypeError, UndecodableEvent) as exc:
        raise UndecodableEvent(f"event {event.seq} ({event.kind}): {exc}") from None


def of_kind(events: Iterable[Event], kind: type[E]) -> list[E]:
    """The events of one kind, decoded (a reader that asked the store for that kind)."""
    return [e for e in map(decode, events) if isinstance(e, kind)]


def describe(event: Event) -> str:
    """``decode(event).describe()``, or why it does not decode: a reader shows every event."""
    try:
        return decode(event).describe()
    except UndecodableEvent as exc:
        return str(exc)


def _changed(before: ModelChange, after: ModelChange) -> str:
    parts = []
    if "description" in after:
        parts.append("description")
    if "tags" in after:
        old, new = before.get("tags", {}), after["tags"]
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        parts.append("tags " + ", ".join(changed))
    return "changed " + "; ".join(parts) if parts else ""
