"""The UI's workflow pages on SQLite and PostgreSQL: the approvals queue and its decisions,
the actions of the model and version pages, history, as-of and the journal, and
administration; each refusal and each attack beside the rule it tests."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text
from starlette.requests import Request

from modelyard.api import create_app
from modelyard.domain.access import PrincipalKind, Reach, Role, parse_token
from modelyard.domain.evidence import AttachmentIn
from modelyard.service import RegistryService
from modelyard.web.pages import PAGE_ROUTERS
from modelyard.web.render import environment
from tests.test_lifecycle import POLICY, People, people, register

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Browser:
    """One person's browser, signed in (with their token, through the sign-in form): the
    session and CSRF cookies are in its jar."""

    client: TestClient
    token: str

    def __post_init__(self) -> None:
        signed = self.client.post(
            "/signin", data={"token": self.token, "csrf": self.csrf()}, follow_redirects=False
        )
        assert signed.status_code == 303, signed.text

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, **kwargs)

    def csrf(self) -> str:
        found = CSRF.search(self.get("/signin").text)
        assert found is not None
        return found.group(1)

    def post(
        self,
        path: str,
        data: dict[str, str],
        *,
        csrf: bool = True,
        files: dict[str, Any] | None = None,
        **headers: str,
    ) -> Any:
        form = {**data, "csrf": self.csrf()} if csrf else data
        return self.client.post(
            path, data=form, files=files, headers=headers, follow_redirects=False
        )


@dataclass
class Story:
    service: RegistryService
    people: People
    request_id: int
    browsers: dict[str, Browser]

    def __getitem__(self, name: str) -> Browser:
        return self.browsers[name]


@dataclass(frozen=True)
class Told:
    """What the story's set-up leaves for the tests: its people, their tokens, the request."""

    people: People
    tokens: dict[str, str]
    request_id: int


def tell(service: RegistryService) -> Told:
    """churn/1 in production, churn/2 asked for production by ds (rita of team risk
    reviews), and a token for each person."""
    p = people(service)
    life = service.lifecycle
    register(service, p.ds, 0.86)
    life.apply_policy(p.mia, "churn", POLICY)
    life.promote(p.admin, "churn/1", "production", override="first release")
    register(service, p.ds, 0.87)
    opened = life.promote(p.ds, "churn/2", "production", comment="weekly retrain")
    assert opened.request is not None
    admin = service.identity
    admin.create_principal(p.admin, "vic", PrincipalKind.USER)
    admin.set_grant(p.admin, "vic", Role.VIEWER, model="churn")
    tokens = {
        name: admin.create_token(p.admin, principal=name).token
        for name in ("alice", "ds", "rita", "mia", "vic")
    }
    return Told(p, tokens, opened.request.id)


@pytest.fixture
def story(restored: Callable[[Callable[[RegistryService], Told]], Any]) -> Iterator[Story]:
    """The told story (built once per test process and backend, restored for each test),
    and a browser for each person."""
    service, told = restored(tell)
    with TestClient(create_app(service, reach=Reach.LOOPBACK)) as client:
        # Each person their own cookie jar, as each has their own browser.
        browsers = {
            name: Browser(TestClient(client.app), token) for name, token in told.tokens.items()
        }
        yield Story(service, told.people, told.request_id, browsers)


def head(service: RegistryService) -> int:
    with service.db.read() as tx:
        return tx.journal_head().seq


def stage(story: Story, number: int) -> str:
    return story.service.get_version("churn", number, caller=story.people.admin).stage


def main(page: str) -> str:
    return page[page.index("<main>") :]


# -- the approvals queue -------------------------------------------------------------------


def test_the_queue_lists_the_request_and_its_page_shows_each_rule_and_the_comparison(
    story: Story,
) -> None:
    queue = story["rita"].get("/requests")
    assert queue.status_code == 200
    assert f'href="/requests/{story.request_id}"' in queue.text and "churn/2" in queue.text

    page = story["rita"].get(f"/requests/{story.request_id}")
    assert page.status_code == 200
    body = html.unescape(main(page.text))
    for rule in ("metrics.auc >= 0.80", "metrics.auc >= current.metrics.auc - 0.005", "dataset"):
        assert f"<code>{rule}</code>" in body
    assert "current.metrics.auc = 0.86 (churn/1)" in body  # the actual values, rule by rule
    assert "churn/1</a> (now in production) beside churn/2" in body
    assert "+0.01" in body  # the metric's change against the occupant
    assert 'action="/requests/1/approve"' in body and "Reject" in body


