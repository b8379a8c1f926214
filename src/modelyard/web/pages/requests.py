"""The approvals queue: open promotion requests, one request with its evaluation rule by
rule, the comparison with the stage's occupant and its evidence, and the decisions."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from modelyard.domain.comparison import Comparison
from modelyard.domain.errors import NotFound
from modelyard.service import RegistryService
from modelyard.web.forms import done, multiline, posted, text
from modelyard.web.render import page
from modelyard.web.routing import page_router
from modelyard.web.session import web_caller

router = page_router()
QUEUE_ROWS = 200
STATUSES = ("open", "executed", "rejected", "cancelled", "invalidated", "refused")


def _service(request: Request) -> RegistryService:
    service: RegistryService = request.app.state.service
    return service


@router.get("/requests")
def queue(request: Request, status: str = "open", model: str = "") -> Response:
    """Requests of the models the caller sees, open ones first by default."""
    caller = web_caller(request)
    chosen = status if status in STATUSES else "open"
    found = _service(request).lifecycle.requests(
        caller,
        model=model or None,
        status=chosen,
        limit=QUEUE_ROWS,
        newest_first=chosen != "open",  # first come, first reviewed; the closed, newest first
    )
    return page(
        request,
        "requests.html",
        requests=found,
        shown=chosen,
        model=model,
        statuses=STATUSES,
        limit=QUEUE_ROWS,
    )


@router.get("/requests/{request_id}")
def one(request: Request, request_id: int) -> Response:
    caller = web_caller(request)
    service = _service(request)
    life = service.lifecycle
    found = life.request(caller, request_id)
    is_open = found.status == "open"
    may_approve, why_not = life.can_decide(caller, request_id) if is_open else (False, "")
    candidate = f"{found.model}/{found.version}"
    evidence = service.evidence
    return page(
        request,
        "request.html",
        req=found,
        now=life.evaluate_request(caller, request_id) if is_open else None,
        comparison=_against_occupant(service, caller, found.model, found.to_stage, candidate),
        may_approve=may_approve,
        why_not=why_not,
        is_requester=found.requester == caller.name,
        attachments=evidence.attachments(caller, found.model, found.version),
        card=evidence.card(caller, found.model, found.version),
        comments=evidence.comments(caller, model=found.model, request_id=request_id),
    )


def _against_occupant(
    service: RegistryService, caller: Any, model: str, stage: str, candidate: str
) -> Comparison | None:
    """The candidate beside what now holds the target stage (None: the stage is empty)."""
    try:
        return service.compare(f"{model}@{stage}", candidate, caller=caller)
    except NotFound:
        return None


@router.post("/requests/{request_id}/approve")
async def approve(request: Request, request_id: int) -> Response:
    form = await posted(request)
    result = await run_in_threadpool(
        _service(request).lifecycle.approve,
        web_caller(request),
        request_id,
        comment=text(form, "comment"),
    )
    notice = {"executed": "executed", "refused": "refused"}.get(result.status, "approved")
    return done(f"/requests/{request_id}", notice)


@router.post("/requests/{request_id}/reject")
async def reject(request: Request, request_id: int) -> Response:
    form = await posted(request)
    await run_in_threadpool(
        _service(request).lifecycle.reject,
        web_caller(request),
        request_id,
        comment=text(form, "comment"),
    )
    return done(f"/requests/{request_id}", "rejected")


@router.post("/requests/{request_id}/cancel")
async def cancel(request: Request, request_id: int) -> Response:
    form = await posted(request)
    await run_in_threadpool(
        _service(request).lifecycle.cancel,
        web_caller(request),
        request_id,
        comment=text(form, "comment"),
    )
    return done(f"/requests/{request_id}", "cancelled")


@router.post("/requests/{request_id}/comments")
async def comment(request: Request, request_id: int) -> Response:
    form = await posted(request)
    service, caller = _service(request), web_caller(request)
    found = await run_in_threadpool(service.lifecycle.request, caller, request_id)
    await run_in_threadpool(
        lambda: service.evidence.comment(
            caller, model=found.model, request_id=request_id, body=multiline(form, "body")
        )
    )
    return done(f"/requests/{request_id}", "commented")
