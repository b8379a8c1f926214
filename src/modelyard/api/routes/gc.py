"""Garbage collection of blobs (admins)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from modelyard.api.deps import caller, json_response, needs, service
from modelyard.api.schemas import GcIn, GcOut

router = APIRouter(prefix="/api/v1", tags=["blobs"])


@router.post("/gc", response_model=GcOut, openapi_extra=needs("registry.admin"))
def collect_garbage(request: Request, body: GcIn | None = None) -> Response:
    """Remove blobs no version references and uploads never committed, past a grace period
    (blobs a hard delete released: at once). Journaled as `registry.gc` with its counts;
    `dry_run` reports what would go and changes nothing."""
    body = body or GcIn.model_validate({})
    report = service(request).collect_garbage(
        caller(request), grace_seconds=float(body.grace_seconds), dry_run=body.dry_run
    )
    return json_response(report.as_dict())
