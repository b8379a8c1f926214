"""SQLAlchemy Core tables: the schema the Alembic migrations create.

Times are integer microseconds since the epoch (UTC): the same type, ordering and
arithmetic on SQLite and PostgreSQL. Tags, params and metrics live in key/value tables
with (key, value) indexes so that every filter field is an index lookup.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("description", Text, nullable=False, default=""),
    Column("latest_version", Integer, nullable=False, default=0),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # A JSON list; NULL means the defaults (champion, production).
    Column("protected_aliases", Text, nullable=True),
    Column("origin", Text, nullable=True),  # JSON (domain.models.Origin): an import's
)

model_tags = Table(
    "model_tags",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", String(1024), nullable=False),
    Index(None, "key", "value"),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("manifest_digest", String(71), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("framework", String(64)),
    Column("format", String(64)),
    Column("dataset_name", String(1024)),
    Column("dataset_version", String(256)),
    Column("dataset_digest", String(256)),
    Column("source_repo", String(1024)),
    Column("source_commit", String(64)),
    Column("source_branch", String(256)),
    Column("source_dirty", Boolean),
    Column("environment", Text),
    Column("run", String(1024)),
    Column("creator", String(256), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("stage", String(64), nullable=False),
    # When the version last changed stage (NULL: never); a stage that holds several
    # versions resolves to the one promoted most recently.
    Column("stage_updated_at", BigInteger, nullable=True),
    Column("deleted_at", BigInteger, nullable=True),  # soft delete: hidden, kept
    Column("origin", Text, nullable=True),  # JSON (domain.models.Origin): an import's
    UniqueConstraint("model_id", "number"),
    Index(None, "number"),  # `version = N` across models (else a walk of every version)
    Index(None, "model_id", "manifest_digest"),
    Index(None, "created_at"),
    Index(None, "creator"),
    Index(None, "stage"),
    Index(None, "dataset_name"),
    Index(None, "source_commit"),
)

# The versions a search walks (not deleted), newest first, without reading their rows.
Index(
    "ix_versions_live",
    versions.c.id,
    versions.c.model_id,
    sqlite_where=versions.c.deleted_at.is_(None),
    postgresql_where=versions.c.deleted_at.is_(None),
)

version_files = Table(
    "version_files",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Index(None, "sha256"),
)

version_tags = Table(
    "version_tags",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", String(1024), nullable=False),
    Index(None, "key", "value"),
)

version_params = Table(
    "version_params",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", String(1024), nullable=False),
    Index(None, "key", "value"),
)

version_metrics = Table(
    "version_metrics",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", Float, nullable=False),
    Index(None, "key", "value"),
)

# Online metrics (storage/db/online.py): every reported value, and the newest of each key
# per version, which the rule language reads as online.metrics.K (an index lookup, like
# metrics.K). Written outside the journal (Database.telemetry()).
online_metrics = Table(
    "online_metrics",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(128), nullable=False),
    Column("value", Float, nullable=False),
    Column("start_at", BigInteger, nullable=False),
    Column("end_at", BigInteger, nullable=False),
    Column("reporter", String(256), nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Index(None, "version_id", "key", "end_at"),
)

online_metrics_latest = Table(
    "online_metrics_latest",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", Float, nullable=False),
    Column("end_at", BigInteger, nullable=False),
    Index(None, "key", "value"),
)

# The latest result of each check on a version (the journal keeps every report).
version_checks = Table(
    "version_checks",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("url", String(2048), nullable=True),
    Column("reporter", String(256), nullable=False),
    Column("reported_at", BigInteger, nullable=False),
    # JSON: what the check found, for the checks the registry runs itself (the scan report).
    Column("details", Text, nullable=True),
)

aliases = Table(
    "aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# A number given to a version whose files are still being copied (an MLflow source): the
# version does not exist until its one registering transaction, which deletes the row; a
# copy that fails leaves it 'failed', and its number is never given again.
pending_versions = Table(
    "pending_versions",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("status", String(16), nullable=False),  # pending, failed
    Column("message", Text, nullable=False, default=""),
    Column("source", String(1024), nullable=False),
    Column("run", String(1024)),
    Column("creator", String(256), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),  # the copy's heartbeat
)

blobs = Table(
    "blobs",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # The bytes of a small file that came inline with a registration: kept here, they are
    # durable with the version's own commit (no file, no extra fsyncs). NULL: in the blob store.
    Column("content", LargeBinary, nullable=True),
    # When a hard delete took the last version holding it: collectable at once, without
    # the grace period that spares uploads not yet registered. NULL while held or new.
    Column("released_at", BigInteger, nullable=True),
)

events = Table(
    "events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("time_us", BigInteger, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("subject", String(512), nullable=False),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("token_id", String(16), nullable=True),
    # The model an event concerns (NULL: users, teams, tokens, registry-wide grants), so
    # that a caller reads the events of the models they may see and nothing else.
    Column("model", String(128), nullable=True),
    # The chain version the hash was computed with (domain/journal.py): 1 for events
    # written before the hash covered the model.
    Column("chain", SmallInteger, nullable=False, server_default="1"),
    Index(None, "subject"),
    # Also each model's cache stamp: the seq of its newest event is one seek away.
    Index(None, "model", "seq"),
)

# One row (id = 1): the head of the journal. Every write transaction locks it first, which
# serialises journal appends (the hash chain needs a total order) on SQLite and PostgreSQL alike.
journal_head = Table(
    "journal_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    # The seq of the newest event that may change who may do what: the stamp of the token,
    # grant and local-mode caches, so that registrations leave them warm.
    Column("identity_seq", BigInteger, nullable=False, server_default="0"),
)

# The fingerprint of the secret key the registry's servers use (ServerKey.fingerprint, a key
# derived from it, never the key), recorded by the first server: replicas must share the
# key, or what one signed or sealed the others cannot read (migration 0015).
server_key = Table(
    "server_key",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("fingerprint", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)


# -- identity and access ---------------------------------------------------------------------

# Users, teams and service accounts in one namespace: a journal actor names exactly one.
principals = Table(
    "principals",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("disabled_at", BigInteger, nullable=True),
)

team_members = Table(
    "team_members",
    metadata,
    Column("team_id", Integer, ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True),
    Column("member_id", Integer, ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True),
    Index(None, "member_id"),
)

# Only a salted hash of each secret is kept; the id is public and names the token in the
# journal and in `tokens list`.
tokens = Table(
    "tokens",
    metadata,
    Column("id", String(16), primary_key=True),
    Column(
        "principal_id", Integer, ForeignKey("principals.id", ondelete="CASCADE"), nullable=False
    ),
    Column("name", String(128), nullable=False, default=""),
    Column("salt", String(32), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
    Column("model", String(128), nullable=True),
    Column("read_only", Boolean, nullable=False, default=False),
    Index(None, "principal_id"),
)

# A user's password: only its Argon2id hash (salt and parameters inside), kept apart from
# the principals that every listing reads.
passwords = Table(
    "passwords",
    metadata,
    Column(
        "principal_id", Integer, ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("hash", String(256), nullable=False),
    Column("set_at", BigInteger, nullable=False),
    Column("set_by", String(256), nullable=False),
)

# Web UI sign-ins. The id is public (it names the session in the journal); of the secret
# the cookie carries only a SHA-256 is kept. A session made with a token keeps the token's
# limits and dies with it.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", String(16), primary_key=True),
    Column(
        "principal_id", Integer, ForeignKey("principals.id", ondelete="CASCADE"), nullable=False
    ),
    Column("token_id", String(16), ForeignKey("tokens.id", ondelete="CASCADE"), nullable=True),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger, nullable=True),
    Index(None, "principal_id"),
    Index(None, "token_id"),
    Index(None, "expires_at"),
)

# A role on a model (by name, so that access can be granted before the first version is
# registered), or registry-wide when model is NULL. One grant per principal and model.
grants = Table(
    "grants",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "principal_id", Integer, ForeignKey("principals.id", ondelete="CASCADE"), nullable=False
    ),
    Column("model", String(128), nullable=True),
    Column("role", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    Index(None, "principal_id"),
    Index(None, "model"),
)


# -- lifecycle ---------------------------------------------------------------------------------

# Every version of every policy document is kept; the newest of a model (or, with model
# NULL, of the registry) is in force.
policies = Table(
    "policies",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model", String(128), nullable=True),
    Column("version", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("document", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    Index(None, "model", "version"),
)

transition_requests = Table(
    "transition_requests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), nullable=False),
    Column("to_stage", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("requester", String(256), nullable=False),
    Column("comment", Text, nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("approvals_needed", Integer, nullable=False),
    # What the request was made against: if the version's stage or the target stage's
    # occupants change underneath it, it is invalidated rather than executed.
    Column("snapshot", Text, nullable=False),
    Column("evaluation", Text, nullable=False),
    Column("decided_by", String(256), nullable=True),
    Column("decision", Text, nullable=False, default=""),
    Index(None, "model_id", "status"),
    Index(None, "status"),
)

request_approvals = Table(
    "request_approvals",
    metadata,
    Column(
        "request_id",
        Integer,
        ForeignKey("transition_requests.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("approver", String(256), primary_key=True),
    Column("comment", Text, nullable=False, default=""),
    Column("at", BigInteger, nullable=False),
)

# Who proved they hold a blob's bytes by uploading them: only they (or readers of a version
# holding it) may name it in a registration, so a digest seen in metadata is no read key.
blob_possession = Table(
    "blob_possession",
    metadata,
    Column("digest", String(64), ForeignKey("blobs.digest", ondelete="CASCADE"), primary_key=True),
    Column(
        "principal_id",
        Integer,
        ForeignKey("principals.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "principal_id"),
)


# -- evidence ----------------------------------------------------------------------------------

# Evaluation evidence beside a version's files: append-only (a path is never replaced), each
# a content-addressed blob like a file's, outside the manifest (its digest never changes).
version_attachments = Table(
    "version_attachments",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("media_type", String(128), nullable=False),
    Column("attached_by", String(256), nullable=False),
    Column("attached_at", BigInteger, nullable=False),
    Index(None, "sha256"),
)

# Every revision of every version's model card; the newest is the card.
version_cards = Table(
    "version_cards",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True),
    Column("revision", Integer, primary_key=True),
    Column("text", Text, nullable=False),
    Column("source", String(16), nullable=False),
    Column("updated_by", String(256), nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# Comments on a version, or on a promotion request (with the request's version).
comments = Table(
    "comments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), nullable=True),
    Column(
        "request_id",
        Integer,
        ForeignKey("transition_requests.id", ondelete="CASCADE"),
        nullable=True,
    ),
    Column("author", String(256), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "model_id", "id"),
    Index(None, "version_id"),
    Index(None, "request_id"),
)


# -- webhooks ----------------------------------------------------------------------------------

# A subscription: where to send which events, about one model (by name, like grants) or the
# whole registry (model NULL). The signing secret is kept only encrypted under a key derived
# from the server's secret. ``cursor`` is the seq of the last event this subscription is
# done with (delivered, failed for good, handed to a pending delivery that holds the line,
# or not for it): the journal is the outbox, and
# delivery resumes after the cursor whatever happened to the process. ``lease_owner`` and
# ``lease_expires_at`` let one replica at a time deliver it.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model", String(256), nullable=True),
    Column("url", Text, nullable=False),
    Column("events", Text, nullable=False),  # a JSON list of kinds and family wildcards
    Column("description", Text, nullable=False),
    Column("secret", LargeBinary, nullable=False),  # encrypted
    Column("creator_id", Integer, ForeignKey("principals.id", ondelete="SET NULL")),
    Column("creator", String(256), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_reason", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("cursor", BigInteger, nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", BigInteger, nullable=True),
    Index(None, "model"),
)

# One event's delivery to one subscription (or a redelivery someone asked for), with its
# retry state. The message id is the ``webhook-id`` header: stable across retries.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("webhook_id", Integer, ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("message_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # pending, delivered, failed
    Column("redelivery", Boolean, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index(None, "webhook_id", "id"),
    Index(None, "webhook_id", "seq"),
    Index(None, "status", "next_attempt_at"),
)

# Every attempt of a delivery: when, the answer's status (NULL: none), latency, the class of
# error, and at most a short prefix of the answer's body (shown to admins only).
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "delivery_id",
        Integer,
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("attempted_at", BigInteger, nullable=False),
    Column("status_code", SmallInteger, nullable=True),
    Column("latency_us", BigInteger, nullable=False),
    Column("error_class", String(64), nullable=True),
    Column("response_prefix", Text, nullable=True),
    Index(None, "delivery_id"),
)


# -- signatures ---------------------------------------------------------------------------------

# The public keys that sign versions: the registry's own (principal_id NULL, each key it has
# signed with, so older signatures still verify after the key changes) and users' (each
# registered to its principal). The id is the sha256 of the DER public key.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("pem", Text, nullable=False),
    Column("principal_id", Integer, ForeignKey("principals.id", ondelete="CASCADE"), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    # Another registry's key an admin trusts, by the name it is trusted under (migration
    # 0021); NULL with principal_id NULL: this registry's own.
    Column("registry", String(64), nullable=True),
    Index(None, "principal_id"),
)

# Signatures of versions' manifests (Sigstore bundles, domain/signing.py): one per key and
# version. A key that is no longer published leaves its signatures here, proving nothing.
version_signatures = Table(
    "version_signatures",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True),
    Column("key_id", String(64), primary_key=True),
    Column("signer", String(256), nullable=False),
    Column("bundle", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # The trusted registry a bundle carried it from (migration 0021); NULL: made here.
    Column("origin", String(64), nullable=True),
)

# -- known vulnerabilities -------------------------------------------------------------------

# The OSV dump versions' environments are matched against (domain/advisories.py): one row
# (id 1), replaced with every package's entries by each load, in one transaction.
advisory_dump = Table(
    "advisory_dump",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("records", Integer, nullable=False),
    Column("skipped", Integer, nullable=False),
    Column("packages", Integer, nullable=False),
    Column("advisories", Integer, nullable=False),
    Column("modified", String(64), nullable=True),
    Column("loaded_at", BigInteger, nullable=False),
    Column("loaded_by", String(256), nullable=False),
    # How far the re-evaluation of the live versions against it has come: the id of the
    # next version to evaluate; NULL once every one has been.
    Column("pending_from", Integer, nullable=True),
)

# Each PyPI package's advisories as matching reads them (JSON, AdvisoryDB.stored), by the
# package's PEP 503 name: a registration reads the rows of its environment's packages.
advisory_packages = Table(
    "advisory_packages",
    metadata,
    Column("package", String(256), primary_key=True),
    Column("entries", Text, nullable=False),
)
