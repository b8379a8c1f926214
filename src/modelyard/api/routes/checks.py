"""Check results of a version: checkers report them (PUT), anyone who sees the model reads
them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from modelyard.api.deps import caller, json_response, needs, service
from modelyard.api.routes.models import Name, Number
from modelyard.api.schemas import CheckIn, CheckListOut, CheckOut, ScanAcceptIn

router = APIRouter(prefix="/api/v1/models", tags=["checks"])
# The service validates check names (one rule, one error code).
CheckName = Annotated[str, Path(description="Check name, e.g. bias-audit")]


@router.put(
    "/{name}/versions/{number}/checks/{check}",
    response_model=CheckOut,
    openapi_extra=needs("version.check"),
)
def report_check(
    name: Name, number: Number, check: CheckName, body: CheckIn, request: Request
) -> Response:
    """Report the result of a check (the latest report counts; every one is journaled).
    Takes the checker role: a contributor cannot pass the checks of their own version."""
    result = service(request).checks.report(
        caller(request), name, number, check, status=body.status, url=body.url
    )
    return json_response(result.as_dict())


@router.post(
    "/{name}/versions/{number}/checks/scan/accept",
    response_model=CheckOut,
    openapi_extra=needs("registry.admin"),
)
def accept_scan(name: Name, number: Number, body: ScanAcceptIn, request: Request) -> Response:
    """Accept the open findings of the registry's scan of a version, saying why (admins):
    the check passes, and the journal keeps who accepted what and the reason."""
    result = service(request).scans.accept(caller(request), name, number, body.reason)
    return json_response(result.as_dict())


@router.get(
    "/{name}/versions/{number}/checks",
    response_model=CheckListOut,
    openapi_extra=needs("model.view"),
)
def list_checks(name: Name, number: Number, request: Request) -> Response:
    """The latest result of every check reported on the version, by name."""
    found = service(request).checks.results(caller(request), name, number)
    return json_response({"items": [r.as_dict() for r in found]})
