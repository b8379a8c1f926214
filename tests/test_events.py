"""The event catalogue: the service appends every kind it defines, each decodes back to the
very event that was written, older payloads still decode, and docs/events.md agrees."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
from datetime import UTC, datetime
from ipaddress import ip_network
from pathlib import Path
from typing import Any, ForwardRef

import pytest
from fastapi.testclient import TestClient

from modelyard.config import Settings, open_service
from modelyard.domain.access import Caller, PrincipalKind, Role
from modelyard.domain.events import (
    CATALOGUE,
    SHAPES,
    AliasDeleted,
    ModelDeleted,
    UndecodableEvent,
    VersionRegistered,
    VersionStaged,
    decode,
    describe,
)
from modelyard.domain.evidence import AttachmentIn
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import Environment, Event
from modelyard.domain.projection import Projection, compare
from modelyard.domain.signing import SigningKey
from modelyard.domain.versions import NewVersion
from modelyard.service import RegistryService
from modelyard.service.outbound import OutboundPolicy
from tests.test_advisories import osv, osv_zip

DOCS = Path(__file__).parent.parent / "docs" / "events.md"


def _register(service: RegistryService, caller: Any, model: str, content: bytes) -> int:
    digest = hashlib.sha256(content).hexdigest()
    spec = NewVersion(files=[FileEntry("model.bin", len(content), digest)], metrics={"auc": 0.9})
    return service.register_version(model, spec, caller=caller, inline={digest: content}).version


def test_every_kind_is_appended(service: RegistryService, tmp_path: Path) -> None:
    """Drives the service through a step for each kind; a new kind adds its step here."""
    identity, life = service.identity, service.lifecycle
    admin = service.access.authenticate(identity.bootstrap_admin("alice", operator="os").token)
    identity.create_principal(admin, "mia", PrincipalKind.USER)
    identity.set_grant(admin, "mia", Role.MAINTAINER, model="churn")
    mia = service.access.authenticate(identity.create_token(admin, principal="mia").token)

    v1 = _register(service, admin, "churn", b"one")
    v2 = _register(service, admin, "churn", b"two")
    service.update_model("churn", caller=admin, description="Churn.")
    service.update_version("churn", v1, caller=admin, tags={"reviewed": "yes"})
    service.set_alias("churn", "canary", v1, caller=admin)
    service.delete_alias("churn", "canary", caller=admin)
    identity.set_protected_aliases(admin, "churn", ["gold"])
    life.apply_policy(admin, "churn", "stages:\n  development: {}\n  staging: {protected: true}\n")
    opened = life.promote(admin, f"churn/{v1}", "staging")
    assert opened.request is not None
    life.approve(mia, opened.request.id)
    second = life.promote(admin, f"churn/{v2}", "staging")
    assert second.request is not None
    life.cancel(admin, second.request.id)
    life.archive(admin, f"churn/{v1}")
    life.delete_version(admin, "churn", v2, hard=False)
    life.delete_version(admin, "churn", _register(service, admin, "churn", b"three"), hard=True)
    assert service.collect_garbage(admin).blobs == 1  # the erased version's blob, at once
    service.create_model("empty", caller=admin)
    service.delete_model("empty", caller=admin)
    service.checks.report(admin, "churn", v1, "audit", status="pass")
    report = b"auc 0.9"
    attached = AttachmentIn("report.txt", len(report), hashlib.sha256(report).hexdigest(), report)
    service.evidence.attach(admin, "churn", v1, [attached])
    service.evidence.set_card(admin, "churn", v1, "# Churn\n")
    service.evidence.comment(admin, model="churn", version=v1, body="Looks right.")
    identity.create_principal(admin, "risk", PrincipalKind.TEAM)
    identity.set_membership(admin, "risk", "mia", present=True)
    identity.set_membership(admin, "risk", "mia", present=False)
    identity.revoke_grant(admin, "mia", model="churn")
    token = identity.create_token(admin, name="spare")
    identity.revoke_token(admin, token.info.id)
    identity.set_password(admin, "mia", "a long enough password")
    service.signing.register_key(mia, SigningKey.generate().public.pem)
    cookie, _ = service.sessions.start_session("mia", "a long enough password")
    service.sessions.end_session(cookie)
    identity.disable_principal(admin, "mia", PrincipalKind.USER)
    identity.delete_team(admin, "risk")
    hooks = service.webhooks
    service.outbound = OutboundPolicy(allowed_networks=(ip_network("203.0.113.0/24"),))
    hook = hooks.create(admin, url="https://203.0.113.9/hook", events=["version.*"], model="churn")
    hooks.update(admin, hook.subscription.id, events=["*"])
    hooks.rotate_secret(admin, hook.subscription.id)
    hooks.disable(admin, hook.subscription.id, "paused")
    hooks.enable(admin, hook.subscription.id)
    hooks.delete(admin, hook.subscription.id)
    # A version in production that an OSV dump, once loaded, finds affected.
    content = b"advised"
    digest = hashlib.sha256(content).hexdigest()
    packages = Environment(packages={"requests": "2.0"})
    spec = NewVersion(files=[FileEntry("model.bin", 7, digest)], environment=packages)
    service.register_version("advised", spec, caller=admin, inline={digest: content})
    life.promote(admin, "advised/1", "production", override="first release")
    vulnerable = osv("GHSA-1", "requests", {"introduced": "0"}, {"fixed": "2.31.0"})
    assert service.advisories.load(admin, io.BytesIO(osv_zip([vulnerable]))).evaluation.affected
    source = open_service(Settings(data_dir=tmp_path / "source"))
    try:
        _register(source, Caller.local_user("os"), "shipped", b"four")
        made = source.bundles.export(Caller.local_user("os"), "shipped", stage="development")
        east = service.signing.trust_registry(admin, "east", source.signing.key.public.pem)
        service.bundles.import_bundle(admin, io.BytesIO(b"".join(made.chunks)))
    finally:
        source.close()
    service.signing.distrust_registry(admin, east.key_id)

    journal = service.events(caller=admin, limit=1000)
    assert {e.kind for e in journal} == set(CATALOGUE)
    for event in journal:
        typed = decode(event)
        assert type(typed) is CATALOGUE[event.kind]
        # What readers decode is exactly what was written and hashed.
        assert (typed.subject(), typed.payload(), typed.model_name()) == (
            event.subject,
            event.payload,
            event.model,
        )
    # And the tables are exactly what the journal replays to (archived, soft- and
    # hard-deleted versions, moved and deleted aliases, edits included).
    models = service.list_models(caller=admin, limit=1000).items
    versions = service.list_versions(caller=admin, limit=1000).items
    assert compare(Projection.replay(journal), models, versions) == []


def test_events_written_before_a_field_existed_still_decode() -> None:
    """Payloads as the service wrote them before the catalogue: the chain covers them as
    they are, so the definitions must read them."""

    def old(seq: int, kind: str, subject: str, payload: dict[str, Any]) -> Event:
        return Event(seq, datetime.now(UTC), "a", kind, subject, payload, "0", "1", None, "churn")

    stage = decode(
        old(
            3,
            "version.stage",
            "churn/2",
            {"version": 2, "before": "development", "after": "staging", "reason": "promotion"},
        )
    )
    assert stage == VersionStaged("churn", 2, "development", "staging", "promotion")
    registered = {"manifest_digest": "d", "files": 1, "size": 3, "metrics": {}, "params": {}}
    assert decode(old(2, "version.registered", "churn/2", {"after": registered})) == (
        VersionRegistered("churn", 2, registered)  # type: ignore[arg-type]
    )
    assert decode(old(4, "model.deleted", "churn", {})) == ModelDeleted("churn")
    assert decode(old(5, "alias.deleted", "churn@gold", {"before": 2, "after": None})) == (
        AliasDeleted("churn", "gold", 2)
    )


@pytest.mark.parametrize(
    ("kind", "subject", "payload", "reason"),
    [
        ("version.stage", "churn", {"before": "a", "after": "b", "reason": "r"}, "MODEL/N"),
        ("alias.set", "churn", {"before": None, "after": 1}, "MODEL@ALIAS"),
        ("alias.set", "churn@x", {"before": None}, "after"),
        ("model.renamed", "churn", {}, "unknown kind"),
    ],
)
def test_an_event_that_does_not_fit_its_kind_is_named(
    kind: str, subject: str, payload: dict[str, Any], reason: str
) -> None:
    event = Event(7, datetime.now(UTC), "a", kind, subject, payload, "0", "1")
    with pytest.raises(UndecodableEvent, match=reason) as caught:
        decode(event)
    assert "event 7" in str(caught.value)
    assert describe(event) == str(caught.value)  # readers show it rather than fail


def test_unknown_kinds_are_refused_by_the_events_filter(client: TestClient) -> None:
    response = client.get("/api/v1/events", params={"kind": "alias.moved"})
    assert response.status_code == 400
    assert "alias.set" in response.json()["detail"]
    assert client.get("/api/v1/events", params={"kind": "alias.set"}).status_code == 200


# -- docs/events.md ---------------------------------------------------------------------------


def _documented() -> dict[str, list[tuple[str, str]]]:
    """Each ``### `name` `` section of the page: its table's (field, type) rows."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in DOCS.read_text().splitlines():
        heading = re.fullmatch(r"### `([^`]+)`", line)
        if heading:
            current = sections.setdefault(heading.group(1), [])
            continue
        row = re.match(r"\| `(\w+)`(?: \(subject\))? \| `([^`]+)` \|", line)
        if row and current is not None:
            current.append((row.group(1), row.group(2).replace("\\|", "|")))
    return sections


