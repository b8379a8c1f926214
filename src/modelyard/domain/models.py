"""The registry's entities as plain, immutable values.

Every layer speaks these: storage builds them from rows, the service returns them, the
API serialises them with ``as_dict`` and the SDK rebuilds them with ``from_dict``, so the
local (in-process) and remote registries hand users exactly the same objects.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Generic, TypeVar

from modelyard.domain.errors import InvalidInput
from modelyard.domain.manifest import FileEntry

DEFAULT_STAGE = "development"
DEFAULT_PROTECTED_ALIASES = ("champion", "production")


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_from_us(micros: int) -> datetime:
    """Exact (no float rounding): journal hashes are computed over the microseconds."""
    return EPOCH + timedelta(microseconds=micros)


def to_us(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


def iso(dt: datetime) -> str:
    if dt.tzinfo is UTC:  # every time the registry makes itself: a page formats hundreds
        return dt.isoformat(timespec="microseconds")[:-6] + "Z"
    return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class DatasetRef:
    """Which data trained the version: a name or URI, optionally a version and a digest."""

    name: str
    version: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> DatasetRef:
        """'customers@2024-w36' -> name 'customers', version '2024-w36'. URIs keep their '@'."""
        if "://" not in text and "@" in text:
            name, _, version = text.rpartition("@")
            return cls(name=name, version=version or None)
        return cls(name=text)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "digest": self.digest}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetRef:
        return cls(name=data["name"], version=data.get("version"), digest=data.get("digest"))


@dataclass(frozen=True, slots=True)
class SourceRef:
    """The code that produced the version: git remote, commit and whether the tree was dirty."""

    repo: str | None = None
    commit: str | None = None
    branch: str | None = None
    dirty: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "commit": self.commit,
            "branch": self.branch,
            "dirty": self.dirty,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceRef:
        return cls(
            repo=data.get("repo"),
            commit=data.get("commit"),
            branch=data.get("branch"),
            dirty=data.get("dirty"),
        )


@dataclass(frozen=True, slots=True)
class Environment:
    """Where the version was produced: Python version, platform and installed packages."""

    python: str | None = None
    platform: str | None = None
    packages: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"python": self.python, "platform": self.platform, "packages": dict(self.packages)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Environment:
        return cls(
            python=data.get("python"),
            platform=data.get("platform"),
            packages=dict(data.get("packages") or {}),
        )


@dataclass(frozen=True, slots=True)
class SourceCheck:
    """A check's result as another registry recorded it, kept as provenance: this
    registry's policies read its own checks only."""

    name: str
    status: str
    reporter: str
    reported_at: datetime
    url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "reporter": self.reporter,
            "reported_at": iso(self.reported_at),
            "url": self.url,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceCheck:
        return cls(
            str(data["name"]),
            str(data["status"]),
            str(data["reporter"]),
            parse_iso(data["reported_at"]),
            data.get("url"),
        )


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a model or version was first made, when an import brought it from another
    registry: its name and number there, and the time and creator that registry reported,
    kept beside (never instead of) this registry's own creator and time, which are the
    import's.

    A Modelyard bundle's import (system ``modelyard``, ``uri`` the name its registry's key
    is trusted under here) also keeps the key that signed the bundle, the bundle's digest,
    the stage the version held there and its checks' results there."""

    system: str  # "mlflow", "modelyard"
    uri: str  # the registry it came from
    name: str  # the model's name there
    version: str | None = None
    created_at: datetime | None = None
    created_by: str | None = None
    run_link: str | None = None
    key_id: str | None = None
    bundle: str | None = None  # sha256 of the bundle's signed manifest
    stage: str | None = None
    checks: tuple[SourceCheck, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "system": self.system,
            "uri": self.uri,
            "name": self.name,
            "version": self.version,
            "created_at": iso(self.created_at) if self.created_at else None,
            "created_by": self.created_by,
            "run_link": self.run_link,
        }
        # Only when set: origins journaled before these existed compare equal
        # (journal verify --state) with the rows they describe.
        for key, value in (("key_id", self.key_id), ("bundle", self.bundle), ("stage", self.stage)):
            if value is not None:
                found[key] = value
        if self.checks:
            found["checks"] = [c.as_dict() for c in self.checks]
        return found

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Origin:
        return cls(
            system=str(data["system"]),
            uri=str(data["uri"]),
            name=str(data["name"]),
            version=data.get("version"),
            created_at=parse_iso(data["created_at"]) if data.get("created_at") else None,
            created_by=data.get("created_by"),
            run_link=data.get("run_link"),
            key_id=data.get("key_id"),
            bundle=data.get("bundle"),
            stage=data.get("stage"),
            checks=tuple(SourceCheck.from_dict(c) for c in data.get("checks") or ()),
        )

    @classmethod
    def from_json(cls, text: str | None) -> Origin | None:
        """A stored origin (a JSON column), or None."""
        return cls.from_dict(json.loads(text)) if text else None

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)


