"""The journal, read in order of sequence number."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from modelyard.api.deps import caller, json_response, needs, service
from modelyard.api.schemas import CheckpointOut, EventPageOut

router = APIRouter(prefix="/api/v1", tags=["journal"])


@router.get("/events/head", response_model=CheckpointOut, openapi_extra=needs("registry.admin"))
def journal_head(request: Request) -> Response:
    """The newest event as the registry records it (``checkpoint`` is ``SEQ:HASH``).

    ``modelyard journal verify`` checks that the chain reaches it; an auditor keeps it
    outside the registry, to prove later that the journal still holds that exact event.
    """
    return json_response(service(request).journal_head(caller=caller(request)).as_dict())


@router.get("/events", response_model=EventPageOut, openapi_extra=needs("model.view"))
def list_events(
    request: Request,
    after: Annotated[int, Query(ge=0, description="Return events with seq > after")] = 0,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
    subject: Annotated[str | None, Query(max_length=512)] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Events after ``after``; pass the last seq you saw as ``after`` to page on.

    Admins read the whole journal; others read the events of the models they may see.
    """
    items = service(request).events(
        caller=caller(request), after=after, limit=limit, subject=subject, kind=kind
    )
    return json_response(
        {
            "items": [e.as_dict() for e in items],
            "next_after": items[-1].seq if items else None,
        }
    )
