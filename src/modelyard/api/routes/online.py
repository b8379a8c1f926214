"""A version's online metrics: checkers (a serving or monitoring service account) report
them, anyone who sees the model reads them. Not journaled: they are observations."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from modelyard.api.deps import caller, json_response, needs, service
from modelyard.api.routes.models import Limit, Name, Number, PageToken
from modelyard.api.schemas import OnlineMetricsIn, OnlinePageOut, OnlineReportOut

router = APIRouter(prefix="/api/v1/models", tags=["online metrics"])
_PATH = "/{name}/versions/{number}/online-metrics"
Key = Annotated[str | None, Query(max_length=128, description="One metric, e.g. auc.")]
Moment = Annotated[
    datetime | None, Query(description="Bounds on the window end (inclusive), ISO 8601.")
]


@router.post(
    _PATH,
    status_code=201,
    response_model=OnlineReportOut,
    openapi_extra=needs("metrics.report"),
)
def report_online_metrics(
    name: Name, number: Number, body: OnlineMetricsIn, request: Request
) -> Response:
    """Report values observed on the version in production over a window (or at a time;
    else now). Takes the checker role: policies may gate promotions on them."""
    window = (body.window.start, body.window.end) if body.window else None
    report = service(request).online.report(
        caller(request), name, number, body.metrics, window=window, at=body.at
    )
    return json_response(report.as_dict(), status=201)


@router.get(_PATH, response_model=OnlinePageOut, openapi_extra=needs("model.view"))
def list_online_metrics(
    name: Name,
    number: Number,
    request: Request,
    key: Key = None,
    since: Moment = None,
    until: Moment = None,
    page_token: PageToken = None,
    limit: Limit = None,
) -> Response:
    """The version's online series, oldest first by window end, and the newest value of
    each metric."""
    online, who = service(request).online, caller(request)
    page = online.points(
        who, name, number, key=key, since=since, until=until, page_token=page_token, limit=limit
    )
    return json_response(
        {
            "items": [p.as_dict() for p in page.items],
            "latest": online.latest(who, name, number),
            "next_page_token": page.next_page_token,
        }
    )