@dataclass(frozen=True, slots=True)
class PendingVersion:
    """A number given to a version whose files are still being copied from a source (what
    MLflow calls PENDING_REGISTRATION), or whose copy failed (FAILED_REGISTRATION). The
    version itself does not exist until its registration commits, whole."""

    model: str
    version: int
    status: str  # pending, failed
    message: str
    source: str
    run: str | None
    creator: str
    created_at: datetime
    updated_at: datetime  # the copy's last sign of life

    # A copy gives a sign of life at least this often; one silent for longer died with its
    # server (a restart mid-copy), and will not finish.
    STALE_AFTER: ClassVar[timedelta] = timedelta(minutes=2)

    def seen_at(self, now: datetime) -> PendingVersion:
        """As it stands at ``now``: a pending copy silent too long has failed."""
        if self.status == "pending" and now - self.updated_at > self.STALE_AFTER:
            return replace(
                self,
                status="failed",
                message="the copy stopped (its server restarted?); register the source again",
            )
        return self


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    description: str
    tags: dict[str, str]
    created_at: datetime
    updated_at: datetime
    latest_version: int | None
    aliases: dict[str, int]
    protected_aliases: tuple[str, ...] = DEFAULT_PROTECTED_ALIASES
    origin: Origin | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "tags": dict(self.tags),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "latest_version": self.latest_version,
            "aliases": dict(self.aliases),
            "protected_aliases": list(self.protected_aliases),
            "origin": self.origin.as_dict() if self.origin else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Model:
        return cls(
            name=data["name"],
            description=data.get("description") or "",
            tags=dict(data.get("tags") or {}),
            created_at=parse_iso(data["created_at"]),
            updated_at=parse_iso(data["updated_at"]),
            latest_version=data.get("latest_version"),
            aliases=dict(data.get("aliases") or {}),
            protected_aliases=tuple(data.get("protected_aliases", DEFAULT_PROTECTED_ALIASES)),
            origin=Origin.from_dict(data["origin"]) if data.get("origin") else None,
        )


