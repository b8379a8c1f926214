"""The UI in a real browser (Debian's chromium driven by Playwright) against a real server,
on SQLite and PostgreSQL: the churn story from sign-in to rollback, what a viewer may not
do, hostile content that must stay inert, and forms posted without their token or from
another origin.

Nothing here sleeps: Playwright's ``expect`` waits for what a page must show, and every
check that nothing happened (no dialog, no script, no request elsewhere) is read after the
page has loaded. One server per backend serves the whole module (starting one costs
seconds); each test makes models of its own and opens its own browser contexts.

``MODELYARD_SCREENSHOTS=DIR`` (or ``python -m tests.screenshots``) saves the main pages
of the story as PNGs there: docs/screenshots/ holds the README's.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    Request,
    expect,
)
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import HTMLResponse
from starlette.routing import Route

import modelyard
from modelyard.config import Settings, open_service
from tests.conftest import BACKENDS, LiveServer, emptied, on, serving, sign_in
from tests.receivers import Reply, receiving

NewContext = Callable[..., BrowserContext]
PASSWORD = "correct horse battery staple"
SCREENSHOTS = os.environ.get("MODELYARD_SCREENSHOTS")

POLICY = """
promotion:
  production:
    require:
      - metrics.auc >= 0.80
    approvals: {count: 1, team: risk}
"""


# -- the registry and its people ------------------------------------------------------------


@dataclass
class Registry:
    """A running server with an admin and four people, each with a password and a token."""

    server: LiveServer
    tokens: dict[str, str]
    work: Path
    contexts: list[BrowserContext] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def sdk(self, user: str) -> modelyard.Registry:
        return modelyard.connect(self.url, token=self.tokens[user])


PEOPLE = {
    "ds": "contributor",  # registers and asks for promotions
    "rita": "viewer",  # in team risk: reviews and approves
    "mia": "maintainer",  # rolls back
    "vic": "viewer",  # sees, may not download
}


@pytest.fixture(scope="module", params=BACKENDS)
def registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """One server per backend for the module, with alice (admin) and PEOPLE, who have a
    role on every model (registry-wide) and the team risk (rita)."""
    database_url = None
    if request.param == "postgresql":
        database_url = emptied(request.getfixturevalue("pg_database"))
    work = tmp_path_factory.mktemp(f"browser-{request.param}")
    # Loopback receivers allowed (http too), as an admin allows an internal network.
    server = LiveServer(
        work / "server-data", database_url, env={"MODELYARD_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"}
    )
    service = open_service(Settings(data_dir=server.data_dir, database_url=database_url))
    try:
        admin = service.identity.bootstrap_admin("alice", operator="browser-tests").token
    finally:
        service.close()
    server.start()
    tokens = {"alice": admin}
    with modelyard.connect(server.url, token=admin) as reg:
        reg.create_team("risk")
        for name, role in PEOPLE.items():
            reg.create_user(name)
            reg.grant(role, name)
            reg.set_password(name, PASSWORD)
            tokens[name] = reg.create_token(principal=name).token
        reg.add_team_member("risk", "rita")
        reg.set_password("alice", PASSWORD)
    try:
        yield Registry(server, tokens, work)
    finally:
        server.stop()


@pytest.fixture
def person(registry: Registry, browser_context: NewContext) -> Callable[[str], tuple[Page, Watch]]:
    """``person("rita")``: a page in a new browser context, signed in through /signin."""

    def open_as(user: str) -> tuple[Page, Watch]:
        page, watch = watched(browser_context(registry.url), registry.url)
        sign_in(page, user, PASSWORD)
        return page, watch

    return open_as


# -- what a page must not do ----------------------------------------------------------------


@dataclass
class Watch:
    """What a page did that it must not: dialogs, script errors, requests to other origins,
    requests for a stolen cookie."""

    origin: str
    confirmations: list[str] = field(default_factory=list)  # expected: accepted, not noted
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> Page:
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", self._request)
        page.on("console", self._console)
        return page

    def _dialog(self, dialog: Dialog) -> None:
        if dialog.type == "confirm" and dialog.message in self.confirmations:
            self.confirmations.remove(dialog.message)
            dialog.accept()
            return
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.console.append(message.text)

    @property
    def elsewhere(self) -> list[str]:
        return [u for u in self.requests if not u.startswith((f"{self.origin}/", "data:"))]

    def assert_quiet(self) -> None:
        assert self.dialogs == [], self.dialogs
        assert self.errors == [], self.errors
        assert self.elsewhere == [], self.elsewhere


def watched(context: BrowserContext, origin: str) -> tuple[Page, Watch]:
    watch = Watch(origin)
    return watch.attach(context.new_page()), watch


def screenshot(page: Page, name: str, anchor: str | None = None) -> None:
    """Save the viewport for the docs when asked (MODELYARD_SCREENSHOTS=DIR), scrolled to
    ``anchor`` (past the forms above it)."""
    if SCREENSHOTS:
        if anchor:
            page.locator(anchor).evaluate("element => element.scrollIntoView()")
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))


def image_loaded(page: Page, selector: str) -> None:
    """The image is shown: decoded, with a width (a broken <img> has naturalWidth 0)."""
    image = page.locator(selector).first
    expect(image).to_be_visible()
    page.wait_for_function("img => img.complete", arg=image.element_handle())  # decoded or failed
    assert image.evaluate("img => img.naturalWidth") > 0, selector


# -- files a data scientist has at hand -----------------------------------------------------


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG of one colour: a few hundred bytes of zlib, no imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def write_tree(root: Path, files: dict[str, bytes | str]) -> Path:
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


CARD = """# Churn model, week {week}

