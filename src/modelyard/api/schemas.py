"""Request bodies, validated at the edge (unknown fields are refused, not ignored).

Responses are the domain objects' ``as_dict`` forms; the ``*Out`` models here only
document them in OpenAPI.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import (
    AwareDatetime,
    Base64Bytes,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from modelyard.domain.evidence import MAX_CARD, MAX_COMMENT, AttachmentIn
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import DatasetRef, Environment, Origin, SourceRef
from modelyard.domain.references import MAX_VERSION_NUMBER
from modelyard.domain.versions import NewVersion


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MissingBlobsIn(_Strict):
    digests: list[StrictStr] = Field(max_length=10_000, description="'sha256:<hex>' digests")


class MissingBlobsOut(BaseModel):
    missing: list[str]


class BlobOut(BaseModel):
    digest: str
    size: int
    created: bool


class DirectUploadsOut(BaseModel):
    enabled: bool = Field(description="Whether clients send and fetch bytes at the store.")
    part_size: int = Field(description="The first parts' size; see part_ranges.")


class DirectUploadIn(_Strict):
    digest: StrictStr = Field(description="'sha256:<hex>' of the whole blob")
    size: StrictInt = Field(ge=0)
    parts: list[StrictStr] = Field(
        default_factory=list, max_length=10_000, description="each part's sha256 (hex)"
    )


class DirectPartOut(BaseModel):
    number: int
    offset: int
    size: int
    url: str
    headers: dict[str, str]


class DirectUploadOut(BaseModel):
    digest: str
    size: int
    created: bool | None = Field(
        description="false: already stored, nothing to send; null: no direct transfers"
        " here, upload through the registry; true: send the parts, then complete."
    )
    parts: list[DirectPartOut]


class DirectCompleteIn(_Strict):
    digest: StrictStr
    size: StrictInt = Field(ge=0)


class GcIn(_Strict):
    dry_run: StrictBool = Field(False, description="Report what would go; remove nothing.")
    grace_seconds: StrictInt | StrictFloat = Field(
        3600,
        ge=0,
        le=10 * 365 * 86400,
        description="Spare blobs and uploads younger than this: uploads still in flight,"
        " blobs uploaded and not yet registered. Blobs a hard delete released go at once.",
    )


class GcRemoved(BaseModel):
    kind: str = Field(description="'blob' or 'upload' (staged bytes never committed)")
    name: str
    size: int


class GcOut(BaseModel):
    dry_run: bool
    grace_seconds: float
    blobs: int
    blob_bytes: int
    uploads: int
    upload_bytes: int
    removed: list[GcRemoved] = Field(description="The first 1000 removals, one by one")
    unlisted: int = Field(description="Removals counted but not listed")


class OriginIn(_Strict):
    """Where an import found the model or version: recorded as that registry reported it."""

    system: StrictStr = Field(description='The registry it came from, e.g. "mlflow"')
    uri: StrictStr
    name: StrictStr = Field(description="The model's name there")
    version: StrictStr | None = Field(default=None, description="The version's number there")
    created_at: AwareDatetime | None = Field(
        default=None, description="When that registry says it was created"
    )
    created_by: StrictStr | None = Field(default=None, description="Who it says created it")
    run_link: StrictStr | None = Field(default=None, description="The source run's page")

    def to_domain(self) -> Origin:
        return Origin(**self.model_dump())


_ORIGIN = (
    "Where an import found it (another registry's name, number, time and creator), kept"
    " beside this registry's own creator and time"
)


class ModelIn(_Strict):
    name: StrictStr
    description: StrictStr = ""
    tags: dict[StrictStr, StrictStr] = {}
    origin: OriginIn | None = Field(default=None, description=_ORIGIN)


class PatchIn(_Strict):
    description: StrictStr | None = None
    tags: dict[StrictStr, StrictStr | None] | None = Field(
        default=None, description="Tags to set; a tag set to null is removed."
    )


class FileIn(_Strict):
    path: StrictStr
    size: StrictInt = Field(ge=0)
    sha256: StrictStr
    content: Base64Bytes | None = Field(
        default=None,
        description="Small files (up to 64 KiB) may come inline, base64-encoded, instead of"
        " as a separate blob upload.",
    )


class DatasetIn(_Strict):
    name: StrictStr
    version: StrictStr | None = None
    digest: StrictStr | None = None


class SourceIn(_Strict):
    repo: StrictStr | None = None
    commit: StrictStr | None = None
    branch: StrictStr | None = None
    dirty: StrictBool | None = None


class EnvironmentIn(_Strict):
    python: StrictStr | None = None
    platform: StrictStr | None = None
    packages: dict[StrictStr, StrictStr] = {}


class VersionIn(_Strict):
    files: list[FileIn] = Field(min_length=1)
    attachments: list[FileIn] = Field(
        default=[],
        max_length=1000,
        description="Evaluation evidence beside the files (plots, reports, metric tables):"
        " not part of the manifest. Sent like files (inline content, or uploaded blobs).",
    )
    card: StrictStr | None = Field(
        default=None,
        description="The model card (Markdown). Without one, MODEL_CARD.md among the files"
        " or attachments is the card.",
    )
    card_from_previous: StrictBool = Field(
        default=False, description="Without a card of its own, start from the previous version's."
    )
    params: dict[StrictStr, StrictStr | StrictInt | StrictFloat | StrictBool] = {}
    metrics: dict[StrictStr, StrictInt | StrictFloat] = {}
    tags: dict[StrictStr, StrictStr] = {}
    description: StrictStr = ""
    dataset: DatasetIn | None = None
    source: SourceIn | None = None
    environment: EnvironmentIn | None = None
    run: StrictStr | None = None
    framework: StrictStr | None = None
    format: StrictStr | None = None
    origin: OriginIn | None = Field(default=None, description=_ORIGIN)
    number: StrictInt | None = Field(
        default=None,
        ge=1,
        le=MAX_VERSION_NUMBER,
        description="With an origin only: keep the number the version had there (above the"
        " model's latest; numbers it skipped stay unused)",
    )

    def inline(self) -> dict[str, bytes]:
        """The inline file contents, by digest."""
        return {f.sha256: f.content for f in self.files if f.content is not None}

    def evidence(self) -> list[AttachmentIn]:
        return attachments_in(self.attachments)

    def to_domain(self) -> NewVersion:
        return NewVersion(
            files=[FileEntry(f.path, f.size, f.sha256) for f in self.files],
            params={k: _param_text(v) for k, v in self.params.items()},
            metrics=dict(self.metrics),
            tags=dict(self.tags),
            description=self.description,
            dataset=DatasetRef(**self.dataset.model_dump()) if self.dataset else None,
            source=SourceRef(**self.source.model_dump()) if self.source else None,
            environment=Environment(**self.environment.model_dump()) if self.environment else None,
            run=self.run,
            framework=self.framework,
            format=self.format,
            origin=self.origin.to_domain() if self.origin else None,
            number=self.number,
        )


def attachments_in(files: list[FileIn]) -> list[AttachmentIn]:
    return [AttachmentIn(f.path, f.size, f.sha256, f.content) for f in files]


def _param_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class AliasIn(_Strict):
    version: StrictInt = Field(ge=1, le=MAX_VERSION_NUMBER)


class VersionOut(BaseModel):
    """A registered version (see the data model in the README)."""

    model: str
    version: int
    reference: str
    manifest_digest: str
    files: list[dict[str, Any]]
    size: int
    framework: str | None
    format: str | None
    params: dict[str, str]
    metrics: dict[str, float]
    dataset: dict[str, Any] | None
    source: dict[str, Any] | None
    environment: dict[str, Any] | None
    run: str | None
    creator: str
    created_at: str
    tags: dict[str, str]
    description: str
    stage: str
    aliases: list[str]
    origin: dict[str, Any] | None = Field(description=_ORIGIN)


class ModelOut(BaseModel):
    name: str
    description: str
    tags: dict[str, str]
    created_at: str
    updated_at: str
    latest_version: int | None
    aliases: dict[str, int]
    protected_aliases: list[str]
    origin: dict[str, Any] | None = Field(description=_ORIGIN)


class VersionItemOut(VersionOut):
    environment: str | None = Field(  # type: ignore[assignment]
        description="The key of the version's environment in the page's `environments`"
    )


class VersionPageOut(BaseModel):
    items: list[VersionItemOut]
    environments: dict[str, dict[str, Any]] = Field(
        description="Each distinct environment of the page once, by key (the sha256 of its"
        " canonical JSON)"
    )
    next_page_token: str | None


class ModelPageOut(BaseModel):
    items: list[ModelOut]
    next_page_token: str | None


class EventOut(BaseModel):
    seq: int
    time: str
    actor: str
    kind: str
    subject: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str
    token_id: str | None
    model: str | None
    chain: int


class EventPageOut(BaseModel):
    items: list[EventOut]
    next_after: int | None


class CheckpointOut(BaseModel):
    seq: int
    hash: str
    checkpoint: str


# -- identity and access ---------------------------------------------------------------------


class PrincipalIn(_Strict):
    name: StrictStr
    description: StrictStr = Field(default="", max_length=4096)


class PasswordIn(_Strict):
    password: StrictStr = Field(
        description="At least 12 characters; only its Argon2id hash is kept"
    )


class PrincipalOut(BaseModel):
    name: str
    kind: str
    description: str
    created_at: str
    disabled: bool
    members: list[str] | None = None


class TokenIn(_Strict):
    principal: StrictStr | None = Field(
        default=None, description="Whose token (admins only); yourself when absent."
    )
    name: StrictStr = Field(default="", max_length=128, description="What it is for.")
    expires_at: datetime | None = Field(default=None, description="ISO 8601, with a zone.")
    model: StrictStr | None = Field(default=None, description="Limit the token to one model.")
    read_only: StrictBool = Field(default=False, description="Limit the token to reading.")


class TokenOut(BaseModel):
    id: str
    principal: str
    name: str
    created_at: str
    created_by: str
    expires_at: str | None
    revoked_at: str | None
    model: str | None
    read_only: bool


class NewTokenOut(TokenOut):
    token: str = Field(description="The secret. Shown this once; only a hash is kept.")


class GrantIn(_Strict):
    role: StrictStr = Field(description="viewer, reader, contributor, maintainer or admin")
    kind: StrictStr | None = Field(
        default=None, description="user, team or service_account: checked when given."
    )


class GrantOut(BaseModel):
    principal: str
    kind: str
    model: str | None
    role: str
    created_at: str
    created_by: str


class ProtectedAliasesIn(_Strict):
    aliases: list[StrictStr] = Field(max_length=100)


class IdentityOut(BaseModel):
    name: str
    kind: str
    token_id: str | None
    registry_role: str | None
    teams: list[str]
    model: str | None
    read_only: bool
    local: bool


# -- lifecycle ---------------------------------------------------------------------------------


class PromoteIn(_Strict):
    to: StrictStr = Field(description="The target stage, e.g. production.")
    comment: StrictStr = Field(default="", max_length=4096)
    override: StrictStr | None = Field(
        default=None, max_length=4096, description="Admins: execute now; the reason is journaled."
    )


class CommentIn(_Strict):
    comment: StrictStr = Field(default="", max_length=4096)


class RollbackIn(_Strict):
    stage: StrictStr = Field(description="The stage to roll back, e.g. production.")
    comment: StrictStr = Field(default="", max_length=4096)


class PolicyIn(_Strict):
    text: StrictStr = Field(description="The policy document, YAML (JSON is YAML too).")


# -- checks ------------------------------------------------------------------------------------


class CheckIn(_Strict):
    status: StrictStr = Field(description="pass, fail or pending.")
    url: StrictStr | None = Field(
        default=None, max_length=2048, description="Where the details are (http or https)."
    )


class CheckOut(BaseModel):
    model: str
    version: int
    name: str
    status: str = Field(description="pass, fail or pending.")
    url: str | None
    reporter: str = Field(
        description="Who reported it: a checker, or modelyard for its own checks (scan,"
        " advisories)."
    )
    reported_at: datetime
    details: dict[str, Any] | None = Field(
        default=None,
        description="What the registry's own checks found: the scan's report (files,"
        " findings, the allowlist's fingerprint, acceptances), the advisories' verdict"
        " (verdict, severity, packages, findings with advisory, aliases, severity,"
        " installed and fixed versions); null for the checks checkers report.",
    )


class ScanAcceptIn(_Strict):
    reason: StrictStr = Field(
        min_length=1, max_length=1000, description="Why the findings are safe to load."
    )


class CheckListOut(BaseModel):
    items: list[CheckOut]


# -- advisories --------------------------------------------------------------------------------


class DumpOut(BaseModel):
    sha256: str = Field(description="The zip's sha256, as loaded.")
    size: int
    records: int = Field(description="OSV records it held (withdrawn, other ecosystems too).")
    skipped: int = Field(description="Members that were not OSV records.")
    packages: int = Field(description="PyPI packages its advisories name.")
    advisories: int = Field(description="Advisories that name a PyPI package.")
    modified: str | None = Field(description="The newest record's modified time.")
    loaded_at: datetime
    loaded_by: str
    pending: bool = Field(description="Live versions not yet evaluated against it.")


class AdvisoriesOut(BaseModel):
    dump: DumpOut | None = Field(description="The OSV dump in force; null: none is loaded.")


class EvaluationOut(BaseModel):
    versions: int = Field(description="Live versions evaluated against the dump.")
    changed: int = Field(description="Verdicts that changed (each journaled).")
    affected: int = Field(
        description="Versions in an exclusive or protected stage newly affected"
        " (version.advisories_affected)."
    )


class DumpLoadedOut(BaseModel):
    dump: DumpOut
    replaced: bool = Field(description="False: this dump was in force already.")
    evaluation: EvaluationOut


# -- online metrics ----------------------------------------------------------------------------


class WindowIn(_Strict):
    start: datetime = Field(description="ISO 8601, with a zone.")
    end: datetime = Field(description="ISO 8601, with a zone; not before start.")


class OnlineMetricsIn(_Strict):
    metrics: dict[StrictStr, StrictInt | StrictFloat] = Field(
        description="Metric names (as a registration's: auc, latency_p99_ms) to finite"
        " numbers; 1 to 100 of them."
    )
    window: WindowIn | None = Field(default=None, description="When they were observed.")
    at: datetime | None = Field(
        default=None, description="A point in time instead of a window; neither means now."
    )


class OnlineWindowOut(BaseModel):
    start: datetime
    end: datetime


class OnlineReportOut(BaseModel):
    model: str
    version: int
    metrics: dict[str, float]
    window: OnlineWindowOut
    reporter: str = Field(description="Who reported them: a checker (a service account).")
    received_at: datetime


class OnlinePointOut(BaseModel):
    model: str
    version: int
    key: str
    value: float
    start: datetime
    end: datetime
    reporter: str
    received_at: datetime


class OnlinePageOut(BaseModel):
    items: list[OnlinePointOut]
    latest: dict[str, float] = Field(
        description="The newest value of each online metric of the version (by window end):"
        " what online.metrics.K reads in searches, policies and gates."
    )
    next_page_token: str | None


# -- evidence ----------------------------------------------------------------------------------


class AttachmentsIn(_Strict):
    attachments: list[FileIn] = Field(
        min_length=1,
        max_length=1000,
        description="Paths, sizes and digests; small ones (up to 64 KiB) may carry their"
        " content inline, others are uploaded first as blobs.",
    )


class AttachmentOut(BaseModel):
    path: str
    sha256: str
    size: int
    media_type: str = Field(description="Decided by the server from the extension and bytes.")
    attached_by: str
    attached_at: datetime


class AttachmentListOut(BaseModel):
    items: list[AttachmentOut]


class CardIn(_Strict):
    text: StrictStr = Field(max_length=MAX_CARD, description="The model card, Markdown.")


class CardOut(BaseModel):
    text: str
    revision: int
    source: str = Field(description="file, attachment, edited or previous")
    updated_by: str
    updated_at: datetime


class CardListOut(BaseModel):
    items: list[CardOut]


class NewCommentIn(_Strict):
    body: StrictStr = Field(min_length=1, max_length=MAX_COMMENT, description="Markdown.")


class CommentOut(BaseModel):
    id: int
    model: str
    version: int | None
    request_id: int | None
    author: str
    body: str
    created_at: datetime


class CommentListOut(BaseModel):
    items: list[CommentOut]


# -- webhooks --------------------------------------------------------------------------------


class WebhookIn(_Strict):
    url: StrictStr = Field(description="Where to POST the events: https, a public address.")
    events: list[StrictStr] = Field(
        description="Event kinds (version.stage), families (version.*) or * for every event."
    )
    model: StrictStr | None = Field(
        default=None, description="The model whose events to send; every model's when absent."
    )
    description: StrictStr = Field(default="", description="What it is for.")


class WebhookPatchIn(_Strict):
    url: StrictStr | None = None
    events: list[StrictStr] | None = None
    description: StrictStr | None = None


class WebhookDisableIn(_Strict):
    reason: StrictStr = Field(default="", description="Why, for the journal and the listing.")


class WebhookOut(BaseModel):
    id: int
    model: str | None
    url: str
    events: list[str]
    description: str
    creator: str
    enabled: bool
    disabled_reason: str | None
    created: str
    updated: str


class NewWebhookOut(WebhookOut):
    secret: str = Field(
        description="The signing secret (whsec_..., Standard Webhooks). Shown this once."
    )


class WebhookListOut(BaseModel):
    items: list[WebhookOut]


class WebhookRedeliverIn(_Strict):
    first_seq: StrictInt = Field(ge=1, le=2**62, description="The first event's seq.")
    last_seq: StrictInt | None = Field(
        default=None, ge=1, le=2**62, description="The last event's seq; first_seq alone if absent."
    )


class RedeliveredOut(BaseModel):
    queued: int = Field(description="How many of the events were for this webhook, queued.")


class ProbeOut(BaseModel):
    status: int | None = Field(description="The answer's status; null: no answer.")
    latency_ms: float
    error_class: str | None
    delivered: bool


class AttemptOut(BaseModel):
    at: str
    status: int | None
    latency_ms: float
    error_class: str | None
    response_prefix: str | None = Field(
        description="The first bytes of the answer's body: for admins only, else null."
    )


class DeliveryOut(BaseModel):
    id: int
    webhook_id: int
    seq: int
    message_id: str
    status: str = Field(description="pending, delivered or failed")
    redelivery: bool
    next_attempt: str | None
    created: str
    updated: str
    attempts: list[AttemptOut]


class DeliveryListOut(BaseModel):
    items: list[DeliveryOut]
    next_before: int | None = Field(description="Pass as `before` for older deliveries.")


# -- signatures --------------------------------------------------------------------------------


class PublishedKeyOut(BaseModel):
    key_id: str = Field(description="sha256 of the DER public key, hex.")
    pem: str = Field(description="The ECDSA P-256 public key, PEM.")
    owner: str = Field(
        description="registry, registry:NAME (another registry's key, trusted here), or the"
        " principal the key is registered to."
    )
    created_at: datetime | None = Field(
        description="When it first signed, or was trusted (null: the registry's key, not used yet)."
    )


class KeyListOut(BaseModel):
    items: list[PublishedKeyOut]


class SignatureOut(BaseModel):
    key_id: str
    signer: str = Field(description="registry, or the principal whose key signed.")
    created_at: datetime
    bundle: dict[str, Any] = Field(
        description="A Sigstore bundle (v0.3 JSON): a DSSE envelope over an in-toto statement"
        " of model-signing v1.0, every file's path and sha256."
    )
    origin: str | None = Field(
        description="The trusted registry a bundle carried it from (its signer is that"
        " registry's), null when made here."
    )


class SignaturesOut(BaseModel):
    reference: str
    stage: str
    protected: bool = Field(description="Whether the stage is protected: clients verify then.")
    signatures: list[SignatureOut]


class KeyIn(_Strict):
    pem: StrictStr = Field(
        max_length=4096, description="An ECDSA P-256 public key, PEM (-----BEGIN PUBLIC KEY-----)."
    )


class TrustedKeyIn(_Strict):
    name: StrictStr = Field(
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
        description="The name the other registry is known by here (its imports' origin).",
    )
    pem: StrictStr = Field(
        max_length=4096, description="Its ECDSA P-256 public key, PEM (modelyard keys list --pem)."
    )


class BundleImportOut(BaseModel):
    model: str
    bundle: str = Field(description="sha256:HEX of the bundle's signed manifest.")
    key_id: str = Field(description="The key that signed it.")
    registry: str = Field(description="The name that key is trusted under here.")
    imported: list[int] = Field(description="The versions imported, keeping their numbers.")
    already: list[int] = Field(description="The bundle's versions imported before, left as is.")


class SignatureIn(_Strict):
    bundle: dict[str, Any] = Field(
        description="A Sigstore bundle signing the version's files (OpenSSF model-signing"
        " v1.0), by a key registered to the caller."
    )
