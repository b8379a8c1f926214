"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from modelyard.api.deps import json_response, needs, service

router = APIRouter(tags=["health"])


@router.get("/healthz", openapi_extra=needs("public"))
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", openapi_extra=needs("public"))
async def readyz(request: Request) -> Response:
    await run_in_threadpool(service(request).check_ready)
    return json_response({"status": "ready"})
