"""Settings and wiring: flags > MODELYARD_* environment variables > defaults.

``open_service`` is the one place that turns settings into a running registry (database
engine, migrations, blob store), used by the server and by the in-process SDK alike.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from modelyard.domain.errors import MissingExtra

if TYPE_CHECKING:
    from modelyard.domain.keys import ServerKey
    from modelyard.domain.scanning import Allowlist
    from modelyard.domain.signing import SigningKey
    from modelyard.service import RegistryService
    from modelyard.service.mlflow_source import SourceAllowlist
    from modelyard.storage.blobs import BlobStore
    from modelyard.storage.blobs.s3 import S3Location

DEFAULT_DATA_DIR = "./modelyard-data"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"


# The top-level modules of the `server` extra (pyproject.toml) that the client never imports
# (pydantic is in it too, but typer, the CLI's, imports pydantic itself).
SERVER_PACKAGES = frozenset(
    {
        "alembic",
        "argon2",
        "boto3",
        "botocore",
        "fastapi",
        "jinja2",
        "markdown_it",
        "multipart",
        "nh3",
        "orjson",
        "prometheus_client",  # also serve-model's (the serving extra), which runs without these
        "psycopg",
        "python_multipart",
        "sqlalchemy",
        "starlette",
        "swagger_ui",
        "uvicorn",
    }
)


@contextmanager
def server_side(what: str) -> Iterator[None]:
    """Around the imports of the server's side: where the client was installed without the
    `server` extra, a clear error that says what to install instead of a traceback."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in SERVER_PACKAGES:
            raise
        raise MissingExtra(
            f"{what} needs the registry's server side, which is not installed here"
            f" ({exc.name} is missing): pip install 'modelyard[server]'"
        ) from None


