"""The UI's webhook pages on SQLite and PostgreSQL: the registry's and a model's lists, one
webhook with its delivery log, and the forms that create, change, test, redeliver, rotate
and delete; each refusal and each attack beside the rule it tests."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from modelyard.api import create_app
from modelyard.domain.access import PrincipalKind, Reach, Role
from modelyard.domain.delivery import DELIVERED, Delivery
from modelyard.service import RegistryService
from modelyard.service.delivery import Deliverer
from modelyard.service.outbound import OutboundPolicy
from modelyard.web.pages.webhooks import DELIVERIES_PER_PAGE
from tests.receivers import Reply, receiving
from tests.test_delivery import FAST, wait_until
from tests.test_lifecycle import People, people, register
from tests.test_web_workflow import Browser, counted, head, main

# TEST-NET-3, allowed as an admin allows an internal network: an IP literal, so nothing is
# resolved, and the app here delivers nothing (only the test action sends, to loopback).
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
    service.outbound = OutboundPolicy.from_config(False, f"{RECEIVERS},127.0.0.1")
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
    for action in ("disable", "rotate", "delete", "test", "redeliver", "edit"):
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
    for action in ("disable", "rotate", "delete", "test", "redeliver", "edit"):
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
    for action in ("test", "redeliver", "disable", "rotate", "edit", "delete"):
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


# -- the delivery log, the test, redelivery --------------------------------------------------

TRACE = b"Traceback: db01.internal password=hunter2"  # what a receiver's error page may say


def test_the_log_shows_each_attempt_and_the_answer_only_to_admins(hooks: Hooks) -> None:
    """A receiver failing once with an internal error page, then taking the retry: every
    attempt's status, latency and error class for the maintainer; the page's prefix for
    admins only. Then a redelivery through the row's button, and a test send."""
    service = hooks.service
    service.deliveries.config = FAST
    answers = iter([Reply(503, body=TRACE)])
    with receiving(lambda _: next(answers, Reply(body=b"RECEIVER-BODY"))) as receiver:
        hook, _ = service.webhooks.create(
            hooks.people.mia, url=receiver.url(), events=["version.registered"], model="churn"
        )
        deliverer = Deliverer(service)
        deliverer.start()
        try:
            number = register(service, hooks.people.ds, 0.9)
            receiver.wait_for(2)
            [delivered] = wait_until(
                lambda: [d for d in log(hooks, hook.id) if d.status == DELIVERED]
            )
            here = f"/webhooks/{hook.id}"
            mine = html.unescape(hooks["mia"].get(here).text)
            row = re.search(rf'data-seq="{delivered.seq}">(.*?)</tr>', mine, re.S)
            assert row is not None
            assert "delivered" in row.group(1) and "503" in row.group(1) and "200" in row.group(1)
            assert "server_error" in row.group(1) and " ms" in row.group(1)
            assert "db01.internal" not in mine and 'data-test="response-prefix"' not in mine
            admins = html.unescape(hooks["alice"].get(here).text)
            assert TRACE.decode() in admins and "RECEIVER-BODY" in admins

            again = hooks["mia"].post(f"{here}/redeliver", {"first": str(delivered.seq)})
            assert again.status_code == 303 and again.headers["location"] == (
                f"{here}?done=redelivered"
            )
            resent = receiver.wait_for(3)[2]
            assert json.loads(resent.body)["data"]["version"]["version"] == number
            assert resent.headers["webhook-id"] == delivered.message_id
            nothing = hooks["mia"].post(f"{here}/redeliver", {"first": "1", "last": "2"})
            assert nothing.headers["location"] == f"{here}?done=redelivered_none"
            backwards = hooks["mia"].post(f"{here}/redeliver", {"first": "9", "last": "3"})
            assert backwards.status_code == 400

            tested = hooks["mia"].post(f"{here}/test", {})
            assert tested.status_code == 200
            result = re.search(r'data-test="test-result">(.*?)</p>', tested.text, re.S)
            assert result is not None and "answered 200 in" in result.group(1)
            assert "RECEIVER-BODY" not in tested.text  # the status and latency, never the body
            assert json.loads(receiver.wait_for(4)[3].body)["type"] == "webhook.test"
        finally:
            deliverer.stop()


def test_a_test_to_a_receiver_that_is_down_says_so(hooks: Hooks) -> None:
    with receiving() as receiver:
        url = receiver.url()
    hook, _ = hooks.service.webhooks.create(hooks.people.mia, url=url, events=["*"], model="churn")
    tested = hooks["mia"].post(f"/webhooks/{hook.id}/test", {})
    result = re.search(r'data-test="test-result">(.*?)</p>', tested.text, re.S)
    assert result is not None and "no answer" in result.group(1)
    assert "connection_refused" in result.group(1)


def test_the_log_pages_backwards_newest_first(hooks: Hooks) -> None:
    service, admin = hooks.service, hooks.people.admin
    hook, _ = service.webhooks.create(admin, url=RECEIVER, events=["*"])
    queued = sum(service.webhooks.redeliver(admin, hook.id, 1, head(service)) for _ in "abc")
    assert queued > DELIVERIES_PER_PAGE
    shown: list[int] = []
    path: str | None = f"/webhooks/{hook.id}"
    while path is not None:
        page = hooks["alice"].get(path).text
        rows = re.findall(r'data-test="delivery-row" data-seq="(\d+)"', page)
        assert 0 < len(rows) <= DELIVERIES_PER_PAGE
        shown += [int(seq) for seq in rows]
        older = re.search(r'\?before=(\d+)">Older', page)
        path = f"/webhooks/{hook.id}?before={older.group(1)}" if older else None
    assert shown == [d.seq for d in log(hooks, hook.id, limit=1000)]  # each once, in order


def log(hooks: Hooks, webhook_id: int, limit: int = 100) -> list[Delivery]:
    return hooks.service.webhooks.deliveries(hooks.people.admin, webhook_id, limit=limit)


# -- CSRF ------------------------------------------------------------------------------------


def test_a_webhook_form_without_its_csrf_token_is_refused(hooks: Hooks) -> None:
    before = head(hooks.service)
    for path in (
        "/webhooks",
        *(f"/webhooks/{hooks.churn}/{a}" for a in ("disable", "rotate", "delete", "test")),
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

    paths = [
        ("alice", "/webhooks"),
        ("mia", "/models/churn/webhooks"),
        ("mia", f"/webhooks/{hooks.churn}"),
        ("alice", f"/webhooks/{hooks.churn}"),
    ]
    service, mia = hooks.service, hooks.people.mia
    service.webhooks.redeliver(mia, hooks.churn, 1, head(service))  # churn/1's registration
    few = [count(who, path) for who, path in paths]
    for n in range(5):
        service.webhooks.create(mia, url=f"{RECEIVER}/{n}", events=["*"], model="churn")
        register(service, hooks.people.ds, 0.9 + n / 100)
    service.webhooks.redeliver(mia, hooks.churn, 1, head(service))
    assert len(log(hooks, hooks.churn)) == 7
    assert [count(who, path) for who, path in paths] == few
