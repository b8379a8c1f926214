"""Versions made from MLflow sources: a run's or a logged model's files, copied from the
MLflow tracking server named in configuration (``MODELYARD_MLFLOW_TRACKING_URI``), or from
a bucket or a directory an admin allowed.

A source is something the server fetches, so every place it may name is one an admin chose:
``runs:/RUN/PATH``, ``models:/MODEL_ID`` and ``mlflow-artifacts:/PATH`` are read through the
one configured tracking server's artifact proxy; ``s3://BUCKET/PREFIX`` only in the buckets
(or key prefixes) allowed, and ``file:///PATH`` only when its real path lies under a
directory allowed. A run whose artifacts the tracking server keeps in a bucket or on disk
(its ``artifact_uri``) is read under the same rules: anyone may create an MLflow experiment
with any artifact location. Every other scheme or host is refused before anything is
fetched (an ``http://`` source would let a caller make the server read its network, a
cloud metadata address say). The caller's right to register is checked first, too.

The files stream into the content-addressed store, hashed as they arrive, so the version is
immutable whatever later happens to the run; the run's params, metrics and id become the
version's lineage.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

import httpx

from modelyard.domain.access import Caller, Permission
from modelyard.domain.errors import InvalidInput, ModelyardError, NotFound, Unavailable
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import PendingVersion, Version
from modelyard.domain.names import validate_file_path, validate_model_name
from modelyard.domain.versions import NewVersion
from modelyard.mlflow_tracking import (
    CHUNK,
    Files,
    TrackingServer,
    latest_metrics,
    params_of,
    refused,
    walk,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from modelyard.service.registry import RegistryService


ANSWER_WITHIN: Final = 10.0  # seconds: most models are copied by then, and answer READY
COPIES: Final = 4  # copies at once per server process
HEARTBEAT: Final = 20.0  # seconds between a copy's signs of life (PendingVersion.STALE_AFTER)


@dataclass(frozen=True, slots=True)
class AllowedBucket:
    """A bucket, or a key prefix in one ("" or ending in '/'), that sources may name."""

    bucket: str
    prefix: str = ""

    def holds(self, bucket: str, key: str) -> bool:
        """Whether everything under ``key`` ("" or ending in '/') in ``bucket`` is here."""
        return bucket == self.bucket and key.startswith(self.prefix)

    def overlaps(self, bucket: str, prefix: str) -> bool:
        return bucket == self.bucket and (
            prefix.startswith(self.prefix) or self.prefix.startswith(prefix)
        )


@dataclass(frozen=True, slots=True)
class SourceAllowlist:
    """Where beyond the tracking server sources may be read: the places an admin allowed
    (``config.mlflow_source_allowlist``), none by default."""

    dirs: tuple[Path, ...] = ()  # real paths: links resolved
    buckets: tuple[AllowedBucket, ...] = ()


@dataclass(frozen=True, slots=True)
class _Proxied:
    path: str  # under the tracking server's artifact proxy


@dataclass(frozen=True, slots=True)
class _OnDisk:
    allowed: Path  # the allowed directory it lies under
    inside: tuple[str, ...]  # the components of its real path below that directory


@dataclass(frozen=True, slots=True)
class _InBucket:
    bucket: str
    key: str  # "" or ending in '/'


@dataclass
class _Located:
    """Where a source's files are, and the run they came from."""

    place: _Proxied | _OnDisk | _InBucket
    run_id: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class MlflowSources:
    """``service.mlflow_sources``: register a version from an MLflow source URI."""

    def __init__(
        self,
        registry: RegistryService,
        tracking_uri: str | None,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
        *,
        allowlist: SourceAllowlist | None = None,
        s3_endpoint: str | None = None,
        answer_within: float = ANSWER_WITHIN,
    ) -> None:
        """``s3_endpoint``: the blob store's (--s3-endpoint), whose credentials read an
        allowed bucket too. ``answer_within``: seconds a registration waits for its copy
        before it answers with the version pending."""
        self._registry = registry
        self.answer_within = answer_within
        self._copies: ThreadPoolExecutor | None = None
        self.tracking_uri = tracking_uri.rstrip("/") if tracking_uri else None
        self._token = token
        self._transport = transport
        self.allowlist = allowlist or SourceAllowlist()
        self._s3_endpoint = s3_endpoint
        self._s3: S3Client | None = None  # made at the first s3:// source: botocore loads slowly

    def register(
        self,
        caller: Caller,
        name: str,
        source: str,
        *,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
        description: str = "",
    ) -> Version | PendingVersion:
        """The next version of ``name``, its files copied from ``source``: the version
        when the copy ends within ``answer_within`` seconds, else its number, pending
        (``RegistryService.pending_version`` says how it goes).

        Everything that can refuse the source is done first, while the caller waits: the
        permission, the source's place, its run, the listing of its files (links, depth,
        count). Only then is a number given (``reserve_version``), and the bytes copied on
        a thread of this server; a copy that fails leaves the number failed, with why.
        """
        self._registry.access.require(caller, Permission.REGISTER, validate_model_name(name))
        with ExitStack() as held:
            tracking = held.enter_context(self._tracking())
            located = self._locate(tracking, source, run_id)
            files = held.enter_context(self._files(tracking, source, located.place))
            listed = walk(files)
            if not listed:
                raise NotFound(f"no files at {files.where}", code="source_empty")
            run = located.run_id or run_id or None
            number = self._registry.reserve_version(name, source, caller=caller, run=run)
            spec = NewVersion(
                files=[],
                params=located.params,
                metrics=located.metrics,
                tags=dict(tags or {}),
                description=description,
                run=run,
            )
            copy = _Copy(self._registry, caller, name, number, spec, files, listed)
            copying = self._pool().submit(copy.run, held.pop_all())
        try:
            return copying.result(timeout=self.answer_within)
        except FuturesTimeout:
            pass
        except ModelyardError:
            pass  # the copy failed, and said why: the pending version reports it
        return self._registry.version_or_pending(name, number, caller=caller)

    def _pool(self) -> ThreadPoolExecutor:
        if self._copies is None:
            self._copies = ThreadPoolExecutor(COPIES, thread_name_prefix="mlflow-copy")
        return self._copies

    def close(self) -> None:
        """Copies still running go on until they end or fail (their versions pending)."""
        if self._copies is not None:
            self._copies.shutdown(wait=False)

    @contextmanager
    def _tracking(self) -> Iterator[TrackingServer | None]:
        """The configured tracking server (connected at its first request), if any."""
        if self.tracking_uri is None:
            yield None
            return
        with TrackingServer(
            self.tracking_uri, token=self._token, transport=self._transport
        ) as tracking:
            yield tracking

    def _need(self, tracking: TrackingServer | None, source: str) -> TrackingServer:
        if tracking is None:
            raise refused(
                source,
                "it is read from an MLflow tracking server, and none is configured"
                " (MODELYARD_MLFLOW_TRACKING_URI)",
            )
        return tracking

    # -- where the files are -----------------------------------------------------------------

    def _locate(self, tracking: TrackingServer | None, source: str, run_id: str | None) -> _Located:
        if source.startswith("models:/"):
            model_id = source.removeprefix("models:/").strip("/")
            if not model_id or "/" in model_id or "@" in model_id:
                raise refused(source, "models:/ names a logged model by its id (models:/m-...)")
            server = self._need(tracking, source)
            found = server.logged_model(model_id)
            info = found.get("info", {})
            located = _Located(self._place(server, source, info.get("artifact_uri", "")))
            located.params, located.metrics = params_of(found), latest_metrics(found)
            run = info.get("source_run_id") or run_id
            return self._with_run(server, located, run) if run else located
        if source.startswith("runs:/"):
            run, _, path = source.removeprefix("runs:/").partition("/")
            if not run:
                raise refused(source, "runs:/ takes RUN_ID/PATH")
            if path:  # checked before anything is asked of the tracking server
                try:
                    validate_file_path(path)
                except InvalidInput as exc:
                    raise refused(source, exc.message) from None
            server = self._need(tracking, source)
            found = server.run(run)
            artifacts = str(found.get("info", {}).get("artifact_uri", ""))
            if artifacts and path:
                artifacts = f"{artifacts.rstrip('/')}/{path}"
            located = _Located(self._place(server, source, artifacts))
            return self._with_run(server, located, run, found)
        located = _Located(self._place(tracking, source))
        return self._with_run(tracking, located, run_id) if run_id and tracking else located

    def _place(
        self, tracking: TrackingServer | None, source: str, artifacts: str | None = None
    ) -> _Proxied | _OnDisk | _InBucket:
        """Where the source's files are (``artifacts``: its run's or logged model's, as the
        tracking server says), if that is a place this registry reads; else refused."""
        uri = source if artifacts is None else artifacts
        try:
            scheme = urlsplit(uri).scheme
        except ValueError:  # a malformed host, as http://[::1 is
            scheme = ""
        if scheme == "mlflow-artifacts":
            return _Proxied(self._need(tracking, source).artifact_path(uri, source))
        if scheme == "file":
            return self._on_disk(source, uri)
        if scheme == "s3":
            return self._in_bucket(source, uri)
        readable = (
            "the tracking server's artifact proxy (mlflow server --serve-artifacts), or s3://"
            " and file:// where an admin allowed them; other schemes and hosts are refused"
        )
        if artifacts is None:
            raise refused(
                source,
                "sources are runs:/RUN_ID/PATH, models:/MODEL_ID or mlflow-artifacts:/PATH,"
                f" read through {readable}",
            )
        raise refused(
            source, f"its artifacts are at {uri or 'an unknown place'}, not behind {readable}"
        )

    def _on_disk(self, source: str, uri: str) -> _OnDisk:
        """A ``file://`` URI's place, when its real path (links resolved, ``..`` climbed)
        lies under an allowed directory. The refusal is the same whether or not the path
        exists: it must not tell a caller what the server's disk holds."""
        parts = urlsplit(uri)
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise refused(source, "a file:// source is file:///ABSOLUTE/PATH on this server")
        if not self.allowlist.dirs:
            raise refused(
                source,
                "this registry reads no file:// sources (an admin allows directories with"
                " --mlflow-source-dir)",
            )
        if path.startswith("/") and "\0" not in path:
            real = Path(os.path.realpath(path))
            for allowed in self.allowlist.dirs:
                if real.is_relative_to(allowed):
                    return _OnDisk(allowed, real.relative_to(allowed).parts)
        raise refused(
            source,
            "file:// sources are read only under the directories an admin allowed"
            " (--mlflow-source-dir)",
        )

    def _in_bucket(self, source: str, uri: str) -> _InBucket:
        """An ``s3://`` URI's place, when its bucket (and key prefix) is allowed."""
        parts = urlsplit(uri)
        bucket, key = parts.netloc, parts.path.strip("/")
        if not self.allowlist.buckets:
            raise refused(
                source,
                "this registry reads no s3:// sources (an admin allows buckets with"
                " --mlflow-source-bucket)",
            )
        if key:
            try:
                validate_file_path(key)
            except InvalidInput as exc:
                raise refused(source, exc.message) from None
        under = f"{key}/" if key else ""
        if (
            parts.query
            or parts.fragment
            or not any(allowed.holds(bucket, under) for allowed in self.allowlist.buckets)
        ):
            raise refused(
                source,
                "s3:// sources are read only in the buckets and key prefixes an admin allowed"
                " (--mlflow-source-bucket)",
            )
        return _InBucket(bucket, under)

    def _with_run(
        self, tracking: TrackingServer, located: _Located, run_id: str, run: Any = None
    ) -> _Located:
        """The run's params and metrics (its latest values), as the version's lineage; they
        win over a logged model's, whose metrics MLflow 3 fills with each one's first value."""
        run = run or tracking.run(run_id)
        located.run_id = run_id
        located.params = {**located.params, **params_of(run)}
        located.metrics = {**located.metrics, **latest_metrics(run)}
        return located

    # -- the bytes -------------------------------------------------------------------------

    @contextmanager
    def _files(
        self, tracking: TrackingServer | None, source: str, place: _Proxied | _OnDisk | _InBucket
    ) -> Iterator[Files]:
        if isinstance(place, _Proxied):
            yield self._need(tracking, source).artifacts(place.path)
        elif isinstance(place, _OnDisk):
            with _DiskFiles.opened(source, place) as files:
                yield files
        else:
            if self._s3 is None:
                from modelyard.storage.blobs.s3 import make_client

                self._s3 = make_client(self._s3_endpoint)
            yield _BucketFiles(self._s3, place)


