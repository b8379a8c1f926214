"""MLflow sources beyond the tracking server: ``file://`` under the directories and ``s3://``
in the buckets an admin allowed, directly or as a run's artifact location, and everything
else refused before anything is fetched.

A loopback "canary" stands where a refused source would lead (the tracking server, the S3
endpoint, an http source): it notes every request, so a refusal is proven unfetched, and a
fetch it does see proves that it would have noticed.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import modelyard
from modelyard.config import Settings, mlflow_source_allowlist, open_service
from modelyard.domain.access import Caller, PrincipalKind, Role
from modelyard.domain.errors import (
    Forbidden,
    InvalidInput,
    ModelyardError,
    NotFound,
    TooLarge,
)
from modelyard.domain.models import Version
from modelyard.mlflow_tracking import MAX_DEPTH
from modelyard.service import RegistryService
from modelyard.service.mlflow_source import MlflowSources
from tests.conftest import S3_ENV, LiveServer, S3Server, Tracking, on
from tests.test_cli import assert_user_error, invoke

ME = Caller.local_user("tester")
MODEL = {"MLmodel": b"flavors: {}\n", "data/weights.bin": os.urandom(3000)}
SECRET = b"root:x:0:0:the server's own secret\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(root: Path, files: dict[str, bytes]) -> Path:
    for relative, content in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    return root


@dataclass(frozen=True)
class Disk:
    """An allowed directory holding a model, and beside it one holding a secret."""

    allowed: Path
    outside: Path

    @property
    def model(self) -> Path:
        return self.allowed / "run" / "model"


@pytest.fixture
def disk(tmp_path: Path) -> Disk:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    write(allowed / "run" / "model", MODEL)
    write(outside, {"secret.txt": SECRET, "model/MLmodel": b"flavors: {}\n"})
    (allowed / "escape").symlink_to(outside, target_is_directory=True)
    leaky = write(allowed / "leaky", {"MLmodel": b"flavors: {}\n"})
    (leaky / "secret.txt").symlink_to(outside / "secret.txt")
    return Disk(allowed, outside)


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None, disk: Disk) -> Settings:
    """The ``service`` fixture's settings: files under ``disk.allowed`` may be sources."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        mlflow_source_dirs=(str(disk.allowed),),
    )


@dataclass
class Canary:
    """A loopback HTTP server that answers 404 to everything and notes what it was asked."""

    url: str
    asked: list[str]


@pytest.fixture
def canary() -> Iterator[Canary]:
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(f"{self.command} {self.path}")  # before answering: seen on return
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_PUT = do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Canary(f"http://127.0.0.1:{server.server_port}", asked)
    server.shutdown()
    server.server_close()
    thread.join()


def files_of(version: Version) -> dict[str, tuple[int, str]]:
    return {f.path: (f.size, f.sha256) for f in version.files}


def expected(files: dict[str, bytes]) -> dict[str, tuple[int, str]]:
    return {path: (len(data), sha(data)) for path, data in files.items()}


def refusal(service: RegistryService, source: str, caller: Caller = ME) -> str:
    with pytest.raises(InvalidInput) as refused:
        service.mlflow_sources.register(caller, "churn", source)
    assert refused.value.code == "source_refused", refused.value.message
    return refused.value.message


# -- file:// --------------------------------------------------------------------------------


def test_a_file_source_under_an_allowed_directory_registers_its_bytes(
    service: RegistryService, disk: Disk
) -> None:
    version = service.mlflow_sources.register(
        ME, "churn", disk.model.as_uri(), run_id="run-9", tags={"team": "risk"}
    )
    assert files_of(version) == expected(MODEL)
    assert (version.run, version.tags) == ("run-9", {"team": "risk"})
    for entry in version.files:
        assert b"".join(service.blobs.read(entry.sha256)) == MODEL[entry.path]
    # Through a link that stays inside, and with '..' that stays inside: the same files.
    (disk.allowed / "latest").symlink_to(disk.allowed / "run", target_is_directory=True)
    again = service.mlflow_sources.register(ME, "churn", f"file://{disk.allowed}/latest/model")
    assert files_of(again) == expected(MODEL)
    climbed = f"file://{disk.allowed}/run/../run/model"
    assert files_of(service.mlflow_sources.register(ME, "churn", climbed)) == expected(MODEL)