DEFAULT_SESSION_HOURS = 12.0
DEFAULT_LEASE_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path
    database_url: str | None = None
    # Where blobs live: None (the data directory's blobs/), file:///PATH or
    # s3://BUCKET/PREFIX; s3_endpoint for an S3-compatible store (else AWS's own).
    blob_url: str | None = None
    s3_endpoint: str | None = None
    # Bytes always pass through the server, even where the store could sign a URL.
    proxy_transfers: bool = False
    # A direct upload is verified by the store's own SHA-256 of the object (computed while
    # S3 copies it in place), not by reading it back through the server.
    s3_store_hashes: bool = False
    session_hours: float = DEFAULT_SESSION_HOURS  # how long a web UI sign-in lasts
    # The event stream: a comment every so often keeps proxies from cutting an idle one,
    # and a stream (or a long poll) is held open at most so long, then resumed.
    stream_heartbeat: float | None = None
    stream_seconds: float | None = None
    # Webhook targets an admin allows beyond the default (https to global addresses only):
    # http everywhere, and comma-separated host names, IPs and CIDRs despite being private.
    webhook_allow_http: bool = False
    webhook_allow_hosts: str = ""
    # Webhook delivery: "FIRST,LONGEST,GIVE_UP_AFTER" retry seconds (empty: 5 s doubling up
    # to an hour, for a day) and the lease a replica holds on a subscription it delivers.
    webhook_retries: str = ""
    webhook_lease_seconds: float = DEFAULT_LEASE_SECONDS
    # The MLflow tracking server that versions created through MLflow's API are copied
    # from (runs:/, models:/, mlflow-artifacts:/ sources), and a token for it if it wants one.
    mlflow_tracking_uri: str | None = None
    # What else MLflow sources may name (nothing by default): buckets, each BUCKET or
    # BUCKET/PREFIX (s3:// sources), and directories on the server's disk (file:// sources).
    mlflow_source_buckets: tuple[str, ...] = ()
    mlflow_source_dirs: tuple[str, ...] = ()
    # A file of more globals the registry's scan lets pickles import (module:Name lines),
    # beyond its default allowlist; verdicts reached under another allowlist are redone.
    scan_allow: Path | None = None

    @classmethod
    def from_env(
        cls,
        data_dir: str | None = None,
        database_url: str | None = None,
        *,
        webhook_allow_http: bool | None = None,
        webhook_allow_hosts: str | None = None,
        blob_url: str | None = None,
        s3_endpoint: str | None = None,
        proxy_transfers: bool | None = None,
        s3_store_hashes: bool | None = None,
        mlflow_tracking_uri: str | None = None,
        mlflow_source_buckets: Sequence[str] = (),
        mlflow_source_dirs: Sequence[str] = (),
    ) -> Settings:
        """Flags (the arguments) over MODELYARD_* variables over defaults.

        With PostgreSQL the data directory is no default: it would be wherever the server
        happened to start (it holds the local blobs and secret.key), so it must be named.
        """
        database_url = database_url or os.environ.get("MODELYARD_DATABASE_URL") or None
        chosen = data_dir or os.environ.get("MODELYARD_DATA_DIR") or None
        if chosen is None and database_url is not None:
            from modelyard.domain.errors import InvalidInput

            raise InvalidInput(
                "with --database-url, name the data directory too (it keeps secret.key and"
                " local blobs): --data-dir DIR or MODELYARD_DATA_DIR"
            )
        return cls(
            data_dir=Path(chosen or DEFAULT_DATA_DIR),
            database_url=database_url,
            blob_url=blob_url or os.environ.get("MODELYARD_BLOB_URL") or None,
            s3_endpoint=s3_endpoint or os.environ.get("MODELYARD_S3_ENDPOINT") or None,
            proxy_transfers=(
                proxy_transfers
                if proxy_transfers is not None
                else _flag("MODELYARD_PROXY_TRANSFERS")
            ),
            s3_store_hashes=(
                s3_store_hashes
                if s3_store_hashes is not None
                else _flag("MODELYARD_S3_STORE_HASHES")
            ),
            session_hours=_session_hours(os.environ.get("MODELYARD_SESSION_HOURS")),
            stream_heartbeat=_seconds("MODELYARD_STREAM_HEARTBEAT"),
            stream_seconds=_seconds("MODELYARD_STREAM_SECONDS"),
            webhook_allow_http=(
                webhook_allow_http
                if webhook_allow_http is not None
                else _flag("MODELYARD_WEBHOOK_ALLOW_HTTP")
            ),
            webhook_allow_hosts=(
                webhook_allow_hosts
                if webhook_allow_hosts is not None
                else os.environ.get("MODELYARD_WEBHOOK_ALLOW_HOSTS", "")
            ),
            webhook_retries=os.environ.get("MODELYARD_WEBHOOK_RETRIES", ""),
            webhook_lease_seconds=_lease_seconds(),
            mlflow_tracking_uri=(
                mlflow_tracking_uri or os.environ.get("MODELYARD_MLFLOW_TRACKING_URI") or None
            ),
            mlflow_source_buckets=_listed(mlflow_source_buckets, "MODELYARD_MLFLOW_SOURCE_BUCKETS"),
            mlflow_source_dirs=_listed(mlflow_source_dirs, "MODELYARD_MLFLOW_SOURCE_DIRS"),
            scan_allow=Path(allow) if (allow := os.environ.get("MODELYARD_SCAN_ALLOW")) else None,
        )

    @property
    def blobs_where(self) -> str:
        """Where blobs live, for a person: a directory, or s3://BUCKET/PREFIX (at ...)."""
        location = blob_location(self)
        return str(location)

    @property
    def effective_database_url(self) -> str:
        """PostgreSQL when configured, else SQLite in the data directory."""
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'registry.db'}"


def _session_hours(text: str | None) -> float:
    """MODELYARD_SESSION_HOURS: a positive number of hours, at most 30 days."""
    if not text:
        return DEFAULT_SESSION_HOURS
    try:
        hours = float(text)
    except ValueError:
        hours = 0.0
    if not 0 < hours <= 720:
        from modelyard.domain.errors import InvalidInput

        raise InvalidInput(
            f"MODELYARD_SESSION_HOURS={text!r}: give a number of hours between 0 and 720"
        )
    return hours


