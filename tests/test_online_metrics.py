"""Online metrics on SQLite and PostgreSQL: checkers (a serving or monitoring service
account) report them outside the journal, viewers read them, and searches, policies and
gates read the newest value of each key as ``online.metrics.K`` (attackers' tests too)."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import modelyard
from modelyard.api import create_app
from modelyard.domain.access import Caller, PrincipalKind, Reach
from modelyard.domain.errors import (
    Forbidden,
    InvalidFilter,
    InvalidInput,
    NotFound,
    PolicyFailed,
    TooLarge,
)
from modelyard.domain.online import MAX_ONLINE_METRICS, OnlineWindow
from modelyard.service import RegistryService
from tests.test_checks import checker, head_seq
from tests.test_cli import assert_user_error, invoke_many
from tests.test_lifecycle import people, register
from tests.test_web_pages import ME, churn, section, text_of

# What serve-model reports every interval: every key must be a valid metric key.
SERVING = {
    "requests": 1200,
    "error_rate": 0.002,
    "latency_p50_ms": 3.1,
    "latency_p99_ms": 17.5,
    "cpu_percent": 41.0,
    "memory_bytes": 187_000_000,
}
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
# Production takes what it did in production: online AUC within 0.02 of the offline one.
POLICY = """
promotion:
  staging:
    approvals: {count: 0}
  production:
    require:
      - online.metrics.auc >= metrics.auc - 0.02
    approvals: {count: 0}