Predicts which customers cancel within 30 days. Gradient-boosted trees on the
customer table of week {week}.

| metric | value |
| --- | --- |
| auc | {auc} |
"""


def register_week(registry: Registry, model: str, week: int, auc: float) -> int:
    """One weekly retrain: the model's files with its card, and the evaluation's plots and
    tables as attachments."""
    root = registry.work / f"{model}-w{week}"
    write_tree(
        root / "model",
        {
            "model.pkl": f"gradient boosted trees, week {week}".encode() * 50,
            "metrics.json": f'{{"auc": {auc}}}',
            "MODEL_CARD.md": CARD.format(week=week, auc=auc),
        },
    )
    write_tree(
        root / "eval",
        {
            "confusion.png": png(40, 30, (31, 78, 121)),
            "roc.png": png(60, 40, (200, 120, 20)),
            "metrics.csv": f"threshold,precision,recall\n0.5,0.8{week},0.7{week}\n",
        },
    )
    with registry.sdk("ds") as reg:
        version = reg.register(
            model,
            root / "model",
            attachments=[root / "eval"],
            metrics={"auc": auc},
            params={"max_depth": 5 + week % 3},
            tags={"team": "growth"},
            dataset=f"customers@2026-w{week}",
            description=f"Weekly retrain, week {week}.",
        )
    return version.version


def promote_through_the_sdk(registry: Registry, reference: str) -> None:
    """ds asks, rita approves: the way earlier weeks reached production."""
    with registry.sdk("ds") as ds, registry.sdk("rita") as rita:
        promotion = ds.promote(reference, "production", comment="weekly retrain")
        assert promotion.request is not None
        rita.approve(promotion.request.id, comment="metrics hold")


# -- signing in and out ----------------------------------------------------------------------


def test_a_person_signs_in_with_a_password_and_out_again(
    registry: Registry, browser_context: NewContext
) -> None:
    context = browser_context(registry.url)
    page, watch = watched(context, registry.url)
    page.goto("/requests")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Frequests$"))
    screenshot(page, "signin")
    page.fill("#signin-user", "rita")
    page.fill("#signin-password", "not the password")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator('[role="alert"]')).to_be_visible()
    page.fill("#signin-password", PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(f"{registry.url}/requests")  # where rita was going
    expect(page.locator("header .who .user")).to_have_text("rita")
    session = next(c for c in context.cookies() if c["name"] == "myd_session")
    assert session["httpOnly"] and session["sameSite"] in ("Lax", "Strict")
    assert "myd_session" not in page.evaluate("document.cookie")  # no script reads it
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("header .who")).to_contain_text("Sign in")
    # The old cookie is worthless: the session ended on the server.
    context.add_cookies([session])
    page.goto("/requests")
    expect(page).to_have_url(re.compile(r"/signin"))
    watch.assert_quiet()


@on("sqlite", through="registry")
def test_the_api_docs_render_this_servers_openapi_offline(
    registry: Registry, browser_context: NewContext
) -> None:
    """Swagger UI 4 answered "Unable to render this definition" to FastAPI's OpenAPI 3.1."""
    page, watch = watched(browser_context(registry.url), registry.url)
    page.goto("/docs")
    expect(page.get_by_text("/api/v1/resolve/{reference}").first).to_be_visible()
    expect(page.get_by_text("Unable to render this definition")).to_have_count(0)
    watch.assert_quiet()


