"""The registry's own check ``advisories``, on SQLite and PostgreSQL: an admin loads OSV's
dump, every version's environment is matched against it (at registration, and again when
a newer dump is loaded), a version in production newly affected is an event, policies
require the check or limit the severity, and bad dumps change nothing (the attacker's
tests are here too)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelyard.api import create_app
from modelyard.api.app import catch_up
from modelyard.domain import advisories as domain_advisories
from modelyard.domain.access import Caller, Reach
from modelyard.domain.checks import CheckResult
from modelyard.domain.errors import Forbidden, PolicyFailed
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import Environment, Event
from modelyard.domain.versions import NewVersion
from modelyard.domain.webhooks import filter_matches, parse_event_filter
from modelyard.service import RegistryService
from modelyard.service import advisories as advisory_service
from tests.conftest import serving
from tests.test_advisories import MALFORMED, RECORDS, cvss, osv, osv_zip
from tests.test_checks import checker
from tests.test_cli import assert_user_error, dead_url, invoke
from tests.test_lifecycle import people
from tests.test_stream import stream

VULNERABLE = {"requests": "2.30.0", "Jinja2": "3.1.2", "numpy": "1.22.0.post1"}
CLEAN = {"requests": "2.31.0", "numpy": "2.0.0"}
MEDIUM_ONLY = {"urllib3": "1.26.5"}  # GHSA-0002: GitHub's MODERATE
REQUESTS_FIX = osv(
    "GHSA-0001",
    "requests",
    {"introduced": "2.0"},
    {"fixed": "2.31.0"},
    aliases=["CVE-2023-32681"],
    summary="Proxy-Authorization header leaked on redirect",
    severity=cvss("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"),
)
UNRELATED = osv("GHSA-0100", "torch", {"introduced": "0"}, {"fixed": "2.2.0"})


def register(
    service: RegistryService, caller: Caller, packages: dict[str, str] | None, model: str = "churn"
) -> int:
    content = f"weights {packages} {os.urandom(4).hex()}".encode()
    digest = hashlib.sha256(content).hexdigest()
    spec = NewVersion(
        files=[FileEntry("model.bin", len(content), digest)],
        environment=None if packages is None else Environment("3.11.9", "linux", packages),
    )
    return service.register_version(model, spec, caller=caller, inline={digest: content}).version


def load(service: RegistryService, caller: Caller, records: list[dict[str, Any]]) -> Any:
    return service.advisories.load(caller, io.BytesIO(osv_zip(records)))


def advisories_of(service: RegistryService, caller: Caller, number: int) -> CheckResult | None:
    found = [c for c in service.checks.results(caller, "churn", number) if c.name == "advisories"]
    return found[0] if found else None


def events(service: RegistryService, caller: Caller, after: int = 0) -> list[Event]:
    return [e for e in service.events(caller=caller, limit=1000) if e.seq > after]


def test_a_loaded_dump_checks_every_version_and_each_registration(
    service: RegistryService,
) -> None:
    p = people(service)
    affected = register(service, p.ds, VULNERABLE)
    unknown = register(service, p.ds, None)
    assert advisories_of(service, p.ds, affected) is None  # no dump: no check at all
    dump = osv_zip(RECORDS, MALFORMED)
    loaded = service.advisories.load(p.admin, io.BytesIO(dump))
    assert (loaded.replaced, loaded.evaluation.as_dict()) == (
        True,
        {"versions": 2, "changed": 2, "affected": 0},
    )
    summary = service.advisories.summary(p.rita)  # any authenticated caller reads it
    assert summary == loaded.dump and summary is not None
    assert (summary.sha256, summary.size) == (hashlib.sha256(dump).hexdigest(), len(dump))
    assert (summary.records, summary.skipped, summary.loaded_by, summary.pending) == (
        len(RECORDS),
        len(MALFORMED),
        "alice",
        False,
    )
    assert summary.packages == summary.advisories == 9  # PyPI's, withdrawn and npm aside

    check = advisories_of(service, p.rita, affected)  # a viewer reads the findings
    assert check is not None and check.details is not None
    assert (check.status.value, check.reporter) == ("fail", "modelyard")
    details = check.details
    assert (details["verdict"], details["severity"], details["packages"]) == ("fail", "critical", 3)
    found = [(f["advisory"], f["severity"], f["package"], f["fixed"]) for f in details["findings"]]
    assert found == [
        ("GHSA-0003", "CRITICAL", "Jinja2", ["3.1.3"]),
        ("GHSA-0001", "HIGH", "requests", ["2.31.0"]),
    ]
    assert details["findings"][1]["aliases"] == ["CVE-2023-32681"]
    assert details["findings"][1]["installed"] == "2.30.0"

    nothing = advisories_of(service, p.ds, unknown)  # no captured environment: fails closed
    assert nothing is not None and nothing.details is not None
    assert nothing.status.value == "fail"
    assert (nothing.details["verdict"], nothing.details["severity"]) == ("unknown", "unknown")
    assert "no captured environment" in nothing.details["note"]
    reported = [e for e in events(service, p.admin) if e.kind == "version.check_reported"]
    assert {(e.actor, e.payload["check"], e.payload["after"]["status"]) for e in reported} == {
        ("modelyard:advisories", "advisories", "fail")
    }
    [journaled] = [e for e in events(service, p.admin) if e.kind == "advisories.loaded"]
    assert journaled.payload == {
        "sha256": summary.sha256,
        "size": len(dump),
        "records": len(RECORDS),
        "skipped": len(MALFORMED),
        "packages": 9,
        "advisories": 9,
        "before": None,
    }

    clean = register(service, p.ds, CLEAN)  # matched in its own registration
    check = advisories_of(service, p.ds, clean)
    assert check is not None and check.status.value == "pass"
    assert check.details == {
        "verdict": "pass",
        "severity": "none",
        "packages": 2,
        "findings": [],
        "findings_total": 0,
    }
    registered = events(service, p.admin)[-1]
    assert (registered.kind, registered.payload["advisories"]) == ("version.registered", "pass")


def test_a_newer_dump_evaluates_again_and_production_hears_of_it(
    service: RegistryService,
) -> None:
    p = people(service)
    deployed = register(service, p.ds, VULNERABLE)
    service.lifecycle.promote(p.admin, f"churn/{deployed}", "production", override="release")
    trying = register(service, p.ds, VULNERABLE)  # in development: nobody to alarm
    first = load(service, p.admin, [UNRELATED])
    assert first.evaluation.as_dict() == {"versions": 2, "changed": 2, "affected": 0}
    start = service.db.head_seq()

    newer = load(service, p.admin, [UNRELATED, REQUESTS_FIX])
    assert newer.evaluation.as_dict() == {"versions": 2, "changed": 2, "affected": 1}
    after = events(service, p.admin, start)
    assert [(e.kind, e.subject) for e in after] == [
        ("advisories.loaded", "registry"),
        ("version.check_reported", f"churn/{deployed}"),
        ("version.advisories_affected", f"churn/{deployed}"),
        ("version.check_reported", f"churn/{trying}"),
    ]
    alarm = after[2]
    assert alarm.actor == "modelyard:advisories"
    assert (alarm.payload["stage"], alarm.payload["severity"], alarm.payload["dump"]) == (
        "production",
        "high",
        newer.dump.sha256,
    )
    [finding] = alarm.payload["findings"]
    assert (finding["advisory"], finding["installed"], finding["fixed"]) == (
        "GHSA-0001",
        "2.30.0",
        ["2.31.0"],
    )
    assert after[0].payload["before"] == first.dump.sha256
    # Webhooks and the event stream deliver it like any kind: by name or by family.
    for wanted in (["version.advisories_affected"], ["version.*"]):
        assert filter_matches(parse_event_filter(wanted), "version.advisories_affected")
    rita = service.identity.create_token(p.admin, principal="rita").token  # a viewer of churn
    with serving(create_app(service, reach=Reach.LOOPBACK)) as url:
        headers = {"Authorization": f"Bearer {rita}"}
        streamed = stream(url, headers, after=0, timeout=0, kinds="version.advisories_affected")
    assert [json.loads(m.data)["subject"] for m in streamed if m.data] == [f"churn/{deployed}"]

    # Reworded only (a summary, an alias): nothing rewritten, nothing journaled.
    reworded = {**REQUESTS_FIX, "summary": "Reworded", "aliases": ["CVE-2023-32681", "PYSEC-1"]}
    quiet = load(service, p.admin, [UNRELATED, reworded])
    assert quiet.evaluation.as_dict() == {"versions": 2, "changed": 0, "affected": 0}
    again = load(service, p.admin, [UNRELATED, reworded])  # the dump in force: nothing at all
    assert not again.replaced and again.dump == quiet.dump
    kinds = [e.kind for e in events(service, p.admin, start)]
    assert kinds.count("advisories.loaded") == 2
    # Fixed in a newer dump's eyes (withdrawn): the check passes again, no alarm.
    withdrawn = {**reworded, "withdrawn": "2024-02-01T00:00:00Z"}
    cleared = load(service, p.admin, [UNRELATED, withdrawn])
    assert cleared.evaluation.as_dict() == {"versions": 2, "changed": 2, "affected": 0}
    check = advisories_of(service, p.ds, deployed)
    assert check is not None and check.status.value == "pass"


def test_an_evaluation_a_stop_cut_short_is_finished_later(
    service: RegistryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load commits the dump, then evaluates batch by batch; a server stopped between two
    (here: no evaluation in the load at all) leaves the rest to its next start."""
    p = people(service)
    numbers = [register(service, p.ds, VULNERABLE) for _ in range(3)]
    monkeypatch.setattr(advisory_service, "BATCH", 2)
    with monkeypatch.context() as crash:  # the dump committed, then the server stopped
        crash.setattr(service.advisories, "reevaluate", lambda: domain_advisories.Reevaluation())
        loaded = load(service, p.admin, [REQUESTS_FIX])
    assert loaded.dump.pending and advisories_of(service, p.ds, numbers[0]) is None
    stopped = threading.Event()
    stopped.set()
    assert service.advisories.reevaluate(stopped).versions == 0  # told to stop: nothing done
    catch_up(service, threading.Event())  # what the server's lifespan runs at start
    assert not service.advisories.summary(p.admin).pending  # type: ignore[union-attr]
    for number in numbers:
        check = advisories_of(service, p.ds, number)
        assert check is not None and check.status.value == "fail"


