"""The UI's webhook pages on SQLite and PostgreSQL: the registry's and a model's lists, one
webhook, and the forms that create, change, disable, rotate and delete; each refusal and
each attack beside the rule it tests."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from modelyard.api import create_app
from modelyard.domain.access import PrincipalKind, Reach, Role
from modelyard.service import RegistryService
from modelyard.service.outbound import OutboundPolicy
from tests.test_lifecycle import People, people, register
from tests.test_web_workflow import Browser, counted, head, main

# TEST-NET-3, allowed as an admin allows an internal network: an IP literal, so nothing is
# resolved, and the app here delivers nothing.
RECEIVERS = "203.0.113.0/24"
RECEIVER = "https://203.0.113.7/hook"
SECRET = re.compile(r'id="webhook-secret">(whsec_[A-Za-z0-9+/=]+)<')


@dataclass
class Hooks:
    service: RegistryService
    people: People
    churn: int  # mia's webhook on churn
    fraud: int  # max's webhook on fraud
    registry: int  # alice's registry-wide webhook
    browsers: dict[str, Browser]

    def __getitem__(self, name: str) -> Browser:
        return self.browsers[name]


@pytest.fixture
def hooks(service: RegistryService) -> Iterator[Hooks]:
    """churn (mia maintains it, ds contributes, vic views) and fraud (max maintains it),
    a webhook on each and one registry-wide (alice, the admin); a browser for each."""
    service.outbound = OutboundPolicy.from_config(False, RECEIVERS)
    p = people(service)
    register(service, p.ds, 0.86)
    identity = service.identity
    identity.create_principal(p.admin, "vic", PrincipalKind.USER)
    identity.set_grant(p.admin, "vic", Role.VIEWER, model="churn")
    identity.create_principal(p.admin, "max", PrincipalKind.USER)
    identity.set_grant(p.admin, "max", Role.MAINTAINER, model="fraud")
    max_ = service.access.authenticate(identity.create_token(p.admin, principal="max").token)
    register(service, max_, 0.7, model="fraud")
    webhooks = service.webhooks
    churn, _ = webhooks.create(p.mia, url=RECEIVER, events=["version.*"], model="churn")
    fraud, _ = webhooks.create(max_, url=RECEIVER, events=["*"], model="fraud")
    everywhere, _ = webhooks.create(p.admin, url=RECEIVER, events=["version.stage"])
    browsers = {}
    with TestClient(create_app(service, reach=Reach.LOOPBACK)) as client:
        for name in ("alice", "ds", "mia", "vic", "max"):
            token = identity.create_token(p.admin, principal=name).token
            browsers[name] = Browser(TestClient(client.app), token)
        yield Hooks(service, p, churn.id, fraud.id, everywhere.id, browsers)


def ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'data-webhook="(\d+)"', page)]


# -- the lists ------------------------------------------------------------------------------


def test_an_admin_lists_every_webhook_and_a_maintainer_their_models(hooks: Hooks) -> None:
    everything = hooks["alice"].get("/webhooks")
    assert everything.status_code == 200
    assert sorted(ids(everything.text)) == sorted([hooks.churn, hooks.fraud, hooks.registry])
    assert 'action="/webhooks"' in everything.text  # the admin may add one here

    own = hooks["mia"].get("/models/churn/webhooks")
    assert own.status_code == 200 and ids(own.text) == [hooks.churn]
    assert RECEIVER in own.text and "version.*" in own.text
    assert 'name="model" value="churn"' in own.text  # the form adds one to churn
    model_page = hooks["mia"].get("/models/churn").text
    assert 'href="/models/churn/webhooks"' in model_page


def test_a_viewer_or_contributor_sees_no_webhook_and_no_form(hooks: Hooks) -> None:
    for who in ("vic", "ds"):
        browser = hooks[who]
        assert 'href="/models/churn/webhooks"' not in browser.get("/models/churn").text
        for path in ("/webhooks", "/models/churn/webhooks"):
            listing = browser.get(path)  # to them there are none
            assert listing.status_code == 200 and ids(listing.text) == [], (who, path)
            assert RECEIVER not in listing.text and 'action="/webhooks"' not in listing.text
        missing = browser.get(f"/webhooks/{hooks.churn}")
        assert missing.status_code == 404 and RECEIVER not in missing.text
        absent = browser.get("/webhooks/999999").text  # exactly what a missing one says
        assert missing.text == absent.replace("999999", str(hooks.churn))
    before = head(hooks.service)
    for action in ("disable", "rotate", "delete", "edit"):
        answer = hooks["ds"].post(
            f"/webhooks/{hooks.churn}/{action}",
            {"confirm": "yes", "first": "1", "url": RECEIVER, "events": "*"},
        )
        assert answer.status_code == 404 and "whsec_" not in answer.text, action
    created = hooks["vic"].post("/webhooks", {"model": "churn", "url": RECEIVER, "events": "*"})
    assert created.status_code in (403, 404) and "whsec_" not in created.text
    assert head(hooks.service) == before


def test_a_maintainer_of_one_model_cannot_see_or_touch_anothers_webhooks(hooks: Hooks) -> None:
    mia = hooks["mia"]
    assert ids(mia.get("/models/fraud/webhooks").text) == []
    assert ids(mia.get("/webhooks").text) == [hooks.churn]  # only what mia manages
    for webhook in (hooks.fraud, hooks.registry):
        page = mia.get(f"/webhooks/{webhook}")
        assert page.status_code == 404 and RECEIVER not in page.text
    before = head(hooks.service)
    for action in ("disable", "rotate", "delete", "edit"):
        answer = mia.post(
            f"/webhooks/{hooks.fraud}/{action}",
            {"confirm": "yes", "first": "1", "url": "https://203.0.113.9/x", "events": "*"},
        )
        assert answer.status_code == 404 and "whsec_" not in answer.text, action
    created = mia.post("/webhooks", {"model": "fraud", "url": RECEIVER, "events": "*"})
    assert created.status_code == 404 and "whsec_" not in created.text
    everywhere = mia.post("/webhooks", {"url": RECEIVER, "events": "*"})  # registry-wide
    assert everywhere.status_code == 403 and "whsec_" not in everywhere.text
    assert head(hooks.service) == before
    assert hooks.service.webhooks.get(hooks.people.admin, hooks.fraud).enabled


# -- create, and the secret shown once -----------------------------------------------------


def test_the_secret_is_shown_once_after_create_and_after_rotate(hooks: Hooks) -> None:
    mia = hooks["mia"]
    created = mia.post(
        "/webhooks",
        {"model": "churn", "url": RECEIVER, "events": "version.registered, alias.*"},
    )
    assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
    found = SECRET.search(created.text)
    assert found is not None
    secret = found.group(1)
    [new] = [
        h
        for h in hooks.service.webhooks.list(hooks.people.mia, model="churn")
        if h.id not in (hooks.churn,)
    ]
    assert new.events == ("version.registered", "alias.*")
    assert hooks.service.webhooks.secret_of(new.id) == secret
    for path in (f"/webhooks/{new.id}", "/models/churn/webhooks", "/journal", "/models/churn"):
        assert secret not in mia.get(path).text and secret not in hooks["alice"].get(path).text

    unconfirmed = mia.post(f"/webhooks/{new.id}/rotate", {})
    assert unconfirmed.status_code == 400
    rotated = mia.post(f"/webhooks/{new.id}/rotate", {"confirm": "yes"})
    assert rotated.status_code == 200
    again = SECRET.search(rotated.text)
    assert again is not None and again.group(1) != secret
    assert hooks.service.webhooks.secret_of(new.id) == again.group(1)
    assert again.group(1) not in mia.get(f"/webhooks/{new.id}").text
    journal = html.unescape(hooks["alice"].get("/journal").text)
    assert f"mia rotated the signing secret of webhook {new.id} of churn" in journal
    assert secret not in journal and again.group(1) not in journal


def test_a_mistyped_event_kind_or_a_private_address_is_refused_with_the_reason(
    hooks: Hooks,
) -> None:
    before = head(hooks.service)
    typo = hooks["mia"].post(
        "/webhooks", {"model": "churn", "url": RECEIVER, "events": "version.registerd"}
    )
    assert typo.status_code == 400 and "unknown event kind" in html.unescape(typo.text)
    private = hooks["mia"].post(
        "/webhooks", {"model": "churn", "url": "https://10.0.0.1/hook", "events": "*"}
    )
    assert private.status_code == 400 and "whsec_" not in private.text
    assert head(hooks.service) == before


# -- the webhook's page and its forms -------------------------------------------------------


def test_disable_enable_edit_and_delete_through_the_forms(hooks: Hooks) -> None:
    mia, here = hooks["mia"], f"/webhooks/{hooks.churn}"
    page = main(mia.get(here).text)
    for action in ("disable", "rotate", "edit", "delete"):
        assert f'action="{here}/{action}"' in page
    disabled = mia.post(f"{here}/disable", {})
    assert disabled.status_code == 303 and disabled.headers["location"] == (
        f"{here}?done=webhook_disabled"
    )
    assert not hooks.service.webhooks.get(hooks.people.mia, hooks.churn).enabled
    shown = mia.get(disabled.headers["location"]).text
    assert "nothing is sent until it is enabled again" in shown
    assert f'action="{here}/enable"' in shown
    assert mia.post(f"{here}/enable", {}).status_code == 303
    assert hooks.service.webhooks.get(hooks.people.mia, hooks.churn).enabled

    edited = mia.post(
        f"{here}/edit",
        {"url": "https://203.0.113.8/other", "events": "version.stage", "description": "deploy"},
    )
    assert edited.status_code == 303
    changed = hooks.service.webhooks.get(hooks.people.mia, hooks.churn)
    assert (changed.url, changed.events, changed.description) == (
        "https://203.0.113.8/other",
        ("version.stage",),
        "deploy",
    )
    assert mia.post(f"{here}/delete", {}).status_code == 400  # unconfirmed
    deleted = mia.post(f"{here}/delete", {"confirm": "yes"})
    assert deleted.headers["location"] == "/models/churn/webhooks?done=webhook_deleted"
    assert mia.get(here).status_code == 404
    journal = html.unescape(hooks["alice"].get("/journal").text)
    for said in (
        f"mia added webhook {hooks.churn} of churn: {RECEIVER} for version.*",
        f"alice added webhook {hooks.registry} (registry-wide): {RECEIVER} for version.stage",
        f"mia disabled webhook {hooks.churn} of churn",
        f"mia enabled webhook {hooks.churn} of churn",
        f"mia changed the description, events, url of webhook {hooks.churn} of churn",
        f"mia deleted webhook {hooks.churn} of churn (https://203.0.113.8/other)",
    ):
        assert said in journal


def test_a_read_only_token_manages_no_webhook_so_sees_none(hooks: Hooks) -> None:
    token = hooks.service.identity.create_token(
        hooks.people.admin, principal="mia", read_only=True
    ).token
    reader = Browser(TestClient(hooks["mia"].client.app), token)
    assert ids(reader.get("/models/churn/webhooks").text) == []
    assert reader.get(f"/webhooks/{hooks.churn}").status_code == 404
    assert reader.post(f"/webhooks/{hooks.churn}/disable", {}).status_code == 404
    assert hooks.service.webhooks.get(hooks.people.mia, hooks.churn).enabled


# -- CSRF ------------------------------------------------------------------------------------


def test_a_webhook_form_without_its_csrf_token_is_refused(hooks: Hooks) -> None:
    before = head(hooks.service)
    for path in (
        "/webhooks",
        *(f"/webhooks/{hooks.churn}/{a}" for a in ("disable", "rotate", "delete", "edit")),
    ):
        form = {"confirm": "yes", "url": RECEIVER, "events": "*", "model": "churn"}
        answer = hooks["mia"].post(path, form, csrf=False)
        assert answer.status_code == 403 and "whsec_" not in answer.text, path
    assert head(hooks.service) == before


# -- a fixed number of queries --------------------------------------------------------------


def test_the_pages_run_a_fixed_number_of_queries(hooks: Hooks) -> None:
    def count(who: str, path: str) -> int:
        hooks[who].get(path)
        with counted(hooks.service) as statements:
            assert hooks[who].get(path).status_code == 200
        return len(statements)

    paths = [("alice", "/webhooks"), ("mia", "/models/churn/webhooks")]
    few = [count(who, path) for who, path in paths]
    for n in range(5):
        hooks.service.webhooks.create(
            hooks.people.mia, url=f"{RECEIVER}/{n}", events=["*"], model="churn"
        )
    assert [count(who, path) for who, path in paths] == few