# -- the churn story ------------------------------------------------------------------------


@on("sqlite", through="registry")  # its pages run on PostgreSQL in test_web_*
def test_the_churn_story_from_search_to_rollback(
    registry: Registry, person: Callable[[str], tuple[Page, Watch]]
) -> None:
    first = register_week(registry, "churn", 10, 0.86)
    with registry.sdk("alice") as admin:
        admin.apply_policy("churn", POLICY)
    promote_through_the_sdk(registry, f"churn/{first}")
    promote_through_the_sdk(registry, f"churn/{register_week(registry, 'churn', 11, 0.88)}")
    challenger = register_week(registry, "churn", 12, 0.91)
    before_approval = datetime.now(UTC)

    # A data scientist signs in, searches, and opens this week's version.
    ds, ds_watch = person("ds")
    ds.goto("/")
    screenshot(ds, "models")
    ds.fill("#filter", 'name like "chu%"')
    ds.get_by_role("button", name="Search").click()
    row = ds.locator('[data-test="model-row"][data-model="churn"]')
    expect(row).to_be_visible()
    row.get_by_role("link", name="churn", exact=True).click()
    expect(ds).to_have_url(f"{registry.url}/models/churn")
    expect(ds.locator('[data-test="card"] h1')).to_contain_text("week 11")  # production's
    expect(ds.locator('[data-test="metric-chart-svg"]')).to_be_visible()
    expect(ds.locator('[data-test="production-band"]').first).to_be_attached()
    screenshot(ds, "model", anchor="#card")
    ds.locator(f'[data-test="version-row"][data-version="{challenger}"] a').first.click()
    expect(ds).to_have_url(f"{registry.url}/models/churn/versions/{challenger}")
    expect(ds.locator('[data-test="card"] h1')).to_contain_text("week 12")
    image_loaded(ds, 'img[src*="confusion.png"]')
    screenshot(ds, "version", anchor="#card")

    # Compare with production, then ask for the promotion.
    ds.locator('[data-test="compare-link"]').click()
    expect(ds.locator('[data-test="compare-metrics"]')).to_contain_text("auc")
    screenshot(ds, "compare")
    ds.go_back()
    ds.locator('form[action$="/promote"] select[name="stage"]').select_option("production")
    ds.locator('form[action$="/promote"] textarea[name="comment"]').fill("AUC up 0.03")
    ds.locator('form[action$="/promote"] button[type="submit"]').click()
    expect(ds).to_have_url(re.compile(r"/requests/[0-9]+\?done=request_opened$"))
    expect(ds.locator("h1").first).to_contain_text(f"churn/{challenger}")
    request_url = ds.url.split("?")[0]
    expect(ds.locator(".why-not")).to_be_visible()  # the requester may not approve
    expect(ds.get_by_role("button", name="Approve")).to_have_count(0)
    ds_watch.assert_quiet()

    # The reviewer reads the evaluation and the evidence, and approves.
    rita, rita_watch = person("rita")
    rita.goto("/requests")
    queued = rita.locator("tr", has_text=f"churn/{challenger}")
    queued.get_by_role("link", name=re.compile(r"^#[0-9]+$")).click()
    expect(rita).to_have_url(request_url)
    expect(rita.locator("section.workflow").nth(1)).to_contain_text("metrics.auc")
    evidence = rita.locator("section.evidence")
    expect(evidence).to_contain_text("week 12")  # the candidate's card
    expect(evidence.get_by_role("link", name="confusion.png")).to_be_visible()
    screenshot(rita, "request")
    evidence.get_by_role("link", name="The version's page").click()  # the plots, inline
    image_loaded(rita, 'img[src*="confusion.png"]')
    rita.go_back()
    rita.locator("#decision-comment").fill("Plots look right.")
    rita.get_by_role("button", name="Approve").click()
    expect(rita.locator("body")).to_contain_text("executed")
    rita_watch.assert_quiet()
    with registry.sdk("rita") as reg:
        assert reg.resolve("churn@production").version == challenger
    after_approval = datetime.now(UTC)

    # The maintainer rolls back; history and the as-of view tell what happened.
    mia, mia_watch = person("mia")
    mia.goto("/models/churn")
    rollback = mia.locator('form[action$="/rollback"]')
    rollback.locator('select[name="stage"]').select_option("production")
    rollback.locator('textarea[name="comment"]').fill("alerts from the canary")
    rollback.locator('input[name="confirm"]').check()
    mia_watch.confirmations.append("Roll back churn?")  # the script asks first
    rollback.locator('button[type="submit"]').click()
    expect(mia).to_have_url(f"{registry.url}/models/churn?done=rolled_back")
    assert mia_watch.confirmations == []
    with registry.sdk("mia") as reg:
        assert reg.resolve("churn@production").version == challenger - 1
    mia.goto("/models/churn/history")
    expect(mia.locator("main")).to_contain_text(
        f"mia rolled churn@production back to churn/{challenger - 1}"
    )
    # What production held then: week 11 before the approval, week 12 until the rollback.
    week11, week12 = challenger - 1, challenger
    for moment, held, not_held in (
        (before_approval, week11, week12),
        (after_approval, week12, week11),
    ):
        mia.goto(f"/models/churn/as-of?at={moment.isoformat()}".replace("+", "%2B"))
        production = mia.locator("table.as-of tr", has_text="production")
        expect(production).to_contain_text(f"churn/{held}")
        expect(production).not_to_contain_text(f"churn/{not_held}")