def test_policies_require_the_check_or_limit_the_severity(service: RegistryService) -> None:
    p = people(service)
    high = register(service, p.ds, {"requests": "2.30.0"})
    medium = register(service, p.ds, MEDIUM_ONLY)
    clean = register(service, p.ds, CLEAN)
    policy = (
        "promotion:\n"
        "  staging:\n"
        '    require: [checks.advisories = "pass"]\n'
        "    approvals: {count: 0}\n"
        "  production:\n"
        "    require: [advisories.severity < high]\n"
        "    approvals: {count: 0}\n"
    )
    service.lifecycle.apply_policy(p.admin, "churn", policy)

    def refusal(number: int, stage: str) -> list[dict[str, Any]]:
        with pytest.raises(PolicyFailed) as refused:
            service.lifecycle.promote(p.ds, f"churn/{number}", stage)
        failures: list[dict[str, Any]] = refused.value.details["failures"]
        return failures

    # No dump loaded: no check, and both rules fail closed.
    assert refusal(clean, "staging")[0]["detail"] == "checks.advisories is missing"
    assert refusal(clean, "production")[0]["detail"] == "advisories.severity is missing"
    load(service, p.admin, RECORDS)
    assert refusal(high, "staging") == [
        {
            "rule": 'checks.advisories = "pass"',
            "passed": False,
            "detail": 'checks.advisories = "fail"; needs = "pass"',
        }
    ]
    limit = refusal(high, "production")[0]
    assert (limit["rule"], limit["detail"]) == (
        "advisories.severity < high",
        'advisories.severity = "high"; needs < "high"',
    )
    assert refusal(medium, "staging")[0]["detail"] == 'checks.advisories = "fail"; needs = "pass"'
    life = service.lifecycle
    assert life.promote(p.ds, f"churn/{medium}", "production").status == "executed"  # medium < high
    assert life.promote(p.ds, f"churn/{clean}", "staging").status == "executed"


