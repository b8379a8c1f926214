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
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import quote, unquote, urlsplit

import httpx

from modelyard.domain.access import Caller, Permission
from modelyard.domain.errors import InvalidInput, NotFound, TooLarge, Unavailable
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import Version
from modelyard.domain.names import validate_file_path, validate_model_name
from modelyard.domain.versions import NewVersion

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from modelyard.service.registry import RegistryService

ARTIFACTS: Final = "/api/2.0/mlflow-artifacts/artifacts"
MAX_FILES: Final = 10_000
MAX_DEPTH: Final = 32
CHUNK: Final = 1 << 20
TIMEOUT: Final = httpx.Timeout(30.0, connect=5.0)


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
    ) -> None:
        """``s3_endpoint``: the blob store's (--s3-endpoint), whose credentials read an
        allowed bucket too."""
        self._registry = registry
        self.tracking_uri = tracking_uri.rstrip("/") if tracking_uri else None
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
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
    ) -> Version:
        """The next version of ``name``, its files copied from ``source``."""
        self._registry.access.require(caller, Permission.REGISTER, validate_model_name(name))
        with self._tracking() as http:
            located = self._locate(http, source, run_id)
            with self._files(http, source, located.place) as files:
                entries = self._copy(caller, files)
        spec = NewVersion(
            files=entries,
            params=located.params,
            metrics=located.metrics,
            tags=dict(tags or {}),
            description=description,
            run=located.run_id or run_id or None,
        )
        return self._registry.register_version(name, spec, caller=caller)

    @contextmanager
    def _tracking(self) -> Iterator[httpx.Client | None]:
        """A client of the configured tracking server (it connects at its first request)."""
        if self.tracking_uri is None:
            yield None
            return
        with httpx.Client(
            base_url=self.tracking_uri,
            headers=self._headers,
            timeout=TIMEOUT,
            follow_redirects=False,
            transport=self._transport,
        ) as http:
            yield http

    def _need(self, http: httpx.Client | None, source: str) -> httpx.Client:
        if http is None:
            raise _refused(
                source,
                "it is read from an MLflow tracking server, and none is configured"
                " (MODELYARD_MLFLOW_TRACKING_URI)",
            )
        return http

    # -- where the files are -----------------------------------------------------------------

    def _locate(self, http: httpx.Client | None, source: str, run_id: str | None) -> _Located:
        if source.startswith("models:/"):
            model_id = source.removeprefix("models:/").strip("/")
            if not model_id or "/" in model_id or "@" in model_id:
                raise _refused(source, "models:/ names a logged model by its id (models:/m-...)")
            tracking = self._need(http, source)
            found = _json(tracking, f"/api/2.0/mlflow/logged-models/{quote(model_id)}")["model"]
            info, data = found.get("info", {}), found.get("data", {})
            located = _Located(self._place(source, info.get("artifact_uri", "")))
            located.params = _pairs(data.get("params"))
            located.metrics = _metrics(data.get("metrics"))
            run = info.get("source_run_id") or run_id
            return self._with_run(tracking, located, run) if run else located
        if source.startswith("runs:/"):
            run, _, path = source.removeprefix("runs:/").partition("/")
            if not run:
                raise _refused(source, "runs:/ takes RUN_ID/PATH")
            if path:  # checked before anything is asked of the tracking server
                try:
                    validate_file_path(path)
                except InvalidInput as exc:
                    raise _refused(source, exc.message) from None
            tracking = self._need(http, source)
            found = _run(tracking, run)
            artifacts = str(found.get("info", {}).get("artifact_uri", ""))
            if artifacts and path:
                artifacts = f"{artifacts.rstrip('/')}/{path}"
            return self._with_run(tracking, _Located(self._place(source, artifacts)), run, found)
        located = _Located(self._place(source))
        return self._with_run(http, located, run_id) if run_id and http else located

    def _place(self, source: str, artifacts: str | None = None) -> _Proxied | _OnDisk | _InBucket:
        """Where the source's files are (``artifacts``: its run's or logged model's, as the
        tracking server says), if that is a place this registry reads; else refused."""
        uri = source if artifacts is None else artifacts
        try:
            scheme = urlsplit(uri).scheme
        except ValueError:  # a malformed host, as http://[::1 is
            scheme = ""
        if scheme == "mlflow-artifacts":
            return self._proxied(source, uri)
        if scheme == "file":
            return self._on_disk(source, uri)
        if scheme == "s3":
            return self._in_bucket(source, uri)
        readable = (
            "the tracking server's artifact proxy (mlflow server --serve-artifacts), or s3://"
            " and file:// where an admin allowed them; other schemes and hosts are refused"
        )
        if artifacts is None:
            raise _refused(
                source,
                "sources are runs:/RUN_ID/PATH, models:/MODEL_ID or mlflow-artifacts:/PATH,"
                f" read through {readable}",
            )
        raise _refused(
            source, f"its artifacts are at {uri or 'an unknown place'}, not behind {readable}"
        )

    def _proxied(self, source: str, uri: str) -> _Proxied:
        """The path under the artifact proxy of an ``mlflow-artifacts:`` URI (its bytes
        come through the configured server, and no other)."""
        rest = uri.removeprefix("mlflow-artifacts:")
        if rest.startswith("//"):  # mlflow-artifacts://HOST/PATH: only the configured one
            host, _, rest = rest[2:].partition("/")
            if host and host != httpx.URL(self.tracking_uri or "").netloc.decode():
                raise _refused(source, f"its artifacts are on {host}, not the tracking server")
        return _Proxied(validate_file_path(rest.strip("/")))

    def _on_disk(self, source: str, uri: str) -> _OnDisk:
        """A ``file://`` URI's place, when its real path (links resolved, ``..`` climbed)
        lies under an allowed directory. The refusal is the same whether or not the path
        exists: it must not tell a caller what the server's disk holds."""
        parts = urlsplit(uri)
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise _refused(source, "a file:// source is file:///ABSOLUTE/PATH on this server")
        if not self.allowlist.dirs:
            raise _refused(
                source,
                "this registry reads no file:// sources (an admin allows directories with"
                " --mlflow-source-dir)",
            )
        if path.startswith("/") and "\0" not in path:
            real = Path(os.path.realpath(path))
            for allowed in self.allowlist.dirs:
                if real.is_relative_to(allowed):
                    return _OnDisk(allowed, real.relative_to(allowed).parts)
        raise _refused(
            source,
            "file:// sources are read only under the directories an admin allowed"
            " (--mlflow-source-dir)",
        )

    def _in_bucket(self, source: str, uri: str) -> _InBucket:
        """An ``s3://`` URI's place, when its bucket (and key prefix) is allowed."""
        parts = urlsplit(uri)
        bucket, key = parts.netloc, parts.path.strip("/")
        if not self.allowlist.buckets:
            raise _refused(
                source,
                "this registry reads no s3:// sources (an admin allows buckets with"
                " --mlflow-source-bucket)",
            )
        if key:
            try:
                validate_file_path(key)
            except InvalidInput as exc:
                raise _refused(source, exc.message) from None
        under = f"{key}/" if key else ""
        if (
            parts.query
            or parts.fragment
            or not any(allowed.holds(bucket, under) for allowed in self.allowlist.buckets)
        ):
            raise _refused(
                source,
                "s3:// sources are read only in the buckets and key prefixes an admin allowed"
                " (--mlflow-source-bucket)",
            )
        return _InBucket(bucket, under)

    def _with_run(
        self, http: httpx.Client, located: _Located, run_id: str, run: Any = None
    ) -> _Located:
        """The run's params and metrics (its latest values), as the version's lineage; they
        win over a logged model's, whose metrics MLflow 3 fills with each one's first value."""
        data = (run or _run(http, run_id)).get("data", {})
        located.run_id = run_id
        located.params = {**located.params, **_pairs(data.get("params"))}
        located.metrics = {**located.metrics, **_metrics(data.get("metrics"))}
        return located

    # -- the bytes -------------------------------------------------------------------------

    @contextmanager
    def _files(
        self, http: httpx.Client | None, source: str, place: _Proxied | _OnDisk | _InBucket
    ) -> Iterator[_Files]:
        if isinstance(place, _Proxied):
            yield _ProxyFiles(self._need(http, source), place.path)
        elif isinstance(place, _OnDisk):
            with _DiskFiles.opened(source, place) as files:
                yield files
        else:
            if self._s3 is None:
                from modelyard.storage.blobs.s3 import make_client

                self._s3 = make_client(self._s3_endpoint)
            yield _BucketFiles(self._s3, place)

    def _copy(self, caller: Caller, files: _Files) -> list[FileEntry]:
        """Every file of the source, streamed into the blob store, which names each by
        what it hashes to: one pass, nothing on local disk."""
        entries = []
        for relative in _walk(files):
            upload = self._registry.begin_blob_upload(caller)
            try:
                with files.reading(relative) as chunks:
                    for chunk in chunks:
                        upload.write(chunk)
            except BaseException:
                upload.abort()
                raise
            size, _ = self._registry.finish_blob_upload(upload)
            entries.append(FileEntry(relative, size, upload.digest))
        if not entries:
            raise NotFound(f"no files at {files.where}", code="source_empty")
        return entries


