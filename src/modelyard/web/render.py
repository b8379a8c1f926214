"""Templates and Markdown: everything a page shows is escaped or sanitised here, once."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nh3
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

from modelyard import __version__
from modelyard.web.forms import may, notice_for, stage_names
from modelyard.web.security import PAGE_HEADERS, csrf_token, set_csrf_cookie
from modelyard.web.session import signed_in

TEMPLATES = Path(__file__).parent / "templates"

# CommonMark with tables and strikethrough; raw HTML in the source is kept only as far
# as the sanitiser's allowlist lets it through.
_markdown = MarkdownIt("commonmark", {"html": True, "linkify": False}).enable(
    ["table", "strikethrough"]
)
_ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "details", "em", "h1", "h2",
    "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "strong",
    "sub", "summary", "sup", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "th": {"align"}}


def _same_origin_images(tag: str, attribute: str, value: str) -> str | None:
    """No remote images: an image may only come from the registry itself."""
    if tag == "img" and attribute == "src" and not (value.startswith("/") and "//" not in value):
        return None
    return value


def markdown(text: str | None) -> Markup:
    """Markdown rendered and sanitised by allowlist: no script, no event handler, no
    ``javascript:`` URL, no remote image."""
    html = _markdown.render(text or "")
    clean = nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        attribute_filter=_same_origin_images,
        link_rel="noopener noreferrer nofollow",
    )
    return Markup(clean)


def when(value: datetime | int | None, seconds: bool = False) -> str:
    """A time as people read it, in UTC (microseconds since the epoch are accepted);
    ``seconds`` where they matter, as between a delivery's retries."""
    if value is None:
        return ""
    if isinstance(value, int):
        value = datetime.fromtimestamp(value / 1_000_000, tz=UTC)
    return value.astimezone(UTC).strftime(f"%Y-%m-%d %H:%M{':%S' if seconds else ''} UTC")


def latency(microseconds: int) -> str:
    """A duration measured in microseconds, as milliseconds (to the tenth below 10 ms)."""
    ms = microseconds / 1000
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:,.0f} ms"


def size(value: int | None) -> str:
    """Bytes as KiB, MiB, ... (binary units)."""
    if value is None:
        return ""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"  # pragma: no cover - the loop returns at GiB


def metric(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters.update(markdown=markdown, when=when, size=size, metric=metric, latency=latency)
environment.globals["version"] = __version__
environment.globals.update(may=may, notice_for=notice_for, stage_names=stage_names)


def page(
    request: Request,
    template: str,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render a template with what every page needs (who is signed in, the CSRF token),
    with the security headers and, when this browser had none, the CSRF cookie."""
    html = environment.get_template(template).render(
        request=request,
        caller=signed_in(request),
        csrf=csrf_token(request),
        **context,
    )
    response = HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
    set_csrf_cookie(request, response)
    return response
