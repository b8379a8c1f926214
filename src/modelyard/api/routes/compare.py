"""Champion vs challenger: two versions side by side, and a pass/fail gate for CI/CD."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from modelyard.api.deps import caller, json_response, needs, service

router = APIRouter(prefix="/api/v1", tags=["compare"])

Ref = Annotated[str, Query(max_length=512, description="NAME, NAME/N, NAME@ALIAS, NAME@sha256:HEX")]


class DifferenceOut(BaseModel):
    a: Any
    b: Any
    status: str  # same | added | removed | changed
    delta: float | None  # b - a when both are numbers


class FileDifferenceOut(BaseModel):
    a: dict[str, Any] | None
    b: dict[str, Any] | None
    status: str


class ComparisonOut(BaseModel):
    """Every overview field, metric, lineage and platform field; only the params, packages
    and files that differ (how many do not is in ``unchanged``)."""

    a: str
    b: str
    overview: dict[str, DifferenceOut]
    metrics: dict[str, DifferenceOut]
    params: dict[str, DifferenceOut]
    lineage: dict[str, DifferenceOut]
    environment: dict[str, DifferenceOut]
    packages: dict[str, DifferenceOut]
    files: dict[str, FileDifferenceOut]
    unchanged: dict[str, int]


class GateCheckOut(BaseModel):
    metric: str
    direction: Literal["higher", "lower"]
    challenger: float | None
    against: float | None
    delta: float | None
    passed: bool
    message: str


class GateOut(BaseModel):
    passed: bool
    challenger: str
    against: str
    min_delta: float
    checks: list[GateCheckOut]


@router.get("/compare", response_model=ComparisonOut, openapi_extra=needs("model.view"))
def compare(request: Request, a: Ref, b: Ref) -> Response:
    """Compare two versions (of one model or two): metrics with deltas (b - a), params,
    lineage, environment and files."""
    return json_response(service(request).compare(a, b, caller=caller(request)).as_dict())


@router.get("/gate", response_model=GateOut, openapi_extra=needs("model.view"))
def gate(
    request: Request,
    challenger: Ref,
    against: Annotated[
        str,
        Query(
            max_length=512,
            description="An alias or stage of the challenger's model (production),"
            " or any reference",
        ),
    ],
    metric: Annotated[
        list[str] | None,
        Query(
            description="NAME (higher is better), NAME:higher or NAME:lower;"
            " repeatable, all must pass"
        ),
    ] = None,
    min_delta: float = 0.0,
    lower_is_better: Annotated[
        bool,
        Query(description="Deprecated: the direction of every metric named without one"),
    ] = False,
) -> Response:
    """Does the challenger beat ``against`` by at least ``min_delta`` on every metric?

    A losing challenger is an answer, not an error: 200 with ``passed: false``.
    """
    result = service(request).gate(
        challenger,
        against,
        caller=caller(request),
        metrics=metric or [],
        min_delta=min_delta,
        lower_is_better=lower_is_better,
    )
    return json_response(result.as_dict())
