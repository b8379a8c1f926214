"""``modelyard import mlflow`` against a real MLflow server the tests fill with the
unmodified ``mlflow`` client, into a real Modelyard server: everything arrives with MLflow's
numbers, times and creators, a second run changes nothing, an interrupted run resumes, and
the importer is held to the same access control and gates as anyone.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

import modelyard
from modelyard.client.mlflow_import import ImportReport, import_mlflow
from modelyard.client.transport import Advance
from modelyard.config import Settings, open_service
from modelyard.domain.access import PrincipalKind, Role
from modelyard.domain.errors import Conflict, InvalidInput
from modelyard.domain.models import Origin
from modelyard.mlflow_tracking import TrackingServer
from tests.conftest import REQUIREMENTS, LiveServer, Tracking

# Stages that open no request: what an import's moves look like where no gate stands.
OPEN_STAGES = """
stages:
  development: {}
  staging: {}
  production: {exclusive: true, demote_to: archived}
"""


@dataclass
class Target:
    """A live Modelyard server with an admin's, a contributor's and a viewer's token."""

    server: LiveServer
    admin: str
    contributor: str
    viewer: str

    def connect(self, token: str | None = None) -> modelyard.Registry:
        return modelyard.connect(self.server.url, token=token or self.admin)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    data_dir = tmp_path / "modelyard"
    service = open_service(Settings(data_dir=data_dir))
    try:
        admin = service.identity.bootstrap_admin("root", operator="test").token
        root = service.access.authenticate(admin)
        tokens = {}
        for name, role in (("cora", Role.CONTRIBUTOR), ("vera", Role.VIEWER)):
            service.identity.create_principal(root, name, PrincipalKind.USER)
            service.identity.set_grant(root, name, role)
            tokens[name] = service.identity.create_token(root, principal=name).token
    finally:
        service.close()
    server = LiveServer(data_dir, None)
    server.start()
    try:
        yield Target(server, admin, tokens["cora"], tokens["vera"])
    finally:
        server.stop()


@pytest.fixture
def mlflow_client(tracking: Tracking, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """MLflow's client on MLflow's own server, as a team uses it before the switch; its
    runs are alice's (MLflow takes the user from the environment)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.url)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.setenv("LOGNAME", "alice")
    monkeypatch.setenv("USER", "alice")
    return MlflowClient()


def unique(name: str) -> str:
    """A model name no other test on the shared MLflow server uses."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def log_versions(name: str, count: int) -> list[str]:
    """``count`` versions of ``name`` from runs that log a param and a metric twice."""
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    runs = []
    for i in range(count):
        c = 0.1 * (i + 1)
        with mlflow.start_run() as run:
            mlflow.log_param("C", c)
            mlflow.log_metric("accuracy", 0.5, step=0)
            mlflow.log_metric("accuracy", 0.9 + i / 100, step=1)
            mlflow.sklearn.log_model(
                LogisticRegression(C=c, max_iter=300).fit(features, labels),
                name="model",
                registered_model_name=name,
                pip_requirements=REQUIREMENTS,
            )
        runs.append(run.info.run_id)
    return runs


def mlflow_digests(client: MlflowClient, name: str, version: str, into: Path) -> dict[str, str]:
    """The sha256 of each file of an MLflow version, as MLflow's client downloads them."""
    import mlflow.artifacts

    uri = client.get_model_version_download_uri(name, version)
    root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into)))
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def run_import(target: Target, tracking: Tracking, *models: str, token: str = "") -> ImportReport:
    with (
        target.connect(token or target.admin) as reg,
        TrackingServer(tracking.url) as mlflow_server,
    ):
        return import_mlflow(reg, mlflow_server, models=models)


def counts(report: ImportReport) -> list[tuple[str, int, int, int, int, int]]:
    return [(m.name, m.imported, m.updated, m.unchanged, m.moved, m.failed) for m in report.models]