def _defined() -> dict[str, list[tuple[str, str]]]:
    defined = {
        kind: [(f.name, str(f.type)) for f in dataclasses.fields(cls)]
        for kind, cls in CATALOGUE.items()
    }
    for shape in SHAPES:
        annotations: dict[str, ForwardRef] = shape.__annotations__
        defined[shape.__name__] = [(k, v.__forward_arg__) for k, v in annotations.items()]
    return defined


def test_the_docs_list_every_kind_with_its_payload() -> None:
    documented, defined = _documented(), _defined()
    assert sorted(documented) == sorted(defined), "kinds or shapes missing from docs/events.md"
    for name, fields in defined.items():
        assert documented[name] == fields, f"docs/events.md: the fields of {name}"


def test_the_docs_mark_the_subject_fields() -> None:
    text = DOCS.read_text()
    for kind, cls in CATALOGUE.items():
        section = text.split(f"### `{kind}`", 1)[1].split("### ", 1)[0]
        marked = re.findall(r"\| `(\w+)` \(subject\)", section)
        assert tuple(marked) == cls.subject_fields, kind


def test_only_a_models_own_state_leaves_the_identity_stamp() -> None:
    """The token, grant and local-mode caches trust this flag: a kind that changes who may
    do what and said otherwise would keep a revoked token working."""
    own_state = ("model.", "version.", "alias.", "request.", "policy.", "comment.", "webhook.")
    for kind, cls in CATALOGUE.items():
        assert cls.changes_access is not kind.startswith(own_state), kind
