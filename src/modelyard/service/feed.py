"""Waiting for journal events: the long poll of ``GET /events?wait=`` and the live stream
(``GET /events/stream``) share this, so both see exactly what ``RegistryService.events``
shows the caller, and both sleep on the journal bell instead of polling.

A waiter reads the bell's head, then the caller's events after its position. Finding none,
it sleeps until the head passes what it read: commits are serialised by the journal lock,
so every event up to that head was committed when the events were read, and the wait
cannot miss one. The database is read on a worker thread; the event loop only waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import anyio
from anyio import to_thread

from modelyard.domain.access import Caller
from modelyard.domain.errors import Unauthorized
from modelyard.domain.events import CATALOGUE
from modelyard.domain.models import Event, EventFilter
from modelyard.domain.names import validate_model_name
from modelyard.domain.pagination import validate_page_size
from modelyard.domain.webhooks import WILDCARD, filter_matches, parse_event_filter

if TYPE_CHECKING:
    from modelyard.service.registry import RegistryService

MAX_WAIT_SECONDS = 60.0  # a long poll: proxies and load balancers cut idler requests
DEFAULT_HEARTBEAT_SECONDS = 15.0  # under the 30-60 s idle timeouts of common proxies
DEFAULT_STREAM_SECONDS = 3600.0  # then the client reconnects (with Last-Event-ID)
_BATCH = 100  # events read at a time by a stream


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events a waiter wants: those after ``after`` that match every filter given."""

    after: int = 0
    limit: int | None = None
    subject: str | None = None
    kind: str | None = None
    model: str | None = None
    # An event filter as webhooks take it (kinds, FAMILY.*, *), as given.
    kinds: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Checked before a stream starts: once it has, it cannot answer with an error.
        if self.model is not None:
            validate_model_name(self.model)
        if self.kinds is not None:
            object.__setattr__(self, "kinds", parse_event_filter(self.kinds))

    def exact_kinds(self) -> frozenset[str] | None:
        """The catalogue's kinds the filter takes in (None: every kind)."""
        if self.kinds is None or WILDCARD in self.kinds:
            return None
        return frozenset(k for k in CATALOGUE if filter_matches(self.kinds, k))


class EventFeed:
    """``service.feed``. ``heartbeat`` and ``stream_seconds`` come from the settings
    (``MODELYARD_STREAM_HEARTBEAT``, ``MODELYARD_STREAM_SECONDS``); tests shorten them."""

    def __init__(self, service: RegistryService) -> None:
        self._service = service
        self.heartbeat = DEFAULT_HEARTBEAT_SECONDS
        # How long the server holds one stream or long poll open at most.
        self.stream_seconds = DEFAULT_STREAM_SECONDS
        self.open_streams = 0  # followers running now: each ends when its client goes away
        self._closed = False
        # The waits of the streams in progress, each with its loop, so that ``close`` can
        # end them from another thread.
        self._waits: set[tuple[asyncio.AbstractEventLoop, anyio.CancelScope]] = set()

    def close(self) -> None:
        """End every stream now (they end cleanly; clients resume with Last-Event-ID).

        The server calls this when it is told to stop: uvicorn waits for responses in
        progress before it shuts down, and a stream would otherwise hold it for an hour.
        """
        self._closed = True
        for loop, scope in list(self._waits):
            if not loop.is_closed():
                loop.call_soon_threadsafe(scope.cancel)

    def newest_seq(self, caller: Caller) -> int:
        """The seq of the newest event the caller may see (0: none): where a stream that
        starts "now" begins. Not the journal's head, which would tell a caller how much
        happened in models it may not see."""
        newest = self._service.events(caller=caller, before=2**63 - 1, limit=1)
        return newest[0].seq if newest else 0

    async def wait(self, caller: Caller, query: EventQuery, timeout: float) -> list[Event]:
        """The caller's events matching ``query``, as soon as there is one, or [] once
        ``timeout`` seconds (at most ``MAX_WAIT_SECONDS`` and ``stream_seconds``) pass."""
        timeout = min(timeout, MAX_WAIT_SECONDS, self.stream_seconds)
        items, _ = await self._next(caller, query, timeout)
        return items

    async def follow(
        self, authenticate: Callable[[], Caller], query: EventQuery, seconds: float | None
    ) -> AsyncIterator[list[Event]]:
        """Batches of the caller's events as they are committed, in order, and an empty
        batch whenever ``heartbeat`` seconds pass without one; for ``seconds`` (at most
        ``stream_seconds``) or until ``query.limit`` events were given.

        The caller is authenticated again before every batch, so a revoked token, a
        disabled user or an ended session ends the stream, and a revoked grant hides the
        model's events from the next batch on (``events`` reads visibility afresh).
        """
        lasting = self.stream_seconds if seconds is None else min(seconds, self.stream_seconds)
        self.open_streams += 1
        try:
            async for batch in self._follow(authenticate, query, anyio.current_time() + lasting):
                yield batch
        finally:
            self.open_streams -= 1

    async def _follow(
        self, authenticate: Callable[[], Caller], query: EventQuery, deadline: float
    ) -> AsyncIterator[list[Event]]:
        left = query.limit
        scanned = query.after  # where the next read starts: past events the caller may not see
        while True:
            remaining = deadline - anyio.current_time()
            try:
                caller = await to_thread.run_sync(authenticate)
            except Unauthorized:
                return
            batch_query = replace(query, after=scanned, limit=min(left or _BATCH, _BATCH))
            waiting = (asyncio.get_running_loop(), anyio.CancelScope())
            self._waits.add(waiting)
            try:
                if self._closed:
                    return
                with waiting[1]:
                    wait = min(self.heartbeat, remaining)
                    items, scanned = await self._next(caller, batch_query, wait)
                if waiting[1].cancelled_caught:
                    return
            finally:
                self._waits.discard(waiting)
            if items:
                # Authenticated again before anything is sent: what was read while a token
                # was being revoked is not handed over.
                try:
                    await to_thread.run_sync(authenticate)
                except Unauthorized:
                    return
            yield items
            if left is not None:
                left -= len(items)
                if left <= 0:
                    return
            if anyio.current_time() >= deadline:
                return

    async def _next(
        self, caller: Caller, query: EventQuery, timeout: float
    ) -> tuple[list[Event], int]:
        """The next events, and the position the following read may start from."""
        deadline = anyio.current_time() + max(timeout, 0.0)
        after = query.after
        bell = self._service.db.bell
        while True:
            head, items = await to_thread.run_sync(self._read, caller, replace(query, after=after))
            if items:
                # A short page holds every matching event committed so far, so the next
                # read may start past the head; a full one continues after its last.
                full = len(items) == validate_page_size(query.limit)
                return items, items[-1].seq if full else max(head, items[-1].seq)
            # Nothing the caller may see up to the head: no need to read those again.
            after = max(after, head)
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return [], after
            await bell.wait_async(head, remaining)

    def _read(self, caller: Caller, query: EventQuery) -> tuple[int, list[Event]]:
        head = self._service.db.bell.head()  # first: every event up to it is committed
        items = self._service.events(
            caller=caller,
            after=query.after,
            limit=query.limit,
            subject=query.subject,
            kind=query.kind,
            filters=EventFilter(model=query.model),
            kinds=query.exact_kinds(),
        )
        return head, items