def test_a_viewer_sees_the_evidence_but_no_download_link_and_gets_403_on_the_bytes(
    registry: Registry, person: Callable[[str], tuple[Page, Watch]]
) -> None:
    number = register_week(registry, "fraud", 1, 0.84)
    vic, watch = person("vic")
    vic.goto(f"/models/fraud/versions/{number}")
    expect(vic.locator('[data-test="no-download"]')).to_be_visible()
    expect(vic.locator('[data-test="files"] a[href*="/files/"]')).to_have_count(0)
    image_loaded(vic, 'img[src*="confusion.png"]')  # the evidence is for whoever may approve
    bytes_path = f"/models/fraud/versions/{number}/files/model.pkl"
    assert vic.request.get(bytes_path).status == 403  # signed in, through the UI
    api = httpx.get(
        f"{registry.url}/api/v1{bytes_path}",
        headers={"Authorization": f"Bearer {registry.tokens['vic']}"},
    )
    assert api.status_code == 403, api.text  # and with a token, through the API
    ds, _ = person("ds")  # a contributor is a reader: the link is there and works
    ds.goto(f"/models/fraud/versions/{number}")
    link = ds.locator('[data-test="files"] a[href*="model.pkl"]')
    expect(link).to_be_visible()
    assert ds.request.get(link.get_attribute("href") or "").status == 200
    watch.assert_quiet()


# -- webhooks -------------------------------------------------------------------------------


