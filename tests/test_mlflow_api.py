"""MLflow's Model Registry API, driven by the unmodified ``mlflow`` client from PyPI against
a real server, on SQLite and PostgreSQL: what its users call works unchanged, with a
Modelyard token as ``MLFLOW_TRACKING_TOKEN``, under the same access control and journal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import requests
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException

import modelyard
from modelyard.api import create_app
from modelyard.api import mlflow_wire as wire
from modelyard.config import Settings, open_service
from modelyard.domain.access import Caller, PrincipalKind, Reach, Role
from modelyard.domain.errors import InvalidFilter, NotFound
from modelyard.domain.models import PendingVersion
from modelyard.mlflow_tracking import ARTIFACTS as TRACKING_ARTIFACTS
from modelyard.service import RegistryService
from modelyard.service.mlflow_source import MlflowSources
from tests.conftest import REQUIREMENTS, Tracking, Trained, free_port, serving
from tests.test_api import register


@dataclass
class Registry:
    """A live server with an admin's and a viewer's token, and churn/1 an MLflow model."""

    url: str
    admin: str
    viewer: str
    features: np.ndarray
    predictions: np.ndarray


def nowhere() -> str:
    """A tracking server's URL where nothing listens: a fetch from it answers 503."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def registry(
    tmp_path: Path, database_url: str | None, trained: Trained, request: pytest.FixtureRequest
) -> Iterator[Registry]:
    """Copying from MLflow's tracking server when the test takes one, else from nowhere.

    uvicorn serves the app in a thread of this process: MLflow's client talks HTTP to a real
    server all the same, and each test saves the second a server process takes to start."""
    needs_tracking = "tracking" in request.fixturenames
    tracking_url = request.getfixturevalue("tracking").url if needs_tracking else nowhere()
    settings = Settings(
        data_dir=tmp_path / "server-data",
        database_url=database_url,
        mlflow_tracking_uri=tracking_url,
    )
    service = open_service(settings)
    try:
        admin = service.identity.bootstrap_admin("root", operator="test").token
        root = service.access.authenticate(admin)
        service.identity.create_principal(root, "vera", PrincipalKind.USER)
        service.identity.set_grant(root, "vera", Role.VIEWER)
        viewer = service.identity.create_token(root, principal="vera").token
        with serving(create_app(service, reach=Reach.LOOPBACK)) as url:
            with modelyard.connect(url, token=admin) as reg:
                reg.register("churn", trained.saved, metrics={"accuracy": 0.97}, run="run-17")
            yield Registry(url, admin, viewer, trained.features, trained.predictions)
    finally:
        service.close()


def client_as(
    registry: Registry,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
    tracking: Tracking | None = None,
) -> MlflowClient:
    """MLflow's client as its users configure it: environment variables only (tracking on
    MLflow's own server, or nowhere: then every call it makes is the registry's)."""
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", registry.url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.url if tracking else registry.url)
    return MlflowClient()


