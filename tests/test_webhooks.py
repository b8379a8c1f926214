"""Webhook subscriptions, on SQLite and PostgreSQL: the filter, the URL, the secret (shown
once, sealed at rest, bound to its row), the journal, and who may manage which webhook."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from ipaddress import ip_network
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook
from typer.testing import CliRunner, Result

import modelyard
from modelyard.api import create_app
from modelyard.cli.main import app
from modelyard.domain.access import Caller, PrincipalKind, Reach, Role
from modelyard.domain.errors import Conflict, Forbidden, InvalidInput, NotFound, TooLarge
from modelyard.domain.manifest import FileEntry
from modelyard.domain.versions import NewVersion
from modelyard.domain.webhooks import (
    SecretBox,
    Subscription,
    filter_matches,
    new_secret,
    parse_event_filter,
)
from modelyard.service import RegistryService
from modelyard.service.delivery import Deliverer
from modelyard.service.outbound import OutboundPolicy
from modelyard.storage.db.tables import webhooks
from tests.conftest import LiveServer, free_port
from tests.receivers import Reply, receiving
from tests.test_cli import dead_url
from tests.test_delivery import FAST, wait_until

# TEST-NET-3 is not a public network: the tests' receivers are allowed by configuration,
# as an admin would allow an internal one, and host names resolve through a fake resolver.
RECEIVERS = "203.0.113.0/24"
HOOK = "https://203.0.113.7/hook"
# public.example is given a public address (example.com's): nothing ever connects to it.
NAMES = {
    "ci.example": ["203.0.113.8"],
    "intranet.example": ["10.1.2.3"],
    "public.example": ["93.184.215.14"],
}


def fake_resolver(host: str, port: int) -> list[str]:
    """No test resolves a real name."""
    if host not in NAMES:
        raise OSError(f"{host}: no such host (test resolver)")
    return NAMES[host]


def allow_test_receivers(service: RegistryService) -> None:
    service.outbound = OutboundPolicy(
        allowed_networks=(ip_network(RECEIVERS),), resolver=fake_resolver
    )


# -- the domain --------------------------------------------------------------------------------


def test_the_filter_takes_kinds_families_and_everything() -> None:
    assert parse_event_filter(["version.stage", "alias.*", "version.stage"]) == (
        "version.stage",
        "alias.*",
    )
    assert filter_matches(("alias.*",), "alias.set")
    assert not filter_matches(("alias.*",), "model.created")
    assert filter_matches(("*",), "webhook.created")
    assert filter_matches(("version.stage",), "version.stage")
    assert not filter_matches(("version.stage",), "version.registered")
    for wrong in (["version.promoted"], ["nope.*"], ["version.s*"], ["*.*"]):
        with pytest.raises(InvalidInput, match=r"version\.registered") as refused:
            parse_event_filter(wrong)
        assert refused.value.code == "unknown_event_kind"
        assert "alias.*" in refused.value.message  # the families are listed too
    not_a_list: list[str] | str
    for not_a_list in ([], "version.stage"):  # a bare string is not a list of one
        with pytest.raises(InvalidInput):
            parse_event_filter(not_a_list)
    with pytest.raises(TooLarge):
        parse_event_filter(["*"] * 65)


def test_secrets_follow_standard_webhooks_and_seal_to_their_row() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 24
    assert new_secret() != secret
    box = SecretBox(b"k" * 32)
    sealed, again = box.seal(1, secret), box.seal(1, secret)
    assert sealed != again  # a fresh nonce every time
    assert secret.encode() not in sealed
    assert box.open(1, sealed) == box.open(1, again) == secret
    with pytest.raises(ValueError, match="webhook 2"):
        box.open(2, sealed)  # moved onto another row
    with pytest.raises(ValueError):
        SecretBox(b"x" * 32).open(1, sealed)  # another server key
    assert "k" * 8 not in repr(box)


# -- a registry with a maintainer per model ----------------------------------------------------


@dataclass
class People:
    service: RegistryService
    admin: Caller
    callers: dict[str, Caller]

    def __getitem__(self, name: str) -> Caller:
        return self.callers[name]


def _register(service: RegistryService, admin: Caller, model: str) -> None:
    content = model.encode()
    digest = hashlib.sha256(content).hexdigest()
    spec = NewVersion(files=[FileEntry("model.bin", len(content), digest)])
    service.register_version(model, spec, caller=admin, inline={digest: content})


@pytest.fixture
def people(service: RegistryService) -> Iterator[People]:
    """Models a and b; maintainer, contributor and viewer of a; maintainer of b; a user
    with no role; a registry-wide maintainer; and read-only / scoped tokens."""
    allow_test_receivers(service)
    identity = service.identity
    admin = service.access.authenticate(identity.bootstrap_admin("root", operator="t").token)
    for model in ("a", "b"):
        _register(service, admin, model)
    grants: dict[str, tuple[Role, str | None]] = {
        "maint-a": (Role.MAINTAINER, "a"),
        "contrib-a": (Role.CONTRIBUTOR, "a"),
        "viewer-a": (Role.VIEWER, "a"),
        "maint-b": (Role.MAINTAINER, "b"),
        "wide-maint": (Role.MAINTAINER, None),
        "nobody": (Role.VIEWER, "elsewhere"),
    }
    callers: dict[str, Caller] = {}
    for name, (role, model) in grants.items():
        identity.create_principal(admin, name, PrincipalKind.USER)
        identity.set_grant(admin, name, role, model=model)
        callers[name] = service.access.authenticate(
            identity.create_token(admin, principal=name).token
        )
    callers["maint-a-read-only"] = service.access.authenticate(
        identity.create_token(admin, principal="maint-a", read_only=True).token
    )
    callers["root-read-only"] = service.access.authenticate(
        identity.create_token(admin, read_only=True).token
    )
    yield People(service, admin, callers)


def test_create_answers_the_secret_once_and_keeps_it_sealed(people: People) -> None:
    service = people.service
    head = service.db.head_seq()
    made = service.webhooks.create(
        people["maint-a"], url=HOOK, events=["version.*"], model="a", description="CI"
    )
    sub, secret = made
    assert (sub.model, sub.url, sub.events, sub.description) == ("a", HOOK, ("version.*",), "CI")
    assert (sub.creator, sub.enabled, sub.disabled_reason) == ("maint-a", True, None)
    assert secret not in repr(made) and secret not in repr(sub)
    assert "secret" not in sub.as_dict() and made.as_dict()["secret"] == secret
    assert service.webhooks.secret_of(sub.id) == secret
    # What the database holds: neither the secret nor its key material.
    with service.db.engine.connect() as conn:
        stored, cursor = conn.execute(
            select(webhooks.c.secret, webhooks.c.cursor).where(webhooks.c.id == sub.id)
        ).one()
    raw = base64.b64decode(secret.removeprefix("whsec_"))
    assert secret.encode() not in stored and raw not in stored
    # It receives what happens from now on: the cursor is the head before its creation.
    assert cursor == head
    created = service.events(caller=people.admin, after=head)
    assert [e.kind for e in created] == ["webhook.created"]
    assert created[0].subject == f"webhook/{sub.id}" and created[0].model == "a"
    assert created[0].payload == {
        "model": "a",
        "url": HOOK,
        "events": ["version.*"],
        "description": "CI",
    }
    # The listing and the reads never carry it.
    assert service.webhooks.get(people["maint-a"], sub.id) == sub
    assert service.webhooks.list(people["maint-a"]) == [sub]


def test_a_sealed_secret_moved_to_another_row_does_not_open(people: People) -> None:
    hooks = people.service.webhooks
    first = hooks.create(people.admin, url=HOOK, events=["*"], model="a").subscription
    second = hooks.create(people.admin, url=HOOK, events=["*"], model="b").subscription
    with people.service.db.engine.begin() as conn:
        sealed = conn.execute(select(webhooks.c.secret).where(webhooks.c.id == first.id)).scalar()
        conn.execute(update(webhooks).where(webhooks.c.id == second.id).values(secret=sealed))
    assert hooks.secret_of(first.id)
    with pytest.raises(ValueError, match=f"webhook {second.id}"):
        hooks.secret_of(second.id)


def test_rotate_update_disable_enable_delete_are_journaled_without_the_secret(
    people: People,
) -> None:
    service, maint = people.service, people["maint-a"]
    hooks = service.webhooks
    sub, first_secret = hooks.create(maint, url=HOOK, events=["version.stage"], model="a")
    rotated, second_secret = hooks.rotate_secret(maint, sub.id)
    assert second_secret != first_secret and hooks.secret_of(sub.id) == second_secret
    head = service.db.head_seq()
    assert hooks.update(maint, sub.id, events=["version.stage"], description="") == rotated
    assert service.db.head_seq() == head  # the same values: no change, no event
    url = "https://ci.example/other"
    updated = hooks.update(maint, sub.id, url=url, events=["alias.*", "version.stage"])
    assert (updated.url, updated.events) == (url, ("alias.*", "version.stage"))
    disabled = hooks.disable(maint, sub.id, "maintenance")
    assert (disabled.enabled, disabled.disabled_reason) == (False, "maintenance")
    assert hooks.disable(maint, sub.id) == disabled  # already: nothing happens
    enabled = hooks.enable(maint, sub.id)
    assert (enabled.enabled, enabled.disabled_reason) == (True, None)
    hooks.delete(maint, sub.id)
    with pytest.raises(NotFound):
        hooks.get(maint, sub.id)
    with pytest.raises(NotFound):
        hooks.secret_of(sub.id)

    journal = [e for e in service.events(caller=people.admin) if e.kind.startswith("webhook.")]
    assert [e.kind for e in journal] == [
        "webhook.created",
        "webhook.secret_rotated",
        "webhook.updated",
        "webhook.disabled",
        "webhook.enabled",
        "webhook.deleted",
    ]
    assert journal[2].payload["before"] == {"url": HOOK, "events": ["version.stage"]}
    assert journal[2].payload["after"] == {"url": url, "events": ["alias.*", "version.stage"]}
    assert journal[3].payload["reason"] == "maintenance"
    everything = json.dumps([e.payload for e in service.events(caller=people.admin)])
    for secret in (first_secret, second_secret):
        assert secret not in everything
        assert secret.removeprefix("whsec_") not in everything


def test_the_receiver_disables_as_the_registry(people: People) -> None:
    service = people.service
    sub = service.webhooks.create(people.admin, url=HOOK, events=["*"]).subscription
    service.webhooks.disabled_by_receiver(sub.id, "the receiver answered 410 Gone")
    head = service.db.head_seq()
    service.webhooks.disabled_by_receiver(sub.id, "again")  # already disabled: nothing
    service.webhooks.disabled_by_receiver(sub.id + 100, "gone")  # deleted meanwhile
    assert service.db.head_seq() == head
    found = service.webhooks.get(people.admin, sub.id)
    assert (found.enabled, found.disabled_reason) == (False, "the receiver answered 410 Gone")
    event = service.events(caller=people.admin)[-1]
    assert (event.kind, event.actor, event.token_id) == (
        "webhook.disabled",
        "modelyard:delivery",
        None,
    )
    assert service.webhooks.enable(people.admin, sub.id).enabled


def test_urls_the_policy_refuses_are_not_subscribed(people: People) -> None:
    hooks, maint = people.service.webhooks, people["maint-a"]
    for url, reason in (
        ("https://127.0.0.1/hook", "loopback"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://intranet.example/hook", "private"),  # a name that resolves inside
        ("https://[::ffff:10.0.0.1]/hook", "private"),
        ("https://nowhere.example/hook", "nowhere.example"),
        ("http://public.example/hook", "https"),
    ):
        with pytest.raises(InvalidInput, match=reason) as refused:
            hooks.create(maint, url=url, events=["*"], model="a")
        assert refused.value.code == "webhook_url_refused", url
    sub = hooks.create(maint, url=HOOK, events=["*"], model="a").subscription
    with pytest.raises(InvalidInput):
        hooks.update(maint, sub.id, url="https://127.0.0.1/hook")
    # Enabling again checks again: the policy may have changed meanwhile.
    hooks.disable(maint, sub.id)
    people.service.outbound = OutboundPolicy(resolver=fake_resolver)
    with pytest.raises(InvalidInput, match=r"203\.0\.113\.7"):
        hooks.enable(maint, sub.id)
    assert not hooks.get(maint, sub.id).enabled
    assert [s.url for s in hooks.list(maint)] == [HOOK]


def test_malformed_urls_are_refused_before_anything_is_written(people: People) -> None:
    service = people.service
    head = service.db.head_seq()
    for url in (
        "ftp://ci.example/hook",
        "https:///hook",
        "https://user:pw@ci.example/hook",  # it would be listed and journaled
        "https://token@ci.example/hook",
        "https://ci.example/a hook",
        "https://ci.example:99999/hook",
        "ci.example/hook",
        "",
        "https://ci.example/" + "a" * 2048,
    ):
        with pytest.raises(InvalidInput) as refused:
            service.webhooks.create(people.admin, url=url, events=["*"], model="a")
        assert refused.value.code == "webhook_url_refused", url
    assert service.db.head_seq() == head and service.webhooks.list(people.admin) == []


def test_a_scope_has_a_bounded_number_of_webhooks(
    people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("modelyard.service.webhooks.MAX_SUBSCRIPTIONS", 2)
    hooks = people.service.webhooks
    for _ in range(2):
        hooks.create(people.admin, url=HOOK, events=["*"], model="a")
    with pytest.raises(Conflict) as refused:
        hooks.create(people.admin, url=HOOK, events=["*"], model="a")
    assert refused.value.code == "too_many_webhooks"
    hooks.create(people.admin, url=HOOK, events=["*"], model="b")  # another scope
    hooks.create(people.admin, url=HOOK, events=["*"])


# -- who may manage ----------------------------------------------------------------------------


def test_only_maintainers_create_a_models_webhooks_and_only_admins_registry_wide(
    people: People,
) -> None:
    hooks = people.service.webhooks
    for name in ("viewer-a", "contrib-a", "maint-a-read-only", "root-read-only"):
        with pytest.raises(Forbidden) as refused:
            hooks.create(people[name], url=HOOK, events=["*"], model="a")
        assert refused.value.details["permission"] == "webhook.manage", name
    for name in ("nobody", "maint-b"):  # a model they cannot see does not exist
        with pytest.raises(NotFound) as missing:
            hooks.create(people[name], url=HOOK, events=["*"], model="a")
        assert missing.value.code == "model_not_found"
    for name in ("maint-a", "wide-maint", "root-read-only"):
        with pytest.raises(Forbidden) as refused:
            hooks.create(people[name], url=HOOK, events=["*"])
        assert refused.value.details["permission"] == "registry.admin"
    with pytest.raises(NotFound):
        hooks.create(people.admin, url=HOOK, events=["*"], model="never-registered")
    assert hooks.create(people["wide-maint"], url=HOOK, events=["*"], model="b")
    assert hooks.create(people.admin, url=HOOK, events=["*"])
    # What an adapter offers follows the same rule.
    offered = {
        name: (hooks.may_manage(people[name], "a"), hooks.may_manage(people[name], None))
        for name in ("maint-a", "contrib-a", "maint-b", "wide-maint", "root-read-only")
    }
    assert offered == {
        "maint-a": (True, False),
        "contrib-a": (False, False),
        "maint-b": (False, False),
        "wide-maint": (True, False),
        "root-read-only": (False, False),
    }
    assert hooks.may_manage(people.admin, "a") and hooks.may_manage(people.admin, None)


def test_others_get_the_404_of_a_missing_webhook(people: People) -> None:
    hooks = people.service.webhooks
    on_a = hooks.create(people["maint-a"], url=HOOK, events=["*"], model="a").subscription
    on_b = hooks.create(people["maint-b"], url=HOOK, events=["*"], model="b").subscription
    wide = hooks.create(people.admin, url=HOOK, events=["*"]).subscription
    missing = wide.id + 1

    def refusal(caller: Caller, webhook_id: int) -> list[str]:
        """What each operation answers: exactly the words of a missing webhook."""
        said = []
        for operation in (
            lambda: hooks.get(caller, webhook_id),
            lambda: hooks.update(caller, webhook_id, description="mine"),
            lambda: hooks.disable(caller, webhook_id),
            lambda: hooks.enable(caller, webhook_id),
            lambda: hooks.rotate_secret(caller, webhook_id),
            lambda: hooks.delete(caller, webhook_id),
        ):
            with pytest.raises(NotFound) as caught:
                operation()
            assert caught.value.code == "webhook_not_found"
            said.append(caught.value.message.replace(str(webhook_id), "N"))
        return said

    expected = refusal(people.admin, missing)
    attempts = {
        "maint-a": [on_b, wide],
        "maint-b": [on_a, wide],
        "wide-maint": [wide],
        "viewer-a": [on_a],
        "contrib-a": [on_a],
        "nobody": [on_a, on_b, wide],
        "maint-a-read-only": [on_a],
        "root-read-only": [on_a, wide],
    }
    for name, subs in attempts.items():
        for sub in subs:
            assert refusal(people[name], sub.id) == expected, (name, sub.id)
    listed = {name: {s.id for s in hooks.list(people[name])} for name in attempts}
    assert listed == {
        "maint-a": {on_a.id},
        "maint-b": {on_b.id},
        "wide-maint": {on_a.id, on_b.id},
        "viewer-a": set(),
        "contrib-a": set(),
        "nobody": set(),
        "maint-a-read-only": set(),
        "root-read-only": set(),
    }
    assert {s.id for s in hooks.list(people.admin)} == {on_a.id, on_b.id, wide.id}
    assert [s.id for s in hooks.list(people.admin, model="b")] == [on_b.id]
    # Nothing was changed by the refused attempts.
    assert hooks.get(people.admin, on_a.id) == on_a
    # And only the admins read the registry-wide webhook's events.
    seen = {e.subject for e in people.service.events(caller=people["wide-maint"])}
    assert f"webhook/{on_a.id}" in seen and f"webhook/{wide.id}" not in seen


def test_subscription_round_trips_through_its_dict(people: People) -> None:
    sub = people.service.webhooks.create(people.admin, url=HOOK, events=["*"]).subscription
    # The creator's id is server-internal: answers name the creator only.
    assert Subscription.from_dict(sub.as_dict()) == replace(sub, creator_id=None)


# -- REST ---------------------------------------------------------------------------------------


def _bearer(people: People, principal: str, *, read_only: bool = False) -> dict[str, str]:
    identity = people.service.identity
    token = identity.create_token(people.admin, principal=principal, read_only=read_only)
    return {"Authorization": f"Bearer {token.token}"}


def test_rest_shows_the_secret_only_when_made(people: People) -> None:
    service = people.service
    app = create_app(service, reach=Reach.LOOPBACK)
    maint = _bearer(people, "maint-a")
    with TestClient(app) as client:
        made = client.post(
            "/api/v1/webhooks",
            json={"url": HOOK, "events": ["version.stage", "alias.*"], "model": "a"},
            headers=maint,
        )
        assert made.status_code == 201, made.text
        body = made.json()
        secret, webhook_id = body["secret"], body["id"]
        assert secret == service.webhooks.secret_of(webhook_id)
        assert body["events"] == ["version.stage", "alias.*"] and body["model"] == "a"
        base = f"/api/v1/webhooks/{webhook_id}"
        answers = [
            client.get("/api/v1/webhooks", headers=maint),
            client.get("/api/v1/webhooks", params={"model": "a"}, headers=maint),
            client.get(base, headers=maint),
            client.patch(base, json={"description": "CI"}, headers=maint),
            client.post(f"{base}/disable", json={"reason": "later"}, headers=maint),
            client.post(f"{base}/enable", headers=maint),
            client.get("/api/v1/events", headers=maint),
        ]
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert secret not in answer.text and "secret" not in answer.text.replace(
                "secret_rotated", ""
            )
        assert answers[2].json()["id"] == webhook_id
        assert [h["id"] for h in answers[0].json()["items"]] == [webhook_id]
        assert answers[4].json()["disabled_reason"] == "later"
        rotated = client.post(f"{base}/rotate-secret", headers=maint)
        assert rotated.status_code == 200
        assert rotated.json()["secret"] not in (secret, None)
        assert rotated.json()["secret"] == service.webhooks.secret_of(webhook_id)

        refused = client.post(
            "/api/v1/webhooks",
            json={"url": HOOK, "events": ["version.promoted"], "model": "a"},
            headers=maint,
        )
        assert (refused.status_code, refused.json()["code"]) == (400, "unknown_event_kind")
        assert refused.headers["content-type"] == "application/problem+json"
        assert "version.registered" in refused.json()["detail"]
        loopback = client.post(
            "/api/v1/webhooks",
            json={"url": "https://127.0.0.1:8080/api", "events": ["*"], "model": "a"},
            headers=maint,
        )
        assert (loopback.status_code, loopback.json()["code"]) == (400, "webhook_url_refused")
        unknown = client.post(
            "/api/v1/webhooks", json={"url": HOOK, "events": ["*"], "secret": "x"}, headers=maint
        )
        assert unknown.status_code == 400  # no field but the documented ones

        # Others: the 404 of a webhook that does not exist, whatever they try.
        for who in (_bearer(people, "maint-b"), _bearer(people, "maint-a", read_only=True)):
            for method, path in (
                ("GET", base),
                ("DELETE", base),
                ("POST", f"{base}/rotate-secret"),
            ):
                answer = client.request(method, path, headers=who)
                assert (answer.status_code, answer.json()["code"]) == (404, "webhook_not_found")
                assert secret not in answer.text
            assert client.get("/api/v1/webhooks", headers=who).json()["items"] == []
        viewer = client.post(
            "/api/v1/webhooks",
            json={"url": HOOK, "events": ["*"], "model": "a"},
            headers=_bearer(people, "viewer-a"),
        )
        assert (viewer.status_code, viewer.json()["permission"]) == (403, "webhook.manage")
        wide = client.post("/api/v1/webhooks", json={"url": HOOK, "events": ["*"]}, headers=maint)
        assert (wide.status_code, wide.json()["permission"]) == (403, "registry.admin")

        assert client.delete(base, headers=maint).status_code == 204
        assert client.get(base, headers=maint).status_code == 404


def make_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.bin"
    path.write_bytes(b"weights")
    return path


# -- CLI ----------------------------------------------------------------------------------------


def test_cli_prints_the_secret_once_and_json_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the CLI prints, on SQLite: the webhook service runs on PostgreSQL above."""
    # The server may send to loopback, as an admin allows an internal receiver; nothing
    # listens at the receiver's address.
    monkeypatch.setenv("MODELYARD_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    server = LiveServer(tmp_path / "server-data", None)
    server.start()
    runner = CliRunner()
    env = {"MODELYARD_CONFIG": os.devnull, "MODELYARD_URL": server.url, "COLUMNS": "200"}

    def cli(*args: str, ok: bool = True) -> Result:
        result = runner.invoke(app, ["webhooks", *args], env=env)
        assert (result.exit_code == 0) is ok, (args, result.output)
        return result

    try:
        with modelyard.connect(server.url) as reg:
            reg.register("churn", make_file(tmp_path), source=None, environment=None)
        receiver = f"{dead_url()}/hook"
        made = cli(
            "create", "--url", receiver, "--events", "version.stage, alias.*", "--model", "churn"
        )
        secret = made.stdout.strip()
        assert made.stdout == secret + "\n" and secret.startswith("whsec_")
        assert "not shown again" in made.stderr and secret not in made.stderr
        listed = json.loads(cli("list", "--json").stdout)["items"]
        assert [(h["url"], h["events"], h["model"]) for h in listed] == [
            (receiver, ["version.stage", "alias.*"], "churn")
        ]
        webhook_id = str(listed[0]["id"])
        table = cli("list").stdout
        assert receiver in table and "version.stage, alias.*" in table and "enabled" in table
        shown = cli("show", webhook_id).stdout
        assert receiver in shown and "model churn" in shown
        assert json.loads(cli("show", webhook_id, "--json").stdout) == listed[0]
        updated = json.loads(
            cli("update", webhook_id, "--events", "*", "--description", "CI", "--json").stdout
        )
        assert (updated["events"], updated["description"]) == (["*"], "CI")
        disabled = json.loads(cli("disable", webhook_id, "--reason", "later", "--json").stdout)
        assert (disabled["enabled"], disabled["disabled_reason"]) == (False, "later")
        assert "disabled: later" in cli("list").stdout
        assert json.loads(cli("enable", webhook_id, "--json").stdout)["enabled"]
        rotated = json.loads(cli("rotate-secret", webhook_id, "--json").stdout)
        assert rotated["secret"].startswith("whsec_") and rotated["secret"] != secret
        assert secret not in json.dumps([listed, updated, disabled])
        again = cli("rotate-secret", webhook_id)
        assert again.stdout.strip().startswith("whsec_") and "not shown again" in again.stderr

        tested = cli("test", webhook_id, ok=False)  # nothing listens: exit 1, and why
        assert "no answer (connection_refused)" in tested.stdout
        probe = json.loads(cli("test", webhook_id, "--json", ok=False).stdout)
        assert (probe["status"], probe["delivered"]) == (None, False)
        assert json.loads(cli("redeliver", webhook_id, "--seq", "1", "--json").stdout) == {
            "queued": 1  # model.created, which '*' takes
        }
        queued = cli("redeliver", webhook_id, "--from", "1", "--to", "2")
        assert queued.stdout.startswith("queued 2 event(s)")
        log = json.loads(cli("deliveries", webhook_id, "--json").stdout)["items"]
        assert {(d["seq"], d["redelivery"]) for d in log} >= {(1, True), (2, True)}
        assert "(redelivery)" in cli("deliveries", webhook_id).stdout
        for wrong in (["--from", "1"], [], ["--seq", "1", "--to", "2"]):
            refused_args = cli("redeliver", webhook_id, *wrong, ok=False)
            assert "give --seq N, or --from A --to B" in refused_args.stderr

        unknown = cli("create", "--url", receiver, "--events", "version.promoted", ok=False)
        assert unknown.stderr.startswith("error: unknown event kind 'version.promoted'")
        assert unknown.stdout == ""
        refused = cli("create", "--url", "https://10.0.0.1/hook", "--events", "*", ok=False)
        assert "private" in refused.stderr and refused.stdout == ""

        deleted = json.loads(cli("delete", webhook_id, "--json").stdout)
        assert deleted == {"id": int(webhook_id), "deleted": True}
        missing = cli("show", webhook_id, ok=False)
        assert f"webhook {webhook_id} not found" in missing.stderr
        assert json.loads(cli("list", "--json").stdout) == {"items": []}
    finally:
        server.stop()


# -- docs/webhooks.md ---------------------------------------------------------------------------


def test_the_receiver_of_the_docs_verifies_signatures(tmp_path: Path) -> None:
    """The page's receiver, run as written (on a free port), against requests signed by an
    independent Standard Webhooks implementation."""
    root = Path(__file__).parent.parent
    page = (root / "docs" / "webhooks.md").read_text()
    code = page.split("## A receiver", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    script = root / "examples" / "webhook_receiver.py"
    assert code == script.read_text()  # the page shows the file the README's tour runs
    port = free_port()
    secret = new_secret()
    env = {**os.environ, "MODELYARD_WEBHOOK_SECRET": secret, "PORT": str(port)}
    receiver = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        body = json.dumps(
            {"type": "version.stage", "timestamp": "now", "data": {"event": {"subject": "churn/7"}}}
        )
        now = datetime.now(UTC)
        signed = Webhook(secret).sign("msg_1", now, body)
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signed,
        }
        url = f"http://127.0.0.1:{port}/hook"
        deadline = time.monotonic() + 10
        while True:  # until the receiver listens
            try:
                answer = httpx.post(url, content=body, headers=headers)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and receiver.poll() is None
                time.sleep(0.05)
        assert answer.status_code == 204
        forged = {**headers, "webhook-signature": Webhook(new_secret()).sign("msg_1", now, body)}
        assert httpx.post(url, content=body, headers=forged).status_code == 400
        assert httpx.post(url, content=body + " ", headers=headers).status_code == 400
    finally:
        receiver.terminate()
        out, _ = receiver.communicate(timeout=10)
    assert out.decode().splitlines() == ["version.stage churn/7"]


# -- the delivery log, redelivery and the test, for those who manage the webhook -----------------


def test_delivery_wrappers_are_for_managers_and_answers_for_admins(people: People) -> None:
    service = people.service
    service.outbound = OutboundPolicy.from_config(False, "127.0.0.1")
    service.deliveries.config = FAST
    hooks, maint = service.webhooks, people["maint-a"]
    answer = b"an internal page, for admins' eyes only"
    deliverer = Deliverer(service)
    deliverer.start()
    try:
        with receiving(lambda _: Reply(200, body=answer)) as receiver:
            sub, secret = hooks.create(
                maint, url=receiver.url(), events=["version.registered"], model="a"
            )
            _register(service, people.admin, "a")
            first = receiver.wait_for(1)[0]
            seq = json.loads(first.body)["data"]["event"]["seq"]
            delivered = wait_until(lambda: hooks.deliveries(people.admin, sub.id))
            assert [d.status for d in delivered] == ["delivered"]
            assert delivered[0].attempts[0].response_prefix == answer.decode()
            seen = hooks.deliveries(maint, sub.id)
            assert [(d.seq, d.status) for d in seen] == [(seq, "delivered")]
            assert [a.response_prefix for a in seen[0].attempts] == [None]
            assert seen[0].attempts[0].status == 200

            probe = hooks.send_test(maint, sub.id)
            assert (probe.status, probe.error_class) == (200, None)
            assert answer.decode() not in json.dumps(probe.as_dict())
            tested = receiver.wait_for(2)[1]
            message = Webhook(secret).verify(tested.body, tested.headers)
            assert message["type"] == "webhook.test"

            assert hooks.redeliver(maint, sub.id, seq) == 1
            again = receiver.wait_for(3)[2]
            assert again.headers["webhook-id"] == first.headers["webhook-id"]
            # Its attempt is recorded once the answer is back, just after the receiver has it.
            wait_until(lambda: all(d.attempts for d in hooks.deliveries(people.admin, sub.id)))

            wide = hooks.deliveries(people["wide-maint"], sub.id)  # manages model a's
            assert wide[0].attempts[0].response_prefix is None
            for name in ("maint-b", "viewer-a", "contrib-a", "maint-a-read-only"):
                with pytest.raises(NotFound) as refused:
                    hooks.deliveries(people[name], sub.id)
                with pytest.raises(NotFound):
                    hooks.redeliver(people[name], sub.id, seq)
                with pytest.raises(NotFound):
                    hooks.send_test(people[name], sub.id)
                assert refused.value.code == "webhook_not_found"
            assert len(receiver.received) == 3  # the refused ones sent nothing

            with TestClient(create_app(service, reach=Reach.LOOPBACK)) as client:
                path = f"/api/v1/webhooks/{sub.id}"
                as_maint, as_admin = _bearer(people, "maint-a"), _bearer(people, "root")
                log = client.get(f"{path}/deliveries", headers=as_maint).json()
                assert answer.decode() not in json.dumps(log)
                assert log["items"][-1]["attempts"][0]["response_prefix"] is None
                full = client.get(f"{path}/deliveries", params={"limit": 1}, headers=as_admin)
                assert full.json()["items"][0]["attempts"][0]["response_prefix"] == answer.decode()
                assert full.json()["next_before"] == full.json()["items"][0]["id"]
                tested_rest = client.post(f"{path}/test", headers=as_maint)
                assert tested_rest.json()["status"] == 200 and answer not in tested_rest.content
                queued = client.post(
                    f"{path}/redeliver", json={"first_seq": seq, "last_seq": seq}, headers=as_maint
                )
                assert queued.json() == {"queued": 1}
    finally:
        deliverer.stop()
