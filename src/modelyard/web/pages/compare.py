"""Compare any two versions (``/compare?a=REF&b=REF``) and judge one against the other."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from starlette.requests import Request
from starlette.responses import Response

from modelyard.domain.comparison import GateResult
from modelyard.domain.errors import InvalidInput
from modelyard.domain.overview import key_metric, top_stage
from modelyard.domain.references import parse_reference
from modelyard.web.charts import metric_bars
from modelyard.web.pages.models import service_of
from modelyard.web.render import page
from modelyard.web.routing import page_router
from modelyard.web.session import web_caller

router = page_router()

_Reference = Annotated[str, Query(max_length=512)]


@router.get("/compare")
def compare_page(
    request: Request, a: _Reference = "", b: _Reference = "", metric: _Reference = ""
) -> Response:
    """``a`` (say the champion; default: the version in production of ``b``'s model)
    beside ``b`` (the challenger), and the gate's verdict on ``metric`` (``auc``,
    ``logloss:lower``; default: the model's key metric)."""
    caller = web_caller(request)
    service = service_of(request)
    a, b, metric = a.strip(), b.strip(), metric.strip()
    if b and not a:  # this one against the occupant of production (the top stage)
        model = parse_reference(b).model
        a = f"{model}@{top_stage(service.lifecycle.policy(caller, model)[0])}"
    if not a or not b:
        return page(request, "compare.html", a=a, b=b, metric=metric, comparison=None)
    comparison = service.compare(a, b, caller=caller)
    if not metric:
        tags = service.get_model(parse_reference(b).model, caller=caller).tags
        metric = key_metric(tags, comparison.metrics) or ""
    gate: GateResult | None = None
    gate_error = None
    if metric:
        try:
            gate = service.gate(b, a, caller=caller, metrics=[metric])
        except InvalidInput as exc:
            gate_error = exc.message
    bars = metric_bars([(name, d.a, d.b) for name, d in comparison.metrics.items()])
    return page(
        request,
        "compare.html",
        a=a,
        b=b,
        metric=metric,
        comparison=comparison,
        bars=bars,
        gate=gate,
        gate_error=gate_error,
    )
