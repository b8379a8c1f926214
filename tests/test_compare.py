"""Champion vs challenger: the pure diff and gate, REST on both backends, the SDK, the CLI."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import modelyard
from modelyard.client.asgi import AsgiTransport
from modelyard.config import Settings
from modelyard.domain.access import PrincipalKind, Role
from modelyard.domain.comparison import (
    Comparison,
    Difference,
    GateMetric,
    GateResult,
    against_reference,
    compare_versions,
    evaluate_gate,
)
from modelyard.domain.errors import InvalidInput, InvalidName
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import DatasetRef, Environment, SourceRef, Version
from modelyard.service import RegistryService
from tests.conftest import LiveServer
from tests.test_cli import assert_user_error, invoke_many

Tree = Callable[[dict[str, bytes]], Path]

# -- the domain: pure --------------------------------------------------------------------------


def entry(path: str, content: str) -> FileEntry:
    return FileEntry(path, len(content), content.encode().hex().ljust(64, "0")[:64])


def version(number: int, **changes: Any) -> Version:
    base = Version(
        model="churn",
        version=number,
        manifest_digest="sha256:" + f"{number:064x}",
        files=(entry("model.onnx", "weights"), entry("config.json", "{}")),
        size=9,
        framework="onnx",
        format="onnx",
        params={"depth": "5", "lr": "0.1", "seed": "7"},
        metrics={"auc": 0.85, "loss": 0.30},
        dataset=DatasetRef("customers", "2024-w36"),
        source=SourceRef("https://git.example/churn", "a" * 40, "main", False),
        environment=Environment("3.11.9", "linux", {"numpy": "1.26.4", "sklearn": "1.4.0"}),
        run=None,
        creator="alice",
        created_at=datetime(2024, 9, 1, tzinfo=UTC),
        tags={},
        description="",
        stage="production",
        aliases=("champion",),
    )
    return dataclasses.replace(base, **changes)


CHAMPION = version(42)
CHALLENGER = version(
    43,
    files=(entry("model.onnx", "better weights"), entry("config.json", "{}"), entry("v.txt", "a")),
    size=17,
    params={"depth": "6", "lr": "0.1", "trees": "100"},
    metrics={"auc": 0.87, "loss": 0.25, "f1": 0.5},
    dataset=DatasetRef("customers", "2024-w37"),
    source=SourceRef("https://git.example/churn", "b" * 40, "main", True),
    environment=Environment("3.11.9", "linux", {"numpy": "2.0.0", "torch": "2.3.0"}),
    creator="bob",
    created_at=datetime(2024, 9, 8, tzinfo=UTC),
    stage="development",
    aliases=(),
)


def test_metrics_side_by_side_with_signed_deltas() -> None:
    metrics = compare_versions(CHAMPION, CHALLENGER).metrics
    assert list(metrics) == ["auc", "f1", "loss"]
    assert metrics["auc"].delta == pytest.approx(0.02)
    assert metrics["loss"].delta == pytest.approx(-0.05)  # signed, never judged
    assert (metrics["f1"].a, metrics["f1"].b, metrics["f1"].status) == (None, 0.5, "added")
    assert metrics["f1"].delta is None


def test_params_packages_and_files_list_only_what_differs() -> None:
    result = compare_versions(CHAMPION, CHALLENGER)
    assert {k: (d.a, d.b, d.status) for k, d in result.params.items()} == {
        "depth": ("5", "6", "changed"),
        "seed": ("7", None, "removed"),
        "trees": (None, "100", "added"),
    }
    assert {k: d.status for k, d in result.packages.items()} == {
        "numpy": "changed",
        "sklearn": "removed",
        "torch": "added",
    }
    assert result.packages["numpy"].delta is None  # versions are text, not numbers
    assert {p: d.status for p, d in result.files.items()} == {
        "model.onnx": "changed",
        "v.txt": "added",
    }
    changed = result.files["model.onnx"]
    assert changed.a is not None and changed.b is not None
    assert (changed.a.size, changed.b.size) == (7, 14)
    assert result.unchanged == {"params": 1, "packages": 0, "files": 1}


def test_lineage_environment_and_overview_keep_every_field() -> None:
    result = compare_versions(CHAMPION, CHALLENGER)
    assert (result.a, result.b) == ("churn/42", "churn/43")
    lineage = {k: d.status for k, d in result.lineage.items()}
    assert lineage["dataset.version"] == "changed" and lineage["dataset.name"] == "same"
    assert lineage["source.commit"] == "changed" and lineage["source.repo"] == "same"
    assert (result.lineage["source.dirty"].a, result.lineage["source.dirty"].b) == (False, True)
    assert result.lineage["source.dirty"].delta is None  # a flag, not a number
    assert {k: d.status for k, d in result.environment.items()} == {
        "python": "same",
        "platform": "same",
    }
    overview = result.overview
    assert list(overview)[:4] == ["digest", "framework", "format", "size"]
    assert overview["size"].delta == 8 and overview["files"].delta == 1
    assert (overview["creator"].a, overview["creator"].b) == ("alice", "bob")
    assert overview["created"].a == "2024-09-01T00:00:00.000000Z"
    assert overview["aliases"].status == "removed"


def test_a_version_without_lineage_compares_against_one_with() -> None:
    bare = version(1, dataset=None, source=None, environment=None, params={}, metrics={})
    result = compare_versions(bare, CHAMPION)
    assert result.lineage["dataset.name"].status == "added"
    assert result.environment["python"].status == "added"
    assert set(result.packages) == {"numpy", "sklearn"}
    assert compare_versions(bare, bare).files == {}
    assert compare_versions(bare, bare).unchanged["files"] == 2


def test_comparison_survives_json_unchanged() -> None:
    result = compare_versions(CHAMPION, CHALLENGER)
    assert Comparison.from_dict(result.as_dict()) == result
    data = result.as_dict()
    assert data["metrics"]["auc"]["status"] == "changed"
    assert data["files"]["v.txt"] == {
        "a": None,
        "b": CHALLENGER.files[2].as_dict(),
        "status": "added",
    }


def test_difference_status_and_delta() -> None:
    assert Difference(None, None).status == "same"
    assert Difference(1, 1.0).status == "same"
    assert Difference("x", None).status == "removed"
    assert Difference(True, False).delta is None
    assert Difference(3, 5).delta == 2


def test_gate_higher_is_better() -> None:
    result = evaluate_gate(CHALLENGER, CHAMPION, ["auc"], min_delta=0.0)
    assert result.passed and [c.passed for c in result.checks] == [True]
    check = result.checks[0]
    assert (check.challenger, check.against) == (0.87, 0.85)
    assert check.delta == pytest.approx(0.02)
    assert "0.87 (churn/43) vs 0.85 (churn/42)" in check.message
    assert "+0.02" in check.message
    assert not evaluate_gate(CHALLENGER, CHAMPION, ["auc"], min_delta=0.05).passed
    # exactly min_delta passes, though in binary 0.3 - 0.1 is 0.19999999999999998
    low, high = version(1, metrics={"auc": 0.1}), version(2, metrics={"auc": 0.3})
    assert 0.3 - 0.1 < 0.2
    assert evaluate_gate(high, low, ["auc"], min_delta=0.2).passed
    assert not evaluate_gate(high, low, ["auc"], min_delta=0.2001).passed
    # a negative min_delta tolerates a small loss
    assert evaluate_gate(CHAMPION, CHALLENGER, ["auc"], min_delta=-0.03).passed
    assert not evaluate_gate(CHAMPION, CHALLENGER, ["auc"], min_delta=-0.01).passed


def test_gate_lower_is_better_and_every_metric_must_pass() -> None:
    lower = evaluate_gate(CHALLENGER, CHAMPION, ["loss"], min_delta=0.05, lower_is_better=True)
    assert lower.passed
    assert "needs <= -0.05" in lower.checks[0].message
    assert not evaluate_gate(CHALLENGER, CHAMPION, ["loss"], lower_is_better=False).passed
    both = evaluate_gate(CHALLENGER, CHAMPION, ["auc", "loss"], min_delta=0.0)
    assert [c.passed for c in both.checks] == [True, False]
    assert not both.passed
    # the same metric twice is checked once
    assert len(evaluate_gate(CHALLENGER, CHAMPION, ["auc", "auc"]).checks) == 1


def test_gate_each_metric_has_its_own_direction() -> None:
    # one gate holds AUC up and loss down: 0.87 > 0.85 and 0.25 < 0.30
    mixed = evaluate_gate(CHALLENGER, CHAMPION, ["auc", "loss:lower"], min_delta=0.01)
    assert mixed.passed, mixed
    assert [(c.metric, c.direction) for c in mixed.checks] == [
        ("auc", "higher"),
        ("loss", "lower"),
    ]
    assert "higher is better, needs >= +0.01" in mixed.checks[0].message
    assert "lower is better, needs <= -0.01" in mixed.checks[1].message
    # the same two, each the wrong way round, both fail
    reversed_ = evaluate_gate(CHALLENGER, CHAMPION, ["auc:lower", "loss:higher"])
    assert [c.passed for c in reversed_.checks] == [False, False]
    # the old switch is the default for metrics that name no direction, and only for them
    old = evaluate_gate(CHALLENGER, CHAMPION, ["loss", "auc:higher"], lower_is_better=True)
    assert [(c.direction, c.passed) for c in old.checks] == [("lower", True), ("higher", True)]
    assert GateResult.from_dict(mixed.as_dict()) == mixed
    assert mixed.as_dict()["checks"][1]["direction"] == "lower"


def test_gate_metric_names_may_hold_colons() -> None:
    assert GateMetric.parse("val:loss") == GateMetric("val:loss", "higher")
    assert GateMetric.parse("val:loss:lower") == GateMetric("val:loss", "lower")
    assert GateMetric.parse("loss", lower_is_better=True) == GateMetric("loss", "lower")
    better, worse = version(44, metrics={"val:loss": 0.2}), version(45, metrics={"val:loss": 0.3})
    assert evaluate_gate(better, worse, ["val:loss:lower"]).passed
    assert not evaluate_gate(better, worse, ["val:loss"]).passed


def test_gate_refuses_one_metric_both_ways() -> None:
    with pytest.raises(InvalidInput, match="both auc:higher and auc:lower"):
        evaluate_gate(CHALLENGER, CHAMPION, ["auc", "auc:lower"])
    with pytest.raises(InvalidInput, match="both loss:lower and loss:higher"):
        evaluate_gate(CHALLENGER, CHAMPION, ["loss", "loss:higher"], lower_is_better=True)
    with pytest.raises(InvalidName):
        evaluate_gate(CHALLENGER, CHAMPION, [":lower"])


def test_gate_fails_on_a_missing_metric_and_says_where() -> None:
    result = evaluate_gate(CHALLENGER, CHAMPION, ["f1", "auc"])
    f1 = result.checks[0]
    assert not result.passed and not f1.passed
    assert f1.message == "f1: missing on churn/42 (against): fail"
    assert f1.delta is None
    nowhere = evaluate_gate(CHALLENGER, CHAMPION, ["recall"]).checks[0].message
    assert "churn/43 (challenger) and churn/42 (against)" in nowhere
    assert GateResult.from_dict(result.as_dict()) == result
    assert result.as_dict()["passed"] is False


def test_gate_refuses_input_that_checks_nothing() -> None:
    with pytest.raises(InvalidInput, match="at least one metric"):
        evaluate_gate(CHALLENGER, CHAMPION, [])
    with pytest.raises(InvalidInput, match="finite"):
        evaluate_gate(CHALLENGER, CHAMPION, ["auc"], min_delta=float("nan"))
    with pytest.raises(InvalidName):
        evaluate_gate(CHALLENGER, CHAMPION, ["not a name"])


def test_against_is_an_alias_of_the_same_model_or_a_reference() -> None:
    assert against_reference("churn", "production") == "churn@production"
    assert against_reference("churn", "churn/40") == "churn/40"
    assert against_reference("churn", "fraud@champion") == "fraud@champion"
    with pytest.raises(InvalidInput):
        against_reference("churn", "")


# -- a registry with a champion and a challenger -------------------------------------------------


def seed(reg: modelyard.Registry, make_tree: Tree) -> None:
    """churn/1 (production) and churn/2 differ in one file, metrics, params and lineage;
    fraud/1 is another model."""
    source = SourceRef("https://git.example/churn", "a" * 40, "main", False)
    champion = make_tree({"model.bin": b"weights 1", "config.json": b"{}"})
    reg.register(
        "churn",
        champion,
        metrics={"auc": 0.85, "loss": 0.30},
        params={"depth": 5},
        dataset="customers@w36",
        source=source,
        environment=Environment("3.11.9", "linux", {"numpy": "1.26.4"}),
    )
    reg.register(
        "churn",
        make_tree({"model.bin": b"weights 2", "config.json": b"{}"}),
        metrics={"auc": 0.87, "loss": 0.28},
        params={"depth": 6},
        dataset="customers@w37",
        source=dataclasses.replace(source, commit="b" * 40),
        environment=Environment("3.11.9", "linux", {"numpy": "2.0.0"}),
    )
    reg.promote("churn/1", "production", override="the champion, for these tests")
    reg.register("fraud", champion, metrics={"auc": 0.7}, source=None, environment=None)


@pytest.fixture
def reg(client: TestClient, make_tree: Tree) -> Iterator[modelyard.Registry]:
    with modelyard.Registry(AsgiTransport(client.app)) as registry:  # the client's app
        seed(registry, make_tree)
        yield registry


# -- REST, on SQLite and PostgreSQL ---------------------------------------------------------------


def test_compare_over_rest(reg: modelyard.Registry, client: TestClient) -> None:
    response = client.get("/api/v1/compare", params={"a": "churn@production", "b": "churn/2"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["a"], body["b"]) == ("churn/1", "churn/2")
    assert body["metrics"]["auc"]["delta"] == pytest.approx(0.02)
    assert body["metrics"]["loss"]["delta"] == pytest.approx(-0.02)
    assert body["params"] == {"depth": {"a": "5", "b": "6", "status": "changed", "delta": None}}
    assert body["lineage"]["dataset.version"]["status"] == "changed"
    assert body["lineage"]["source.commit"] == {
        "a": "a" * 40,
        "b": "b" * 40,
        "status": "changed",
        "delta": None,
    }
    assert body["packages"]["numpy"]["status"] == "changed"
    assert list(body["files"]) == ["model.bin"]
    assert body["files"]["model.bin"]["a"]["size"] == len(b"weights 1")
    assert body["unchanged"] == {"params": 0, "packages": 0, "files": 1}
    assert body["overview"]["stage"]["a"] == "production"

    # two models: allowed, and the environment missing on one side reads as removed
    across = client.get("/api/v1/compare", params={"a": "churn/2", "b": "fraud"}).json()
    assert (across["a"], across["b"]) == ("churn/2", "fraud/1")
    assert across["environment"]["python"]["status"] == "removed"
    assert list(across["files"]) == ["model.bin"]  # config.json is the same


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ({"a": "churn/1", "b": "nope/1"}, 404, "model_not_found"),
        ({"a": "churn@staging", "b": "churn/1"}, 404, "alias_not_found"),
        ({"a": "churn/9", "b": "churn/1"}, 404, "version_not_found"),
        ({"a": "Churn", "b": "churn/1"}, 400, "invalid_reference"),
        ({"a": "churn/1"}, 400, "invalid_input"),
    ],
)
def test_compare_errors_are_problems(
    reg: modelyard.Registry, client: TestClient, query: dict[str, str], status: int, code: str
) -> None:
    response = client.get("/api/v1/compare", params=query)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def gate(client: TestClient, **query: Any) -> Any:
    response = client.get("/api/v1/gate", params=query)
    assert response.status_code == 200, response.text  # a losing challenger is not an error
    return response.json()


def test_gate_over_rest(reg: modelyard.Registry, client: TestClient) -> None:
    passed = gate(client, challenger="churn/2", against="production", metric="auc")
    assert passed["passed"] is True
    assert (passed["challenger"], passed["against"]) == ("churn/2", "churn/1")
    assert passed["checks"][0]["delta"] == pytest.approx(0.02)
    assert passed["checks"][0]["challenger"] == 0.87 and passed["checks"][0]["against"] == 0.85

    lost = gate(client, challenger="churn/2", against="production", metric="auc", min_delta=0.05)
    assert lost["passed"] is False and lost["checks"][0]["passed"] is False

    both = gate(
        client,
        challenger="churn/2",
        against="churn/1",
        metric=["loss"],
        min_delta=0.01,
        lower_is_better="true",
    )
    assert both["passed"] is True and both["checks"][0]["direction"] == "lower"
    # each metric its own way: AUC up (0.85 -> 0.87) and loss down (0.30 -> 0.28)
    mixed = gate(client, challenger="churn/2", against="production", metric=["auc", "loss:lower"])
    assert mixed["passed"] is True, mixed
    assert [c["direction"] for c in mixed["checks"]] == ["higher", "lower"]
    higher = gate(client, challenger="churn/2", against="production", metric=["auc", "loss"])
    assert [c["passed"] for c in higher["checks"]] == [True, False]
    assert higher["passed"] is False

    missing = gate(client, challenger="churn/2", against="production", metric=["auc", "f1"])
    assert missing["passed"] is False
    assert missing["checks"][1]["message"] == (
        "f1: missing on churn/2 (challenger) and churn/1 (against): fail"
    )

    other_model = gate(client, challenger="churn/2", against="fraud@latest", metric="auc")
    assert other_model["against"] == "fraud/1" and other_model["passed"] is True


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ({"challenger": "churn/2", "against": "production"}, 400, "invalid_input"),
        ({"challenger": "churn/2", "against": "staging", "metric": "auc"}, 404, "alias_not_found"),
        ({"challenger": "churn/2", "against": "production", "metric": "a b"}, 400, "invalid_name"),
        (
            {"challenger": "churn/2", "against": "production", "metric": "auc", "min_delta": "nan"},
            400,
            "invalid_input",
        ),
        ({"challenger": "churn@", "against": "production", "metric": "auc"}, 400, None),
        (
            {"challenger": "churn/2", "against": "production", "metric": ["auc", "auc:lower"]},
            400,
            "invalid_input",
        ),
    ],
)
def test_gate_errors_are_problems(
    reg: modelyard.Registry,
    client: TestClient,
    query: dict[str, str],
    status: int,
    code: str | None,
) -> None:
    response = client.get("/api/v1/gate", params=query)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert code is None or response.json()["code"] == code


def test_a_model_the_caller_may_not_see_does_not_exist(
    reg: modelyard.Registry, client: TestClient, service: RegistryService
) -> None:
    identity = service.identity
    admin = service.access.authenticate(identity.bootstrap_admin("root", operator="test").token)
    identity.create_principal(admin, "vera", PrincipalKind.USER)
    identity.set_grant(admin, "vera", Role.VIEWER, model="churn")
    headers = {"Authorization": f"Bearer {identity.create_token(admin, principal='vera').token}"}

    same_model = client.get("/api/v1/compare?a=churn/1&b=churn/2", headers=headers)
    assert same_model.status_code == 200, same_model.text
    for url in (
        "/api/v1/compare?a=churn/1&b=fraud/1",
        "/api/v1/compare?a=fraud/1&b=churn/1",
        "/api/v1/gate?challenger=churn/2&against=fraud/1&metric=auc",
    ):
        response = client.get(url, headers=headers)
        assert (response.status_code, response.json()["code"]) == (404, "model_not_found"), url
    assert client.get("/api/v1/compare?a=churn/1&b=churn/2").status_code == 401


# -- the SDK ----------------------------------------------------------------------------------


def test_the_sdk_returns_the_same_objects_over_http_and_in_process(
    reg: modelyard.Registry, settings: Settings
) -> None:
    with modelyard.connect(settings.data_dir, database_url=settings.database_url) as local:
        for registry in (reg, local):
            result = registry.compare("churn@production", "churn/2")
            assert isinstance(result, modelyard.Comparison)
            assert result.metrics["auc"].delta == pytest.approx(0.02)
            verdict = registry.gate("churn/2", against="production", metrics=["auc", "loss"])
            assert isinstance(verdict, modelyard.GateResult)
            assert [c.passed for c in verdict.checks] == [True, False] and not verdict.passed
            lower = registry.gate(
                "churn/2", against="production", metrics=["loss"], lower_is_better=True
            )
            assert lower.passed
        assert reg.compare("churn/1", "fraud") == local.compare("churn/1", "fraud")
        assert reg.gate("churn/2", against="churn/1", metrics=["auc"], min_delta=0.01) == (
            local.gate("churn/2", against="churn/1", metrics=["auc"], min_delta=0.01)
        )
        with pytest.raises(modelyard.InvalidInput, match="at least one metric"):
            local.gate("churn/2", against="production", metrics=[])
        with pytest.raises(modelyard.NotFound):
            reg.compare("churn/1", "churn@staging")


# -- the CLI, against a real server (once: the server start is the expensive part) -------------


def test_cli_compare_and_gate_exit_codes(
    sqlite_server: LiveServer, make_tree: Tree, tmp_path: Path
) -> None:
    url = sqlite_server.url
    with modelyard.connect(url) as registry:
        seed(registry, make_tree)
    challenge = ["gate", "churn/2", "--against", "production"]
    commands = {
        "compared": ["compare", "churn@production", "churn/2"],
        "across": ["compare", "churn@production", "fraud", "--json"],
        "passed": [*challenge, "--metric", "auc", "--min-delta", "0"],
        "lost": [*challenge, "-m", "auc", "-m", "f1"],
        "lower": ["gate", "churn/2", "--against", "churn/1", "-m", "loss", "--lower-is-better"],
        "mixed": [*challenge, "-m", "auc", "-m", "loss:lower", "--json"],
        "mixed_lost": [*challenge, "-m", "auc:lower", "-m", "loss:lower"],
        "lost_json": [*challenge, "-m", "auc", "--min-delta", "0.05", "--json"],
        "no_metric": challenge,
        "bad_alias": ["compare", "churn@staging", "churn/2"],
        "bad_ref": ["gate", "Churn/2", "--against", "production", "-m", "auc"],
    }
    out = dict(
        zip(commands, invoke_many(list(commands.values()), url=url, cwd=tmp_path), strict=True)
    )

    text = out["compared"].ok().stdout
    for expected in ("churn/1 (churn@production)", "+0.02", "-0.02", "w37", "model.bin"):
        assert expected in text, (expected, text)
    assert "files (1 the same)" in text and "numpy" in text
    assert json.loads(out["across"].ok().stdout)["b"] == "fraud/1"

    passed = out["passed"].ok().stdout
    assert (
        "auc: 0.87 (churn/2) vs 0.85 (churn/1), delta +0.02 (higher is better, needs >= +0): pass"
        in passed
    )
    assert "passed: churn/2 against churn/1, 1 of 1 checks passed" in passed
    # the deprecated switch still works, and says what to write instead
    assert "lower is better, needs <= +0): pass" in out["lower"].ok().stdout
    assert "--lower-is-better is deprecated" in out["lower"].stderr
    assert "--metric NAME:lower" in out["lower"].stderr
    mixed = json.loads(out["mixed"].ok().stdout)
    assert [(c["metric"], c["direction"], c["passed"]) for c in mixed["checks"]] == [
        ("auc", "higher", True),
        ("loss", "lower", True),
    ]
    assert "deprecated" not in out["mixed"].stderr
    mixed_lost = out["mixed_lost"]
    assert mixed_lost.returncode == 1, mixed_lost.output
    assert "failed: churn/2 against churn/1, 1 of 2 checks passed" in mixed_lost.stdout

    lost = out["lost"]
    assert lost.returncode == 1 and "Traceback" not in lost.output, lost.output
    assert "f1: missing on churn/2 (challenger) and churn/1 (against): fail" in lost.stdout
    assert "failed: churn/2 against churn/1, 1 of 2 checks passed" in lost.stdout
    assert out["lost_json"].returncode == 1, out["lost_json"].output
    assert json.loads(out["lost_json"].stdout)["checks"][0]["passed"] is False

    assert_user_error(out["no_metric"], contains="at least one metric")
    assert_user_error(out["bad_alias"], contains="no alias 'staging'")
    assert_user_error(out["bad_ref"], contains="Churn")
    assert out["bad_ref"].returncode == 2  # could not check, not "lost"
