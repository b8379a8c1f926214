"""The UI in a real browser (Debian's chromium driven by Playwright) against a real server,
on SQLite and PostgreSQL.

Nothing here sleeps: Playwright's ``expect`` waits for what a page must show, and every
check that nothing happened (no dialog, no script, no request elsewhere) is read after the
page has loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from playwright.sync_api import BrowserContext, ConsoleMessage, Dialog, Page, Request

from tests.conftest import LiveServer

NewContext = Callable[..., BrowserContext]


@dataclass
class Watch:
    """What a page did that it must not: dialogs, script errors, requests to other origins."""

    origin: str
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
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
        if not request.url.startswith((f"{self.origin}/", "data:", "about:")):
            self.elsewhere.append(request.url)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.console.append(message.text)

    def assert_quiet(self) -> None:
        assert self.dialogs == [], self.dialogs
        assert self.errors == [], self.errors
        assert self.elsewhere == [], self.elsewhere


def open_page(context: BrowserContext, server: LiveServer) -> tuple[Page, Watch]:
    watch = Watch(server.url)
    return watch.attach(context.new_page()), watch


def test_the_ui_assets_ship_in_the_package_and_load_from_the_registry(
    live_server: LiveServer, browser_context: NewContext
) -> None:
    """No CDN: the stylesheet and script come from the registry, typed and nosniff."""
    context = browser_context(live_server.url)
    for path, kind in (
        ("/static/modelyard.css", "text/css"),
        ("/static/modelyard.js", "javascript"),
    ):
        response = context.request.get(path)
        assert response.status == 200, path
        assert kind in response.headers["content-type"], response.headers
        assert response.headers["x-content-type-options"] == "nosniff"
        assert b"http://" not in response.body() and b"https://" not in response.body()