def test_the_mlflow_client_manages_models_versions_tags_and_aliases(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = client_as(registry, registry.admin, monkeypatch)
    made = client.create_registered_model("fraud", tags={"team": "risk"}, description="v0")
    assert (made.name, made.tags, made.description) == ("fraud", {"team": "risk"}, "v0")

    found = client.search_registered_models(filter_string="name LIKE 'ch%'")
    assert [m.name for m in found] == ["churn"]
    assert [m.name for m in client.search_registered_models(order_by=["name DESC"])] == [
        "fraud",
        "churn",
    ]
    client.update_registered_model("fraud", description="edited")
    client.set_registered_model_tag("fraud", "tier", "gold")
    client.delete_registered_model_tag("fraud", "team")
    fraud = client.get_registered_model("fraud")
    assert (fraud.description, fraud.tags) == ("edited", {"tier": "gold"})

    client.set_registered_model_alias("churn", "champion", "1")
    by_alias = client.get_model_version_by_alias("churn", "champion")
    assert (by_alias.name, by_alias.version, by_alias.run_id) == ("churn", "1", "run-17")
    assert by_alias.aliases == ["champion"]
    assert client.get_registered_model("churn").aliases == {"champion": "1"}

    client.set_model_version_tag("churn", "1", "validated", "yes")
    client.update_model_version("churn", "1", description="first")
    version = client.get_model_version("churn", "1")
    assert (version.tags, version.description, version.status) == (
        {"validated": "yes"},
        "first",
        "READY",
    )
    client.delete_model_version_tag("churn", "1", "validated")
    searched = client.search_model_versions("name = 'churn' AND run_id = 'run-17'")
    assert [(v.name, v.version, v.tags) for v in searched] == [("churn", "1", {})]
    assert [v.version for v in client.get_latest_versions("churn")] == ["1"]

    client.delete_registered_model_alias("churn", "champion")
    with pytest.raises(MlflowException) as missing:
        client.get_model_version_by_alias("churn", "champion")
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    client.delete_registered_model("fraud")
    assert [m.name for m in client.search_registered_models()] == ["churn"]


def test_pyfunc_loads_a_version_by_alias_and_number_with_the_original_predictions(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pyfunc

    client = client_as(registry, registry.admin, monkeypatch)
    client.set_registered_model_alias("churn", "champion", "1")
    for uri in ("models:/churn@champion", "models:/churn/1"):
        loaded = mlflow.pyfunc.load_model(uri)
        assert np.array_equal(loaded.predict(registry.features), registry.predictions), uri


def test_log_model_and_register_model_copy_the_run_into_the_registry(
    registry: Registry, tracking: Tracking, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training code as it is: tracking on MLflow, the registry on Modelyard."""
    import mlflow
    import mlflow.pyfunc
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    client = client_as(registry, registry.admin, monkeypatch, tracking)
    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(C=0.3, max_iter=300).fit(features, labels)
    with mlflow.start_run() as run:
        mlflow.log_param("C", 0.3)
        mlflow.log_metric("accuracy", 0.5, step=0)
        mlflow.log_metric("accuracy", 0.96, step=1)
        logged = mlflow.sklearn.log_model(
            model, name="model", registered_model_name="tree", pip_requirements=REQUIREMENTS
        )
    assert str(logged.registered_model_version) == "1"
    again = mlflow.register_model(f"runs:/{run.info.run_id}/model", "tree")
    assert (again.version, again.status, again.run_id) == ("2", "READY", run.info.run_id)

    with modelyard.connect(registry.url, token=registry.admin) as reg:
        copied = reg.resolve("tree/2")
    assert copied.run == run.info.run_id
    assert (copied.params, copied.metrics) == ({"C": "0.3"}, {"accuracy": 0.96})
    assert "MLmodel" in {f.path for f in copied.files}
    assert copied.creator == "root"

    client.set_registered_model_alias("tree", "champion", "2")
    loaded = mlflow.pyfunc.load_model("models:/tree@champion")
    assert np.array_equal(loaded.predict(features), model.predict(features))


MODEL_VERSIONS = "/api/2.0/mlflow/model-versions"
CREATE = f"{MODEL_VERSIONS}/create"


@pytest.mark.parametrize(
    "source",
    [
        "file:///etc/passwd",
        "s3://bucket/model",
        "http://169.254.169.254/latest/meta-data",
        "mlflow-artifacts://10.0.0.1:5000/0/model",
        "runs:/abc/../../../../etc",
        "models:/churn/1",
    ],
)
def test_a_source_names_what_to_copy_never_where_from(
    service: RegistryService, client: TestClient, source: str
) -> None:
    """Anything but the configured tracking server's artifacts is refused, unfetched: the
    tracking server here is nowhere, so an attempt to fetch would answer 503."""
    service.mlflow_sources = MlflowSources(service, nowhere())
    answer = client.post(CREATE, json={"name": "churn", "source": source})
    assert answer.status_code == 400, answer.text
    assert (answer.json()["error_code"], answer.json()["code"]) == (
        "INVALID_PARAMETER_VALUE",
        "source_refused",
    )
    fetched = client.post(CREATE, json={"name": "churn", "source": "runs:/abc/model"})
    assert (fetched.status_code, fetched.json()["code"]) == (503, "tracking_unavailable")


def test_a_viewer_cannot_make_the_registry_fetch(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before anything is fetched (a fetch from nowhere would answer 503)."""
    client = client_as(registry, registry.viewer, monkeypatch)
    with pytest.raises(MlflowException) as refused:
        client.create_model_version("churn", "runs:/0123456789abcdef/model")
    assert refused.value.error_code == "PERMISSION_DENIED"


def test_errors_are_mlflows_codes_and_say_what_happened(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = client_as(registry, registry.admin, monkeypatch)

    def code_of(call: object, *args: object) -> tuple[str, str]:
        with pytest.raises(MlflowException) as raised:
            call(*args)  # type: ignore[operator]
        return raised.value.error_code, raised.value.message

    assert code_of(client.get_registered_model, "absent")[0] == "RESOURCE_DOES_NOT_EXIST"
    assert code_of(client.get_latest_versions, "absent")[0] == "RESOURCE_DOES_NOT_EXIST"
    code, message = code_of(client.get_latest_versions, "churn", ["Canary"])
    assert code == "INVALID_PARAMETER_VALUE" and "Canary" in message
    assert code_of(client.create_registered_model, "churn")[0] == "RESOURCE_ALREADY_EXISTS"
    assert code_of(client.get_model_version, "churn", "x")[0] == "INVALID_PARAMETER_VALUE"
    code, message = code_of(client.search_registered_models, "name ILIKE 'c%'")
    assert code == "INVALID_PARAMETER_VALUE" and "ILIKE" in message
    # A protected stage opens a request and says so: nothing moved.
    code, message = code_of(client.transition_model_version_stage, "churn", "1", "Staging")
    assert code == "PERMISSION_DENIED" and "request #" in message
    assert client.get_model_version("churn", "1").current_stage == "None"
    code, message = code_of(client.rename_registered_model, "churn", "attrition")
    assert code == "ENDPOINT_NOT_FOUND" and "names are permanent" in message
    # A model with versions is kept: versions are immutable.
    assert code_of(client.delete_registered_model, "churn")[0] == "INVALID_STATE"


def test_a_viewer_reads_but_cannot_change_or_download(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pyfunc

    client = client_as(registry, registry.viewer, monkeypatch)
    assert client.get_model_version("churn", "1").version == "1"
    with pytest.raises(MlflowException) as refused:
        client.set_registered_model_alias("churn", "champion", "1")
    assert refused.value.error_code == "PERMISSION_DENIED"
    with pytest.raises(requests.HTTPError) as no_bytes:  # reading bytes needs reader
        mlflow.pyfunc.load_model("models:/churn/1")
    assert no_bytes.value.response.status_code == 403
    assert no_bytes.value.response.json()["error_code"] == "PERMISSION_DENIED"
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "my_not-a-token")
    with pytest.raises(RestException) as anonymous:
        MlflowClient().get_registered_model("churn")
    assert anonymous.value.error_code == "UNAUTHENTICATED"


def test_an_alias_named_as_a_stage_promotes_under_the_policy(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stages and aliases share one namespace: MLflow's ``production`` alias is the stage."""
    client = client_as(registry, registry.admin, monkeypatch)
    with pytest.raises(MlflowException) as protected:
        client.set_registered_model_alias("churn", "production", "1")
    assert protected.value.error_code == "PERMISSION_DENIED"
    assert "request #" in protected.value.message
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("churn", "production")  # nothing moved

    with modelyard.connect(registry.url, token=registry.admin) as reg:
        reg.apply_policy("churn", "stages:\n  production: {exclusive: true}\n")
    client.set_registered_model_alias("churn", "production", "1")
    promoted = client.get_model_version_by_alias("churn", "production")
    assert (promoted.version, promoted.current_stage) == ("1", "Production")


def test_changes_through_the_mlflow_api_are_journaled(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = client_as(registry, registry.admin, monkeypatch)
    client.set_registered_model_alias("churn", "champion", "1")
    with modelyard.connect(registry.url, token=registry.admin) as reg:
        events = reg.events(limit=1000)
    last = events[-1]
    assert (last.kind, last.model, last.actor) == ("alias.set", "churn", "root")


# -- the translation alone ----------------------------------------------------------------


def test_mlflow_filters_and_orderings_become_modelyards() -> None:
    assert wire.translate_filter("name = 'a' AND run_id = 'r'") == "name = 'a' AND run = 'r'"
    assert wire.translate_filter("tags.`run_id` = 'run_id'") == "tags.`run_id` = 'run_id'"
    assert wire.translate_filter("  ") is None
    # What MLflow's client adds to leave prompts out (Modelyard has none), and tag. for tags.
    assert wire.translate_filter("tag.`mlflow.prompt.is_prompt` != 'true'") is None
    assert wire.translate_filter("tag.a = 'b' AND tag.`mlflow.prompt.is_prompt` != 'true'") == (
        "tags.a = 'b'"
    )
    assert wire.translate_order(["name ASC", "last_updated_timestamp DESC"]) == "name, updated desc"
    with pytest.raises(InvalidFilter):
        wire.translate_order(["size"])
    with pytest.raises(InvalidFilter):
        wire.translate_filter("name ilike 'x'")
    # MLflow's four stages as filters, from the one mapping that names them.
    assert wire.stage_filter("Production") == "stage = 'production'"
    assert wire.stage_filter("None") == "stage not in ('staging', 'production', 'archived')"


# -- the artifact endpoint, in process -------------------------------------------------------

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"


def test_the_artifact_endpoint_lists_by_directory_and_streams_files(client: TestClient) -> None:
    register(client, "churn", {"MLmodel": b"flavors: {}", "data/model.pkl": b"weights"})
    listed = client.get(ARTIFACTS, params={"path": "modelyard-models/churn/1"})
    assert listed.json() == {
        "files": [
            {"path": "MLmodel", "is_dir": False, "file_size": 11},
            {"path": "data", "is_dir": True},
        ]
    }
    inside = client.get(ARTIFACTS, params={"path": "modelyard-models/churn/1/data"})
    assert inside.json()["files"] == [{"path": "model.pkl", "is_dir": False, "file_size": 7}]
    got = client.get(f"{ARTIFACTS}/modelyard-models/churn/1/data/model.pkl")
    assert (got.status_code, got.content) == (200, b"weights")


@pytest.mark.parametrize(
    "path",
    [
        "modelyard-models/churn/1/../../../etc/passwd",
        "modelyard-models/churn/1/%2e%2e/%2e%2e/secret.key",
        "modelyard-models/churn/one/MLmodel",
        "elsewhere/churn/1/MLmodel",
        "modelyard-models/churn/1",
    ],
)
def test_the_artifact_endpoint_serves_a_versions_files_and_nothing_else(
    client: TestClient, path: str
) -> None:
    register(client, "churn", {"MLmodel": b"flavors: {}"})
    answer = client.get(f"{ARTIFACTS}/{path}")
    assert answer.status_code in (400, 404), answer.text
    assert answer.json()["error_code"] in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")
    assert (
        client.put(f"{ARTIFACTS}/modelyard-models/churn/1/MLmodel", content=b"x").status_code == 405
    )


class HeldDownloads(httpx.HTTPTransport):
    """The real network to the real tracking server, but a file's download waits until the
    test lets it go, then goes through, or fails as a server gone away would."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.fail = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith(f"{TRACKING_ARTIFACTS}/"):
            assert self.go.wait(60), "the test never let the download go"
            if self.fail:
                raise httpx.ConnectError("the tracking server went away", request=request)
        return super().handle_request(request)


ROOT = Caller.local_user("tester")  # the in-process client's caller


def logged_run(tracking: Tracking, trained: Trained, monkeypatch: pytest.MonkeyPatch) -> str:
    """A run on MLflow's server that logged the trained model under ``model``."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.url)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(trained.saved), "model")
    return str(run.info.run_id)


def status_of(client: TestClient, name: str, version: str) -> dict[str, Any]:
    answer = client.get(f"{MODEL_VERSIONS}/get", params={"name": name, "version": version})
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()["model_version"]
    return found


def settled(client: TestClient, name: str, version: str) -> dict[str, Any]:
    """The version once its copy has ended, as MLflow's client polls for it."""
    deadline = time.monotonic() + 60
    while (found := status_of(client, name, version))["status"] == "PENDING_REGISTRATION":
        assert time.monotonic() < deadline, found
        time.sleep(0.05)  # polling the state the test waits for, not standing in for it
    return found


def test_a_long_copy_answers_pending_and_the_client_polls_until_ready_or_failed(
    service: RegistryService,
    client: TestClient,
    tracking: Tracking,
    trained: Trained,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = logged_run(tracking, trained, monkeypatch)
    held = HeldDownloads()
    service.mlflow_sources = MlflowSources(service, tracking.url, transport=held, answer_within=0.0)
    source = {"name": "slow", "source": f"runs:/{run_id}/model", "run_id": run_id}

    created = client.post(CREATE, json=source)
    assert created.status_code == 200, created.text
    pending = created.json()["model_version"]
    assert (pending["version"], pending["status"]) == ("1", "PENDING_REGISTRATION")
    assert status_of(client, "slow", "1")["status"] == "PENDING_REGISTRATION"
    with pytest.raises(NotFound):  # nothing of it exists but its number
        service.get_version("slow", 1, caller=ROOT)
    held.go.set()
    ready = settled(client, "slow", "1")
    assert (ready["status"], ready["run_id"]) == ("READY", run_id)
    files = {f.path for f in service.get_version("slow", 1, caller=ROOT).files}
    assert files == {
        p.relative_to(trained.saved).as_posix() for p in trained.saved.rglob("*") if p.is_file()
    }

    held.fail = True
    failed = settled(
        client, "slow", client.post(CREATE, json=source).json()["model_version"]["version"]
    )
    assert (failed["version"], failed["status"]) == ("2", "FAILED_REGISTRATION")
    assert "went away" in failed["status_message"], failed
    # Its number is never given again, and the model's versions are only the copied one.
    held.fail = False
    assert client.post(CREATE, json=source).json()["model_version"]["version"] == "3"
    assert settled(client, "slow", "3")["status"] == "READY"
    assert [v.version for v in service.list_versions("slow", caller=ROOT).items] == [3, 1]


def test_a_pending_copy_silent_too_long_reads_as_failed() -> None:
    """Its server died mid-copy: the number will never be a version."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    pending = PendingVersion("m", 4, "pending", "", "runs:/r/model", "r", "ann", at, at)
    assert pending.seen_at(at + PendingVersion.STALE_AFTER) is pending
    stale = pending.seen_at(at + PendingVersion.STALE_AFTER + timedelta(seconds=1))
    assert (stale.status, "stopped" in stale.message) == ("failed", True)