@dataclass(frozen=True, slots=True)
class Version:
    model: str
    version: int
    manifest_digest: str
    files: tuple[FileEntry, ...]
    size: int
    framework: str | None
    format: str | None
    params: dict[str, str]
    metrics: dict[str, float]
    dataset: DatasetRef | None
    source: SourceRef | None
    environment: Environment | None
    run: str | None
    creator: str
    created_at: datetime
    tags: dict[str, str]
    description: str
    stage: str
    aliases: tuple[str, ...]
    origin: Origin | None = None

    @property
    def reference(self) -> str:
        return f"{self.model}/{self.version}"

    def as_dict(self, *, environment: bool = True) -> dict[str, Any]:
        """The version as JSON; ``environment=False`` leaves the environment None, for a
        page that lists each distinct environment once (``version_page_as_dict``)."""
        return {
            "model": self.model,
            "version": self.version,
            "reference": self.reference,
            "manifest_digest": self.manifest_digest,
            "files": [f.as_dict() for f in self.files],
            "size": self.size,
            "framework": self.framework,
            "format": self.format,
            "params": dict(self.params),
            "metrics": dict(self.metrics),
            "dataset": self.dataset.as_dict() if self.dataset else None,
            "source": self.source.as_dict() if self.source else None,
            "environment": (
                self.environment.as_dict() if self.environment and environment else None
            ),
            "run": self.run,
            "creator": self.creator,
            "created_at": iso(self.created_at),
            "tags": dict(self.tags),
            "description": self.description,
            "stage": self.stage,
            "aliases": list(self.aliases),
            "origin": self.origin.as_dict() if self.origin else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Version:
        return cls(
            model=data["model"],
            version=int(data["version"]),
            manifest_digest=data["manifest_digest"],
            files=tuple(
                FileEntry(path=f["path"], size=int(f["size"]), sha256=f["sha256"])
                for f in data.get("files") or ()
            ),
            size=int(data.get("size") or 0),
            framework=data.get("framework"),
            format=data.get("format"),
            params=dict(data.get("params") or {}),
            metrics={k: float(v) for k, v in (data.get("metrics") or {}).items()},
            dataset=DatasetRef.from_dict(data["dataset"]) if data.get("dataset") else None,
            source=SourceRef.from_dict(data["source"]) if data.get("source") else None,
            environment=(
                Environment.from_dict(data["environment"]) if data.get("environment") else None
            ),
            run=data.get("run"),
            creator=data.get("creator") or "",
            created_at=parse_iso(data["created_at"]),
            tags=dict(data.get("tags") or {}),
            description=data.get("description") or "",
            stage=data.get("stage") or DEFAULT_STAGE,
            aliases=tuple(data.get("aliases") or ()),
            origin=Origin.from_dict(data["origin"]) if data.get("origin") else None,
        )


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the hash-chained journal."""

    seq: int
    time: datetime
    actor: str
    kind: str
    subject: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str
    token_id: str | None = None
    # The model the event concerns (None: identity and registry-wide events): history,
    # as-of answers and visibility select events by it.
    model: str | None = None
    # The chain version its hash was computed with (domain/journal.py).
    chain: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": iso(self.time),
            "actor": self.actor,
            "kind": self.kind,
            "subject": self.subject,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "token_id": self.token_id,
            "model": self.model,
            "chain": self.chain,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        return cls(
            seq=int(data["seq"]),
            time=parse_iso(data["time"]),
            actor=data["actor"],
            kind=data["kind"],
            subject=data["subject"],
            payload=dict(data.get("payload") or {}),
            prev_hash=data["prev_hash"],
            hash=data["hash"],
            token_id=data.get("token_id"),
            model=data.get("model"),
            chain=int(data.get("chain", 1)),
        )


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events of the journal an auditor reads: by actor, model, and a time range
    (both ends included, each optional)."""

    actor: str | None = None
    model: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise InvalidInput("a time needs a time zone, e.g. 2026-03-03T12:00Z")


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; ``next_page_token`` is None on the last page."""

    items: list[T]
    next_page_token: str | None


def environment_key(environment: Environment) -> str:
    """The sha256 of an environment's canonical JSON: equal environments, equal keys."""
    text = json.dumps(environment.as_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def version_page_as_dict(page: Page[Version]) -> dict[str, Any]:
    """A page of versions as JSON, each distinct environment once.

    The installed packages are most of a version's size and the versions of a page mostly
    share one environment, so items name theirs by ``environment_key`` and the page's
    ``environments`` maps each key to the environment: a third of the bytes, nothing lost.
    """
    environments: dict[str, dict[str, Any]] = {}
    keys: dict[int, str] = {}  # id -> key: the store hands out one object per environment
    items = []
    for version in page.items:
        item = version.as_dict(environment=False)
        if (env := version.environment) is not None:
            key = keys.get(id(env))
            if key is None:
                key = keys[id(env)] = environment_key(env)
                environments.setdefault(key, env.as_dict())
            item["environment"] = key
        items.append(item)
    return {"items": items, "environments": environments, "next_page_token": page.next_page_token}


def version_page_from_dict(data: dict[str, Any]) -> Page[Version]:
    """The inverse of ``version_page_as_dict``: items get their environments back."""
    environments = {
        key: Environment.from_dict(env) for key, env in (data.get("environments") or {}).items()
    }
    items = []
    for item in data["items"]:
        key = item.get("environment")
        if isinstance(key, str):
            version = Version.from_dict({**item, "environment": None})
            items.append(replace(version, environment=environments[key]))
        else:
            items.append(Version.from_dict(item))
    return Page(items, data.get("next_page_token"))