@on("sqlite")
def test_a_file_source_outside_the_allowed_directories_is_refused_unread(
    service: RegistryService, disk: Disk
) -> None:
    allowed = disk.allowed
    for source in [
        "file:///etc/passwd",
        "file://localhost/etc/passwd",
        f"file://{allowed}/../outside/secret.txt",
        f"file://{allowed}/%2e%2e/outside/secret.txt",
        f"file://{allowed}/run/../../outside",
        f"file://{allowed}/escape",  # a link inside pointing outside
        f"file://{allowed}/escape/secret.txt",
        f"file://{allowed}-sibling/model",  # a name that merely starts like it
        f"FILE://{disk.outside}/model",
        f"file://otherhost{allowed}/run/model",
        "file:run/model",
        f"file://{allowed}/run/model%00",
    ]:
        refusal(service, source)
    assert list(service.blobs.digests()) == []
    # The refusal does not say whether the path exists.
    assert refusal(service, "file:///etc/passwd").replace("passwd", "X") == refusal(
        service, "file:///etc/no-such-file"
    ).replace("no-such-file", "X")
    assert refusal(service, f"file://{allowed}/escape/secret.txt").replace(
        "secret.txt", "X"
    ) == refusal(service, f"file://{allowed}/escape/absent.txt").replace("absent.txt", "X")


@on("sqlite")
def test_a_link_inside_the_source_pointing_out_refuses_the_whole_source(
    service: RegistryService, disk: Disk
) -> None:
    message = refusal(service, (disk.allowed / "leaky").as_uri())
    assert "secret.txt is a link" in message
    assert SECRET.decode() not in message
    assert list(service.blobs.digests()) == [], "nothing is copied before the walk is done"
    with pytest.raises(NotFound):
        service.get_model("churn", caller=ME)


@on("sqlite")
def test_the_limits_hold_for_a_file_source(service: RegistryService, disk: Disk) -> None:
    deep = disk.allowed / "deep"
    write(deep / "/".join(["d"] * (MAX_DEPTH + 1)), {"MLmodel": b"flavors: {}\n"})
    with pytest.raises(TooLarge):
        service.mlflow_sources.register(ME, "churn", deep.as_uri())
    assert list(service.blobs.digests()) == []


@on("sqlite")
def test_a_file_source_when_no_directory_is_allowed_is_refused(
    service: RegistryService, disk: Disk
) -> None:
    service.mlflow_sources = MlflowSources(service, None)
    message = refusal(service, disk.model.as_uri())
    assert "--mlflow-source-dir" in message


# -- s3:// ----------------------------------------------------------------------------------


@pytest.fixture
def bucket_source(s3_server: S3Server) -> str:
    """A key prefix of the moto bucket holding a model, for this test alone."""
    prefix = f"sources-{secrets.token_hex(4)}"
    for path, data in MODEL.items():
        s3_server.client().put_object(
            Bucket=s3_server.bucket, Key=f"{prefix}/run/model/{path}", Body=data
        )
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=f"{prefix}-x/secret", Body=SECRET)
    return prefix


def test_an_s3_source_in_an_allowed_bucket_registers_and_others_are_refused(
    tmp_path: Path, s3_server: S3Server, bucket_source: str
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        s3_endpoint=s3_server.endpoint,
        mlflow_source_buckets=(f"{s3_server.bucket}/{bucket_source}",),
    )
    service = open_service(settings)
    try:
        source = f"s3://{s3_server.bucket}/{bucket_source}/run/model"
        version = service.mlflow_sources.register(ME, "churn", source)
        assert files_of(version) == expected(MODEL)
        for entry in version.files:
            assert b"".join(service.blobs.read(entry.sha256)) == MODEL[entry.path]
        with pytest.raises(NotFound):
            service.mlflow_sources.register(ME, "churn", f"{source}-absent")
        for refused in [
            f"s3://other-bucket/{bucket_source}/run/model",
            f"s3://{s3_server.bucket}/{bucket_source}-x",  # beside the prefix, not in it
            f"s3://{s3_server.bucket}/{bucket_source}/../{bucket_source}-x",
            f"s3://{s3_server.bucket}",
            f"s3://user@{s3_server.bucket}/{bucket_source}/run/model",
        ]:
            refusal(service, refused)
    finally:
        service.close()


