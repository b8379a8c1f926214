"""Versions made from MLflow sources: a run's or a logged model's files, copied from the
MLflow tracking server named in configuration (``MODELYARD_MLFLOW_TRACKING_URI``).

A source is something the server fetches, so a caller names only *what* (``runs:/RUN/PATH``,
``models:/MODEL_ID``, ``mlflow-artifacts:/PATH``), never *where*: every byte comes from the
one tracking server an admin configured, through its artifact proxy, and any other scheme
or host is refused before anything is fetched (a ``file://`` or ``http://`` source would let
a caller make the server read what the caller cannot). The caller's right to register is
checked first, too. The files stream into the content-addressed store, hashed as they arrive, so
the version is immutable whatever later happens to the run; the run's params, metrics and
id become the version's lineage.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import httpx

from modelyard.domain.access import Caller, Permission
from modelyard.domain.errors import InvalidInput, NotFound, TooLarge, Unavailable
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import Version
from modelyard.domain.names import validate_file_path, validate_model_name
from modelyard.domain.versions import NewVersion

if TYPE_CHECKING:
    from modelyard.service.registry import RegistryService

ARTIFACTS: Final = "/api/2.0/mlflow-artifacts/artifacts"
MAX_FILES: Final = 10_000
MAX_DEPTH: Final = 32
CHUNK: Final = 1 << 20
TIMEOUT: Final = httpx.Timeout(30.0, connect=5.0)


@dataclass
class _Located:
    """Where a source's files are on the tracking server, and the run they came from."""

    path: str  # under the artifact proxy's root
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
    ) -> None:
        self._registry = registry
        self.tracking_uri = tracking_uri.rstrip("/") if tracking_uri else None
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._transport = transport

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
        if self.tracking_uri is None:
            raise InvalidInput(
                "this registry copies MLflow sources from a tracking server, and none is"
                " configured (MODELYARD_MLFLOW_TRACKING_URI)",
                code="source_refused",
            )
        with httpx.Client(
            base_url=self.tracking_uri,
            headers=self._headers,
            timeout=TIMEOUT,
            follow_redirects=False,
            transport=self._transport,
        ) as http:
            located = self._locate(http, source, run_id)
            files = self._copy(http, caller, located.path)
        spec = NewVersion(
            files=files,
            params=located.params,
            metrics=located.metrics,
            tags=dict(tags or {}),
            description=description,
            run=located.run_id or run_id or None,
        )
        return self._registry.register_version(name, spec, caller=caller)

    # -- where the files are -----------------------------------------------------------------

    def _locate(self, http: httpx.Client, source: str, run_id: str | None) -> _Located:
        if source.startswith("models:/"):
            model_id = source.removeprefix("models:/").strip("/")
            if not model_id or "/" in model_id or "@" in model_id:
                raise _refused(source, "models:/ names a logged model by its id (models:/m-...)")
            found = self._json(http, f"/api/2.0/mlflow/logged-models/{quote(model_id)}")["model"]
            info, data = found.get("info", {}), found.get("data", {})
            located = self._located(source, info.get("artifact_uri", ""))
            located.params = _pairs(data.get("params"))
            located.metrics = _metrics(data.get("metrics"))
            run = info.get("source_run_id") or run_id
            return self._with_run(http, located, run) if run else located
        if source.startswith("runs:/"):
            run, _, path = source.removeprefix("runs:/").partition("/")
            if not run:
                raise _refused(source, "runs:/ takes RUN_ID/PATH")
            if path:  # checked before anything is asked of the tracking server
                try:
                    validate_file_path(path)
                except InvalidInput as exc:
                    raise _refused(source, exc.message) from None
            found = self._run(http, run)
            root = self._located(source, found.get("info", {}).get("artifact_uri", ""))
            if path:
                root.path = posixpath.join(root.path, path)
            return self._with_run(http, root, run, found)
        if source.startswith("mlflow-artifacts:"):
            located = self._located(source, source)
            return self._with_run(http, located, run_id) if run_id else located
        raise _refused(
            source,
            "sources are runs:/RUN_ID/PATH, models:/MODEL_ID or mlflow-artifacts:/PATH,"
            " read through the configured tracking server; other schemes and hosts are"
            " refused",
        )

    def _located(self, source: str, artifact_uri: str) -> _Located:
        """The path under the artifact proxy of an ``mlflow-artifacts:`` URI (the one form
        this server reads: its bytes come through the configured server)."""
        if not artifact_uri.startswith("mlflow-artifacts:"):
            raise _refused(
                source,
                f"its artifacts are at {artifact_uri or 'an unknown place'}, not behind the"
                " tracking server's artifact proxy (mlflow server --serve-artifacts)",
            )
        rest = artifact_uri.removeprefix("mlflow-artifacts:")
        if rest.startswith("//"):  # mlflow-artifacts://HOST/PATH: only the configured one
            host, _, rest = rest[2:].partition("/")
            if host and host != httpx.URL(self.tracking_uri or "").netloc.decode():
                raise _refused(source, f"its artifacts are on {host}, not the tracking server")
        return _Located(path=validate_file_path(rest.strip("/")))

    def _run(self, http: httpx.Client, run_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self._json(http, "/api/2.0/mlflow/runs/get", {"run_id": run_id})
        run: dict[str, Any] = found["run"]
        return run

    def _with_run(
        self, http: httpx.Client, located: _Located, run_id: str, run: Any = None
    ) -> _Located:
        """The run's params and metrics (its latest values), as the version's lineage; they
        win over a logged model's, whose metrics MLflow 3 fills with each one's first value."""
        data = (run or self._run(http, run_id)).get("data", {})
        located.run_id = run_id
        located.params = {**located.params, **_pairs(data.get("params"))}
        located.metrics = {**located.metrics, **_metrics(data.get("metrics"))}
        return located

    # -- the bytes -------------------------------------------------------------------------

    def _copy(self, http: httpx.Client, caller: Caller, root: str) -> list[FileEntry]:
        """Every file under ``root``, streamed from the tracking server into the blob
        store, which names each by what it hashes to: one pass, nothing on local disk."""
        entries = []
        for relative in self._walk(http, root):
            upload = self._registry.begin_blob_upload(caller)
            try:
                with http.stream("GET", f"{ARTIFACTS}/{quote(f'{root}/{relative}')}") as answer:
                    _check(answer, relative)
                    for chunk in answer.iter_bytes(CHUNK):
                        upload.write(chunk)
            except BaseException:
                upload.abort()
                raise
            size, _ = self._registry.finish_blob_upload(upload)
            entries.append(FileEntry(relative, size, upload.digest))
        if not entries:
            raise NotFound(f"no files at {root!r} on the tracking server", code="source_empty")
        return entries

    def _walk(self, http: httpx.Client, root: str) -> list[str]:
        """The files under ``root``, as paths relative to it."""
        found: list[str] = []
        pending = [("", 0)]
        while pending:
            prefix, depth = pending.pop()
            if depth > MAX_DEPTH:
                raise TooLarge(f"the source is nested deeper than {MAX_DEPTH} directories")
            listed = self._json(http, ARTIFACTS, {"path": posixpath.join(root, prefix)})
            for item in listed.get("files", []):
                name = posixpath.join(prefix, str(item.get("path", "")).rsplit("/", 1)[-1])
                validate_file_path(name)
                if item.get("is_dir"):
                    pending.append((name, depth + 1))
                else:
                    found.append(name)
            if len(found) > MAX_FILES:
                raise TooLarge(f"the source holds more than {MAX_FILES} files")
        return sorted(found)

    def _json(self, http: httpx.Client, path: str, params: dict[str, str] | None = None) -> Any:
        try:
            answer = http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"the MLflow tracking server at {self.tracking_uri} did not answer: {exc}",
                code="tracking_unavailable",
            ) from None
        _check(answer, path)
        try:
            return answer.json()
        except ValueError:
            raise Unavailable(
                f"the tracking server's answer for {path!r} is not JSON: is"
                f" {self.tracking_uri} an MLflow tracking server?",
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
