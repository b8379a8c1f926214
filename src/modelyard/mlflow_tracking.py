"""An MLflow tracking (and registry) server read over its REST API: registered models and
their versions, runs, and artifacts through the server's proxy (``mlflow-artifacts``).

Two readers share it: the server, copying a version's files from the tracking server an
admin configured (``service.mlflow_source``, whose other places, disk and buckets, plug
into the same ``Files`` seam and ``walk``), and ``modelyard import mlflow``, copying a
whole registry from the client's side. Only GETs; answers are checked before they are used,
and MLflow's failures become the registry's own errors, naming the server that failed.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final, Protocol
from urllib.parse import quote

import httpx

from modelyard.domain.errors import InvalidInput, NotFound, TooLarge, Unavailable
from modelyard.domain.names import validate_file_path

ARTIFACTS: Final = "/api/2.0/mlflow-artifacts/artifacts"
REGISTRY: Final = "/api/2.0/mlflow"
MAX_FILES: Final = 10_000
MAX_DEPTH: Final = 32
CHUNK: Final = 1 << 20
PAGE: Final = 1000
TIMEOUT: Final = httpx.Timeout(30.0, connect=5.0)
# Modelyard's stage of each of MLflow's (whose fourth, "None", is any other).
STAGES: Final = {"Staging": "staging", "Production": "production", "Archived": "archived"}


class TrackingServer:
    """One MLflow server, by URL; a bearer token (``MLFLOW_TRACKING_TOKEN``) or a user and
    password (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``) if it wants them. A context
    manager: it holds one connection pool."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        auth: tuple[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            auth=auth,
            timeout=TIMEOUT,
            follow_redirects=False,
            transport=transport,
        )

    def __enter__(self) -> TrackingServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- the registry ----------------------------------------------------------------------

    def registered_models(self) -> Iterator[dict[str, Any]]:
        """Every registered model, page by page, in MLflow's order (by name)."""
        yield from self._pages("/registered-models/search", "registered_models", {})

    def registered_model(self, name: str) -> dict[str, Any]:
        found = self.json(f"{REGISTRY}/registered-models/get", {"name": name})
        model: dict[str, Any] = found["registered_model"]
        return model

    def model_versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of ``name``, in number order."""
        quoted = name.replace("\\", "\\\\").replace("'", "\\'")
        found = self._pages(
            "/model-versions/search", "model_versions", {"filter": f"name='{quoted}'"}
        )
        return sorted(found, key=lambda v: int(v["version"]))

    def download_uri(self, name: str, version: str) -> str:
        found = self.json(
            f"{REGISTRY}/model-versions/get-download-uri", {"name": name, "version": version}
        )
        return str(found["artifact_uri"])

    def _pages(self, path: str, key: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        token = ""
        while True:
            query = {**params, "max_results": str(PAGE), **({"page_token": token} if token else {})}
            found = self.json(f"{REGISTRY}{path}", query)
            yield from found.get(key, [])
            token = found.get("next_page_token", "")
            if not token:
                return

    # -- runs ------------------------------------------------------------------------------

    def run(self, run_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.json(f"{REGISTRY}/runs/get", {"run_id": run_id})["run"]
        return found

    def logged_model(self, model_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.json(f"{REGISTRY}/logged-models/{quote(model_id)}")["model"]
        return found

    def run_link(self, run: dict[str, Any]) -> str:
        """The run's page in MLflow's UI."""
        info = run.get("info", {})
        return f"{self.url}/#/experiments/{info.get('experiment_id', '0')}/runs/{info['run_id']}"

    # -- artifacts -------------------------------------------------------------------------

    def artifact_path(self, artifact_uri: str, what: str) -> str:
        """The path under this server's artifact proxy of an ``mlflow-artifacts:`` URI (its
        bytes come through this server, and no other); ``what`` names it in a refusal."""
        if not artifact_uri.startswith("mlflow-artifacts:"):
            raise refused(
                what,
                f"its artifacts are at {artifact_uri or 'an unknown place'}, not behind the"
                " tracking server's artifact proxy (mlflow server --serve-artifacts)",
            )
        rest = artifact_uri.removeprefix("mlflow-artifacts:")
        if rest.startswith("//"):  # mlflow-artifacts://HOST/PATH: only this server
            host, _, rest = rest[2:].partition("/")
            if host and host != httpx.URL(self.url).netloc.decode():
                raise refused(what, f"its artifacts are on {host}, not the tracking server")
        return validate_file_path(rest.strip("/"))

    def artifacts(self, root: str) -> ProxyFiles:
        """The files under ``root``, an artifact path, as the proxy lists and streams them."""
        return ProxyFiles(self, root)

    # -- plumbing --------------------------------------------------------------------------

    @contextmanager
    def stream(self, path: str) -> Iterator[Iterator[bytes]]:
        """A GET's body, in chunks, as the server streams it."""
        try:
            with self._http.stream("GET", path) as answer:
                _check(answer, path)
                yield answer.iter_bytes(CHUNK)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from None

    def json(self, path: str, params: dict[str, str] | None = None) -> Any:
        try:
            answer = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from None
        _check(answer, path)
        try:
            return answer.json()
        except ValueError:
            raise Unavailable(
                f"the answer for {path!r} is not JSON: is {self.url} an MLflow server?",
                code="tracking_unavailable",
            ) from None

    def _unavailable(self, exc: httpx.HTTPError) -> Unavailable:
        return Unavailable(
            f"the MLflow server at {self.url} did not answer: {exc}", code="tracking_unavailable"
        )