def test_a_run_whose_artifacts_are_in_an_allowed_bucket_is_copied_from_it(
    tmp_path: Path, s3_server: S3Server, bucket_source: str, tracking: Tracking
) -> None:
    """MLflow without an artifact proxy: the tracking server names the bucket."""
    mlflow = MlflowClient(tracking_uri=tracking.url)
    tag = secrets.token_hex(4)
    runs = {}
    for where in (bucket_source, f"{bucket_source}-x"):
        artifacts = f"s3://{s3_server.bucket}/{where}/mlruns"
        experiment = mlflow.create_experiment(f"in-bucket-{where}-{tag}", artifacts)
        run = mlflow.create_run(experiment)
        mlflow.log_param(run.info.run_id, "C", "0.3")
        key = run.info.artifact_uri.removeprefix(f"s3://{s3_server.bucket}/")
        for path, data in MODEL.items():
            s3_server.client().put_object(
                Bucket=s3_server.bucket, Key=f"{key}/model/{path}", Body=data
            )
        runs[where] = run.info.run_id
    service = open_service(
        Settings(
            data_dir=tmp_path / "data",
            mlflow_tracking_uri=tracking.url,
            s3_endpoint=s3_server.endpoint,
            mlflow_source_buckets=(f"{s3_server.bucket}/{bucket_source}",),
        )
    )
    try:
        run_id = runs[bucket_source]
        version = service.mlflow_sources.register(ME, "churn", f"runs:/{run_id}/model")
        assert files_of(version) == expected(MODEL)
        assert (version.run, version.params) == (run_id, {"C": "0.3"})
        message = refusal(service, f"runs:/{runs[f'{bucket_source}-x']}/model")
        assert "--mlflow-source-bucket" in message
    finally:
        service.close()


# -- everything else ------------------------------------------------------------------------


@on("sqlite")
def test_other_schemes_hosts_and_private_addresses_are_refused_before_any_fetch(
    service: RegistryService, disk: Disk, canary: Canary
) -> None:
    """The canary is the tracking server and the S3 endpoint, and some sources name it."""
    allowlist = mlflow_source_allowlist(
        Settings(data_dir=disk.allowed.parent / "data", mlflow_source_buckets=("allowed",))
    )
    service.mlflow_sources = MlflowSources(
        service, canary.url, allowlist=allowlist, s3_endpoint=canary.url
    )
    for source in [
        "http://169.254.169.254/latest",
        "http://10.0.0.1/x",
        "https://10.0.0.1/x",
        "ftp://10.0.0.1/model",
        f"{canary.url}/model",
        f"{canary.url.replace('http', 'https')}/model",
        "mlflow-artifacts://10.0.0.1:5000/0/model",
        "mlflow-artifacts://127.0.0.1:1/0/model",  # not the tracking server's port
        "s3://not-allowed/model",
        "//10.0.0.1/model",
        "10.0.0.1/model",
        "http://[::1",
        "runs:/abc/../../etc",
        "models:/churn/1",
    ]:
        refusal(service, source)
    assert canary.asked == []
    # The canary does notice a fetch: an allowed source is read from it (and not found).
    with pytest.raises(NotFound):
        service.mlflow_sources.register(ME, "churn", "runs:/abc/model")
    assert canary.asked == ["GET /api/2.0/mlflow/runs/get?run_id=abc"]


