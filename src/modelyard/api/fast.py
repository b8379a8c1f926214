"""Registration and search, the hottest routes after resolve, without FastAPI's router.

FastAPI's routing, parameter solving and request telemetry cost about as much server CPU
as the service itself spends on a registration (~0.5 ms of ~1.5). ``FastRoutes`` finds
these two routes itself and calls their very endpoint functions, in a worker thread as
FastAPI would, with the parameters validated by the same declarations (the route's
``Annotated`` query types, its pydantic body model). It answers only requests the route
would accept; anything else (a body that does not validate, a repeated or empty query
parameter, another content type) goes on to the framework untouched, which answers it,
errors included, exactly as it always did: one validation rule, and one way to fail it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from modelyard.api import problems
from modelyard.api.limits import replay_body
from modelyard.api.routes.models import Filter, Limit, OrderBy, PageToken, register_version
from modelyard.api.routes.versions import search_versions
from modelyard.api.schemas import VersionIn
from modelyard.api.telemetry import ROUTE
from modelyard.domain.errors import ModelyardError

_SEARCH = "/api/v1/versions"
_MODELS = "/api/v1/models/"
_VERSIONS = "/versions"
_REGISTER = "/api/v1/models/{name}/versions"  # the template metrics and logs name
# search_versions' query parameters, validated by the types its signature declares.
_SEARCH_PARAMETERS: dict[str, TypeAdapter[Any]] = {
    "filter": TypeAdapter(Filter),
    "order_by": TypeAdapter(OrderBy),
    "page_token": TypeAdapter(PageToken),
    "limit": TypeAdapter(Limit),
}


class FastRoutes:
    """ASGI middleware answering ``GET /api/v1/versions`` and
    ``POST /api/v1/models/{name}/versions`` when the request is one their route takes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            method = scope["method"]
            if method == "GET" and path == _SEARCH:
                await self._search(scope, receive, send)
                return
            if method == "POST" and path.startswith(_MODELS) and path.endswith(_VERSIONS):
                name = path[len(_MODELS) : -len(_VERSIONS)]
                if name and "/" not in name:
                    await self._register(scope, receive, send, name)
                    return
        await self.app(scope, receive, send)

    async def _search(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = _search_query(scope["query_string"])
        if query is None:
            await self.app(scope, receive, send)
            return
        scope[ROUTE] = _SEARCH
        request = Request(scope)
        await _answer(request, send, lambda: search_versions(request, **query))

    async def _register(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        if _header(scope, b"content-type") != b"application/json":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away
        try:
            version = VersionIn.model_validate(json.loads(body))
        except (ValueError, ValidationError, RecursionError):
            await self.app(scope, replay_body(body, receive), send)
            return
        scope[ROUTE] = _REGISTER
        request = Request(scope)
        await _answer(request, send, lambda: register_version(name, version, request))


async def _answer(request: Request, send: Send, endpoint: Callable[[], Response]) -> None:
    """Run a sync endpoint in a worker thread and send its response; domain errors are
    problem+json, as the app's handler makes them. Anything else propagates to the
    app's error middleware, as from a route."""
    try:
        response = await run_in_threadpool(endpoint)
    except ModelyardError as exc:
        response = problems.from_error(exc, request.url.path)
    await response(request.scope, request.receive, send)


def _search_query(query_string: bytes) -> dict[str, Any] | None:
    """search_versions' parameters, parsed as Starlette parses a query string; None unless
    each is given at most once, not empty, and valid."""
    given = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    found: dict[str, Any] = {}
    for key, value in given:
        adapter = _SEARCH_PARAMETERS.get(key)
        if adapter is None:
            continue  # the route ignores parameters it does not declare
        if key in found or not value:
            return None
        try:
            found[key] = adapter.validate_python(value)
        except ValidationError:
            return None
    return found


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            found: bytes = value
            return found
    return None


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (BodyLimit, outside, has bounded it); None on a disconnect."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