def test_a_registry_arrives_with_its_numbers_times_creators_stages_and_aliases(
    target: Target, tracking: Tracking, mlflow_client: MlflowClient, tmp_path: Path
) -> None:
    name = unique("churn")
    runs = log_versions(name, 4)
    mlflow_client.delete_model_version(name, "1")  # a gap that must stay a gap
    mlflow_client.update_registered_model(name, description="weekly churn")
    mlflow_client.set_registered_model_tag(name, "team", "growth")
    mlflow_client.update_model_version(name, "2", description="the first good one")
    mlflow_client.set_model_version_tag(name, "2", "reviewed", "yes")
    mlflow_client.set_registered_model_alias(name, "champion", "2")
    mlflow_client.set_registered_model_alias(name, "production", "3")  # a stage's name
    with pytest.warns(FutureWarning):
        mlflow_client.transition_model_version_stage(name, "4", "Staging")
        mlflow_client.transition_model_version_stage(name, "2", "Archived")
    with target.connect() as reg:
        reg.apply_policy(None, OPEN_STAGES)

    # The command a user runs, in its own process, as the README shows it.
    env = {**os.environ, "MODELYARD_URL": target.server.url, "MODELYARD_TOKEN": target.admin}
    command = [sys.executable, "-m", "modelyard", "import", "mlflow", "--json"]
    command += ["--tracking-uri", tracking.url, "--model", name]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["models"] == [
        {
            "model": name,
            "imported": 3,
            "updated": 0,
            "unchanged": 0,
            "moved": 4,  # 2 archived, 3 to production, 4 to staging, champion set
            "failed": 0,
            "notes": [],
        }
    ]

    mlflow_versions = {v.version: v for v in mlflow_client.search_model_versions(f"name='{name}'")}
    with target.connect() as reg:
        model = reg.model(name)
        versions = {v.version: v for v in reg.versions(name).items}
        events = [e for e in reg.history(name) if e.kind == "version.registered"]
    assert sorted(versions) == [2, 3, 4]
    assert (model.description, model.tags, model.aliases) == (
        "weekly churn",
        {"team": "growth"},
        {"champion": 2},
    )
    assert model.origin is not None and model.origin.system == "mlflow"
    registered = mlflow_client.get_registered_model(name)
    assert model.origin.created_at is not None
    assert round(model.origin.created_at.timestamp() * 1000) == registered.creation_timestamp
    for number, version in versions.items():
        original = mlflow_versions[str(number)]
        assert version.origin == Origin(
            "mlflow",
            tracking.url,
            name,
            version=str(number),
            created_at=version.origin.created_at if version.origin else None,
            created_by="alice",
            run_link=f"{tracking.url}/#/experiments/0/runs/{runs[number - 1]}",
        )
        assert version.origin.created_at is not None
        assert round(version.origin.created_at.timestamp() * 1000) == original.creation_timestamp
        # The import is the registry's own event, by its importer, after the original.
        assert version.creator == "root" and version.created_at > version.origin.created_at
        assert version.run == runs[number - 1]
        assert version.params == {"C": str(0.1 * number)}
        assert version.metrics == {"accuracy": 0.9 + (number - 1) / 100}
        files = {f.path: f.sha256 for f in version.files}
        assert files == mlflow_digests(mlflow_client, name, str(number), tmp_path / str(number))
    assert (versions[2].stage, versions[3].stage, versions[4].stage) == (
        "archived",
        "production",
        "staging",
    )
    assert (versions[2].description, versions[2].tags) == (
        "the first good one",
        {"reviewed": "yes"},
    )
    assert [e.actor for e in events] == ["root"] * 3

    # MLflow's clients, switched to Modelyard, see MLflow's times and creators.
    answer = httpx.get(
        f"{target.server.url}/api/2.0/mlflow/model-versions/get",
        params={"name": name, "version": "3"},
        headers={"Authorization": f"Bearer {target.admin}"},
    ).json()["model_version"]
    original = mlflow_versions["3"]
    assert (answer["creation_timestamp"], answer["user_id"]) == (
        original.creation_timestamp,
        "alice",
    )

    # Run again: nothing to do, and nothing journaled.
    with target.connect() as reg:
        head = reg.journal_head().seq
    again = run_import(target, tracking, name)
    assert counts(again) == [(name, 0, 0, 3, 0, 0)]
    with target.connect() as reg:
        assert reg.journal_head().seq == head

    # What changed in MLflow since, and only that, comes across.
    mlflow_client.set_model_version_tag(name, "3", "reviewed", "no")
    log_versions(name, 1)
    third = run_import(target, tracking, name)
    assert counts(third) == [(name, 1, 1, 2, 0, 0)]
    with target.connect() as reg:
        assert reg.resolve(f"{name}/3").tags == {"reviewed": "no"}
        assert reg.resolve(f"{name}/5").origin is not None


