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

import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    Request,
    expect,
)

import modelyard
from modelyard.config import Settings, open_service
from tests.conftest import BACKENDS, LiveServer, emptied, sign_in

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
    server = LiveServer(work / "server-data", database_url)
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


def screenshot(page: Page, name: str) -> None:
    """Save the viewport for the docs when asked (MODELYARD_SCREENSHOTS=DIR)."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))


def image_loaded(page: Page, selector: str) -> None:
    """The image is shown: decoded, with a width (a broken <img> has naturalWidth 0)."""
    image = page.locator(selector).first
    expect(image).to_be_visible()
    assert image.evaluate("img => img.complete && img.naturalWidth > 0"), selector


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