# -- where the bytes come from: one seam per kind of place --------------------------------------


class _Files(Protocol):
    """A source's files in one kind of place: what a directory holds, and a file's bytes."""

    where: str  # for messages

    def listing(self, prefix: str) -> Iterable[tuple[str, bool]]:
        """The names in the directory ``prefix`` ("" the top), each with whether it is one."""
        ...

    def reading(self, relative: str) -> AbstractContextManager[Iterable[bytes]]: ...


def _walk(files: _Files) -> list[str]:
    """The files of a source, as paths relative to it, within the limits."""
    found: list[str] = []
    pending = [("", 0)]
    while pending:
        prefix, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise TooLarge(f"the source is nested deeper than {MAX_DEPTH} directories")
        for entry, is_dir in files.listing(prefix):
            name = validate_file_path(posixpath.join(prefix, entry))
            if is_dir:
                pending.append((name, depth + 1))
            else:
                found.append(name)
            if len(found) > MAX_FILES:
                raise TooLarge(f"the source holds more than {MAX_FILES} files")
    return sorted(found)


class _ProxyFiles:
    """Under the tracking server's artifact proxy."""

    def __init__(self, http: httpx.Client, root: str) -> None:
        self._http = http
        self._root = root
        self.where = f"{root!r} on the tracking server"

    def listing(self, prefix: str) -> Iterable[tuple[str, bool]]:
        listed = _json(self._http, ARTIFACTS, {"path": posixpath.join(self._root, prefix)})
        for item in listed.get("files", []):
            yield str(item.get("path", "")).rsplit("/", 1)[-1], bool(item.get("is_dir"))

    @contextmanager
    def reading(self, relative: str) -> Iterator[Iterable[bytes]]:
        with self._http.stream("GET", f"{ARTIFACTS}/{quote(f'{self._root}/{relative}')}") as answer:
            _check(answer, relative)
            yield answer.iter_bytes(CHUNK)


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
        return _refused(
            self._source, f"{relative or 'it'} is a link, which this registry does not follow"
        )

    def _special(self, relative: str) -> InvalidInput:
        return _refused(self._source, f"{relative} is neither a file nor a directory")


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