class _Copy:
    """A pending version's bytes, streamed from its source into the blob store (which
    names each file by what it hashes to: one pass, nothing on local disk), then the
    version registered under the number it was given; or that number marked failed."""

    def __init__(
        self,
        registry: RegistryService,
        caller: Caller,
        name: str,
        number: int,
        spec: NewVersion,
        files: Files,
        listed: list[str],
    ) -> None:
        self._registry, self._caller = registry, caller
        self._name, self._number, self._spec = name, number, spec
        self._files, self._listed = files, listed
        self._alive_at = time.monotonic()

    def run(self, held: ExitStack) -> Version:
        with held:
            try:
                entries = [self._file(relative) for relative in self._listed]
                spec = replace(self._spec, files=entries)
                return self._registry.register_version(
                    self._name, spec, caller=self._caller, pending=self._number
                )
            except ModelyardError as exc:
                self._failed(exc.message)
                raise
            except Exception as exc:
                self._failed(f"the copy failed ({exc.__class__.__name__})")
                raise

    def _file(self, relative: str) -> FileEntry:
        upload = self._registry.begin_blob_upload(self._caller)
        try:
            with self._files.reading(relative) as chunks:
                for chunk in chunks:
                    upload.write(chunk)
                    self._heartbeat()
        except BaseException:
            upload.abort()
            raise
        size, _ = self._registry.finish_blob_upload(upload)
        return FileEntry(relative, size, upload.digest)

    def _heartbeat(self) -> None:
        """A sign of life now and then: a pending copy silent for long died with its server."""
        if time.monotonic() - self._alive_at > HEARTBEAT:
            self._registry.copy_alive(self._name, self._number)
            self._alive_at = time.monotonic()

    def _failed(self, message: str) -> None:
        with suppress(ModelyardError):  # the model went meanwhile: nothing left to report on
            self._registry.copy_failed(self._name, self._number, message)