class StopAfter:
    """A progress that stops the import (as Ctrl-C would) once ``versions`` are done."""

    def __init__(self, versions: int) -> None:
        self.left = versions

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        def advance(done: int) -> None:
            self.left -= done
            if self.left <= 0:
                raise KeyboardInterrupt

        yield advance


def test_an_interrupted_import_continues_where_it_stopped(
    target: Target, tracking: Tracking, mlflow_client: MlflowClient
) -> None:
    name = unique("resume")
    log_versions(name, 3)
    with (
        target.connect() as reg,
        TrackingServer(tracking.url) as mlflow_server,
        pytest.raises(KeyboardInterrupt),
    ):
        import_mlflow(reg, mlflow_server, models=[name], progress=StopAfter(1))
    with target.connect() as reg:
        assert [v.version for v in reg.versions(name).items] == [1]

    resumed = run_import(target, tracking, name)
    assert counts(resumed) == [(name, 2, 0, 1, 0, 0)]
    with target.connect() as reg:
        numbers = [v.version for v in reg.versions(name).items]
        registered = [e for e in reg.history(name) if e.kind == "version.registered"]
    assert sorted(numbers) == [1, 2, 3] and len(registered) == 3  # none copied twice


def test_a_contributors_import_passes_no_gate_and_opens_each_request_once(
    target: Target, tracking: Tracking, mlflow_client: MlflowClient
) -> None:
    """Under the default policy production is protected: the import asks, once."""
    name = unique("gated")
    log_versions(name, 1)
    with pytest.warns(FutureWarning):
        mlflow_client.transition_model_version_stage(name, "1", "Production")

    first = run_import(target, tracking, name, token=target.contributor)
    assert counts(first) == [(name, 1, 0, 0, 0, 0)]
    assert "request #" in first.models[0].notes[0] and "opened" in first.models[0].notes[0]
    second = run_import(target, tracking, name, token=target.contributor)
    assert "still waits" in second.models[0].notes[0]
    with target.connect() as reg:
        assert reg.resolve(f"{name}/1").stage == "development"
        assert len(reg.requests(name)) == 1


def test_a_viewer_imports_nothing(
    target: Target, tracking: Tracking, mlflow_client: MlflowClient
) -> None:
    name = unique("viewed")
    log_versions(name, 1)
    report = run_import(target, tracking, name, token=target.viewer)
    assert counts(report) == [(name, 0, 0, 0, 0, 1)]
    with target.connect() as reg:
        assert all(m.name != name for m in reg.models().items)


def test_a_version_registered_here_is_never_overwritten(
    target: Target, tracking: Tracking, mlflow_client: MlflowClient, tmp_path: Path
) -> None:
    name = unique("clash")
    log_versions(name, 1)
    (tmp_path / "model.bin").write_bytes(b"ours")
    with target.connect() as reg:
        ours = reg.register(name, tmp_path / "model.bin")
    report = run_import(target, tracking, name)
    assert counts(report) == [(name, 0, 0, 0, 0, 1)]
    assert "not imported from MLflow" in report.models[0].notes[0]
    with target.connect() as reg:
        assert reg.resolve(f"{name}/1").manifest_digest == ours.manifest_digest


def test_a_chosen_number_needs_an_origin_and_lies_above_the_latest(
    target: Target, tmp_path: Path
) -> None:
    (tmp_path / "model.bin").write_bytes(b"weights")
    origin = Origin("mlflow", "http://mlflow:5000", "churn", version="7")
    with target.connect() as reg:
        with pytest.raises(InvalidInput, match="origin"):
            reg.register("churn", tmp_path / "model.bin", number=7)
        assert reg.register("churn", tmp_path / "model.bin", origin=origin, number=7).version == 7
        with pytest.raises(Conflict) as taken:
            reg.register("churn", tmp_path / "model.bin", origin=origin, number=7)
        assert taken.value.code == "number_taken"
        assert reg.register("churn", tmp_path / "model.bin").version == 8  # then in turn
