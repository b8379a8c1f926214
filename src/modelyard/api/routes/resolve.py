"""The hot path: any reference to a version, with an ETag so pollers get 304."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from modelyard.api.deps import service
from modelyard.api.schemas import VersionOut
from modelyard.domain.models import Version

router = APIRouter(prefix="/api/v1", tags=["resolve"])
_MAX_BODIES = 4096


@router.get("/resolve/{reference:path}", response_model=VersionOut)
async def resolve(
    reference: str,
    request: Request,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Resolve 'NAME', 'NAME/N', 'NAME@ALIAS' or 'NAME@sha256:HEX' to a version."""
    # Deliberately on the event loop: a cache hit is one indexed read of the journal head,
    # cheaper than the hop to a worker thread that a sync handler would pay on every call.
    version = service(request).resolve(reference)
    # reference -> (version, body, etag). The service hands back the very same Version
    # object while nothing changed, so identity tells whether the serialised body holds.
    bodies: dict[str, tuple[Version, bytes, str]] = request.app.state.resolve_bodies
    cached = bodies.get(reference)
    if cached is not None and cached[0] is version:
        _, body, etag = cached
    else:
        body = json.dumps(version.as_dict(), separators=(",", ":"), ensure_ascii=False).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if len(bodies) >= _MAX_BODIES:
            bodies.clear()
        bodies[reference] = (version, body, etag)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
