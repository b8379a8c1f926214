"""The hot path: any reference to a version, with an ETag so pollers get 304."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from modelyard.api import problems
from modelyard.api.auth import authenticate
from modelyard.api.deps import caller, encode_json, json_response, needs
from modelyard.api.schemas import VersionOut
from modelyard.api.telemetry import ROUTE
from modelyard.domain.access import Caller
from modelyard.domain.errors import ModelyardError
from modelyard.domain.models import Version

router = APIRouter(prefix="/api/v1", tags=["resolve"])
_MAX_BODIES = 4096


@router.get(
    "/resolve/{reference:path}", response_model=VersionOut, openapi_extra=needs("model.view")
)
async def resolve(
    reference: str,
    request: Request,
    if_none_match: Annotated[str | None, Header()] = None,
    as_of: Annotated[
        datetime | None,
        Query(description="What the reference pointed to then, e.g. 2026-03-03T12:00Z"),
    ] = None,
) -> Response:
    """Resolve 'NAME', 'NAME/N', 'NAME@ALIAS_OR_STAGE' or 'NAME@sha256:HEX' to a version.

    Documents the route; requests without a query are answered by fast_resolve below.
    """
    who = caller(request)
    if as_of is not None:
        version = request.app.state.service.lifecycle.resolve_as_of(who, reference, as_of)
        return json_response(version.as_dict())
    return resolve_response(request.app, reference, if_none_match, who)


def resolve_response(
    app: Any, reference: str, if_none_match: str | None, caller: Caller
) -> Response:
    """The answer to a resolve, with an ETag; 304 when the caller's ETag still holds.

    Runs on the event loop: a cache hit is one indexed read of the journal head, cheaper
    than the hop to a worker thread that a sync handler would pay on every call.
    """
    version = app.state.service.resolve(reference, caller=caller)
    # reference -> (version, body, etag). The service hands back the very same Version
    # object while nothing changed, so identity tells whether the serialised body holds.
    bodies: dict[str, tuple[Version, bytes, str]] = app.state.resolve_bodies
    cached = bodies.get(reference)
    if cached is not None and cached[0] is version:
        _, body, etag = cached
    else:
        body = encode_json(version.as_dict())
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if len(bodies) >= _MAX_BODIES:
            bodies.clear()
        bodies[reference] = (version, body, etag)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def is_fast_resolve(scope: Scope) -> bool:
    """A plain GET /api/v1/resolve/REF (no query: as_of and friends take the route)."""
    path: str = scope.get("path", "")
    return (
        scope["type"] == "http"
        and scope["method"] == "GET"
        and not scope.get("query_string")
        and path.startswith(_PREFIX)
        and len(path) > len(_PREFIX)
    )


class FastResolve:
    """ASGI middleware that answers a plain resolve itself, without FastAPI's router and
    dependency solving (~170 µs a request, several times the resolve; downstream services
    poll it). ``create_app`` adds it first, so every middleware added later wraps it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if is_fast_resolve(scope):
            scope[ROUTE] = RESOLVE_ROUTE
            await fast_resolve(scope["app"], scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def fast_resolve(app: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """The resolve route's answer, from the ASGI scope. Domain errors are problem+json
    here; anything else propagates to the app's error handler, which makes one too."""
    if_none_match = authorization = None
    for name, value in scope["headers"]:
        if name == b"if-none-match":
            if_none_match = value.decode("latin-1")
        elif name == b"authorization":
            authorization = value.decode("latin-1")
    path: str = scope["path"]
    try:
        who = authenticate(app, authorization)
        response = resolve_response(app, path[len(_PREFIX) :], if_none_match, who)
    except ModelyardError as exc:
        response = problems.from_error(exc, path)
    await response(scope, receive, send)


_PREFIX = "/api/v1/resolve/"
RESOLVE_ROUTE = "/api/v1/resolve/{reference}"  # the template metrics and logs name