def test_a_reviewer_approves_with_the_form_and_the_version_moves(story: Story) -> None:
    answer = story["rita"].post(
        f"/requests/{story.request_id}/approve", {"comment": "AUC holds; card reviewed"}
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/requests/{story.request_id}?done=executed"
    assert stage(story, 2) == "production" and stage(story, 1) == "archived"
    shown = story["rita"].get(answer.headers["location"])
    assert "Approved: the promotion was carried out." in shown.text
    assert "This request is executed" in shown.text

    history = html.unescape(story["ds"].get("/models/churn/history").text)
    assert "ds promoted churn/2 to production (approved by rita, request 1)" in history
    assert "churn/1 left production for archived (replaced by churn/2)" in history
    assert "rita approved request 1 for churn/2" in history


def test_the_requester_and_others_are_told_why_they_cannot_approve(story: Story) -> None:
    own = main(story["ds"].get(f"/requests/{story.request_id}").text)
    assert "You cannot approve this request: the requester cannot approve their own request." in (
        own
    )
    assert "/approve" not in own and "Withdraw the request" in own
    other = html.unescape(main(story["mia"].get(f"/requests/{story.request_id}").text))
    assert "approvals for production come from team 'risk'" in other and "/approve" not in other

    before = head(story.service)
    refused = story["ds"].post(f"/requests/{story.request_id}/approve", {})
    assert refused.status_code == 403
    assert "the requester cannot approve their own request" in refused.text
    assert head(story.service) == before and stage(story, 2) == "development"


def test_the_requester_withdraws_and_a_reviewer_rejects(story: Story) -> None:
    rejected = story["rita"].post(f"/requests/{story.request_id}/reject", {"comment": "no"})
    assert rejected.status_code == 303 and rejected.headers["location"].endswith("done=rejected")
    assert story.service.lifecycle.request(story.people.admin, story.request_id).status == (
        "rejected"
    )
    again = story["rita"].post(f"/requests/{story.request_id}/approve", {})
    assert again.status_code == 409 and "request 1 is rejected" in again.text


# -- actions and their refusals -----------------------------------------------------------

POSTS = [
    "/requests/1/approve",
    "/requests/1/reject",
    "/requests/1/cancel",
    "/models/churn/versions/2/promote",
    "/models/churn/rollback",
    "/models/churn/versions/2/archive",
    "/models/churn/versions/1/restore",
    "/models/churn/versions/2/delete",
    "/models/churn/aliases",
    "/models/churn/aliases/champion/delete",
    "/models/churn/versions/2/edit",
    "/models/churn/edit",
    "/journal/verify",
    "/admin/principals",
    "/admin/principals/vic/disable",
    "/admin/teams/risk/delete",
    "/admin/teams/risk/members",
    "/admin/tokens",
    "/admin/tokens/0123456789abcdef/revoke",
    "/admin/grants",
    "/admin/grants/remove",
    "/admin/users/vic/password",
    "/models/churn/versions/2/card",
    "/models/churn/versions/2/comments",
    "/models/churn/versions/2/attachments",
    "/requests/1/comments",
    "/webhooks",
    "/webhooks/1/edit",
    "/webhooks/1/disable",
    "/webhooks/1/enable",
    "/webhooks/1/rotate",
    "/webhooks/1/delete",
    "/webhooks/1/test",
    "/webhooks/1/redeliver",
]
FULL_FORM = {
    "stage": "production",
    "confirm": "yes",
    "alias": "champion",
    "version": "2",
    "description": "changed",
    "tags": "team=risk",
    "comment": "x",
    "kind": "user",
    "name": "eve",
    "principal": "vic",
    "role": "admin",
    "member": "vic",
    "action": "add",
    "password": "correct horse battery staple",
    "repeat": "correct horse battery staple",
    "card": "# Card",
    "body": "a comment",
}


def test_every_form_posted_without_its_csrf_token_is_refused_and_changes_nothing(
    story: Story,
) -> None:
    before = head(story.service)
    for path in POSTS:
        answer = story["alice"].post(path, FULL_FORM, csrf=False)
        assert answer.status_code == 403 and "did not come from this registry" in answer.text
        forged = story["alice"].client.post(path, data={**FULL_FORM, "csrf": "forged"})
        assert forged.status_code == 403, path
    assert head(story.service) == before


def test_every_post_route_of_the_ui_is_in_the_csrf_test() -> None:
    """A form added later is covered too: the list above is the app's POST routes."""
    routes = {
        getattr(route, "path", "")
        for router in PAGE_ROUTERS
        for route in router.routes
        if "POST" in (getattr(route, "methods", None) or ())
    }
    generic = {re.sub(r"\{[^}]+\}", "X", path) for path in routes}
    covered = {
        re.sub(
            r"/(churn|vic|risk|champion|0123456789abcdef|1|2)(?=/|$)",
            "/X",
            path,
        )
        for path in POSTS
    }
    assert "/requests/X/approve" in generic and "/admin/tokens" in generic
    assert generic - {"/signout", "/signin"} <= covered


def test_a_form_posted_from_another_origin_is_refused(story: Story) -> None:
    before = head(story.service)
    for path in ("/requests/1/approve", "/models/churn/versions/2/archive"):
        answer = story["rita"].post(path, FULL_FORM, Origin="https://evil.example")
        assert answer.status_code == 403 and "https://evil.example" in answer.text
        cross = story["rita"].post(path, FULL_FORM, **{"Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 403
    assert head(story.service) == before and stage(story, 2) == "development"


@pytest.mark.parametrize(
    "path",
    [
        "/models/churn/versions/2/promote",
        "/models/churn/versions/2/archive",
        "/models/churn/aliases",
        "/models/churn/rollback",
        "/models/churn/versions/2/edit",
    ],
)
def test_a_viewers_post_is_refused_by_the_service_and_changes_nothing(
    story: Story, path: str
) -> None:
    before = head(story.service)
    answer = story["vic"].post(path, {**FULL_FORM, "stage": "staging"})
    assert answer.status_code == 403
    assert "vic holds viewer" in html.unescape(answer.text)
    assert head(story.service) == before


def test_promote_opens_a_request_or_moves_at_once_as_the_policy_says(story: Story) -> None:
    opened = story["ds"].post("/models/churn/versions/2/promote", {"stage": "staging"})
    assert opened.status_code == 303 and opened.headers["location"].startswith("/requests/2?")
    register(story.service, story.people.ds, 0.88)
    moved = story["ds"].post("/models/churn/versions/3/promote", {"stage": "development"})
    assert moved.status_code == 409  # already there: the service's sentence, status kept
    assert "churn/3 is already in development" in moved.text


def test_destructive_actions_ask_for_confirmation(story: Story) -> None:
    before = head(story.service)
    unconfirmed = {k: v for k, v in FULL_FORM.items() if k != "confirm"}
    for path in ("/models/churn/versions/2/archive", "/models/churn/rollback"):
        answer = story["mia"].post(path, unconfirmed)
        assert answer.status_code == 400 and "I confirm" in answer.text
    story.service.set_alias("churn", "champion", 1, caller=story.people.mia)
    moved = story["mia"].post("/models/churn/aliases", {"alias": "champion", "version": "2"})
    assert moved.status_code == 400 and "protected alias" in moved.text
    assert head(story.service) == before + 1  # only the alias set directly above

    archived = story["mia"].post("/models/churn/versions/2/archive", {"confirm": "yes"})
    assert archived.status_code == 303 and stage(story, 2) == "archived"
    assert story["mia"].post("/models/churn/versions/2/restore", {}).status_code == 303
    assert stage(story, 2) == "development"
    alias = story["mia"].post(
        "/models/churn/aliases", {"alias": "champion", "version": "2", "confirm": "yes"}
    )
    assert alias.status_code == 303
    assert story.service.resolve("churn@champion", caller=story.people.mia).version == 2


def test_rollback_then_history_and_as_of(story: Story) -> None:
    before_approval = datetime.now(UTC)
    story["rita"].post(f"/requests/{story.request_id}/approve", {})
    rolled = story["mia"].post(
        "/models/churn/rollback", {"stage": "production", "confirm": "yes", "comment": "bad"}
    )
    assert rolled.status_code == 303 and rolled.headers["location"] == (
        "/models/churn?done=rolled_back"
    )
    assert stage(story, 1) == "production"
    history = html.unescape(story["vic"].get("/models/churn/history").text)
    assert "mia rolled churn@production back to churn/1 (from churn/2)" in history

    past = story["vic"].get("/models/churn/as-of", params={"at": before_approval.isoformat()})
    assert past.status_code == 200
    production = re.search(r"badge production\">production</span></td>\s*<td>(.*?)</td>", past.text)
    assert production is not None and ">churn/1<" in production.group(1)
    assert "churn/2" not in production.group(1)
    naive = story["vic"].get("/models/churn/as-of", params={"at": "2000-01-01T10:00"})
    assert naive.status_code == 200 and "empty" in naive.text  # UTC, before anything
    bad = story["vic"].get("/models/churn/as-of", params={"at": "yesterday"})
    assert bad.status_code == 400 and "is not a time" in html.unescape(bad.text)


def test_edit_tags_and_description_of_a_version(story: Story) -> None:
    edited = story["ds"].post(
        "/models/churn/versions/2/edit", {"description": "Weekly.\r\nRetrained.", "tags": "a=1\n"}
    )
    assert edited.status_code == 303
    version = story.service.get_version("churn", 2, caller=story.people.ds)
    assert version.description == "Weekly.\nRetrained." and version.tags == {"a": "1"}
    story["ds"].post("/models/churn/versions/2/edit", {"description": "Weekly.", "tags": ""})
    assert story.service.get_version("churn", 2, caller=story.people.ds).tags == {}
    bad = story["ds"].post("/models/churn/versions/2/edit", {"tags": "no equals sign"})
    assert bad.status_code == 400 and "key=value" in bad.text


PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


def test_evidence_through_the_forms_and_on_the_request_page(story: Story) -> None:
    attached = story["ds"].post(
        "/models/churn/versions/2/attachments",
        {"path": "eval/roc.png"},
        files={"file": ("roc.png", PNG, "image/png")},
    )
    assert attached.status_code == 303, attached.text
    assert attached.headers["location"].endswith("done=attached")
    evidence, p = story.service.evidence, story.people
    [found] = evidence.attachments(p.rita, "churn", 2)
    assert (found.path, found.size, found.media_type) == ("eval/roc.png", len(PNG), "image/png")
    assert b"".join(story.service.read_blob(found.sha256)) == PNG  # in the blob store
    unnamed = story["ds"].post(
        "/models/churn/versions/2/attachments", {}, files={"file": ("report.csv", b"a,b\n1,2\n")}
    )
    assert unnamed.status_code == 303
    assert [a.path for a in evidence.attachments(p.rita, "churn", 2)] == [
        "eval/roc.png",
        "report.csv",
    ]
    again = story["ds"].post(
        "/models/churn/versions/2/attachments",
        {"path": "eval/roc.png"},
        files={"file": ("roc.png", PNG)},
    )
    assert again.status_code == 409  # evidence is never replaced

    card = story["ds"].post("/models/churn/versions/2/card", {"card": "# Churn\r\n\nAUC 0.87"})
    assert card.status_code == 303
    assert evidence.card(p.rita, "churn", 2).text == "# Churn\n\nAUC 0.87"  # type: ignore[union-attr]
    said = story["vic"].post(f"/requests/{story.request_id}/comments", {"body": "Looks *good*"})
    assert said.status_code == 303 and said.headers["location"].endswith("done=commented")
    noted = story["vic"].post("/models/churn/versions/2/comments", {"body": "on the version"})
    assert noted.status_code == 303

    page = story["rita"].get(f"/requests/{story.request_id}").text
    assert 'href="/models/churn/versions/2/attachments/eval/roc.png">eval/roc.png</a>' in page
    assert "<h1>Churn</h1>" in page and "AUC 0.87" in page  # the card, rendered
    assert "Looks <em>good</em>" in page and "on the version" not in page  # the request's
    journal = html.unescape(story["alice"].get("/journal").text)
    assert "ds attached eval/roc.png to churn/2" in journal
    assert "ds set the card of churn/2 (revision" in journal
    assert "vic commented on request 1 for churn/2" in journal


def test_a_viewer_cannot_attach_and_sends_no_bytes(story: Story) -> None:
    before = head(story.service)
    refused = story["vic"].post(
        "/models/churn/versions/2/attachments", {}, files={"file": ("x.png", PNG)}
    )
    assert refused.status_code == 403 and "vic holds viewer" in html.unescape(refused.text)
    assert story["vic"].post("/models/churn/versions/2/card", {"card": "mine"}).status_code == 403
    assert head(story.service) == before
    assert story.service.evidence.attachments(story.people.rita, "churn", 2) == []


def test_hostile_text_is_escaped(story: Story) -> None:
    payloads = ['<script>alert("x")</script>', '<img src=x onerror="alert(1)">']
    p, life = story.people, story.service.lifecycle
    story.service.update_version(
        "churn", 2, caller=p.ds, description=payloads[1], tags={"note": payloads[0]}
    )
    story.service.evidence.set_card(p.ds, "churn", 2, payloads[0] + payloads[1])
    story.service.evidence.comment(
        p.rita, model="churn", request_id=story.request_id, body=payloads[1]
    )
    life.reject(p.rita, story.request_id, comment=payloads[0])
    opened = life.promote(p.ds, "churn/2", "production", comment=payloads[1])
    assert opened.request is not None
    for path in (
        "/requests?status=rejected",
        f"/requests/{story.request_id}",
        f"/requests/{opened.request.id}",
        "/models/churn/history",
        "/journal",
    ):
        page = story["alice"].get(path).text
        assert "<script>alert" not in page and "<img src=x" not in page, path


# -- the journal ---------------------------------------------------------------------------


def test_the_journal_is_for_admins_and_filters_by_actor_kind_model_and_time(story: Story) -> None:
    assert story["mia"].get("/journal").status_code == 403
    everything = story["alice"].get("/journal")
    assert everything.status_code == 200
    with story.service.db.read() as tx:
        checkpoint = str(tx.journal_head())
    assert checkpoint in everything.text  # the checkpoint to keep, as `journal head` prints

    def seqs(**query: str) -> list[int]:
        page = story["alice"].get("/journal", params=query)
        assert page.status_code == 200
        return [int(s) for s in re.findall(r'<td class="num">(\d+)</td>', page.text)]

    by_ds = seqs(actor="ds")
    events = story.service.events(caller=story.people.admin, limit=1000)
    assert by_ds == sorted((e.seq for e in events if e.actor == "ds"), reverse=True)
    opened = seqs(kind="request.opened", model="churn")
    assert opened == [e.seq for e in events if e.kind == "request.opened"]
    assert seqs(model="nothing") == []
    last = events[-1].time
    assert seqs(since=last.isoformat()) == [e.seq for e in events if e.time >= last][::-1]
    assert seqs(until="2000-01-01T00:00") == []
    bad = story["alice"].get("/journal", params={"kind": "nonsense"})
    assert bad.status_code == 400 and "unknown event kind" in bad.text


def test_the_journal_pages_backwards_from_the_head(story: Story) -> None:
    for number in range(3, 230):
        story.service.set_alias("churn", f"a{number}", 1, caller=story.people.mia)
    shown: list[int] = []
    path: str | None = "/journal"
    while path is not None:
        page = story["alice"].get(path).text
        shown += [int(s) for s in re.findall(r'<td class="num">(\d+)</td>', page)]
        older = re.search(r'before=(\d+)">Older', page)
        path = f"/journal?before={older.group(1)}" if older else None
    assert shown == list(range(head(story.service), 0, -1))  # every event once, in order

    newest = story["vic"].get("/models/churn/history").text
    back = re.search(r'history\?before=(\d+)">Older', newest)
    assert back is not None
    oldest = story["vic"].get(f"/models/churn/history?before={back.group(1)}").text
    assert "mia pointed churn@a3 at churn/1" in oldest and "churn@a3 " not in newest
    assert "Older" not in oldest and "ds registered churn/1" in oldest


def test_verify_chain_says_ok_then_names_the_break_after_a_row_is_tampered(story: Story) -> None:
    ok = story["alice"].post("/journal/verify", {})
    assert ok.status_code == 200 and "The chain holds" in ok.text
    checkpoint = re.search(r'<code class="checkpoint">([^<]+)</code>', ok.text)
    assert checkpoint is not None
    kept = story["alice"].post("/journal/verify", {"checkpoint": checkpoint.group(1)})
    assert "still holds checkpoint" in kept.text
    assert story["mia"].post("/journal/verify", {}).status_code == 403

    with story.service.db.engine.begin() as conn:
        conn.execute(text("UPDATE events SET actor = 'mallory' WHERE seq = 3"))
    broken = story["alice"].post("/journal/verify", {})
    assert broken.status_code == 200 and "The chain is broken at event 3" in broken.text
    assert "The chain holds" not in broken.text


# -- administration ------------------------------------------------------------------------


def test_administration_is_for_admins(story: Story) -> None:
    assert story["mia"].get("/admin").status_code == 403
    before = head(story.service)
    for path in ("/admin/principals", "/admin/grants", "/admin/tokens"):
        assert story["mia"].post(path, FULL_FORM).status_code == 403
    assert head(story.service) == before
    page = story["alice"].get("/admin")
    assert page.status_code == 200
    for shown in ("rita", "risk", "vic", "registry-wide"):
        assert shown in page.text


def test_a_new_tokens_secret_is_shown_once(story: Story) -> None:
    answer = story["alice"].post(
        "/admin/tokens", {"principal": "vic", "name": "laptop", "read_only": "yes"}
    )
    assert answer.status_code == 201 and answer.headers["cache-control"] == "no-store"
    found = re.search(r'id="token-secret">(myd_[0-9a-f]{16}_[A-Za-z0-9_-]{43})<', answer.text)
    assert found is not None
    secret = found.group(1)
    caller = story.service.access.authenticate(secret)
    assert caller.name == "vic" and caller.read_only
    listing = story["alice"].get("/admin").text
    parts = parse_token(secret)  # the random part may itself hold "_": not split by hand
    assert secret not in listing and parts.token_id in listing  # its id, never the secret
    assert parts.secret not in listing

    revoked = story["alice"].post(f"/admin/tokens/{caller.token_id}/revoke", {"confirm": "yes"})
    assert revoked.status_code == 303
    assert story.service.identity.tokens(story.people.admin, "vic")[0].revoked_at is not None


def test_users_teams_members_and_grants_through_the_forms(story: Story) -> None:
    alice = story["alice"]
    assert alice.post("/admin/principals", {"kind": "user", "name": "eve"}).status_code == 303
    assert alice.post("/admin/principals", {"kind": "team", "name": "ops"}).status_code == 303
    added = alice.post("/admin/teams/ops/members", {"member": "eve", "action": "add"})
    assert added.headers["location"] == "/admin?done=member_added"
    granted = alice.post("/admin/grants", {"principal": "eve", "role": "reader", "model": "churn"})
    assert granted.status_code == 303
    identity, admin = story.service.identity, story.people.admin
    assert ("eve", "reader") in {(g.principal, g.role.label) for g in identity.grants(admin)}
    assert identity.get_principal(admin, "ops", PrincipalKind.TEAM).members == ("eve",)
    twice = alice.post("/admin/principals", {"kind": "user", "name": "eve"})
    assert twice.status_code == 409 and "already exists" in twice.text

    removed = alice.post("/admin/grants/remove", {"principal": "eve", "model": "churn"})
    assert removed.status_code == 400  # unconfirmed
    alice.post("/admin/grants/remove", {"principal": "eve", "model": "churn", "confirm": "yes"})
    assert "eve" not in {g.principal for g in identity.grants(admin)}
    alice.post("/admin/teams/ops/members", {"member": "eve", "action": "remove"})
    alice.post("/admin/principals/eve/disable", {"kind": "user", "confirm": "yes"})
    assert identity.get_principal(admin, "eve", PrincipalKind.USER).disabled
    alice.post("/admin/teams/ops/delete", {"confirm": "yes"})
    assert "ops" not in {t.name for t in identity.principals(admin, PrincipalKind.TEAM)}
    differ = alice.post("/admin/users/vic/password", {"password": "a long pass 1", "repeat": "x"})
    assert differ.status_code == 400 and "the two passwords differ" in differ.text
    chosen = {"password": "correct horse battery staple", "repeat": "correct horse battery staple"}
    assert alice.post("/admin/users/vic/password", chosen).status_code == 303
    assert story.service.identity.verify_password("vic", chosen["password"]).name == "vic"
    page = html.unescape(alice.get("/journal").text)
    assert "alice added eve to team ops" in page and "alice granted eve reader on churn" in page


# -- a fixed number of queries whatever the rows --------------------------------------------


@contextmanager
def counted(service: RegistryService) -> Iterator[list[str]]:
    """Every statement run through the service's engine while the block runs (on SQLite
    also those the hot paths run on the DBAPI cursor directly)."""
    engine = service.db.engine
    statements: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def traced(dbapi: Any, record: Any, proxy: Any) -> None:
        dbapi.set_trace_callback(statements.append)

    def untraced(dbapi: Any, record: Any) -> None:
        dbapi.set_trace_callback(None)

    sqlite = service.db.is_sqlite
    if sqlite:
        event.listen(engine, "checkout", traced)
        event.listen(engine, "checkin", untraced)
    else:
        event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        if sqlite:
            event.remove(engine, "checkout", traced)
            event.remove(engine, "checkin", untraced)
        else:
            event.remove(engine, "before_cursor_execute", before)


def queries(story: Story, who: str, path: str) -> int:
    story[who].get(path)  # warm: caches and the CSRF cookie
    with counted(story.service) as statements:
        assert story[who].get(path).status_code == 200
    return len(statements)


def grow(story: Story) -> None:
    """More of every row the pages list: requests, events, versions, aliases."""
    p = story.people
    for auc in (0.9, 0.91, 0.92):
        number = register(story.service, p.ds, auc)
        story.service.lifecycle.promote(p.ds, f"churn/{number}", "staging")
        story.service.set_alias("churn", f"try{number}", number, caller=p.mia)
        story.service.identity.create_principal(p.admin, f"user{number}", PrincipalKind.USER)
        story.service.identity.create_token(p.admin, principal=f"user{number}")
        story.service.identity.set_grant(p.admin, f"user{number}", Role.VIEWER)
        body = f"comment {number}".encode()
        evidence = AttachmentIn(f"eval/{number}.txt", len(body), sha256(body).hexdigest(), body)
        story.service.evidence.attach(p.ds, "churn", 2, [evidence])
        story.service.evidence.comment(p.rita, model="churn", request_id=1, body=body.decode())


@pytest.mark.parametrize(
    ("who", "path"),
    [
        ("rita", "/requests"),
        ("rita", "/requests/1"),
        ("vic", "/models/churn/history"),
        ("vic", "/models/churn/as-of?at=2100-01-01T00:00"),
        ("alice", "/journal"),
        ("alice", "/admin"),
    ],
)
def test_each_page_runs_a_fixed_number_of_queries(story: Story, who: str, path: str) -> None:
    few = queries(story, who, path)
    grow(story)
    assert queries(story, who, path) == few


def test_pages_stay_small(story: Story) -> None:
    grow(story)
    for who, path in (("rita", "/requests"), ("rita", "/requests/1"), ("alice", "/journal")):
        assert len(story[who].get(path).content) < 150_000


# -- the action partials offer what access control allows ----------------------------------


def partial(story: Story, who: str, template: str, **context: Any) -> str:
    """A partial of the model or version page rendered for ``who``, as the page does."""
    token = story[who].token
    app = story[who].client.app
    scope = {
        "type": "http",
        "app": app,
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {token}".encode())],
    }
    return environment.get_template(template).render(
        request=Request(scope), csrf="token", **context
    )


FORMS = {
    "promote": "/promote",
    "archive": "/archive",
    "edit": "/edit",
    "delete": "/delete",
    "card": "/card",
    "attach": "/attachments",
    "comment": "/comments",
}


@pytest.mark.parametrize(
    ("who", "offered"),
    [
        ("vic", {"comment"}),
        ("ds", {"promote", "edit", "card", "attach", "comment"}),
        ("mia", set(FORMS)),
    ],
)
def test_the_version_page_offers_each_form_only_to_whom_may_use_it(
    story: Story, who: str, offered: set[str]
) -> None:
    version = story.service.get_version("churn", 2, caller=story.people.admin)
    shown = partial(story, who, "actions/version.html", page_version=version)
    found = {form for form, action in FORMS.items() if f'/versions/2{action}"' in shown}
    assert found == offered
    if "promote" in offered:
        assert '<option value="production">' in shown and '"development">' not in shown


@pytest.mark.parametrize(
    ("who", "offered"),
    [("vic", set()), ("ds", {"aliases", "edit"}), ("mia", {"rollback", "aliases", "edit"})],
)
def test_the_model_page_offers_each_form_only_to_whom_may_use_it(
    story: Story, who: str, offered: set[str]
) -> None:
    model = story.service.get_model("churn", caller=story.people.admin)
    shown = partial(story, who, "actions/model.html", model=model)
    found = {form for form in ("rollback", "aliases", "edit") if f'churn/{form}"' in shown}
    assert found == offered
    assert 'href="/models/churn/history"' in shown  # everyone reads the history