"""


def test_reports_are_a_series_kept_out_of_the_journal(service: RegistryService) -> None:
    p = people(service)
    ci = checker(service, p)
    number = register(service, p.ds, 0.86)
    head = head_seq(service)
    online = service.online

    first = online.report(ci, "churn", number, SERVING, window=(T0, T0 + MINUTE))
    assert (first.reporter, first.window.start, first.window.end) == ("ci", T0, T0 + MINUTE)
    assert first.metrics["memory_bytes"] == 187_000_000.0
    online.report(ci, "churn", number, {"auc": 0.84}, at=T0 + 3 * MINUTE)
    # A late report of an earlier window joins the series but is not the newest value.
    online.report(ci, "churn", number, {"auc": 0.70}, window=(T0, T0 + 2 * MINUTE))
    now = online.report(ci, "churn", number, {"error_rate": 0.004})
    assert now.window.start == now.window.end == now.received_at

    assert head_seq(service) == head  # not one event: the journal keeps decisions
    latest = online.latest(p.rita, "churn", number)  # a viewer reads them
    assert latest == {**{k: float(v) for k, v in SERVING.items()}, "auc": 0.84, "error_rate": 0.004}

    auc = online.points(p.rita, "churn", number, key="auc")
    assert [(x.value, x.end) for x in auc.items] == [
        (0.70, T0 + 2 * MINUTE),
        (0.84, T0 + 3 * MINUTE),
    ]
    ranged = online.points(p.rita, "churn", number, since=T0 + 2 * MINUTE, until=T0 + 3 * MINUTE)
    assert [x.value for x in ranged.items] == [0.70, 0.84]

    # Paged oldest first; a token belongs to its query.
    seen, token = [], None
    while True:
        page = online.points(p.rita, "churn", number, limit=4, page_token=token)
        seen += [(x.key, x.end) for x in page.items]
        if (token := page.next_page_token) is None:
            break
    assert len(seen) == len(SERVING) + 3
    assert [end for _, end in seen] == sorted(end for _, end in seen)
    first_page = online.points(p.rita, "churn", number, limit=4)
    with pytest.raises(InvalidInput, match="different query"):
        online.points(p.rita, "churn", number, key="auc", page_token=first_page.next_page_token)

    # The model's chart: the newest values of one key across the versions that served.
    later = register(service, p.ds, 0.88)
    online.report(ci, "churn", later, {"auc": 0.87}, at=T0 + 4 * MINUTE)
    series = online.series(p.rita, "churn", "auc")
    assert [(x.version, x.value) for x in series] == [(number, 0.70), (number, 0.84), (later, 0.87)]
    assert online.keys(p.rita, "churn") == sorted({*SERVING, "auc"})


def test_bad_reports_are_refused_with_nothing_written(service: RegistryService) -> None:
    p = people(service)
    ci = checker(service, p)
    number = register(service, p.ds, 0.86)
    report = service.online.report
    too_many = {f"m{i}": 1.0 for i in range(MAX_ONLINE_METRICS + 1)}
    for metrics, message in (
        ({}, "at least one metric"),
        ({"a b": 1.0}, "metric name 'a b' is not allowed"),
        ({"auc": math.nan}, "'auc' must be a finite number"),
        ({"auc": math.inf}, "'auc' must be a finite number"),
        ({"auc": True}, "'auc' must be a number"),
        ({"auc": "0.8"}, "'auc' must be a number"),
    ):
        with pytest.raises(InvalidInput, match=message):
            report(ci, "churn", number, metrics)
    with pytest.raises(TooLarge, match=f"at most {MAX_ONLINE_METRICS} metrics per report"):
        report(ci, "churn", number, too_many)
    for window, at, message in (
        ((T0 + MINUTE, T0), None, "starts .* after it ends"),
        ((T0, T0 + MINUTE), T0, "not both"),
        (None, datetime.now(UTC) + timedelta(hours=1), "in the future"),
        (None, datetime(2026, 3, 2, 12, 0), "needs a time zone"),
        (None, datetime(1969, 12, 31, tzinfo=UTC), "before 1970"),
        (None, datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))), "before 1970"),
        (None, datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=14))), "future"),
    ):
        with pytest.raises(InvalidInput, match=message):
            report(ci, "churn", number, {"auc": 0.8}, window=window, at=at)
    with pytest.raises(NotFound, match="does not exist"):
        report(ci, "churn", number + 1, {"auc": 0.8})
    assert service.online.latest(p.rita, "churn", number) == {}


def test_who_may_report_and_read(service: RegistryService) -> None:
    """The attacks: the author or a viewer reports a version's production figures, an
    outsider learns that a model exists."""
    p = people(service)
    number = register(service, p.ds, 0.86)
    for who in (p.ds, p.rita):  # the contributor who registered it, a viewer
        with pytest.raises(Forbidden) as refused:
            service.online.report(who, "churn", number, {"auc": 0.99})
        assert refused.value.details["permission"] == "metrics.report"
    outsider = Caller(name="eve", principal_id=10_000)
    for attempt in (
        lambda: service.online.report(outsider, "churn", number, {"auc": 0.99}),
        lambda: service.online.latest(outsider, "churn", number),
        lambda: service.online.points(outsider, "churn", number),
        lambda: service.online.series(outsider, "churn", "auc"),
        lambda: service.online.latest(outsider, "nope", 1),
    ):
        with pytest.raises(NotFound) as missing:
            attempt()
        assert missing.value.code == "model_not_found"
    assert service.online.latest(p.rita, "churn", number) == {}


def test_search_reads_the_newest_online_value(service: RegistryService) -> None:
    p = people(service)
    ci = checker(service, p)
    v1, v2, v3 = (register(service, p.ds, auc) for auc in (0.80, 0.82, 0.84))
    service.online.report(ci, "churn", v1, {"auc": 0.90}, at=T0)
    service.online.report(ci, "churn", v1, {"auc": 0.78}, at=T0 + MINUTE)  # the newest
    service.online.report(ci, "churn", v2, {"auc": 0.83}, at=T0)

    def found(text: str, order: str | None = None) -> list[int]:
        page = service.list_versions("churn", caller=p.rita, filter=text, order_by=order)
        return [v.version for v in page.items]

    assert found("online.metrics.auc >= 0.8") == [v2]
    assert found("online.metrics.auc < 0.8") == [v1]
    assert found("not online.metrics.auc > 0") == [v3]  # the exact complement: v3 has none
    assert found("online.metrics.`auc` > 0", "online.metrics.auc desc") == [v2, v1]
    assert found("", "online.metrics.auc asc") == [v1, v2, v3]  # missing last
    with pytest.raises(InvalidFilter, match=r"'online\.metrics' needs a key"):
        found("online.metrics. > 1")
    with pytest.raises(InvalidFilter, match="takes a number"):
        found('online.metrics.auc = "high"')


def test_a_policy_blocks_then_permits_production_on_online_auc(service: RegistryService) -> None:
    p = people(service)
    ci = checker(service, p)
    life = service.lifecycle
    number = register(service, p.ds, 0.86)
    life.apply_policy(p.mia, "churn", POLICY)
    life.promote(p.ds, f"churn/{number}", "staging")
    with pytest.raises(PolicyFailed) as missing:
        life.promote(p.mia, f"churn/{number}", "production")
    assert missing.value.details["failures"][0]["detail"] == "online.metrics.auc is missing"

    service.online.report(ci, "churn", number, {"auc": 0.81}, at=T0)  # 0.05 below offline
    with pytest.raises(PolicyFailed) as worse:
        life.promote(p.mia, f"churn/{number}", "production")
    assert worse.value.details["failures"] == [
        {
            "rule": "online.metrics.auc >= metrics.auc - 0.02",
            "passed": False,
            "detail": "online.metrics.auc = 0.81, metrics.auc = 0.86; needs >= 0.84",
        }
    ]
    service.online.report(ci, "churn", number, {"auc": 0.85}, at=T0 + MINUTE)
    assert life.promote(p.mia, f"churn/{number}", "production").status == "executed"


def test_the_gate_compares_online_metrics(service: RegistryService) -> None:
    p = people(service)
    ci = checker(service, p)
    champion, challenger = register(service, p.ds, 0.86), register(service, p.ds, 0.85)
    service.lifecycle.promote(p.admin, f"churn/{champion}", "production", override="first")
    service.online.report(ci, "churn", champion, {"latency_p99_ms": 20.0}, at=T0)
    service.online.report(ci, "churn", challenger, {"latency_p99_ms": 12.5}, at=T0)
    result = service.gate(
        f"churn/{challenger}",
        "production",
        caller=p.rita,
        metrics=["online.metrics.latency_p99_ms:lower", "auc"],
    )
    assert [(c.metric, c.challenger, c.against, c.passed) for c in result.checks] == [
        ("online.metrics.latency_p99_ms", 12.5, 20.0, True),
        ("auc", 0.85, 0.86, False),
    ]
    missing = service.gate(
        f"churn/{challenger}", "production", caller=p.rita, metrics=["online.metrics.auc"]
    )
    assert not missing.passed
    assert "missing on" in missing.checks[0].message


def test_rest_routes(service: RegistryService) -> None:
    p = people(service)
    checker(service, p)
    number = register(service, p.ds, 0.86)
    tokens = {n: service.identity.create_token(p.admin, principal=n).token for n in ("ci", "rita")}
    outsider = service.identity.create_principal(p.admin, "eve", PrincipalKind.USER)
    assert outsider.name == "eve"
    tokens["eve"] = service.identity.create_token(p.admin, principal="eve").token

    def as_(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[name]}"}

    url = f"/api/v1/models/churn/versions/{number}/online-metrics"
    body = {
        "metrics": {"auc": 0.81},
        "window": {"start": "2026-03-02T12:00Z", "end": "2026-03-02T13:00Z"},
    }
    with TestClient(create_app(service, reach=Reach.NETWORK)) as client:
        refused = client.post(url, json=body, headers=as_("rita"))
        assert (refused.status_code, refused.json()["permission"]) == (403, "metrics.report")
        done = client.post(url, json=body, headers=as_("ci"))
        assert done.status_code == 201, done.text
        assert done.json()["window"] == {
            "start": "2026-03-02T12:00:00.000000Z",
            "end": "2026-03-02T13:00:00.000000Z",
        }
        at = client.post(
            url, json={"metrics": {"auc": 0.83}, "at": "2026-03-02T14:00Z"}, headers=as_("ci")
        )
        assert at.status_code == 201, at.text

        listed = client.get(url, params={"key": "auc", "limit": 1}, headers=as_("rita")).json()
        assert [x["value"] for x in listed["items"]] == [0.81]
        assert listed["latest"] == {"auc": 0.83}
        rest = client.get(
            url,
            params={"key": "auc", "limit": 1, "page_token": listed["next_page_token"]},
            headers=as_("rita"),
        ).json()
        assert ([x["value"] for x in rest["items"]], rest["next_page_token"]) == ([0.83], None)
        since = client.get(url, params={"since": "2026-03-02T13:30Z"}, headers=as_("rita"))
        assert [x["value"] for x in since.json()["items"]] == [0.83]

        bad = client.post(
            url,
            json={
                "metrics": {"auc": 0.8},
                "window": {"start": "2026-03-02T13:00Z", "end": "2026-03-02T12:00Z"},
            },
            headers=as_("ci"),
        )
        assert bad.status_code == 400 and "after it ends" in bad.json()["detail"]
        too_many = {"metrics": {f"m{i}": 1 for i in range(MAX_ONLINE_METRICS + 1)}}
        assert client.post(url, json=too_many, headers=as_("ci")).status_code == 413

        # Someone without read access gets exactly what a missing model answers.
        hidden = client.get(url, headers=as_("eve"))
        absent = client.get(url.replace("churn", "nothere"), headers=as_("eve"))
        assert hidden.status_code == absent.status_code == 404
        assert hidden.json()["code"] == absent.json()["code"] == "model_not_found"
        posted = client.post(url, json=body, headers=as_("eve"))
        assert posted.status_code == 404 and posted.json()["code"] == "model_not_found"


def test_sdk_and_cli(tmp_path: Path) -> None:
    """The SDK in-process, then the CLI against the same directory (local mode)."""
    data = tmp_path / "registry"
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"weights")
    with modelyard.connect(str(data)) as reg:
        reg.register("churn", model, metrics={"auc": 0.86}, source=None, environment=None)
        report = reg.log_online_metrics("churn/1", SERVING, window=(T0, T0 + MINUTE))
        assert report.window == OnlineWindow(T0, T0 + MINUTE)
        reg.log_online_metrics("churn@latest", {"auc": 0.83}, at=T0 + MINUTE)
        series = reg.online_metrics("churn/1", "auc")
        assert [(p.value, p.end) for p in series.items] == [(0.83, T0 + MINUTE)]
        assert series.latest["auc"] == 0.83 and series.latest["requests"] == 1200.0
        with pytest.raises(InvalidInput, match="needs a time zone"):
            reg.log_online_metrics("churn/1", {"auc": 0.8}, at=datetime(2026, 3, 2))

    logged, refused, shown, listed = invoke_many(
        [
            ("online-metrics", "log", "churn/1", "auc=0.84", "--at", "2026-03-02T12:05Z", "--json"),
            ("online-metrics", "log", "churn/1", "auc=high"),
            ("show", "churn/1"),
            ("online-metrics", "show", "churn/1", "--key", "auc", "--json"),
        ],
        url=str(data),
        cwd=tmp_path,
    )
    assert json.loads(logged.ok().stdout)["window"]["end"] == "2026-03-02T12:05:00.000000Z"
    assert_user_error(refused, contains="auc='high': the value must be a number")
    assert re.search(r"auc\W+0\.86\W+0\.8[34]", shown.ok().stdout)  # offline next to online
    out = json.loads(listed.ok().stdout)
    assert out["offline"] == {"auc": 0.86}
    assert [p["value"] for p in out["items"]][:1] == [0.83]


def test_pages_show_online_next_to_offline_and_chart_it(service: RegistryService) -> None:
    churn(service, 3)  # v1 then v2 in production
    online = service.online
    for number, values in ((1, (0.79, 0.80)), (2, (0.84, 0.85, 0.83))):
        for i, value in enumerate(values):
            at = T0 + timedelta(hours=number * 10 + i)
            online.report(ME, "churn", number, {"auc": value, "latency_p99_ms": 9.0}, at=at)
    with TestClient(create_app(service, reach=Reach.LOOPBACK, local_user="tester")) as client:
        page = client.get("/models/churn/versions/2")
        assert page.status_code == 200
        metrics = section(page.text, "metrics")
        assert re.search(r"auc .*0\.82 .*0\.83", text_of(section(metrics, "metric-auc")))
        assert "0.83" in section(metrics, "online-auc")
        chart = section(page.text, "online-chart")
        assert 'data-test="online-chart-svg"' in chart
        assert chart.count("<circle") == 3  # this version's reports only
        chosen = client.get("/models/churn/versions/2", params={"online": "latency_p99_ms"})
        assert "Online latency_p99_ms" in section(chosen.text, "online-chart")
        # A version with nothing reported shows its offline metrics as before.
        quiet = client.get("/models/churn/versions/3").text
        assert 'data-test="online-chart"' not in quiet and "Online (newest)" not in quiet

        model_page = client.get("/models/churn").text
        served = section(model_page, "online-chart")
        assert served.count("<circle") == 5  # the reports of both versions that served
        assert "v1: 0.79" in served and "v2: 0.83" in served
        assert served.count('data-test="production-band"') == 2
