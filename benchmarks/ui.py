"""The UI's pages (issue 10): each main page's server time, p50 and p95, and its weight.

On the search benchmark's seeded databases (20,000 and 200,000 versions over 100 models),
one model of which holds exactly 2,000 versions, with a life of its own written through
the service (so the journal, the stage timeline and the queue are real): promotions into
staging and production approved one after the other, an alias moved many times, and a few
promotion requests left open. The pages are read the way a browser reads them, a plain
keep-alive GET each, from a real ``modelyard serve`` in local mode (its owner sees every
page). A page's weight is its HTML plus the stylesheets and scripts it links, as the
issue counts it (images apart).
"""

from __future__ import annotations

import http.client
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks._common import CpuWindow, ms, pct
from benchmarks._harness import ModelyardServer
from benchmarks._seed import seed_search_db
from modelyard.config import Settings, open_service
from modelyard.domain.access import Caller

Log = Callable[[str], None]

DENSE_MODEL = "model-000"  # _seed.py gives it the first versions
DENSE_VERSIONS = 2000
PRODUCTION_PERIODS = 8  # versions of the dense model that held production, one after another
ALIAS_MOVES = 300  # journal events beyond the promotions
OPEN_REQUESTS = 5
UI_WARMUP = 5
UI_REPS = 60
P95_TARGET_MS = 50.0
WEIGHT_TARGET_KB = 150.0
OWNER = "bench"


@dataclass(frozen=True, slots=True)
class UiPage:
    """One page: where it is, and a text it must contain (a fast wrong page is no result)."""

    label: str
    path: str
    must_contain: str


def ui_pages() -> list[UiPage]:
    """The main pages of the issue, on the dense model where a page is about one model."""
    middle = f"{DENSE_MODEL}/{DENSE_VERSIONS // 2}"
    return [
        UiPage("models list", "/", DENSE_MODEL),
        UiPage(f"a model ({DENSE_VERSIONS:,} versions)", f"/models/{DENSE_MODEL}", DENSE_MODEL),
        UiPage("a version", f"/models/{DENSE_MODEL}/versions/{DENSE_VERSIONS // 2}", DENSE_MODEL),
        UiPage("compare", f"/compare?a={middle}&b={DENSE_MODEL}@production", DENSE_MODEL),
        UiPage("approvals queue", "/requests", "model-001"),
        UiPage("journal page", "/journal", DENSE_MODEL),
    ]


def page_key(label: str) -> str:
    """``a model (2,000 versions)`` -> ``a_model``: the key of a page's figures."""
    return re.sub(r"[^a-z]+", "_", label.split(" (")[0].lower()).strip("_")


def ui_benchmark(root: Path, n: int, log: Log = print) -> dict[str, Any]:
    """Seed ``n`` versions, give the dense model a life, then time every page."""
    data = root / "data"
    seed = seed_search_db(data, n, dense=DENSE_VERSIONS)
    log(f"ui {n}: seeded in {seed['seed_s']} s; writing the scene through the service")
    events = write_scene(data)
    result: dict[str, Any] = {"seed_s": seed["seed_s"], "events": events, "reps": UI_REPS}
    with ModelyardServer(data, root / "server.log") as server:
        reader = PageReader(server.url)
        try:
            for ui_page in ui_pages():
                key = page_key(ui_page.label)
                try:
                    result[key] = time_page(reader, server.pid, ui_page)
                except RuntimeError as exc:  # one missing or broken page costs only its row
                    result[key] = {"path": ui_page.path, "error": str(exc)[:300]}
                    log(f"ui {n}: {ui_page.label}: {exc}"[:300])
        finally:
            reader.close()
    shutil.rmtree(root, ignore_errors=True)
    return result


def write_scene(data: Path) -> int:
    """What the pages show beyond the seeded rows, written as users write it: production
    periods of the dense model (each a request approved by its owner, local mode), the
    champion alias moved back and forth, and requests left open on other models."""
    service = open_service(Settings(data_dir=data))
    owner = Caller.local_user(OWNER)
    lifecycle = service.lifecycle
    try:
        step = DENSE_VERSIONS // (PRODUCTION_PERIODS + 1)
        for period in range(1, PRODUCTION_PERIODS + 1):
            reference = f"{DENSE_MODEL}/{period * step}"
            for stage in ("staging", "production"):
                promotion = lifecycle.promote(owner, reference, stage, comment="weekly retrain")
                if promotion.request is not None and promotion.request.status == "open":
                    lifecycle.approve(owner, promotion.request.id, comment="looks good")
        for move in range(ALIAS_MOVES):
            number = 1 + (move * 37) % DENSE_VERSIONS
            service.set_alias(DENSE_MODEL, "champion", number, caller=owner)
        for m in range(1, OPEN_REQUESTS + 1):
            lifecycle.promote(owner, f"model-{m:03d}/1", "staging", comment="please review")
        return service.journal_head(caller=owner).seq
    finally:
        service.close()


class PageReader:
    """Keep-alive GETs with the standard library (the least client overhead), and each
    linked asset fetched once to weigh the pages."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        self.conn = http.client.HTTPConnection(host, parts.port, timeout=60)
        self.assets: dict[str, int] = {}

    def get(self, path: str) -> tuple[int, bytes]:
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        return response.status, response.read()

    def weight(self, html: bytes) -> int:
        """The HTML and every stylesheet and script it links (each counted once a page)."""
        text = html.decode(errors="replace")
        linked = re.findall(r'<link[^>]*rel="stylesheet"[^>]*href="([^"]+)"', text)
        linked += re.findall(r'<script[^>]*src="([^"]+)"', text)
        total = len(html)
        for asset in dict.fromkeys(linked):
            if asset not in self.assets:
                status, body = self.get(asset)
                if status != 200:
                    raise RuntimeError(f"{asset} answered {status}")
                self.assets[asset] = len(body)
            total += self.assets[asset]
        return total

    def close(self) -> None:
        self.conn.close()


def time_page(reader: PageReader, pid: int, ui_page: UiPage) -> dict[str, Any]:
    """p50 and p95 of ``UI_REPS`` GETs after ``UI_WARMUP``, the server's CPU per page, and
    the page's weight."""

    def fetch() -> bytes:
        status, body = reader.get(ui_page.path)
        if status != 200:
            raise RuntimeError(f"{ui_page.path} answered {status}: {body[:300]!r}")
        if ui_page.must_contain.encode() not in body:
            raise RuntimeError(f"{ui_page.path} does not show {ui_page.must_contain!r}")
        return body

    for _ in range(UI_WARMUP):
        body = fetch()
    samples: list[float] = []
    with CpuWindow(pid) as cpu:
        for _ in range(UI_REPS):
            t0 = time.perf_counter()
            body = fetch()
            samples.append(time.perf_counter() - t0)
    return {
        "path": ui_page.path,
        "p50_ms": ms(pct(samples, 50)),
        "p95_ms": ms(pct(samples, 95)),
        "cpu_ms": ms(cpu.seconds / UI_REPS),
        "html_bytes": len(body),
        "weight_bytes": reader.weight(body),
    }
