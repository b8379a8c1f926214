"""Check results on SQLite and PostgreSQL: only checkers report them, policies read them,
and no tag stands in for them (the attacker's tests are here too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

from modelyard.api import create_app
from modelyard.domain.access import Caller, PrincipalKind, Reach, Role
from modelyard.domain.errors import Forbidden, InvalidInput, InvalidName, NotFound, PolicyFailed
from modelyard.domain.versions import NewVersion
from modelyard.service import RegistryService
from modelyard.storage.db.tables import journal_head, version_checks, version_tags, versions
from tests.test_cli import dead_url, invoke, invoke_many
from tests.test_lifecycle import People, people, register

# Staging needs a passing audit and no approval: a promotion executes at once when it passes.
POLICY = """
promotion:
  staging:
    require:
      - check: audit
      - metrics.auc >= current.metrics.auc - 0.005
    approvals: {count: 0}
"""


def head_seq(service: RegistryService) -> int:
    """The journal head's sequence number: how many events there are."""
    with service.db.read() as tx:
        return int(tx.conn.execute(select(journal_head.c.seq)).scalar_one())


def checker(service: RegistryService, p: People) -> Caller:
    """The CI service account: a checker on churn."""
    identity = service.identity
    identity.create_principal(p.admin, "ci", PrincipalKind.SERVICE_ACCOUNT)
    identity.set_grant(p.admin, "ci", Role.CHECKER, model="churn")
    return service.access.authenticate(identity.create_token(p.admin, principal="ci").token)


def test_a_checker_reports_and_the_policy_reads_the_result(service: RegistryService) -> None:
    p = people(service)
    ci = checker(service, p)
    life, checks = service.lifecycle, service.checks
    number = register(service, p.ds, 0.86)
    life.apply_policy(p.mia, "churn", POLICY)
    with pytest.raises(PolicyFailed) as refused:
        life.promote(p.ds, f"churn/{number}", "staging")
    assert refused.value.details["failures"] == [
        {"rule": 'checks.audit = "pass"', "passed": False, "detail": "checks.audit is missing"}
    ]

    url = "https://ci.example.com/runs/7"
    pending = checks.report(ci, "churn", number, "audit", status="pending", url=url)
    assert (pending.status, pending.url, pending.reporter) == ("pending", url, "ci")
    with pytest.raises(PolicyFailed, match=r'checks\.audit = "pending"; needs = "pass"'):
        life.promote(p.ds, f"churn/{number}", "staging")
    checks.report(ci, "churn", number, "audit", status="pass", url=url)
    checks.report(ci, "churn", number, "bias", status="fail")
    listed = checks.results(p.rita, "churn", number)  # a viewer reads them
    assert [(c.name, c.status, c.reporter) for c in listed] == [
        ("audit", "pass", "ci"),
        ("bias", "fail", "ci"),
        ("scan", "pass", "modelyard"),  # the registry's own, at registration
    ]
    assert life.promote(p.ds, f"churn/{number}", "staging").status == "executed"

    reported = service.events(caller=p.admin, kind="version.check_reported")
    assert [(e.subject, e.actor, e.token_id) for e in reported] == [
        (f"churn/{number}", "ci", ci.token_id)
    ] * 3
    assert [(e.payload["check"], e.payload["before"], e.payload["after"]) for e in reported] == [
        ("audit", None, {"status": "pending", "url": url}),
        ("audit", {"status": "pending", "url": url}, {"status": "pass", "url": url}),
        ("bias", None, {"status": "fail", "url": None}),
    ]


