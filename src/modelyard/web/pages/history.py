"""History and audit: a model's timeline, what its stages and aliases held at a moment,
and (admins) the whole journal with its filters and the check of its hash chain."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from modelyard.domain.events import CATALOGUE
from modelyard.domain.journal import Checkpoint
from modelyard.domain.models import EventFilter
from modelyard.service import RegistryService
from modelyard.web.forms import moment, optional, posted
from modelyard.web.render import page
from modelyard.web.routing import page_router
from modelyard.web.sentences import sentence
from modelyard.web.session import web_caller

router = page_router()
HISTORY_ROWS = 200  # a page stays well under 150 KB
JOURNAL_ROWS = 100


def _service(request: Request) -> RegistryService:
    service: RegistryService = request.app.state.service
    return service


@router.get("/models/{name}/history")
def history(request: Request, name: str, before: int | None = None) -> Response:
    """A model's timeline, newest first, a page at a time."""
    events = _service(request).lifecycle.history(
        web_caller(request), name, limit=HISTORY_ROWS, before=before
    )
    return page(
        request,
        "history.html",
        name=name,
        rows=[(e, sentence(e)) for e in reversed(events)],
        older=events[0].seq if len(events) == HISTORY_ROWS else None,
    )


@router.get("/models/{name}/as-of")
def as_of(request: Request, name: str, at: str = "") -> Response:
    when = moment(at, "the time")
    state = (
        _service(request).lifecycle.model_as_of(web_caller(request), name, when)
        if when is not None
        else None
    )
    return page(request, "as_of.html", name=name, at=at, state=state)


@router.get("/journal")
def journal(
    request: Request,
    actor: str = "",
    kind: str = "",
    model: str = "",
    since: str = "",
    until: str = "",
    before: int | None = None,
) -> Response:
    """The whole journal, newest first, a page at a time (admins: the head says so)."""
    caller = web_caller(request)
    service = _service(request)
    head = service.journal_head(caller=caller)
    filters = EventFilter(
        actor=actor or None,
        model=model or None,
        since=moment(since, "'since'"),
        until=moment(until, "'until'"),
    )
    events = service.events(
        caller=caller,
        kind=kind or None,
        filters=filters,
        before=before if before is not None else head.seq + 1,
        limit=JOURNAL_ROWS,
    )
    query = {"actor": actor, "kind": kind, "model": model, "since": since, "until": until}
    return page(
        request,
        "journal.html",
        head=head,
        rows=[(e, sentence(e)) for e in events],
        kinds=sorted(CATALOGUE),
        query=query,
        older=events[-1].seq if len(events) == JOURNAL_ROWS else None,
    )


@router.post("/journal/verify")
async def verify(request: Request) -> Response:
    """Recompute the chain up to the recorded head (and a checkpoint, when one is given)."""
    form = await posted(request)
    caller = web_caller(request)
    service = _service(request)
    kept = optional(form, "checkpoint")
    checkpoint = Checkpoint.parse(kept) if kept else None
    report = await run_in_threadpool(
        lambda: service.verify_journal(caller=caller, checkpoint=checkpoint)
    )
    head = await run_in_threadpool(lambda: service.journal_head(caller=caller))
    return page(request, "journal_verify.html", report=report, head=head, checkpoint=kept)
