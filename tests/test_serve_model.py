"""``modelyard serve-model`` as a real process against a real registry process: the three
JSON shapes, 400s that name the problem, /metadata, /readyz and /metrics, hot reload
under load (a promotion, then a rollback, with no failed request), a version that fails
verification or loading never served, the registry killed, a restart from the cache
without registry, and --pin."""

from __future__ import annotations

import json
import queue
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import modelyard
from modelyard.flavors import save_model
from tests.conftest import LiveServer, free_port
from tests.test_cli import MODELYARD, environment
from tests.test_delivery import wait_until

pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")

DEADLINE = 60.0


@dataclass(frozen=True)
class Trained:
    """Two tiny iris models that predict differently, the data they were fit on, and each
    saved once (a registration of a saved directory skips log_model's capture)."""

    first: Any
    second: Any
    features: Any  # a DataFrame
    first_dir: Path
    second_dir: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    features, target = load_iris(return_X_y=True, as_frame=True)
    first = LogisticRegression(max_iter=300).fit(features, target)
    second = DecisionTreeClassifier(max_depth=1, random_state=0).fit(features, target)
    saved = tmp_path_factory.mktemp("saved")
    for model, where in ((first, "first"), (second, "second")):
        save_model(model, saved / where, input_example=features.iloc[:5])
    return Trained(first, second, features, saved / "first", saved / "second")


def register(reg: modelyard.Registry, name: str, directory: Path) -> modelyard.Version:
    return reg.register(name, directory, environment=None, source=None)


@pytest.fixture(scope="module")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("registry") / "data", None)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def reg(registry_server: LiveServer) -> Iterator[modelyard.Registry]:
    with modelyard.connect(registry_server.url) as client:
        yield client


def publish(reg: modelyard.Registry, trained: Trained, name: str) -> None:
    """``name``/1 (the logistic regression) in production, ``name``/2 (the tree) logged."""
    register(reg, name, trained.first_dir)
    register(reg, name, trained.second_dir)
    reg.promote(f"{name}/1", "production", override="first deployment")


class Endpoint:
    """A model server reached over loopback, and the notices it gives (serving, ...)."""

    def __init__(self, cache_dir: Path) -> None:
        self.port = free_port()
        self.cache = cache_dir
        self.url = f"http://127.0.0.1:{self.port}"
        self.notices: queue.Queue[dict[str, Any]] = queue.Queue()
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def alive(self) -> bool:
        return True

    def ready(self) -> dict[str, Any]:
        """/readyz's answer once it is 200 (the server still running), with a deadline."""

        def answered() -> dict[str, Any] | None:
            assert self.alive(), self.stderr()
            try:
                response = self.client.get("/readyz")
            except httpx.TransportError:
                return None
            return response.json() if response.status_code == 200 else None

        answer: dict[str, Any] = wait_until(answered, DEADLINE)
        return answer

    def status(self, path: str) -> int:
        """The status of GET ``path`` once the server listens: a notice sent while the
        app starts can come before uvicorn has bound the port."""

        def answered() -> int | None:
            assert self.alive(), self.stderr()
            try:
                return self.client.get(path).status_code
            except httpx.TransportError:
                return None

        status: int = wait_until(answered, DEADLINE)
        return status

    def serving(self) -> int:
        return int(self.client.get("/metadata").json()["version"])

    def notice(self, event: str) -> dict[str, Any]:
        """The next notice of kind ``event`` (others are skipped), with a deadline."""
        while True:
            try:
                notice = self.notices.get(timeout=DEADLINE)
            except queue.Empty:
                raise AssertionError(f"no {event} notice: {self.stderr()}") from None
            if notice["event"] == event:
                return notice

    def stderr(self) -> str:
        return ""

    def stop(self) -> None:
        self.client.close()