def test_only_checkers_report(service: RegistryService) -> None:
    """The attack: the author of a version passes its checks themselves."""
    p = people(service)
    checker(service, p)
    number = register(service, p.ds, 0.86)
    head = head_seq(service)
    for who in (p.ds, p.rita):  # the contributor who registered it, a viewer
        with pytest.raises(Forbidden) as refused:
            service.checks.report(who, "churn", number, "audit", status="pass")
        assert refused.value.details["permission"] == "version.check"
    outsider = Caller(name="eve", principal_id=10_000)
    with pytest.raises(NotFound, match="model 'churn' not found"):
        service.checks.report(outsider, "churn", number, "audit", status="pass")
    with pytest.raises(NotFound, match="model 'churn' not found"):
        service.checks.results(outsider, "churn", number)
    # A maintainer may: they can change the policy anyway.
    assert service.checks.report(p.mia, "churn", number, "audit", status="pass").reporter == "mia"
    assert head_seq(service) == head + 1


def test_bad_reports_are_refused_with_nothing_written(service: RegistryService) -> None:
    p = people(service)
    ci = checker(service, p)
    number = register(service, p.ds, 0.86)
    head = head_seq(service)
    report = service.checks.report
    with pytest.raises(InvalidInput, match="use pass, fail or pending") as bad_status:
        report(ci, "churn", number, "audit", status="ok")
    assert bad_status.value.code == "invalid_status"
    with pytest.raises(InvalidName, match="check name"):
        report(ci, "churn", number, "a scan", status="pass")
    for url, message in (
        ("ftp://ci.example.com/1", "absolute http"),
        ("javascript:alert(1)", "absolute http"),
        ("https://user:secret@ci.example.com/1", "credentials"),
        ("https://ci.example.com/a b", "spaces"),
        ("https://ci.example.com/" + "x" * 2048, "at most 2048"),
    ):
        with pytest.raises(InvalidInput, match=message):
            report(ci, "churn", number, "audit", status="pass", url=url)
    with pytest.raises(NotFound, match="does not exist"):
        report(ci, "churn", number + 1, "audit", status="pass")
    service.lifecycle.delete_version(p.mia, "churn", number, hard=False)
    head += 1
    with pytest.raises(NotFound, match="does not exist"):
        report(ci, "churn", number, "audit", status="pass")
    assert head_seq(service) == head


def test_no_tag_passes_a_check(service: RegistryService) -> None:
    """The attack: a contributor tags their version check.audit=pass."""
    p = people(service)
    number = register(service, p.ds, 0.86)
    head = head_seq(service)
    entry = service.get_version("churn", number, caller=p.ds).files[0]
    forged = NewVersion(files=[entry], tags={"check.audit": "pass"})
    for attempt in (
        lambda: service.register_version("churn", forged, caller=p.ds),
        lambda: service.update_version("churn", number, caller=p.ds, tags={"check.audit": "pass"}),
        lambda: service.update_version("churn", number, caller=p.ds, tags={"Check.Scan": "pass"}),
        lambda: service.update_model("churn", caller=p.ds, tags={"check.audit": "pass"}),
        lambda: service.create_model("other", caller=p.admin, tags={"check.audit": "pass"}),
    ):
        with pytest.raises(InvalidInput, match="reserved") as refused:
            attempt()
        assert refused.value.code == "reserved_tag"
    assert head_seq(service) == head

    # A tag written before tags under check. were refused passes nothing either, and does
    # not stop the version's other tags from being edited.
    with service.db.engine.begin() as conn:
        version_id = conn.execute(select(versions.c.id).where(versions.c.number == number)).scalar()
        conn.execute(
            insert(version_tags).values(version_id=version_id, key="check.audit", value="pass")
        )
    service.lifecycle.apply_policy(p.mia, "churn", POLICY)
    with pytest.raises(PolicyFailed, match=r"checks\.audit is missing"):
        service.lifecycle.promote(p.ds, f"churn/{number}", "staging")
    edited = service.update_version("churn", number, caller=p.ds, tags={"team": "growth"})
    assert edited.tags == {"check.audit": "pass", "team": "growth"}