def _seconds(variable: str) -> float | None:
    """A positive number of seconds, at most a day; None when the variable is unset."""
    text = os.environ.get(variable)
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 86_400:
        from modelyard.domain.errors import InvalidInput

        raise InvalidInput(f"{variable}={text!r}: give a number of seconds between 0 and 86400")
    return seconds


def _lease_seconds() -> float:
    """MODELYARD_WEBHOOK_LEASE_SECONDS: how soon another replica takes over a dead one's
    deliveries (between 1 s and 10 minutes)."""
    seconds = _seconds("MODELYARD_WEBHOOK_LEASE_SECONDS")
    if seconds is None:
        return DEFAULT_LEASE_SECONDS
    if not 1 <= seconds <= 600:
        from modelyard.domain.errors import InvalidInput

        raise InvalidInput(
            f"MODELYARD_WEBHOOK_LEASE_SECONDS={seconds:g}: give seconds between 1 and 600"
        )
    return seconds


def _flag(variable: str) -> bool:
    """A boolean variable: 1, true, yes or on (any case) is true; unset or empty is false."""
    text = os.environ.get(variable, "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    from modelyard.domain.errors import InvalidInput

    raise InvalidInput(f"{variable}={text!r}: give true or false")


def _listed(flags: Sequence[str], variable: str) -> tuple[str, ...]:
    """A repeatable flag's values, else the variable's comma-separated ones (a list of
    paths is not split on spaces, as the CLI would split a variable)."""
    values = flags or os.environ.get(variable, "").split(",")
    return tuple(value.strip() for value in values if value.strip())


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9!_.*'()=+,;@&$-]+")


def blob_location(settings: Settings) -> Path | S3Location:
    """The blob store the settings name: a directory, or a bucket and key prefix.

    Raises InvalidInput, in one line, for a URL that names neither.
    """
    from modelyard.domain.errors import InvalidInput
    from modelyard.storage.blobs.s3 import S3Location

    url = settings.blob_url
    if not url:
        return settings.data_dir / "blobs"
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise InvalidInput(f"--blob-url {url!r}: a directory is file:///ABSOLUTE/PATH")
        return Path(unquote(parts.path))
    if parts.scheme != "s3":
        raise InvalidInput(
            f"--blob-url {url!r}: give s3://BUCKET/PREFIX or file:///PATH"
            f" (not {parts.scheme or 'a bare path'})"
        )
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        raise InvalidInput(f"--blob-url {url!r}: s3://BUCKET/PREFIX has no port, user or query")
    prefix = _key_prefix(f"--blob-url {url!r}", parts.netloc, parts.path)
    endpoint = settings.s3_endpoint
    if endpoint is not None:
        where = urlsplit(endpoint)
        if where.scheme not in ("http", "https") or not where.hostname or where.query:
            raise InvalidInput(
                f"--s3-endpoint {endpoint!r}: give the store's URL, e.g. http://127.0.0.1:9000"
            )
    return S3Location(parts.netloc, prefix, settings.s3_endpoint)


def mlflow_source_allowlist(settings: Settings) -> SourceAllowlist:
    """The buckets and directories MLflow sources may be read from, checked.

    Raises InvalidInput, in one line, for a name that is neither, and for a place that
    holds the registry's own data or blobs: a source there would copy secret.key, or any
    blob past the access control of the model it belongs to.
    """
    from modelyard.domain.errors import InvalidInput
    from modelyard.service.mlflow_source import AllowedBucket, SourceAllowlist

    blobs = blob_location(settings)
    own = [Path(os.path.realpath(settings.data_dir))]
    if isinstance(blobs, Path):
        own.append(Path(os.path.realpath(blobs)))
    dirs = []
    for text in settings.mlflow_source_dirs:
        if not Path(text).is_absolute():
            raise InvalidInput(f"--mlflow-source-dir {text!r}: give an absolute path")
        real = Path(os.path.realpath(text))
        if not real.is_dir():
            raise InvalidInput(f"--mlflow-source-dir {text!r}: not a directory on this server")
        if any(real.is_relative_to(mine) or mine.is_relative_to(real) for mine in own):
            raise InvalidInput(
                f"--mlflow-source-dir {text!r}: overlaps the registry's own data or blobs;"
                " allow a directory beside them"
            )
        dirs.append(real)
    buckets = []
    for text in settings.mlflow_source_buckets:
        bucket, _, rest = text.removeprefix("s3://").partition("/")
        what = f"--mlflow-source-bucket {text!r} (BUCKET or BUCKET/PREFIX)"
        allowed = AllowedBucket(bucket, _key_prefix(what, bucket, rest))
        if not isinstance(blobs, Path) and allowed.overlaps(blobs.bucket, blobs.prefix):
            raise InvalidInput(
                f"--mlflow-source-bucket {text!r}: overlaps the blob store ({blobs});"
                " allow a prefix beside it"
            )
        buckets.append(allowed)
    return SourceAllowlist(dirs=tuple(dirs), buckets=tuple(buckets))


def _key_prefix(what: str, bucket: str, path: str) -> str:
    """The key prefix ("" or ending in '/') of ``path`` in ``bucket``, both checked usable."""
    from modelyard.domain.errors import InvalidInput

    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise InvalidInput(
            f"{what}: {bucket!r} is not a bucket name (3 to 63 lowercase letters, digits,"
            " dots and hyphens)"
        )
    segments = [p for p in path.split("/") if p]
    for segment in segments:
        if segment in (".", "..") or not _PREFIX_PART.fullmatch(segment):
            raise InvalidInput(f"{what}: {segment!r} is not a usable key prefix")
    prefix = "".join(f"{p}/" for p in segments)
    if len(prefix) > 512:
        raise InvalidInput(f"{what}: the key prefix may be at most 512 characters")
    return prefix


def open_blob_store(location: Path | S3Location) -> BlobStore:
    """The blob store at ``location``, checked usable (a bucket that exists and answers)."""
    from modelyard.storage.blobs import LocalBlobStore

    if isinstance(location, Path):
        return LocalBlobStore(location)
    from modelyard.storage.blobs.s3 import S3BlobStore, require_reachable

    require_reachable(location)
    store = S3BlobStore(location)
    try:
        store.check()
    except BaseException:
        store.close()
        raise
    return store


def os_user() -> str:
    """Who runs this process: the actor of local mode and of 'modelyard admin create'."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        return "local"


def open_service(settings: Settings, *, artifacts: bool = True) -> RegistryService:
    """Create the data directory, migrate the schema and return a ready service.

    ``artifacts=False``: for a process that reads no artifact (the server's delivery
    process). It leaves the blob store closed: a process holding it open would keep the
    server's start-up clean-up from running after a crash.

    The data directory is private to the OS user (0700, the SQLite files 0600): other local
    users could otherwise read every artifact and the database past access control.
    """
    # Imported here: the CLI reads this module's defaults on every command, and most
    # commands talk HTTP and should not pay for loading SQLAlchemy and Alembic (nor need
    # them installed: they come with the `server` extra).
    with server_side("a registry in a directory or database"):
        from modelyard.domain.delivery import RetrySchedule
        from modelyard.service import RegistryService
        from modelyard.service.delivery import DeliveryConfig
        from modelyard.service.mlflow_source import MlflowSources
        from modelyard.service.outbound import OutboundPolicy
        from modelyard.storage.blobs import MemoryBlobStore
        from modelyard.storage.db.engine import create_db_engine, migrate
        from modelyard.storage.db.store import Database
        from modelyard.storage.private import private_dir, private_file

    location = blob_location(settings)  # a bad URL is refused before anything is made
    allowlist = mlflow_source_allowlist(settings)
    scan_allow = scan_allowlist(settings)
    private_dir(settings.data_dir)
    if settings.database_url is None:
        # SQLite creates its -wal and -shm files with the database file's mode.
        for suffix in ("", "-wal", "-shm"):
            path = settings.data_dir / f"registry.db{suffix}"
            if suffix == "" or path.exists():
                private_file(path)
    blobs = open_blob_store(location) if artifacts else MemoryBlobStore()
    try:
        engine = create_db_engine(settings.effective_database_url)
        migrate(engine)
    except BaseException:
        blobs.close()
        raise
    service = RegistryService(Database(engine), blobs, server_key(settings.data_dir))
    service.sessions.lifetime_us = round(settings.session_hours * 3_600_000_000)
    service.signing.load_key = lambda: signing_key(settings.data_dir)
    service.settings = settings
    if settings.stream_heartbeat is not None:
        service.feed.heartbeat = settings.stream_heartbeat
    if settings.stream_seconds is not None:
        service.feed.stream_seconds = settings.stream_seconds
    service.outbound = OutboundPolicy.from_config(
        settings.webhook_allow_http, settings.webhook_allow_hosts
    )
    service.deliveries.config = DeliveryConfig(
        retries=RetrySchedule.parse(settings.webhook_retries)
        if settings.webhook_retries
        else RetrySchedule(),
        lease_seconds=settings.webhook_lease_seconds,
    )
    if scan_allow is not None:
        service.scans.allow = service.scans.allow.extended(scan_allow)
    service.mlflow_sources = MlflowSources(
        service,
        settings.mlflow_tracking_uri,
        os.environ.get("MODELYARD_MLFLOW_TRACKING_TOKEN") or None,
        allowlist=allowlist,
        s3_endpoint=settings.s3_endpoint,
    )
    return service


def scan_allowlist(settings: Settings) -> Allowlist | None:
    """The allowlist file the settings name, read and checked (a bad line is refused at
    start, naming it), or None."""
    if settings.scan_allow is None:
        return None
    from modelyard.domain.errors import InvalidInput
    from modelyard.domain.scanning import Allowlist

    try:
        text = settings.scan_allow.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            f"MODELYARD_SCAN_ALLOW: cannot read {settings.scan_allow}: {exc}"
        ) from None
    return Allowlist.from_text(text, str(settings.scan_allow))


def key_source(data_dir: Path) -> str:
    """Where ``server_key`` takes the key from, for messages (never the key)."""
    if os.environ.get("MODELYARD_SECRET_KEY"):
        return "MODELYARD_SECRET_KEY"
    return str(data_dir / "secret.key")


def server_key(data_dir: Path) -> ServerKey:
    """``MODELYARD_SECRET_KEY``, else the data directory's ``secret.key`` (made 0600 once).

    Replicas behind one load balancer must share it (set the variable on each), so a page
    token one issued is read by the next.
    """
    from modelyard.domain.keys import KEY_BYTES, ServerKey
    from modelyard.storage.private import create_once

    text = os.environ.get("MODELYARD_SECRET_KEY")
    if text:
        return ServerKey.from_text(text)
    path = data_dir / "secret.key"
    create_once(path, os.urandom(KEY_BYTES))
    return ServerKey(path.read_bytes())


def signing_key(data_dir: Path) -> SigningKey:
    """The registry's ECDSA P-256 key, which signs versions entering a protected stage:
    ``MODELYARD_SIGNING_KEY`` (the path of a PEM private key), else the data directory's
    ``signing.key``, made 0600 on first use. Either is refused if other users could read
    or replace it (``read_secret_file``). Keeping it in a KMS or an HSM is future work.
    """
    from modelyard.domain.signing import SigningKey
    from modelyard.storage.private import create_once, read_secret_file

    named = os.environ.get("MODELYARD_SIGNING_KEY")
    if named:
        path = Path(named)
        return SigningKey.from_pem(read_secret_file(path, follow=True), str(path))
    path = data_dir / "signing.key"
    create_once(path, SigningKey.generate().to_pem())
    return SigningKey.from_pem(read_secret_file(path), str(path))
