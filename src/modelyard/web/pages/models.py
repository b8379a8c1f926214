"""The models list (``/``) and one model (``/models/{name}``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Query
from starlette.requests import Request
from starlette.responses import Response

from modelyard.domain.access import Permission
from modelyard.domain.errors import InvalidFilter, NotFound
from modelyard.domain.filters import parse_filter
from modelyard.domain.lifecycle import ARCHIVED
from modelyard.domain.overview import key_metric, top_stage, tracked_stages
from modelyard.service import RegistryService
from modelyard.web.charts import metric_chart, stage_timeline
from modelyard.web.render import page
from modelyard.web.routing import page_router
from modelyard.web.session import web_caller

router = page_router()

MODELS_PER_PAGE = 50
VERSIONS_PER_PAGE = 50
# The sorts offered; any order_by of the models language works in the URL.
SORTS = {
    "name": "name",
    "updated desc": "recently updated",
    "created desc": "recently created",
    "latest_version desc": "most versions",
}
Text = Annotated[str | None, Query(max_length=4096)]


def service_of(request: Request) -> RegistryService:
    service: RegistryService = request.app.state.service
    return service


@router.get("/")
def models_page(
    request: Request, filter: Text = None, order_by: Text = None, page_token: Text = None
) -> Response:
    """Search (the filter language), sort and cursor pages; a filter mistake is shown
    with a caret under its position, and the page still renders."""
    caller = web_caller(request)
    error: InvalidFilter | None = None
    error_in = ""
    try:
        page_of = service_of(request).list_model_summaries(
            caller=caller,
            filter=filter or None,
            order_by=order_by or None,
            page_token=page_token or None,
            limit=MODELS_PER_PAGE,
        )
    except InvalidFilter as exc:
        error, page_of = exc, None
        error_in = "order_by" if _parses(filter) else "filter"
    next_link = None
    if page_of is not None and page_of.next_page_token:
        query = {"filter": filter or "", "order_by": order_by or ""}
        next_link = "/?" + urlencode({**query, "page_token": page_of.next_page_token})
    return page(
        request,
        "models.html",
        status=400 if error else 200,
        rows=page_of.items if page_of else [],
        filter=filter or "",
        order_by=order_by or "",
        sorts=SORTS,
        error=error,
        error_in=error_in,
        error_text=(filter if error_in == "filter" else order_by) or "",
        position=int(error.details.get("position", 0)) if error else 0,
        next_link=next_link,
        first_page=bool(page_token),
    )


def _parses(filter: str | None) -> bool:
    try:
        parse_filter(filter or "", target="models")
    except InvalidFilter:
        return False
    return True


@router.get("/models/{name}")
def model_page(
    request: Request,
    name: str,
    metric: Text = None,
    online: Text = None,
    page_token: Text = None,
) -> Response:
    """A model: its production card, versions, metric chart, the online series of the
    versions that served, stage timeline, open requests, policy, aliases and (for
    maintainers) who holds which role."""
    caller = web_caller(request)
    service = service_of(request)
    model = service.get_model(name, caller=caller)
    policy, policy_version, own_policy = service.lifecycle.policy(caller, name)
    top = top_stage(policy)
    versions = service.list_versions(
        name,
        caller=caller,
        order_by="version desc",
        page_token=page_token or None,
        limit=VERSIONS_PER_PAGE,
    )
    try:
        production = service.resolve(f"{name}@{top}", caller=caller)
    except NotFound:
        production = None
    card = service.evidence.card(caller, name, production.version) if production else None
    metric_names = sorted({k for v in versions.items for k in v.metrics})
    chosen = metric or key_metric(model.tags, versions.items[0].metrics if versions.items else ())
    periods = service.lifecycle.stage_periods(caller, name)
    series = service.metric_series(name, chosen, caller=caller) if chosen else []
    online_names = service.online.keys(caller, name)
    served = (
        online
        if online in online_names
        else (chosen if chosen in online_names else next(iter(online_names), None))
    )
    online_series = service.online.series(caller, name, served) if served else ()
    stages = tracked_stages(policy)
    grants = (
        service.identity.grants(caller, name)
        if service.access.allows(caller, Permission.MANAGE_MODEL, name)
        else None
    )
    next_link = None
    if versions.next_page_token:
        query = {"page_token": versions.next_page_token, **({"metric": metric} if metric else {})}
        next_link = f"/models/{name}?" + urlencode(query)
    return page(
        request,
        "model.html",
        model=model,
        policy=policy,
        policy_version=policy_version,
        own_policy=own_policy,
        top=top,
        archived=ARCHIVED,
        production=production,
        card=card,
        versions=versions.items,
        next_link=next_link,
        first_page=bool(page_token),
        key=key_metric(model.tags, metric_names),
        metric=chosen,
        metric_names=metric_names,
        chart=metric_chart(chosen or "", series, periods, top),
        online_names=online_names,
        online_metric=served,
        online_chart=metric_chart(
            served or "", online_series, periods, top, f"online {served} of what served"
        ),
        timeline=stage_timeline(stages, periods, datetime.now(UTC)),
        periods=[p for p in periods if p.stage in stages][-40:][::-1],
        requests=service.lifecycle.requests(caller, model=name),
        grants=grants,
        stages=stages,
        main_metrics=main_metrics,
    )


def main_metrics(
    metrics: Mapping[str, float], key: str | None, count: int = 3
) -> list[tuple[str, float]]:
    """The metrics a versions table shows: the key metric first, then by name."""
    names = sorted(metrics, key=lambda k: (k != key, k))[:count]
    return [(k, metrics[k]) for k in names]
