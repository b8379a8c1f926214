"""Lifecycle governance on SQLite and PostgreSQL: stages, requests, policies, rollback,
history, time travel, archive and delete, and two promotions racing for one stage."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import timedelta

import pytest

from modelyard.domain.access import Caller, PrincipalKind, Role
from modelyard.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PolicyFailed,
)
from modelyard.domain.lifecycle import PolicyError
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import DatasetRef, SourceRef
from modelyard.domain.versions import NewVersion
from modelyard.service import RegistryService

POLICY = """
promotion:
  production:
    require:
      - metrics.auc >= 0.80
      - metrics.auc >= current.metrics.auc - 0.005
      - description
      - dataset
      - source.commit
    approvals: {count: 1, team: risk}
"""


@dataclass
class People:
    admin: Caller
    ds: Caller  # contributor: registers and asks for promotions
    rita: Caller  # in team risk: reviews
    mia: Caller  # maintainer of churn


def people(service: RegistryService) -> People:
    identity = service.identity
    admin = service.access.authenticate(identity.bootstrap_admin("alice", operator="t").token)
    callers = {}
    for name, role in (("ds", Role.CONTRIBUTOR), ("rita", Role.VIEWER), ("mia", Role.MAINTAINER)):
        identity.create_principal(admin, name, PrincipalKind.USER)
        identity.set_grant(admin, name, role, model="churn")
        callers[name] = service.access.authenticate(
            identity.create_token(admin, principal=name).token
        )
    identity.create_principal(admin, "risk", PrincipalKind.TEAM)
    identity.set_membership(admin, "risk", "rita", present=True)
    return People(admin, callers["ds"], callers["rita"], callers["mia"])


def register(
    service: RegistryService, caller: Caller, auc: float, *, card: bool = True, model: str = "churn"
) -> int:
    content = f"weights {auc} {card} {model}".encode()
    digest = hashlib.sha256(content).hexdigest()
    upload = service.begin_blob_upload(caller, digest)
    upload.write(content)
    service.finish_blob_upload(upload)
    spec = NewVersion(
        files=[FileEntry("model.bin", len(content), digest)],
        metrics={"auc": auc},
        description="Churn model card." if card else "",
        dataset=DatasetRef("customers", "2026-w10") if card else None,
        source=SourceRef("git@example.com:ml/churn.git", "a" * 40, "main", False),
    )
    return service.register_version(model, spec, caller=caller).version


def stage_of(service: RegistryService, caller: Caller, number: int) -> str:
    return service.get_version("churn", number, caller=caller).stage


def test_the_churn_story(service: RegistryService) -> None:
    p = people(service)
    life = service.lifecycle
    v41 = register(service, p.ds, 0.86)
    life.apply_policy(p.mia, "churn", POLICY)
    life.promote(p.admin, f"churn/{v41}", "production", override="first release")
    assert service.resolve("churn@production", caller=p.ds).version == v41
    assert stage_of(service, p.ds, v41) == "production"

    v42 = register(service, p.ds, 0.87)
    assert stage_of(service, p.ds, v42) == "development"
    opened = life.promote(p.ds, f"churn/{v42}", "production", comment="weekly retrain")
    assert opened.status == "open" and opened.request is not None
    request = opened.request
    assert request.evaluation.passed and request.approvals_needed == 1
    assert [r.rule for r in request.evaluation.results][:3] == [
        'checks.scan = "pass"',  # the registry's own, before the policy's
        "metrics.auc >= 0.80",
        "metrics.auc >= current.metrics.auc - 0.005",
    ]
    assert "churn/1" in request.evaluation.results[2].detail  # compared with the champion
    assert [r.id for r in life.requests(p.rita)] == [request.id]

    with pytest.raises(Forbidden, match="own request"):
        life.approve(p.ds, request.id)
    with pytest.raises(Forbidden, match="team 'risk'"):
        life.approve(p.mia, request.id)  # a maintainer, but not the reviewers the policy names
    done = life.approve(p.rita, request.id, comment="AUC holds; card reviewed")
    assert done.status == "executed" and [a.approver for a in done.approvals] == ["rita"]
    assert service.resolve("churn@production", caller=p.ds).version == v42
    assert stage_of(service, p.ds, v41) == "archived"  # exclusive: the old champion leaves
    assert life.requests(p.rita) == []

    promoted = [e for e in life.history(p.ds, "churn") if e.kind == "version.stage"][-2:]
    assert [(e.subject, e.payload["after"], e.payload["reason"]) for e in promoted] == [
        (f"churn/{v42}", "production", "promotion"),
        (f"churn/{v41}", "archived", "demotion"),
    ]
    assert promoted[0].payload["approvals"] == ["rita"]
    assert promoted[0].payload["evaluation"]["passed"] is True
    assert promoted[0].actor == "rita" and promoted[0].token_id == p.rita.token_id
    moment = promoted[0].time

    # Wednesday: v42 misbehaves. One step back, no approval, journaled as a rollback.
    with pytest.raises(Forbidden):
        life.rollback(p.ds, "churn", "production")
    back = life.rollback(p.mia, "churn", "production", comment="v42 misbehaves")
    assert back.version == v41 and back.stage == "production"
    assert stage_of(service, p.ds, v42) == "archived"
    assert service.resolve("churn@production", caller=p.ds).version == v41
    last = life.history(p.ds, "churn")[-2:]
    assert {e.payload["reason"] for e in last} == {"rollback", "demotion"}

    # The auditor: what was in production at that moment, and just before it?
    as_of = life.resolve_as_of
    assert as_of(p.rita, "churn@production", moment).version == v42
    assert as_of(p.rita, "churn@production", moment - timedelta(microseconds=1)).version == v41
    rolled_back_at = last[0].time
    assert as_of(p.rita, "churn@production", rolled_back_at).version == v41
    assert (
        as_of(p.rita, "churn@production", rolled_back_at - timedelta(microseconds=1)).version == v42
    )
    with pytest.raises(NotFound):
        as_of(p.rita, "churn@production", moment - timedelta(days=365))
    with pytest.raises(InvalidInput, match="time zone"):
        as_of(p.rita, "churn@production", moment.replace(tzinfo=None))


def test_a_refused_promotion_lists_every_failed_rule_and_an_admin_may_override(
    service: RegistryService,
) -> None:
    p = people(service)
    life = service.lifecycle
    champion = register(service, p.ds, 0.90)
    life.apply_policy(p.mia, "churn", POLICY)
    life.promote(p.admin, f"churn/{champion}", "production", override="bootstrap")
    weak = register(service, p.ds, 0.84, card=False)
    with pytest.raises(PolicyFailed) as refused:
        life.promote(p.ds, f"churn/{weak}", "production")
    failures = {f["rule"]: f["detail"] for f in refused.value.details["failures"]}
    assert set(failures) == {
        "metrics.auc >= current.metrics.auc - 0.005",
        "description",
        "dataset",
    }
    assert (
        "metrics.auc = 0.84, current.metrics.auc = 0.9"
        in failures["metrics.auc >= current.metrics.auc - 0.005"]
    )
    assert life.requests(p.ds) == [] and stage_of(service, p.ds, weak) == "development"
    with pytest.raises(Forbidden):
        life.promote(p.ds, f"churn/{weak}", "production", override="because")
    with pytest.raises(InvalidInput, match="reason"):
        life.promote(p.admin, f"churn/{weak}", "production", override=" ")
    life.promote(p.admin, f"churn/{weak}", "production", override="incident 42: hotfix")
    event = [e for e in life.history(p.ds, "churn") if e.kind == "version.stage"][-2]
    assert (event.payload["reason"], event.payload["override"]) == (
        "override",
        "incident 42: hotfix",
    )
    assert event.payload["evaluation"]["passed"] is False


def test_unprotected_stages_and_archived_versions(service: RegistryService) -> None:
    p = people(service)
    life = service.lifecycle
    v1, v2 = register(service, p.ds, 0.8), register(service, p.ds, 0.81)
    # staging is protected by default: a request, approved by a maintainer (no policy).
    opened = life.promote(p.ds, f"churn/{v1}", "staging")
    assert opened.status == "open" and opened.request is not None
    assert life.approve(p.mia, opened.request.id).status == "executed"
    life.apply_policy(p.mia, "churn", "stages:\n  development: {}\n  staging: {}\n")
    assert life.promote(p.ds, f"churn/{v2}", "staging").status == "executed"
    # Not exclusive: both are there, the most recent promotion answers churn@staging.
    assert (stage_of(service, p.ds, v1), stage_of(service, p.ds, v2)) == ("staging", "staging")
    assert service.resolve("churn@staging", caller=p.ds).version == v2
    with pytest.raises(InvalidInput, match="unknown stage"):
        life.promote(p.ds, f"churn/{v1}", "production")
    with pytest.raises(Conflict, match="namespace"):
        service.set_alias("churn", "staging", v1, caller=p.mia)

    with pytest.raises(Forbidden):
        life.archive(p.ds, f"churn/{v1}")
    assert life.archive(p.mia, f"churn/{v1}").stage == "archived"
    with pytest.raises(Conflict, match="restore"):
        life.promote(p.ds, f"churn/{v1}", "staging")
    assert life.archive(p.mia, f"churn/{v1}", restore=True).stage == "development"


def test_delete_soft_by_maintainers_hard_by_admins_never_what_was_protected(
    service: RegistryService,
) -> None:
    p = people(service)
    life = service.lifecycle
    shipped, draft, other = (register(service, p.ds, a) for a in (0.9, 0.5, 0.6))
    life.promote(p.admin, f"churn/{shipped}", "production", override="release")
    life.archive(p.mia, f"churn/{shipped}")
    with pytest.raises(Forbidden):
        life.delete_version(p.ds, "churn", draft, hard=False)
    life.delete_version(p.mia, "churn", draft, hard=False)
    with pytest.raises(NotFound):
        service.get_version("churn", draft, caller=p.admin)
    listed = service.list_versions("churn", caller=p.admin).items
    assert [v.version for v in listed] == [other, shipped]
    with pytest.raises(Forbidden):
        life.delete_version(p.mia, "churn", other, hard=True)
    with pytest.raises(Conflict, match="protected stage"):
        life.delete_version(p.admin, "churn", shipped, hard=True)
    life.delete_version(p.admin, "churn", other, hard=True)
    assert service.resolve("churn", caller=p.admin).version == shipped  # latest still there
    assert any(e.kind == "version.deleted" for e in life.history(p.admin, "churn"))


def test_policies_are_validated_versioned_and_journaled(service: RegistryService) -> None:
    p = people(service)
    life = service.lifecycle
    register(service, p.ds, 0.8)
    for bad, message in (
        ("promotion: [1, 2", "not valid YAML"),
        ("colour: blue", "unknown policy keys"),
        ("promotion:\n  production:\n    require: ['auc is good']", "not a rule"),
        ("promotion:\n  moon: {}", "not one of the stages"),
        ("stages:\n  dev: {demote_to: nowhere}", "not a stage"),
    ):
        with pytest.raises(PolicyError, match=message):
            life.apply_policy(p.mia, "churn", bad)
    with pytest.raises(Forbidden):
        life.apply_policy(p.ds, "churn", POLICY)
    with pytest.raises(Forbidden):
        life.apply_policy(p.mia, None, POLICY)  # the registry's policy is for admins
    assert life.apply_policy(p.mia, "churn", POLICY)["version"] == 1
    assert life.apply_policy(p.mia, "churn", POLICY + "\n")["version"] == 2
    shown = life.get_policy(p.rita, "churn")
    assert shown["own"] and "team: risk" in shown["text"]
    assert [s["name"] for s in shown["stages"]] == ["development", "staging", "production"]
    applied = [e for e in life.history(p.ds, "churn") if e.kind == "policy.applied"]
    assert [e.payload["version"] for e in applied] == [1, 2]


def test_two_promotions_racing_into_an_exclusive_stage_have_one_winner(
    service: RegistryService,
) -> None:
    """Real concurrent connections (threads) approving two requests at the same moment."""
    p = people(service)
    life = service.lifecycle
    v1, v2 = register(service, p.ds, 0.8), register(service, p.ds, 0.81)
    requests = [life.promote(p.ds, f"churn/{v}", "production").request for v in (v1, v2)]
    assert all(r is not None for r in requests)
    barrier = threading.Barrier(2)
    outcomes: dict[int, str] = {}

    def approve(request_id: int) -> None:
        barrier.wait()
        try:
            outcomes[request_id] = life.approve(p.mia, request_id).status
        except Conflict as exc:
            outcomes[request_id] = exc.code

    threads = [threading.Thread(target=approve, args=(r.id,)) for r in requests if r]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values()) == ["executed", "request_closed"]
    winner = next(rid for rid, status in outcomes.items() if status == "executed")
    loser = next(rid for rid in outcomes if rid != winner)
    assert life.request(p.ds, loser).status == "invalidated"
    in_production = [
        v.version
        for v in service.list_versions("churn", caller=p.ds).items
        if v.stage == "production"
    ]
    assert len(in_production) == 1
    assert service.resolve("churn@production", caller=p.ds).version == in_production[0]
