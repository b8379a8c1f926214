"""The OSV dump the registry matches versions' environments against: an admin loads it
(the zip streamed to a temporary file, checked whole before it replaces anything), anyone
authenticated reads which one is loaded."""

from __future__ import annotations

import tempfile
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from modelyard.api.deps import caller, json_response, needs, service
from modelyard.api.schemas import AdvisoriesOut, DumpLoadedOut
from modelyard.api.streaming import spool_body
from modelyard.domain.advisories import check_dump_size

router = APIRouter(prefix="/api/v1", tags=["advisories"])

_ZIP_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "OSV's PyPI dump (all.zip), as downloaded.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.put(
    "/advisories",
    response_model=DumpLoadedOut,
    openapi_extra={**needs("registry.admin"), **_ZIP_BODY},
)
async def load_advisories(request: Request) -> Response:
    """Load OSV's PyPI dump in place of the one in force (admins), then evaluate every live
    version against it: each verdict that changes is journaled. Refused whole, with
    nothing changed, when it is not a zip (not_a_zip), could be a zip bomb (zip_bomb) or
    holds no PyPI advisory (not_osv); past 1 GiB, 413. The caller's role is checked before
    a byte is read."""
    svc = service(request)
    who = await run_in_threadpool(caller, request)
    await run_in_threadpool(svc.advisories.authorize_load, who)
    declared = request.headers.get("content-length", "")
    if declared.isdigit():
        check_dump_size(int(declared) if len(declared) <= 18 else 2**63)
    with tempfile.TemporaryFile() as spool:
        await spool_body(request, spool, check_dump_size)
        loaded = await run_in_threadpool(svc.advisories.load, who, spool)
    return json_response(loaded.as_dict())


@router.get("/advisories", response_model=AdvisoriesOut, openapi_extra=needs("authenticated"))
def advisories_summary(request: Request) -> Response:
    """The OSV dump in force (null: none is loaded): its digest, what it holds, who loaded
    it when, and whether every live version has been evaluated against it yet."""
    dump = service(request).advisories.summary(caller(request))
    return json_response({"dump": dump.as_dict() if dump is not None else None})