# -- the tracking server's answers ------------------------------------------------------------


def _run(http: httpx.Client, run_id: str) -> dict[str, Any]:
    found: dict[str, Any] = _json(http, "/api/2.0/mlflow/runs/get", {"run_id": run_id})
    run: dict[str, Any] = found["run"]
    return run


def _json(http: httpx.Client, path: str, params: dict[str, str] | None = None) -> Any:
    server = str(http.base_url).rstrip("/")
    try:
        answer = http.get(path, params=params)
    except httpx.HTTPError as exc:
        raise Unavailable(
            f"the MLflow tracking server at {server} did not answer: {exc}",
            code="tracking_unavailable",
        ) from None
    _check(answer, path)
    try:
        return answer.json()
    except ValueError:
        raise Unavailable(
            f"the tracking server's answer for {path!r} is not JSON: is {server} an MLflow"
            " tracking server?",
            code="tracking_unavailable",
        ) from None


def _check(answer: httpx.Response, what: str) -> None:
    if answer.status_code == 404:
        raise NotFound(f"the tracking server has no {what!r}", code="source_not_found")
    if answer.status_code != 200:
        raise Unavailable(
            f"the tracking server answered {answer.status_code} for {what!r}",
            code="tracking_unavailable",
        )


def _refused(source: str, why: str) -> InvalidInput:
    return InvalidInput(f"source {source!r} refused: {why}", code="source_refused")


def _pairs(items: Any) -> dict[str, str]:
    return {str(p["key"]): str(p.get("value", "")) for p in items or () if "key" in p}


def _metrics(items: Any) -> dict[str, float]:
    """The latest value of each metric (the highest step, then the latest time)."""
    latest: dict[str, tuple[int, int, float]] = {}
    for m in items or ():
        if "key" not in m:
            continue
        at = (int(m.get("step", 0)), int(m.get("timestamp", 0)))
        if m["key"] not in latest or at >= latest[m["key"]][:2]:
            latest[m["key"]] = (*at, float(m.get("value", 0.0)))
    return {k: v[2] for k, v in latest.items()}
