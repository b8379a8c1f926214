"""The journal, read in order of sequence number: pages, a long poll, and a live stream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from modelyard.api.auth import authenticate
from modelyard.api.deps import caller, encode_json, json_response, needs, service
from modelyard.api.schemas import CheckpointOut, EventPageOut
from modelyard.domain.access import Caller
from modelyard.domain.models import Event
from modelyard.service.feed import MAX_WAIT_SECONDS, EventQuery

router = APIRouter(prefix="/api/v1", tags=["journal"])
MAX_SEQ = 2**63 - 1  # a 64-bit column: a larger number is refused here, not by the database
RETRY_MS = 2000  # how soon an EventSource reconnects after the stream ends
_MESSAGE_SCHEMA = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The event's seq"},
        "event": {"type": "string", "description": "Its kind"},
        "data": {
            "type": "string",
            "description": "The event, as GET /api/v1/events gives it",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/EventOut"},
        },
        "retry": {"type": "integer", "description": "How soon to reconnect, in ms"},
    },
}


@router.get("/events/head", response_model=CheckpointOut, openapi_extra=needs("registry.admin"))
def journal_head(request: Request) -> Response:
    """The newest event as the registry records it (``checkpoint`` is ``SEQ:HASH``).

    ``modelyard journal verify`` checks that the chain reaches it; an auditor keeps it
    outside the registry, to prove later that the journal still holds that exact event.
    """
    return json_response(service(request).journal_head(caller=caller(request)).as_dict())


@router.get("/events", response_model=EventPageOut, openapi_extra=needs("model.view"))
async def list_events(
    request: Request,
    after: Annotated[
        int, Query(ge=0, le=MAX_SEQ, description="Return events with seq > after")
    ] = 0,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
    subject: Annotated[str | None, Query(max_length=512)] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="A long poll: when no event matches yet, answer as soon as one is"
            " committed, or with an empty page after this many seconds",
        ),
    ] = 0,
) -> Response:
    """Events after ``after``; pass the last seq you saw as ``after`` to page on.

    Admins read the whole journal; others read the events of the models they may see.
    """
    who = await run_in_threadpool(caller, request)
    query = EventQuery(after=after, limit=limit, subject=subject, kind=kind)
    items = await service(request).feed.wait(who, query, wait)
    return json_response(
        {
            "items": [e.as_dict() for e in items],
            "next_after": items[-1].seq if items else None,
        }
    )


@router.get(
    "/events/stream",
    response_class=StreamingResponse,
    openapi_extra=needs("model.view"),
    responses={
        200: {
            "description": "Server-Sent Events: one message per journal event (`id:` its"
            " seq, `event:` its kind, `data:` the event as GET /api/v1/events gives it),"
            " a comment line as a heartbeat",
            # OpenAPI 3.1 (before itemSchema): the schema of each message.
            "content": {"text/event-stream": {"schema": _MESSAGE_SCHEMA}},
        }
    },
)
async def stream_events(
    request: Request,
    after: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_SEQ,
            description="Start after this seq (0: the whole journal); default: now",
        ),
    ] = None,
    model: Annotated[str | None, Query(max_length=128, description="Only this model")] = None,
    kinds: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="Only these kinds, comma-separated: a kind, FAMILY.* or *"
            " (as webhooks filter), e.g. `version.stage,alias.*`",
        ),
    ] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=100_000, description="End after this many events")
    ] = None,
    timeout: Annotated[
        float | None, Query(ge=0, le=86_400, description="End after this many seconds")
    ] = None,
    last_event_id: Annotated[
        int | None,
        Header(
            alias="Last-Event-ID",
            ge=0,
            le=MAX_SEQ,
            description="Resume after this seq (what an EventSource sends when it"
            " reconnects); takes precedence over `after`",
        ),
    ] = None,
) -> Response:
    """The journal as it is written, as Server-Sent Events, filtered as GET /events is.

    The first message carries only ``id:`` (where the stream starts: a client that keeps
    it resumes from there). The stream ends after ``limit`` events, ``timeout`` seconds,
    or the server's longest stream (an hour by default); reconnect with ``Last-Event-ID``
    to go on where it ended. A revoked token ends it.
    """
    wanted = None if kinds is None else tuple(k.strip() for k in kinds.split(","))
    query = EventQuery(limit=limit, model=model, kinds=wanted)
    header = request.headers.get("authorization")
    who: Caller = await run_in_threadpool(caller, request)
    feed = service(request).feed
    start = last_event_id if last_event_id is not None else after
    if start is None:
        start = await run_in_threadpool(feed.newest_seq, who)
    query = replace(query, after=start)

    def again() -> Caller:
        return authenticate(request.app, header)

    async def messages() -> AsyncIterator[bytes]:
        yield b"retry: %d\nid: %d\n\n" % (RETRY_MS, start)
        async for batch in feed.follow(again, query, timeout):
            yield b"".join(map(_message, batch)) if batch else b": heartbeat\n\n"

    return EventStreamResponse(messages())


def _message(event: Event) -> bytes:
    """One SSE message: the JSON has no newline, so it is one ``data:`` line."""
    kind = event.kind.encode()
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, kind, encode_json(event.as_dict()))


class EventStreamResponse(StreamingResponse):
    """``text/event-stream`` that ends as soon as the client goes away.

    Starlette stops a stream under ASGI 2.4 servers (uvicorn) only when a write fails,
    which an idle stream makes once a heartbeat; this listens for the disconnect
    throughout, so a stream that was waiting on the bell stops at once.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        super().__init__(
            content,
            headers={
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # nginx would otherwise hold messages back
            },
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def respond() -> None:
                with contextlib.suppress(OSError):  # the connection broke mid-write
                    await self.stream_response(send)
                group.cancel_scope.cancel()

            group.start_soon(respond)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()