@on("sqlite", through="registry")  # its pages run on PostgreSQL in test_web_*
def test_an_admin_adds_a_webhook_tests_it_and_redelivers_from_its_log(
    registry: Registry, person: Callable[[str], tuple[Page, Watch]]
) -> None:
    """The secret once, a test (its status, never the receiver's body), the server's own
    deliverer filling the log, and a redelivery with the same message id."""
    register_week(registry, "hooked", 1, 0.8)
    with receiving(lambda _: Reply(body=b"RECEIVER-BODY")) as receiver:
        alice, watch = person("alice")
        alice.goto("/models/hooked")
        alice.get_by_role("link", name="Webhooks", exact=True).click()
        expect(alice).to_have_url(f"{registry.url}/models/hooked/webhooks")
        form = alice.locator('[data-test="create-webhook"]')
        form.locator('input[name="url"]').fill(receiver.url())
        form.locator('input[name="events"]').fill("version.registered")
        form.get_by_role("button", name="Add the webhook").click()
        secret = alice.locator("#webhook-secret").inner_text()
        assert secret.startswith("whsec_")
        alice.get_by_role("link", name="To the webhook").click()
        expect(alice.locator("main")).not_to_contain_text(secret)
        here = alice.url

        alice.get_by_role("button", name="Send a test").click()
        expect(alice.locator('[data-test="test-result"]')).to_contain_text("answered 200")
        expect(alice.locator("main")).not_to_contain_text("RECEIVER-BODY")
        number = register_week(registry, "hooked", 2, 0.81)
        test, event = receiver.wait_for(2)
        assert json.loads(test.body)["type"] == "webhook.test"
        headers = {k.lower(): v for k, v in event.headers.items()}
        verified = Webhook(secret).verify(event.body, headers)  # an independent verifier
        assert verified["data"]["version"]["version"] == number

        row = alice.locator('[data-test="delivery-row"]')
        deadline = time.monotonic() + 10  # the deliverer records its attempt after sending
        while row.count() == 0 and time.monotonic() < deadline:
            alice.goto(here)  # not reload(): this page answered the test's POST
        expect(row).to_have_count(1)
        expect(row).to_contain_text("delivered")
        screenshot(alice, "webhook")
        row.get_by_role("button", name="Redeliver").click()
        expect(alice.locator(".notice")).to_contain_text("delivered again")
        again = receiver.wait_for(3)[2]
        assert again.headers["webhook-id"] == event.headers["webhook-id"]  # receivers dedupe
        watch.assert_quiet()


# -- hostile content ------------------------------------------------------------------------

