"""The OpenAPI document, true to the errors this API gives.

FastAPI documents a 422 on every operation with a parameter (this API answers invalid
input with a 400 problem, never a 422) and none of the problem+json responses each
operation can give. This rewrites that part of the generated document, from what decides
those answers: the permission each route declares (401, 403, 404), its parameters and
body (400, 413), and the few statuses particular operations add.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from modelyard.api.mlflow_wire import is_mlflow_path
from modelyard.api.problems import PROBLEM_TYPE
from modelyard.domain.access import PRINCIPAL_PATTERN
from modelyard.domain.checks import CHECK_NAME_PATTERN
from modelyard.domain.names import NAME_PATTERN

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details, with a stable `code`.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "example": "urn:modelyard:problem:model_not_found"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "example": "model_not_found"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}
MLFLOW_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "MLflow's error, with Modelyard's stable `code` beside (docs/mlflow.md).",
    "required": ["error_code", "message", "code"],
    "properties": {
        "error_code": {"type": "string", "example": "RESOURCE_DOES_NOT_EXIST"},
        "message": {"type": "string"},
        "code": {"type": "string", "example": "model_not_found"},
    },
    "additionalProperties": True,
}

_MEANING = {
    400: "Invalid input (a parameter, the body, a name or a filter), with its code",
    401: "No token, or a malformed, expired or revoked one",
    403: "The caller's role does not allow this; the problem names the permission",
    404: "Not found, or not visible to the caller",
    409: "Conflicts with the registry's state (exists already, not empty, not open, ...)",
    413: "The request body is too large",
    416: "The range is outside the file",
    503: "The database or the blob store cannot be used",
}

# Statuses that only some operations give, on top of the ones derived below.
_CONFLICTS = {
    "POST /api/v1/models",
    "DELETE /api/v1/models/{name}",
    "POST /api/v1/models/{name}/versions",
    "DELETE /api/v1/models/{name}/versions/{number}",
    "PUT /api/v1/models/{name}/aliases/{alias}",
    "POST /api/v1/users",
    "POST /api/v1/teams",
    "POST /api/v1/service-accounts",
    "DELETE /api/v1/users/{name}",
    "PUT /api/v1/users/{name}/password",
    "DELETE /api/v1/teams/{name}",
    "DELETE /api/v1/service-accounts/{name}",
    "POST /api/v1/tokens",
    "POST /api/v1/models/{name}/versions/{number}/promote",
    "POST /api/v1/models/{name}/versions/{number}/attachments",
    "POST /api/v1/requests/{request_id}/approve",
    "POST /api/v1/requests/{request_id}/reject",
    "POST /api/v1/requests/{request_id}/cancel",
    "POST /api/v1/models/{name}/rollback",
    "POST /api/v1/models/{name}/versions/{number}/archive",
    "POST /api/v1/models/{name}/versions/{number}/restore",
    "POST /api/v1/webhooks",
    "POST /api/v1/bundles",
    "POST /api/v1/keys/trusted",
}
_EXTRA: dict[str, dict[int, str]] = {
    "GET /readyz": {503: _MEANING[503]},
    "GET /api/v1/resolve/{reference}": {304: "Not modified: the If-None-Match ETag holds"},
    "POST /api/v1/models/{name}/versions/{number}/promote": {
        202: "A transition request was opened: the stage needs approvals first"
    },
    "POST /api/v1/models/{name}/versions": {413: "Inline file contents over their limits"},
    "POST /api/v1/models/{name}/versions/{number}/attachments": {
        413: "Inline contents over their limits, or too many attachments"
    },
    "PUT /api/v1/blobs/{digest}": {200: "Stored already: the body was read and dropped"},
    "GET /api/v1/events/stream": {413: "More kinds than an event filter takes (64)"},
    "POST /api/v1/blobs/uploads": {200: "Stored already: the copy was dropped"},
    "POST /api/v1/bundles": {200: "Every version of the bundle was imported before"},
    "POST /api/v1/blobs/direct-uploads": {
        200: "Nothing to send (created false: stored, and yours to name), or no direct"
        " transfers here (created null: upload through the registry)",
        503: "The object store did not answer",
    },
    "POST /api/v1/blobs/direct-uploads/complete": {
        200: "Stored already, and yours to name",
        404: "No upload of these bytes is under way (for this caller)",
        409: "Parts are still missing, or this registry takes uploads itself",
        503: "The object store did not answer",
    },
    **{
        f"{method} {path}": {206: "The requested range", 416: _MEANING[416]}
        | (
            {307: "Fetch the bytes from the object store (asked: Modelyard-Redirect: allow)"}
            if method == "GET" and "attachments" not in path
            else {}
        )
        for method in ("GET", "HEAD")
        for path in (
            "/api/v1/blobs/{digest}",
            "/api/v1/models/{name}/versions/{number}/files/{path}",
            "/api/v1/models/{name}/versions/{number}/attachments/{path}",
        )
    },
}
_MLFLOW_EXTRA: dict[str, dict[int, str]] = {
    "POST model-versions/create": {
        503: "The MLflow tracking server, or the bucket of an s3:// source, did not answer"
    },
    "GET artifacts/{path}": {206: "The requested range", 416: _MEANING[416]},
}
# Not found without a path parameter: a model, reference or principal named in the query
# or the body.
_NOT_FOUND = {
    "GET /api/v1/tokens",
    "POST /api/v1/tokens",
    "GET /api/v1/compare",
    "GET /api/v1/gate",
    "GET /api/v1/requests",
    "POST /api/v1/webhooks",
}
# Never forbidden: model.view, whose lowest role is the least anyone holds (no role at all
# answers 404), and what any authenticated caller may read.
_NEVER_FORBIDDEN = {"public", "model.view"}
_OPEN_TO_EVERY_CALLER = {"GET /api/v1/whoami", "GET /api/v1/policy", "GET /api/v1/tokens"}

_REFERENCE_PATTERN = (
    f"^{NAME_PATTERN}(/[0-9]{{1,10}}|@sha256:[0-9a-f]{{64}}|@{NAME_PATTERN}|@latest)?$"
)
_PATH_PATTERNS = {
    "alias": f"^{NAME_PATTERN}$",
    "check": f"^{CHECK_NAME_PATTERN}$",
    "member": f"^{PRINCIPAL_PATTERN}$",
    "principal": f"^{PRINCIPAL_PATTERN}$",
    "reference": _REFERENCE_PATTERN,
    "token_id": "^[0-9a-f]{16}$",
}


def install(app: FastAPI) -> None:
    """Serve the corrected document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas["MlflowError"] = MLFLOW_ERROR_SCHEMA
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            _correct(f"{method.upper()} {path}", operation)
    return doc


