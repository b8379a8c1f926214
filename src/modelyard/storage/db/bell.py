"""The journal bell: whoever waits for new events (webhook delivery, the event stream, a
long poll) sleeps here instead of polling the database in a loop.

``Database.write`` rings it after a commit that appended events, so a waiter in the same
process wakes at once. Events written by another process (a second replica on the same
PostgreSQL, a CLI in local mode) ring nothing here, so every waiter also re-reads the
journal's head at least every ``poll`` seconds: that bounds how late it hears of them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

DEFAULT_POLL_SECONDS = 0.5


class JournalBell:
    def __init__(self, head: Callable[[], int], poll: float = DEFAULT_POLL_SECONDS) -> None:
        """``head`` reads the newest committed seq (from the database)."""
        self._head = head
        self.poll = poll
        self._rung = 0  # the newest seq rung in this process
        self._cond = threading.Condition()
        self._futures: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        # Called with the seq at every ring: passes it to waiters in other processes (the
        # server's delivery process), which would otherwise hear of it only at their poll.
        self.listeners: list[Callable[[int], None]] = []

    def ring(self, seq: int) -> None:
        """A transaction that appended events up to ``seq`` has committed."""
        with self._cond:
            self._rung = max(self._rung, seq)
            self._cond.notify_all()
            futures, self._futures = self._futures, set()
        for loop, future in futures:
            # A loop that has closed since its waiter registered has nobody left to wake.
            if not loop.is_closed():
                loop.call_soon_threadsafe(_wake, future)
        for listener in self.listeners:
            listener(seq)

    def head(self) -> int:
        """The newest committed seq, as the database says."""
        return max(self._rung, self._head())

    def wait(self, after: int, timeout: float) -> int:
        """Block until the journal passes ``after`` or ``timeout`` seconds pass; the head."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                rung = self._rung
            head = rung if rung > after else self._head()
            remaining = deadline - time.monotonic()
            if head > after or remaining <= 0:
                return head
            with self._cond:
                if self._rung == rung:
                    self._cond.wait(min(self.poll, remaining))

    async def wait_async(self, after: int, timeout: float) -> int:
        """``wait`` for a coroutine: the event loop keeps serving while it sleeps."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self._cond:
                rung = self._rung
                future: asyncio.Future[None] = loop.create_future()
                self._futures.add((loop, future))
            # Forgotten however the wait ends: a waiter cancelled (a stream whose client
            # left) would otherwise stay registered until the next ring.
            try:
                # The head is one indexed read of one row; the poll bounds how often it is made.
                head = rung if rung > after else self._head()
                remaining = deadline - loop.time()
                if head > after or remaining <= 0:
                    return head
                await asyncio.wait_for(asyncio.shield(future), min(self.poll, remaining))
            except TimeoutError:
                pass
            finally:
                self._forget(loop, future)

    def _forget(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        with self._cond:
            self._futures.discard((loop, future))


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