def test_checks_over_rest(service: RegistryService) -> None:
    p = people(service)
    ci = checker(service, p)
    number = register(service, p.ds, 0.86)
    tokens = {
        name: service.identity.create_token(p.admin, principal=name).token for name in ("ds", "ci")
    }
    assert ci.name == "ci"
    url = f"/api/v1/models/churn/versions/{number}/checks"
    with TestClient(create_app(service, reach=Reach.NETWORK)) as client:

        def as_(name: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {tokens[name]}"}

        body = {"status": "pass", "url": "https://ci.example.com/runs/7"}
        refused = client.put(f"{url}/audit", json=body, headers=as_("ds"))
        assert refused.status_code == 403
        assert refused.json()["permission"] == "version.check"
        assert refused.headers["content-type"] == "application/problem+json"
        done = client.put(f"{url}/audit", json=body, headers=as_("ci"))
        assert done.status_code == 200, done.text
        assert {k: done.json()[k] for k in ("model", "version", "name", "status", "reporter")} == {
            "model": "churn",
            "version": number,
            "name": "audit",
            "status": "pass",
            "reporter": "ci",
        }
        listed = client.get(url, headers=as_("ds")).json()["items"]
        assert [(c["name"], c["status"], c["url"]) for c in listed] == [
            ("audit", "pass", "https://ci.example.com/runs/7"),
            ("scan", "pass", None),
        ]
        bad = client.put(f"{url}/audit", json={"status": "maybe"}, headers=as_("ci"))
        assert (bad.status_code, bad.json()["code"]) == (400, "invalid_status")
        tag = client.patch(
            f"/api/v1/models/churn/versions/{number}",
            json={"tags": {"check.audit": "pass"}},
            headers=as_("ds"),
        )
        assert (tag.status_code, tag.json()["code"]) == (400, "reserved_tag")
        assert "modelyard check" in tag.json()["detail"]
        paths = client.get("/openapi.json").json()["paths"]
        operation = paths["/api/v1/models/{name}/versions/{number}/checks/{check}"]["put"]
        assert operation["x-permission"] == "version.check"


def test_a_hard_delete_takes_the_checks_with_it(service: RegistryService) -> None:
    p = people(service)
    ci = checker(service, p)
    keep, gone = register(service, p.ds, 0.86), register(service, p.ds, 0.87)
    for number in (keep, gone):
        service.checks.report(ci, "churn", number, "audit", status="pass")
    service.lifecycle.delete_version(p.admin, "churn", gone, hard=True)
    assert [c.version for c in service.checks.results(p.ds, "churn", keep)] == [keep, keep]
    with service.db.engine.connect() as conn:  # its audit and the registry's scan
        assert conn.execute(select(func.count()).select_from(version_checks)).scalar() == 2


def test_the_cli_reports_and_lists_checks(tmp_path: Path) -> None:
    """In-process (--url DIR), as a CI step would run it; errors are one line."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.bin").write_bytes(b"weights")

    def cli(*args: str) -> list[str]:
        return [*args, "--url", "./registry"]

    invoke(*cli("register", "churn", "model", "--no-capture"), url=dead_url(), cwd=tmp_path).ok()
    reported = invoke(
        *cli("check", "churn/1", "audit", "--status", "pass", "-d", "https://ci.example.com/7"),
        url=dead_url(),
        cwd=tmp_path,
    ).ok()
    assert reported.stdout.startswith("churn/1: audit = pass (reported by ")
    listed, table, bad, tagged = invoke_many(
        [
            cli("checks", "churn/1", "--json"),
            cli("checks", "churn/1"),
            cli("check", "churn/1", "audit", "--status", "maybe"),
            cli("edit", "churn/1", "--tag", "check.audit=pass"),
        ],
        url=dead_url(),
        cwd=tmp_path,
    )
    items = json.loads(listed.ok().stdout)["items"]
    assert [(c["name"], c["status"], c["url"]) for c in items] == [
        ("audit", "pass", "https://ci.example.com/7"),
        ("scan", "pass", None),
    ]
    assert "audit" in table.ok().stdout and "https://ci.example.com/7" in table.stdout
    for refused, message in ((bad, "use pass, fail or pending"), (tagged, "reserved")):
        assert refused.returncode == 1 and message in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