@on("sqlite")
def test_a_caller_who_may_not_register_makes_the_registry_read_nothing(
    service: RegistryService, disk: Disk, canary: Canary, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attacker holds a viewer's token and names sources the server could read."""
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    admin = service.identity.bootstrap_admin("root", operator="test").token
    root = service.access.authenticate(admin)
    service.identity.create_principal(root, "mallory", PrincipalKind.USER)
    service.identity.set_grant(root, "mallory", Role.VIEWER)
    mallory = service.access.authenticate(
        service.identity.create_token(root, principal="mallory").token
    )
    allowlist = mlflow_source_allowlist(
        Settings(
            data_dir=disk.allowed.parent / "data",
            mlflow_source_dirs=(str(disk.allowed),),
            mlflow_source_buckets=("allowed",),
        )
    )
    service.mlflow_sources = MlflowSources(
        service, canary.url, allowlist=allowlist, s3_endpoint=canary.url
    )
    sources = ["runs:/abc/model", "models:/m-abc", "s3://allowed/model", disk.model.as_uri()]
    for source in [*sources, "file:///etc/passwd", "http://169.254.169.254/latest"]:
        with pytest.raises(Forbidden):
            service.mlflow_sources.register(mallory, "churn", source)
    assert canary.asked == []
    assert list(service.blobs.digests()) == []
    # The same sources, named by the admin, are read: the canary would have seen them.
    for source in sources[:3]:
        with pytest.raises(ModelyardError):
            service.mlflow_sources.register(root, "churn", source)
    assert [asked.partition("?")[0] for asked in canary.asked] == [
        "GET /api/2.0/mlflow/runs/get",
        "GET /api/2.0/mlflow/logged-models/m-abc",
        "GET /allowed",  # the bucket's listing
    ]
    assert files_of(service.mlflow_sources.register(root, "churn", sources[3])) == expected(MODEL)


# -- configuration --------------------------------------------------------------------------


def test_the_allowlists_come_from_flags_or_comma_separated_variables(
    tmp_path: Path, disk: Disk, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELYARD_MLFLOW_SOURCE_DIRS", f"{disk.allowed}, {disk.outside}")
    monkeypatch.setenv("MODELYARD_MLFLOW_SOURCE_BUCKETS", "ml-artifacts/mlruns,team-b")
    settings = Settings.from_env(str(tmp_path / "data"))
    assert settings.mlflow_source_dirs == (str(disk.allowed), str(disk.outside))
    allowlist = mlflow_source_allowlist(settings)
    assert allowlist.dirs == (disk.allowed.resolve(), disk.outside.resolve())
    assert [(b.bucket, b.prefix) for b in allowlist.buckets] == [
        ("ml-artifacts", "mlruns/"),
        ("team-b", ""),
    ]
    flagged = Settings.from_env(str(tmp_path / "data"), mlflow_source_dirs=[str(disk.outside)])
    assert flagged.mlflow_source_dirs == (str(disk.outside),)
    monkeypatch.delenv("MODELYARD_MLFLOW_SOURCE_DIRS")
    monkeypatch.delenv("MODELYARD_MLFLOW_SOURCE_BUCKETS")
    nothing = mlflow_source_allowlist(Settings.from_env(str(tmp_path / "data")))
    assert (nothing.dirs, nothing.buckets) == ((), ())


def test_a_bad_allowlist_is_refused_at_start_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cases = {
        ("--mlflow-source-dir", "relative/dir"): "give an absolute path",
        ("--mlflow-source-dir", str(tmp_path / "absent")): "not a directory",
        ("--mlflow-source-dir", str(tmp_path)): "overlaps the registry's own data",
        ("--mlflow-source-dir", str(data / "blobs")): "overlaps the registry's own data",
        ("--mlflow-source-bucket", "Bad_Bucket"): "is not a bucket name",
        ("--mlflow-source-bucket", "models/../x"): "is not a usable key prefix",
        ("--blob-url", "s3://models/registry", "--mlflow-source-bucket", "models"): (
            "overlaps the blob store"
        ),
    }
    (data / "blobs").mkdir(parents=True)
    for args, reason in cases.items():
        result = invoke("serve", "--data-dir", str(data), *args, url=None, cwd=tmp_path)
        assert_user_error(result, contains=reason)
        assert args[-2] in result.stderr
    assert (
        mlflow_source_allowlist(
            Settings(
                data_dir=data,
                blob_url="s3://models/registry",
                mlflow_source_buckets=("models/runs",),
            )
        )
        .buckets[0]
        .prefix
        == "runs/"
    )


def test_serve_help_teaches_the_allowlists(tmp_path: Path) -> None:
    result = invoke("serve", "--help", url=None, cwd=tmp_path, env={"COLUMNS": "240"})
    for words in ["--mlflow-source-dir", "--mlflow-source-bucket", "MODELYARD_MLFLOW_SOURCE_DIRS"]:
        assert words in result.stdout


# -- through MLflow's client: a run whose artifacts are on a disk the registry may read -------


def test_mlflow_registers_a_run_whose_artifacts_are_in_an_allowed_directory(
    tmp_path: Path, disk: Disk, tracking: Tracking, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    server = LiveServer(
        tmp_path / "server-data",
        None,
        env={
            "MODELYARD_MLFLOW_TRACKING_URI": tracking.url,
            "MODELYARD_MLFLOW_SOURCE_DIRS": str(disk.allowed),
        },
    )
    server.start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.url)
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", server.url)
        client = MlflowClient()
        tag = secrets.token_hex(4)
        inside = client.create_experiment(
            f"on-disk-{tag}", artifact_location=(disk.allowed / "mlruns").as_uri()
        )
        outside = client.create_experiment(
            f"elsewhere-{tag}", artifact_location=(disk.outside / "mlruns").as_uri()
        )
        with mlflow.start_run(experiment_id=inside) as run:
            mlflow.log_param("C", "0.3")
            mlflow.log_artifacts(str(disk.model), "model")
        registered = mlflow.register_model(f"runs:/{run.info.run_id}/model", "disk")
        assert (registered.version, registered.status) == ("1", "READY")
        direct = client.create_model_version("disk", disk.model.as_uri(), run_id=run.info.run_id)
        assert direct.version == "2"
        with mlflow.start_run(experiment_id=outside) as elsewhere:
            mlflow.log_artifacts(str(disk.model), "model")
        for source in [f"runs:/{elsewhere.info.run_id}/model", "file:///etc/passwd"]:
            with pytest.raises(MlflowException) as refused:
                client.create_model_version("disk", source)
            assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
        with modelyard.connect(server.url) as reg:
            for number in (1, 2):
                copied = reg.resolve(f"disk/{number}")
                assert files_of(copied) == expected(MODEL)
                assert (copied.run, copied.params) == (run.info.run_id, {"C": "0.3"})
            assert [v.reference for v in reg.versions("disk").items] == ["disk/2", "disk/1"]
    finally:
        server.stop()
