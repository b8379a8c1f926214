"""Bundles: a model's versions exported in one signed file (whoever may download the
model's bytes), and a bundle another registry signed imported (admins), both streamed.
The service decides everything (service/bundles.py); these routes move the bytes."""

from __future__ import annotations

from typing import Annotated, BinaryIO

import anyio
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from modelyard.api.deps import caller, json_response, needs, service
from modelyard.api.routes.models import Name
from modelyard.api.schemas import BundleImportOut
from modelyard.api.streaming import DOWNLOAD_POLICY, attachment, spool_body
from modelyard.domain.access import Caller, Permission
from modelyard.domain.bundles import MEDIA_TYPE, BundleImport
from modelyard.service.bundles import BundleService

router = APIRouter(prefix="/api/v1", tags=["bundles"])


@router.get(
    "/models/{name}/bundle",
    response_class=Response,
    operation_id="export_bundle",
    openapi_extra=needs("model.download"),
)
def export_bundle(
    name: Name,
    request: Request,
    stage: Annotated[
        str | None, Query(max_length=64, description="Export the versions in this stage.")
    ] = None,
    history: Annotated[
        bool, Query(description="Export every version of the model, with its whole history.")
    ] = False,
) -> Response:
    """A bundle of the model's versions in ``stage`` (or, ``history``, all of them): their
    files, metadata, attachments, cards, checks, signatures and journal, in a tar whose
    manifest the registry signs (docs/security.md, Bundles). The size is known ahead."""
    made = service(request).bundles.export(caller(request), name, stage=stage, history=history)
    headers = {
        "Content-Length": str(made.size),
        "Content-Disposition": attachment(f"{name}.mybundle"),
        "Content-Security-Policy": DOWNLOAD_POLICY,
        "Cache-Control": "private, no-store",
        "Modelyard-Bundle": f"sha256:{made.digest}",
        "Modelyard-Bundle-Versions": ",".join(map(str, made.versions)),
    }
    return StreamingResponse(made.chunks, media_type=MEDIA_TYPE, headers=headers)


@router.post(
    "/bundles",
    status_code=201,
    response_model=BundleImportOut,
    openapi_extra={
        **needs("registry.admin"),
        "requestBody": {
            "required": True,
            # The bundle's bytes, whatever the type sent says (the SDK names MEDIA_TYPE).
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
    },
)
async def import_bundle(request: Request) -> Response:
    """Import a bundle another registry signed (its key trusted here: POST /keys/trusted).
    Admins only, checked before the body is read. The body is received whole into a
    temporary file, then verified entirely (the signature, every member's sha256 and size,
    the journal) before anything is written; a changed byte anywhere is refused (400
    ``bundle_invalid``, naming the member). 200 when every version was imported before."""
    svc = service(request)
    who = await run_in_threadpool(caller, request)
    await run_in_threadpool(svc.access.require, who, Permission.ADMIN)
    spool = await run_in_threadpool(svc.bundles.spool)
    try:
        await spool_body(request, spool)
        done = await run_in_threadpool(_import, svc.bundles, who, spool)
    finally:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(spool.close)
    return json_response(done.as_dict(), status=201 if done.imported else 200)


def _import(bundles: BundleService, who: Caller, spool: BinaryIO) -> BundleImport:
    spool.flush()
    spool.seek(0)
    return bundles.import_bundle(who, spool)
