"""Small helpers every router shares: the service, the acting user, JSON responses."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.responses import Response

from modelyard.service import RegistryService


def service(request: Request) -> RegistryService:
    svc: RegistryService = request.app.state.service
    return svc


def actor(request: Request) -> str:
    """Who is acting. Until authentication lands this is the server's local user."""
    name: str = request.app.state.actor
    return name


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return Response(body, status_code=status, media_type="application/json", headers=headers)
