"""RFC 9457 problem+json responses with a stable ``code`` for every error."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from modelyard.api.auth import challenge
from modelyard.api.mlflow_wire import error_body, is_mlflow_path
from modelyard.domain.errors import ModelyardError, Unauthorized

log = logging.getLogger("modelyard.api")

PROBLEM_TYPE = "application/problem+json"
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

_HTTP_CODES = {
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("too_large", "Too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
}


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    instance: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """An error answer: problem+json, or MLflow's format under its API's paths."""
    if is_mlflow_path(instance):
        mlflow_body = error_body(status, code, detail, extra, instance)
        return Response(
            json.dumps(mlflow_body),
            status_code=status,
            media_type="application/json",
            headers=headers,
        )
    body = {
        "type": f"urn:modelyard:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": instance,
        **extra,
    }
    return Response(json.dumps(body), status_code=status, media_type=PROBLEM_TYPE, headers=headers)


def from_error(exc: ModelyardError, instance: str) -> Response:
    if exc.status >= 500:
        log.error("internal error on %s: %s", instance, exc.message)
    headers = {"WWW-Authenticate": challenge(exc.code)} if isinstance(exc, Unauthorized) else None
    return problem(
        exc.status, exc.code, exc.title, exc.message, instance, headers=headers, **exc.details
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(ModelyardError)
    async def _domain_error(request: Request, exc: ModelyardError) -> Response:
        return from_error(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"location": [str(p) for p in e.get("loc", ())], "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        malformed = any(e.get("type") == "json_invalid" for e in exc.errors())
        code = "malformed_json" if malformed else "invalid_input"
        first = errors[0] if errors else {"location": [], "message": "invalid request"}
        where = ".".join(first["location"][1:]) or "body"
        detail = f"{where}: {first['message']}" if not malformed else "request body is not JSON"
        return problem(400, code, "Invalid input", detail, request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        headers = dict(exc.headers) if exc.headers else None
        detail = str(exc.detail)
        if exc.status_code == 405:
            allowed = allowed_methods(request.app, request.scope)
            headers = {"Allow": ", ".join(allowed)}
            detail = f"{request.method} is not allowed here; this path allows {', '.join(allowed)}"
        return problem(exc.status_code, code, title, detail, request.url.path, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return internal_error(request.method, request.url.path)


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route serves at this path (RFC 9110's Allow). The router names
    only the first route whose path matched, though others may serve the same path."""
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**scope, "method": method})[0] is Match.FULL
            for route in app.router.routes
        )
    ]


def internal_error(method: str, path: str) -> Response:
    """The 500 of an unexpected exception (being handled): logged, and nothing leaked."""
    log.exception("unhandled error on %s %s", method, path)
    return problem(500, "internal_error", "Internal error", "the server failed; see its log", path)