class Files(Protocol):
    """A source's files in one kind of place (a tracking server's artifact proxy, a
    directory, a bucket): what a directory holds, and a file's bytes."""

    where: str  # for messages

    def listing(self, prefix: str) -> Iterable[tuple[str, bool]]:
        """The names in the directory ``prefix`` ("" the top), each with whether it is one."""
        ...

    def reading(self, relative: str) -> AbstractContextManager[Iterable[bytes]]: ...


def walk(files: Files) -> list[str]:
    """The files of a source, as paths relative to it, sorted, within the limits."""
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


class ProxyFiles:
    """Under a tracking server's artifact proxy (``mlflow server --serve-artifacts``)."""

    def __init__(self, server: TrackingServer, root: str) -> None:
        self._server = server
        self._root = root
        self.where = f"{root!r} on the tracking server"

    def listing(self, prefix: str) -> Iterable[tuple[str, bool]]:
        listed = self._server.json(ARTIFACTS, {"path": posixpath.join(self._root, prefix)})
        for item in listed.get("files", []):
            yield str(item.get("path", "")).rsplit("/", 1)[-1], bool(item.get("is_dir"))

    @contextmanager
    def reading(self, relative: str) -> Iterator[Iterable[bytes]]:
        with self._server.stream(f"{ARTIFACTS}/{quote(f'{self._root}/{relative}')}") as chunks:
            yield chunks


def refused(source: str, why: str) -> InvalidInput:
    """A source this registry will not read, and why: before anything is fetched."""
    return InvalidInput(f"source {source!r} refused: {why}", code="source_refused")


def _check(answer: httpx.Response, what: str) -> None:
    if answer.status_code == 404:
        raise NotFound(f"the MLflow server has no {what!r}", code="source_not_found")
    if answer.status_code in (401, 403):
        raise Unavailable(
            f"the MLflow server refused {what!r} ({answer.status_code}): does it want a token"
            " (MLFLOW_TRACKING_TOKEN) or a user (MLFLOW_TRACKING_USERNAME/PASSWORD)?",
            code="tracking_unavailable",
        )
    if answer.status_code != 200:
        raise Unavailable(
            f"the MLflow server answered {answer.status_code} for {what!r}",
            code="tracking_unavailable",
        )


def params_of(run: dict[str, Any] | None) -> dict[str, str]:
    """A run's (or a logged model's) params."""
    items = (run or {}).get("data", {}).get("params")
    return {str(p["key"]): str(p.get("value", "")) for p in items or () if "key" in p}


def latest_metrics(run: dict[str, Any] | None) -> dict[str, float]:
    """The latest value of each metric (the highest step, then the latest time)."""
    latest: dict[str, tuple[int, int, float]] = {}
    for m in (run or {}).get("data", {}).get("metrics") or ():
        if "key" not in m:
            continue
        at = (int(m.get("step", 0)), int(m.get("timestamp", 0)))
        if m["key"] not in latest or at >= latest[m["key"]][:2]:
            latest[m["key"]] = (*at, float(m.get("value", 0.0)))
    return {k: v[2] for k, v in latest.items()}


def tags_of(items: Any) -> dict[str, str]:
    """MLflow's ``[{"key", "value"}]`` tags as a mapping."""
    return {str(t["key"]): str(t.get("value", "")) for t in items or () if "key" in t}