def test_nobody_reports_the_advisories_check(service: RegistryService, client: TestClient) -> None:
    """The attack: CI (a checker), or an admin, reports advisories=pass over a failing one."""
    p = people(service)
    ci = checker(service, p)
    number = register(service, p.ds, VULNERABLE)
    load(service, p.admin, RECORDS)
    for who in (ci, p.admin):
        with pytest.raises(Forbidden) as refused:
            service.checks.report(who, "churn", number, "advisories", status="pass")
        assert refused.value.code == "reserved_check"
        assert "the OSV dump an admin loaded" in refused.value.message
    token = service.identity.create_token(p.admin, principal="ci").token
    put = client.put(
        f"/api/v1/models/churn/versions/{number}/checks/advisories",
        json={"status": "pass"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert (put.status_code, put.json()["code"]) == (403, "reserved_check")
    check = advisories_of(service, p.ds, number)
    assert check is not None and check.status.value == "fail"


def test_only_an_admin_loads_a_dump(service: RegistryService) -> None:
    """The attack: a contributor (or the model's maintainer) loads a dump that matches
    nothing, so that every version passes."""
    p = people(service)
    register(service, p.ds, VULNERABLE)
    load(service, p.admin, RECORDS)
    before = service.advisories.summary(p.admin)
    harmless = osv_zip([osv("GHSA-9", "nothing-we-use", {"introduced": "0"})])
    with TestClient(create_app(service, reach=Reach.NETWORK)) as client:
        for who in ("ds", "mia"):
            token = service.identity.create_token(p.admin, principal=who).token
            put = client.put(
                "/api/v1/advisories",
                content=harmless,
                headers={"Authorization": f"Bearer {token}"},
            )
            assert (put.status_code, put.json()["permission"]) == (403, "registry.admin")
        anonymous = client.put("/api/v1/advisories", content=harmless)
        assert anonymous.status_code == 401
    with pytest.raises(Forbidden):
        service.advisories.load(p.mia, io.BytesIO(harmless))
    assert service.advisories.summary(p.admin) == before


def test_bad_dumps_are_refused_and_change_nothing(
    service: RegistryService, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    number = register(service, Caller.local_user("tester"), VULNERABLE)
    loaded = client.put("/api/v1/advisories", content=osv_zip(RECORDS))
    assert loaded.status_code == 200, loaded.text
    check_before = client.get(f"/api/v1/models/churn/versions/{number}/checks").json()
    head = service.db.head_seq()
    refused = {
        "not_a_zip": b"PK\x03\x04 not really a zip",
        "zip_bomb": osv_zip([], {"big.json": bytes(20 * 1024 * 1024)}),  # 16 MiB a member
        "not_osv": osv_zip([], {"a.json": b'{"hello": "world"}', "b.txt": b"text"}),
    }
    npm = osv("GHSA-npm", "left-pad", {"introduced": "0"}, ecosystem="npm")
    refused["not_osv "] = osv_zip([npm])  # OSV, but no PyPI advisory: the wrong dump
    for code, body in refused.items():
        answer = client.put("/api/v1/advisories", content=body)
        assert (answer.status_code, answer.json()["code"]) == (400, code.strip()), answer.text
    monkeypatch.setattr(domain_advisories, "MAX_DUMP_BYTES", 1000)
    too_big = client.put("/api/v1/advisories", content=osv_zip(RECORDS))
    assert (too_big.status_code, too_big.json()["code"]) == (413, "too_large")

    def chunked() -> Any:
        yield osv_zip(RECORDS)  # no Content-Length: counted as it arrives

    streamed = client.put("/api/v1/advisories", content=chunked())
    assert (streamed.status_code, streamed.json()["code"]) == (413, "too_large")
    assert service.db.head_seq() == head  # nothing journaled
    assert client.get("/api/v1/advisories").json() == {"dump": loaded.json()["dump"]}
    assert client.get(f"/api/v1/models/churn/versions/{number}/checks").json() == check_before


def test_the_cli_loads_a_dump_and_lists_the_findings(tmp_path: Path) -> None:
    """In-process (--registry DIR, the local user: an admin), as a script and a person;
    the dump is over the progress bar's threshold, so the bar runs too (on a pipe)."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"weights")
    (tmp_path / "model" / "requirements.txt").write_text("requests==2.30.0\nflask\n")
    padding = {"padding.bin": os.urandom(5 * 1024 * 1024)}  # not JSON: skipped, counted
    (tmp_path / "all.zip").write_bytes(osv_zip([REQUESTS_FIX], padding))

    def cli(*args: str) -> Any:
        return invoke(*args, "--registry", "./registry", url=dead_url(), cwd=tmp_path)

    url = ("--url", "./registry")
    invoke("register", "churn", "model", *url, url=dead_url(), cwd=tmp_path).ok()
    none = cli("advisories", "status", "--json")
    assert json.loads(none.ok().stdout) == {"dump": None}
    loaded = json.loads(cli("advisories", "load", "all.zip", "--json").ok().stdout)
    assert loaded["replaced"] and loaded["evaluation"]["versions"] == 1
    assert (loaded["dump"]["advisories"], loaded["dump"]["skipped"]) == (1, 1)
    status = cli("advisories", "status").ok().stdout
    assert f"sha256:{loaded['dump']['sha256']}" in status and "1 member(s) skipped" in status
    assert "every live version is evaluated against it" in status
    again = cli("advisories", "load", "all.zip").ok().stdout
    assert again.startswith("already loaded: OSV dump") and "0 verdict(s) changed" in again
    shown = invoke("checks", "churn/1", *url, url=dead_url(), cwd=tmp_path).ok().stdout
    assert "advisories" in shown and "2 package(s), severity" in shown
    assert "requests 2.30.0: GHSA-0001 (CVE-2023-32681) HIGH, fixed in 2.31.0" in shown
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    assert_user_error(cli("advisories", "load", "bad.zip"), contains="not a readable zip")


def test_an_environment_of_many_packages_is_matched_whole(service: RegistryService) -> None:
    """More names than one statement binds on SQLite: the dump's entries are read in parts."""
    me = Caller.local_user("tester")
    many = {f"pkg{i:04}": "1.0" for i in range(1200)}
    load(service, me, [osv("GHSA-LAST", "pkg1199", {"introduced": "0"}, {"fixed": "2.0"})])
    number = register(service, me, many)
    check = advisories_of(service, me, number)
    assert check is not None and check.details is not None
    assert [f["advisory"] for f in check.details["findings"]] == ["GHSA-LAST"]


def test_a_dump_loaded_during_an_evaluation_wins(
    service: RegistryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two loads at once (two admins, two replicas): the evaluation of the first, matched
    against its dump, finds a newer one in force when it comes to write, and writes none
    of what it matched."""
    p = people(service)
    number = register(service, p.ds, VULNERABLE)
    match = service.advisories._match
    newer = osv_zip([REQUESTS_FIX])

    def racing(tx: Any, environments: Any) -> Any:
        matched = match(tx, environments)
        monkeypatch.setattr(service.advisories, "_match", match)
        service.advisories.load(p.admin, io.BytesIO(newer))  # while the first was matching
        return matched

    monkeypatch.setattr(service.advisories, "_match", racing)
    first = load(service, p.admin, [UNRELATED])
    assert first.dump.sha256 == hashlib.sha256(newer).hexdigest()  # what is in force now
    assert first.evaluation.versions == 0  # the first's batch was not written
    check = advisories_of(service, p.ds, number)
    assert check is not None and check.details is not None
    assert [f["advisory"] for f in check.details["findings"]] == ["GHSA-0001"]
    reported = [e for e in events(service, p.admin) if e.kind == "version.check_reported"]
    assert len(reported) == 1  # the newer dump's verdict alone