class ModelServer(Endpoint):
    """A ``modelyard serve-model --json`` process; its notices read from its stdout."""

    def __init__(self, registry_url: str, reference: str, cache_dir: Path, *args: str) -> None:
        super().__init__(cache_dir)
        command = [*MODELYARD, "serve-model", reference, "--port", str(self.port)]
        command += ["--registry", registry_url, "--cache-dir", str(cache_dir)]
        command += ["--poll-interval", "0.2", "--report-every", "0", "--json", *args]
        self.log = cache_dir.with_name(f"{cache_dir.name}-{self.port}.log")
        with self.log.open("w") as stderr:  # a file: a pipe nobody reads could fill up
            self.process = subprocess.Popen(
                command, env=environment(None), stdout=subprocess.PIPE, stderr=stderr, text=True
            )
        assert self.process.stdout is not None
        stdout = self.process.stdout
        threading.Thread(
            target=lambda: [self.notices.put(json.loads(line)) for line in stdout], daemon=True
        ).start()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stderr(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        super().stop()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class InProcessServer(Endpoint):
    """The same app under uvicorn on a thread of this process: no interpreter to start
    and no scikit-learn to import again, for the tests that need no process of its own."""

    def __init__(
        self,
        registry_url: str,
        reference: str,
        cache_dir: Path,
        *,
        pin: bool = False,
        report_every: float = 0,
    ) -> None:
        import uvicorn

        from modelyard.serving import ServeOptions, create_app

        super().__init__(cache_dir)
        options = ServeOptions(
            reference,
            registry=registry_url,
            port=self.port,
            pin=pin,
            cache_dir=cache_dir,
            poll_interval=0.2,
            report_every=report_every,
        )
        app = create_app(options, self._notify)
        config = uvicorn.Config(
            app, port=self.port, log_level="warning", access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def _notify(self, event: str, fields: dict[str, Any]) -> None:
        self.notices.put({"event": event, **fields})

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        super().stop()
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="module")
def churn(
    registry_server: LiveServer,
    reg: modelyard.Registry,
    trained: Trained,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ModelServer]:
    """One server of ``churn@production`` for the tests that only read from it."""
    publish(reg, trained, "churn")
    server = ModelServer(registry_server.url, "churn@production", tmp_path_factory.mktemp("c"))
    server.ready()
    yield server
    server.stop()


def records_of(features: Any) -> list[dict[str, Any]]:
    return list(features.to_dict(orient="records"))


def test_predict_takes_records_columns_and_instances(churn: ModelServer, trained: Trained) -> None:
    batch = trained.features.iloc[40:60]
    expected = trained.first.predict(batch).tolist()
    bodies = {
        "records": records_of(batch),
        "columns": {name: batch[name].tolist() for name in batch.columns},
        "instances": batch.to_numpy().tolist(),
    }
    for shape, data in bodies.items():
        response = churn.client.post("/predict", json={shape: data})
        assert response.status_code == 200, (shape, response.text)
        answer = response.json()
        assert answer["predictions"] == expected, shape
        assert (answer["model"], answer["version"]) == ("churn", 1)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"rows": []}', "rows"),
        (b'{"records": [{"a": 1}], "instances": [[1]]}', "exactly one"),
        (b'{"records": [{"a": 1}, 7]}', "records[1]"),
        (b'{"records": []}', "non-empty"),
        (b'{"columns": {"a": [1, 2], "b": [1]}}', "different lengths"),
        (b'{"columns": {"a": 3}}', "columns.a"),
        (b'{"instances": [[1, 2], [1]]}', "one length"),
        (b"", "empty body"),
    ],
)
def test_malformed_input_is_a_400_naming_the_problem(
    churn: ModelServer, body: bytes, named: str
) -> None:
    response = churn.client.post(
        "/predict", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert named in response.json()["message"]


def test_input_against_the_signature_is_a_400_naming_the_column(
    churn: ModelServer, trained: Trained
) -> None:
    record = records_of(trained.features.iloc[:1])[0]
    wrong = {**record, "petal width (cm)": "wide"}
    response = churn.client.post("/predict", json={"records": [wrong]})
    assert response.status_code == 400
    assert "petal width (cm)" in response.json()["message"]
    missing = {k: v for k, v in record.items() if k != "sepal length (cm)"}
    response = churn.client.post("/predict", json={"records": [missing]})
    assert response.status_code == 400
    assert "sepal length (cm)" in response.json()["message"]


def test_concurrent_requests_batched_together_each_get_their_own_answer(
    churn: ModelServer, trained: Trained
) -> None:
    """Records arriving together are predicted in one call; a bad one among them is a 400
    for its request alone, and every other request gets its own rows' predictions."""
    rows = [trained.features.iloc[i : i + 1 + i % 3] for i in range(0, 120, 8)]
    bad = {**records_of(trained.features.iloc[:1])[0], "petal width (cm)": "wide"}
    bodies = [{"records": records_of(batch)} for batch in rows] + [{"records": [bad]}]
    results: list[httpx.Response | None] = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def send(index: int) -> None:
        with httpx.Client(base_url=churn.url, timeout=30) as client:
            start.wait()
            results[index] = client.post("/predict", json=bodies[index])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for batch, response in zip(rows, results, strict=False):
        assert response is not None and response.status_code == 200
        assert response.json()["predictions"] == trained.first.predict(batch).tolist()
    assert results[-1] is not None and results[-1].status_code == 400
    assert "petal width (cm)" in results[-1].json()["message"]


def test_metadata_readyz_and_metrics(churn: ModelServer, reg: modelyard.Registry) -> None:
    served = reg.resolve("churn/1")
    metadata = churn.client.get("/metadata").json()
    assert metadata["model"] == "churn"
    assert metadata["version"] == served.version
    assert metadata["digest"] == served.manifest_digest
    assert metadata["flavor"] == "sklearn"
    names = [column["name"] for column in metadata["signature"]["inputs"]]
    assert "petal width (cm)" in names
    assert churn.client.get("/readyz").json() == {"ready": True, "model": "churn", "version": 1}
    assert churn.client.get("/healthz").status_code == 200
    assert churn.client.post("/predict", content=b"[]").status_code == 400
    text = churn.client.get("/metrics").text
    for line in (
        'modelyard_serving_requests_total{model="churn",version="1"}',
        'modelyard_serving_errors_total{kind="client",model="churn",version="1"}',
        'modelyard_serving_request_seconds_bucket{le="0.005",model="churn",version="1"}',
        'modelyard_serving_model_load_seconds{model="churn",version="1"}',
        'modelyard_serving_version{model="churn"} 1.0',
        f'modelyard_serving_model_info{{digest="{served.manifest_digest}",model="churn",',
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert line in text, line


class Hammer:
    """Threads posting predictions as fast as they are answered; every failure counted."""

    def __init__(self, url: str, body: dict[str, Any], threads: int = 2) -> None:
        self.url, self.body = url, body
        self.failures: list[str] = []
        self.versions: set[int] = set()
        self.requests = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/predict", json=self.body)
                    outcome = response.json()["version"] if response.status_code == 200 else None
                    failure = None if outcome else f"{response.status_code}: {response.text}"
                except httpx.HTTPError as exc:
                    outcome, failure = None, repr(exc)
                with self._lock:
                    self.requests += 1
                    if failure is not None:
                        self.failures.append(failure)
                    else:
                        self.versions.add(outcome)

    def saw(self, version: int) -> bool:
        with self._lock:
            return version in self.versions

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def test_hot_reload_under_load_fails_no_request_and_pin_never_moves(
    registry_server: LiveServer, reg: modelyard.Registry, trained: Trained, tmp_path: Path
) -> None:
    publish(reg, trained, "loaded")
    # Reports: the one window, sent when the server stops.
    server = InProcessServer(
        registry_server.url, "loaded@production", tmp_path / "cache", report_every=3600
    )
    pinned = ModelServer(registry_server.url, "loaded@production", tmp_path / "pin", "--pin")
    try:
        server.ready()
        pinned.ready()
        assert pinned.client.get("/metadata").json()["following"] == "pinned"
        hammer = Hammer(server.url, {"records": records_of(trained.features.iloc[:8])})
        try:
            wait_until(lambda: hammer.saw(1), DEADLINE)
            reg.promote("loaded/2", "production", override="the tree")
            wait_until(lambda: server.serving() == 2, DEADLINE)
            wait_until(lambda: hammer.saw(2), DEADLINE)
            reg.rollback("loaded", stage="production")
            wait_until(lambda: server.serving() == 1, DEADLINE)
            served_before = hammer.requests
            wait_until(lambda: hammer.requests > served_before + 20, DEADLINE)
        finally:
            hammer.stop()
        assert hammer.failures == []
        assert hammer.versions == {1, 2}
        assert [server.notice("serving")["version"] for _ in range(3)] == [1, 2, 1]
        # The pinned server saw the same two moves and served version 1 throughout.
        assert pinned.notice("serving")["version"] == 1
        assert pinned.notices.empty()
        assert pinned.serving() == 1
    finally:
        server.stop()
        pinned.stop()
    for number in (1, 2):
        reported = reg.online_metrics(f"loaded/{number}").latest
        assert reported["requests"] > 0
        assert reported["error_rate"] == 0
        assert 0 < reported["latency_p50_ms"] <= reported["latency_p99_ms"]
        assert reported["memory_mb"] > 0
        assert "cpu_percent" in reported


def test_resolve_if_changed_answers_none_while_the_etag_holds(
    reg: modelyard.Registry, churn: ModelServer
) -> None:
    """The poll that stands in for the stream: a 304 while nothing moved."""
    version, etag = reg.resolve_if_changed("churn/1")
    assert version is not None and etag
    assert reg.resolve_if_changed("churn/1", etag) == (None, etag)
    assert reg.resolve_if_changed("churn/1", '"stale"')[0] == version


def corrupt_blob(registry_server: LiveServer, digest: str) -> None:
    """Flip the bytes of a file the registry keeps in its database: it now serves bytes
    that do not hash to the manifest's sha256."""
    with sqlite3.connect(registry_server.data_dir / "registry.db") as db:
        (content,) = db.execute("SELECT content FROM blobs WHERE digest = ?", (digest,)).fetchone()
        assert content is not None, "expected a small file kept inline"
        db.execute(
            "UPDATE blobs SET content = ? WHERE digest = ?", (bytes(b ^ 1 for b in content), digest)
        )


def test_a_version_failing_verification_or_loading_is_never_served(
    registry_server: LiveServer,
    reg: modelyard.Registry,
    churn: ModelServer,
    trained: Trained,
    tmp_path: Path,
) -> None:
    """On the module's server: versions that never serve leave it serving churn/1."""
    from sklearn.tree import DecisionTreeClassifier

    third = DecisionTreeClassifier(max_depth=2, random_state=0)
    save_model(third.fit(trained.features[:100], [0, 1] * 50), tmp_path / "third")
    bad = register(reg, "churn", tmp_path / "third")
    model_file = max(bad.files, key=lambda entry: entry.size)
    corrupt_blob(registry_server, model_file.sha256)
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    (broken_dir / "modelyard.yaml").write_text("flavor: sklearn\nfiles: [model.skops]\n")
    (broken_dir / "model.skops").write_bytes(b"not a skops file")
    broken = register(reg, "churn", broken_dir)

    reg.promote(bad.reference, "production", override="corrupted on the registry")
    failed = churn.notice("reload_failed")
    assert (failed["version"], failed["reason"]) == (bad.version, "verification")
    assert failed["serving"] == 1
    reg.promote(broken.reference, "production", override="cannot load")
    failed = churn.notice("reload_failed")
    assert (failed["version"], failed["reason"]) == (broken.version, "load")
    assert failed["serving"] == 1
    assert churn.serving() == 1
    text = churn.client.get("/metrics").text
    assert f'reason="verification",version="{bad.version}"' in text
    assert f'reason="load",version="{broken.version}"' in text
    assert not (churn.cache / "versions" / bad.manifest_digest.removeprefix("sha256:")).exists()
    body = {"records": records_of(trained.features[:2])}
    assert churn.client.post("/predict", json=body).json()["version"] == 1


def test_registry_down_keeps_serving_and_a_restart_serves_from_the_verified_cache(
    tmp_path: Path, trained: Trained
) -> None:
    registry_server = LiveServer(tmp_path / "registry", None)
    registry_server.start()
    with modelyard.connect(registry_server.url) as own:
        publish(own, trained, "resilient")
        own.promote("resilient/2", "production", override="the tree")
    body = {"records": records_of(trained.features.iloc[:3])}
    cache = tmp_path / "cache"
    server = InProcessServer(registry_server.url, "resilient@production", cache)
    try:
        assert server.ready()["version"] == 2
        registry_server.kill()
        for _ in range(20):
            assert server.client.post("/predict", json=body).json()["version"] == 2
    finally:
        server.stop()
    restarted = InProcessServer(registry_server.url, "resilient@production", cache)
    try:
        assert restarted.ready()["version"] == 2
        assert restarted.client.post("/predict", json=body).json()["predictions"] == (
            trained.second.predict(trained.features.iloc[:3]).tolist()
        )
    finally:
        restarted.stop()
    # A cached file changed: verification refuses it, and nothing else is there to serve.
    (model_file,) = list((cache / "versions").rglob("*.skops"))
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    tampered = InProcessServer(registry_server.url, "resilient@production", cache)
    try:
        failed = tampered.notice("reload_failed")
        assert (failed["version"], failed["reason"]) == (2, "verification")
        assert tampered.status("/readyz") == 503
        assert tampered.client.post("/predict", json=body).status_code == 503
    finally:
        tampered.stop()


def test_workers_share_the_port(
    registry_server: LiveServer, reg: modelyard.Registry, trained: Trained, tmp_path: Path
) -> None:
    publish(reg, trained, "crowd")
    server = ModelServer(
        registry_server.url, "crowd@production", tmp_path / "cache", "--workers", "2"
    )
    try:
        server.ready()
        reg.promote("crowd/2", "production", override="the tree")
        body = {"records": records_of(trained.features.iloc[:1])}

        def every_worker_moved() -> bool:
            # New connections: the kernel spreads them over both workers (the second may
            # still be loading: 503).
            answers = [httpx.post(f"{server.url}/predict", json=body) for _ in range(20)]
            return all(a.status_code == 200 and a.json()["version"] == 2 for a in answers)

        wait_until(every_worker_moved, DEADLINE)
        assert len({server.notice("serving")["version"] for _ in range(4)}) == 2
    finally:
        server.stop()


def test_serving_imports_no_server_stack() -> None:
    """A serving image needs the SDK: the server stack must not come with serve-model."""
    code = (
        "import sys, modelyard.cli.main, modelyard.serving, modelyard.serving._app, uvicorn;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'fastapi', 'starlette', 'sqlalchemy', 'psycopg', 'alembic'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