def _correct(key: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation["responses"]
    responses.pop("422", None)
    mlflow = is_mlflow_path(key.split(" ", 1)[1])
    statuses = _mlflow_statuses(key, operation) if mlflow else _statuses(key, operation)
    for status, description in sorted(statuses.items()):
        if status < 400:
            responses.setdefault(str(status), {"description": description})
        else:
            responses[str(status)] = _problem(status, description, mlflow=mlflow)
    for parameter in operation.get("parameters", ()):
        if parameter["in"] == "path":
            pattern = _path_pattern(key, parameter["name"])
            if pattern is not None:
                parameter["schema"].setdefault("pattern", pattern)


def _statuses(key: str, operation: dict[str, Any]) -> dict[int, str]:
    permission = operation.get("x-permission", "public")
    found: dict[int, str] = {}
    if operation.get("parameters") or "requestBody" in operation:
        found[400] = _MEANING[400]
    if permission != "public":
        found[401] = _MEANING[401]
    if permission not in _NEVER_FORBIDDEN and key not in _OPEN_TO_EVERY_CALLER:
        found[403] = _MEANING[403]
    if "{" in key or key in _NOT_FOUND:
        found[404] = _MEANING[404]
    if key in _CONFLICTS:
        found[409] = _MEANING[409]
    if "requestBody" in operation:
        found[413] = _MEANING[413]
    found.update(_EXTRA.get(key, {}))
    return found


def _mlflow_statuses(key: str, operation: dict[str, Any]) -> dict[int, str]:
    """MLflow's API names models and versions in the query or the body: any call but a
    search may find nothing, and any change may conflict with the registry's state."""
    found = _statuses(key, operation)
    method, path = key.split(" ", 1)
    if not path.endswith("/search"):
        found[404] = _MEANING[404]
    if method != "GET":
        found[409] = _MEANING[409]
    endpoint = path.split("/2.0/", 1)[1].split("/", 1)[1]
    found.update(_MLFLOW_EXTRA.get(f"{method} {endpoint}", {}))
    return found


def _problem(status: int, description: str, *, mlflow: bool = False) -> dict[str, Any]:
    media, schema = ("application/json", "MlflowError") if mlflow else (PROBLEM_TYPE, "Problem")
    response: dict[str, Any] = {
        "description": description,
        "content": {media: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }
    if status == 401:
        response["headers"] = {
            "WWW-Authenticate": {
                "description": 'Bearer realm="modelyard" (RFC 6750)',
                "schema": {"type": "string"},
            }
        }
    return response


def _path_pattern(key: str, name: str) -> str | None:
    if name == "name":
        on_models = key.split(" ", 1)[1].startswith("/api/v1/models/")
        return f"^{NAME_PATTERN}$" if on_models else f"^{PRINCIPAL_PATTERN}$"
    return _PATH_PATTERNS.get(name)