# -- where the bytes come from: one seam per kind of place --------------------------------------


class _DiskFiles:
    """Under an allowed directory, opened one path component at a time from it, following
    no link: a link swapped in after the path was checked cannot lead out of it."""

    def __init__(self, source: str, allowed: int, inside: tuple[str, ...]) -> None:
        self._source = source
        self._allowed = allowed  # a descriptor of the allowed directory
        self._inside = inside
        self.where = repr(source)

    @classmethod
    @contextmanager
    def opened(cls, source: str, place: _OnDisk) -> Iterator[_DiskFiles]:
        allowed = os.open(place.allowed, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield cls(source, allowed, place.inside)
        finally:
            os.close(allowed)

    def listing(self, prefix: str) -> Iterable[tuple[str, bool]]:
        fd = self._open(prefix, directory=True)
        try:
            with os.scandir(fd) as entries:  # it reads a duplicate of fd
                return [(entry.name, self._is_dir(prefix, entry)) for entry in entries]
        finally:
            os.close(fd)

    def _is_dir(self, prefix: str, entry: os.DirEntry[str]) -> bool:
        if entry.is_symlink():
            raise self._link(posixpath.join(prefix, entry.name))
        if entry.is_dir(follow_symlinks=False):
            return True
        if not entry.is_file(follow_symlinks=False):
            raise self._special(posixpath.join(prefix, entry.name))
        return False

    @contextmanager
    def reading(self, relative: str) -> Iterator[Iterable[bytes]]:
        fd = self._open(relative, directory=False)
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO would block a reader forever
            os.close(fd)
            raise self._special(relative)
        with os.fdopen(fd, "rb", buffering=0) as file:
            yield iter(partial(file.read, CHUNK), b"")

    def _open(self, relative: str, *, directory: bool) -> int:
        parts = (*self._inside, *(relative.split("/") if relative else ()))
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.dup(self._allowed)
        try:
            for index, part in enumerate(parts):
                last = index == len(parts) - 1
                opened = os.open(
                    part, flags | (0 if last and not directory else os.O_DIRECTORY), dir_fd=fd
                )
                os.close(fd)
                fd = opened
        except OSError as exc:
            os.close(fd)
            if exc.errno == errno.ELOOP:
                raise self._link(relative) from None
            where = f"{relative!r} of {self._source!r}" if relative else repr(self._source)
            raise NotFound(
                f"cannot read {where}: {exc.strerror}", code="source_not_found"
            ) from None
        return fd

    def _link(self, relative: str) -> InvalidInput:
        return refused(
            self._source, f"{relative or 'it'} is a link, which this registry does not follow"
        )

    def _special(self, relative: str) -> InvalidInput:
        return refused(self._source, f"{relative} is neither a file nor a directory")


class _BucketFiles:
    """Under a key prefix in an allowed bucket."""

    def __init__(self, s3: S3Client, place: _InBucket) -> None:
        self._s3 = s3
        self._bucket = place.bucket
        self._key = place.key
        self.where = f"s3://{place.bucket}/{place.key}"

    def listing(self, prefix: str) -> Iterable[tuple[str, bool]]:
        under = self._key + (f"{prefix}/" if prefix else "")
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=under, Delimiter="/"
        )
        with _s3_errors(self.where):
            for page in pages:
                for common in page.get("CommonPrefixes", ()):
                    yield common.get("Prefix", "")[len(under) : -1], True
                for item in page.get("Contents", ()):
                    name = item.get("Key", "")[len(under) :]
                    if name:  # not the directory's own marker object
                        yield name, False

    @contextmanager
    def reading(self, relative: str) -> Iterator[Iterable[bytes]]:
        with _s3_errors(f"{self.where}{relative}"):
            body = self._s3.get_object(Bucket=self._bucket, Key=self._key + relative)["Body"]
        try:
            yield _s3_chunks(body, f"{self.where}{relative}")
        finally:
            body.close()


def _s3_chunks(body: Any, where: str) -> Iterator[bytes]:
    with _s3_errors(where):
        yield from body.iter_chunks(CHUNK)


@contextmanager
def _s3_errors(where: str) -> Iterator[None]:
    """A bucket's failures as the registry's errors, in a line."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
            raise NotFound(f"{where}: not found ({code})", code="source_not_found") from None
        raise Unavailable(
            f"{where}: the store answered {code}", code="source_unavailable"
        ) from None
    except BotoCoreError as exc:
        raise Unavailable(
            f"{where}: unreachable ({exc.__class__.__name__})", code="source_unavailable"
        ) from None