# Each payload, if it ever ran, would leave a trace the test reads: a dialog, a global, the
# page's title, or a request for /stolen carrying the cookie.
RUN = "window.__pwned=1;document.title='pwned';alert(document.domain)"
SCRIPT = f"<script>{RUN}</script>"
HANDLER = f'<img src=x onerror="{RUN}">'
HOSTILE_CARD = f"""# Churn, the hostile edition

{SCRIPT}

{HANDLER}

[a link](javascript:{RUN})

<a href="javascript:{RUN}">another link</a>

<svg onload="{RUN}"><circle r="4"/></svg>

<iframe src="javascript:{RUN}"></iframe>
"""
HOSTILE_SVG = f"""<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40" onload="{RUN}">
<script>{RUN}</script><rect width="40" height="40" fill="#c00"/></svg>
"""
STEAL = "new Image().src='/stolen?c='+encodeURIComponent(document.cookie)"
HOSTILE_REPORT = f"""<!doctype html><html><head><title>Fairness report</title></head>
<body><h1>Fairness report</h1><p>Nothing to see.</p>
<script>{STEAL};parent.document.title='pwned';{RUN}</script>
<img src=x onerror="{STEAL}">
<form action="/signout" method="post"><button>go</button></form>
</body></html>
"""
FILE_NAME = f'<img src=x onerror="{RUN}">.bin'  # no "/": a file name, not a path
ATTACHMENT_NAME = f'"><svg onload="{RUN}">.txt'
WATCH_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  (window.__violations = window.__violations || []).push(
    `${event.violatedDirective} ${event.blockedURI}`);
});
"""


def assert_inert(page: Page, watch: Watch) -> None:
    """Nothing of the payloads ran: no dialog, no global, the title kept, no cookie read,
    no request for /stolen, no request elsewhere, nothing the CSP had to stop."""
    watch.assert_quiet()
    assert page.evaluate("window.__pwned") is None
    assert "pwned" not in page.title()
    assert [u for u in watch.requests if "/stolen" in u] == []
    assert "myd_session" not in page.evaluate("document.cookie")  # HttpOnly
    assert page.evaluate("window.__violations || []") == []
    assert page.locator('[href^="javascript:" i], [src^="javascript:" i]').count() == 0
    assert page.locator("[onerror], [onload], [onclick]").count() == 0


@on("sqlite", through="registry")
def test_hostile_content_stays_inert_on_every_page_that_shows_it(
    registry: Registry, person: Callable[[str], tuple[Page, Watch]]
) -> None:
    root = registry.work / "hostile"
    write_tree(
        root / "model",
        {"model.pkl": b"weights", "MODEL_CARD.md": HOSTILE_CARD, FILE_NAME: b"x"},
    )
    write_tree(
        root / "eval",
        {
            "plot.svg": HOSTILE_SVG,
            "report.html": HOSTILE_REPORT,
            "confusion.png": png(20, 20, (0, 128, 0)),
            ATTACHMENT_NAME: f"{SCRIPT}\n",
        },
    )
    with registry.sdk("ds") as reg:
        version = reg.register(
            "hostile",
            root / "model",
            attachments=[root / "eval"],
            metrics={"auc": 0.9},
            tags={"team": SCRIPT, "note": HANDLER},
            description=f"{SCRIPT} {HANDLER} [x](javascript:{RUN})",
        )
        reg.comment(f"hostile/{version.version}", HOSTILE_CARD)
        promotion = reg.promote(f"hostile/{version.version}", "staging", comment=HOSTILE_CARD)
    assert promotion.request is not None
    page, watch = person("rita")
    page.context.add_init_script(WATCH_VIOLATIONS)
    here = f"/models/hostile/versions/{version.version}"
    for path in (
        "/",
        "/models/hostile",
        here,
        f"/requests/{promotion.request.id}",
        f"/compare?a=hostile/{version.version}&b=hostile/{version.version}",
        "/models/hostile/history",
    ):
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        expect(page.locator("main")).to_be_visible()
        assert_inert(page, watch)
    page.goto(here)
    expect(page.locator("main")).to_contain_text("Churn, the hostile edition")  # the card
    expect(page.locator("main")).to_contain_text(FILE_NAME)  # shown as text
    expect(page.locator("main")).to_contain_text(ATTACHMENT_NAME)
    svg = page.locator('img[src*="plot.svg"]')  # an SVG goes through <img>, never inline
    expect(svg).to_be_visible()
    report = page.locator('iframe[src*="report.html"]')
    expect(report).to_be_attached()
    sandbox = report.get_attribute("sandbox")
    assert sandbox is not None and "allow-scripts" not in sandbox
    assert "allow-same-origin" not in sandbox
    assert_inert(page, watch)
    # Opened on their own, the SVG and the report still run nothing (their CSP sandboxes them).
    for name in ("plot.svg", "report.html"):
        response = page.goto(f"{here}/attachments/{name}")
        assert response is not None and response.status == 200
        assert "sandbox" in response.headers.get("content-security-policy", ""), name
        watch.assert_quiet()
        assert [u for u in watch.requests if "/stolen" in u] == []


# -- forms without their token, or from elsewhere --------------------------------------------


@on("postgresql", through="registry")
def test_a_form_without_its_csrf_token_or_from_another_origin_is_refused(
    registry: Registry, person: Callable[[str], tuple[Page, Watch]], browser_context: NewContext
) -> None:
    number = register_week(registry, "csrf", 1, 0.85)
    with registry.sdk("ds") as reg:
        promotion = reg.promote(f"csrf/{number}", "production", comment="please")
    assert promotion.request is not None
    approve = f"{registry.url}/requests/{promotion.request.id}/approve"
    mia, _ = person("mia")  # the default policy: maintainers approve
    mia.goto(f"/requests/{promotion.request.id}")
    token = mia.locator('form[action$="/approve"] input[name="csrf"]').input_value()
    assert token
    # Signed in, but the form lacks its token; then the right token from another origin.
    without = mia.request.post(approve, form={"comment": "no token"})
    assert without.status == 403, without.text()
    elsewhere = mia.request.post(
        approve, form={"csrf": token, "comment": "forged"}, headers={"Origin": "http://evil.test"}
    )
    assert elsewhere.status == 403, elsewhere.text()
    # A real hostile page on another loopback origin posts the form itself.
    hostile_page = f"""<!doctype html><form method="post" action="{approve}">
<input name="csrf" value="{token}"><input name="comment" value="forged"></form>
<script>document.forms[0].submit()</script>"""
    with serving(_html_app(hostile_page)) as evil:
        navigation = mia.goto(evil)
        expect(mia.locator("body")).to_contain_text("refused")
        assert navigation is not None
    with registry.sdk("mia") as reg:
        assert reg.request(promotion.request.id).status == "open"


def _html_app(html: str) -> Starlette:
    """Another origin's page (a second loopback server): what a hostile site serves."""

    def serve(_: StarletteRequest) -> HTMLResponse:
        return HTMLResponse(html)

    return Starlette(routes=[Route("/", serve)])
