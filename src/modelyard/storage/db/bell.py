"""The journal bell: whoever waits for new events (webhook delivery, the event stream, a
long poll) sleeps here instead of polling the database in a loop.

``Database.write`` rings it after a commit that appended events, so a waiter in the same
process wakes at once. Events written by another process (a second replica on the same
PostgreSQL, a CLI in local mode) ring nothing here, so every waiter also re-reads the
journal's head at least every ``poll`` seconds: that bounds how late it hears of them.
The worker processes of one ``modelyard serve --workers N`` ring each other's bells
(``BellPeers``), so a stream in one hears a commit in another at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

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


class BellPeers:
    """Passes the rings of one worker process's bell to its siblings' and theirs to it.

    Each worker binds a Unix datagram socket ``INDEX.sock`` in a directory private to the
    server (0700) and sends the seq of each of its own commits to every sibling's: a
    datagram that never blocks (a sibling not yet listening, gone or with a full queue
    hears of the commit at its own poll instead, as before). What a sibling tells is rung
    here, which also wakes this process's listeners (the delivery process's pipe); a ring
    heard from a sibling is not passed on again.
    """

    def __init__(self, bell: JournalBell, directory: Path, index: int, count: int) -> None:
        self._bell = bell
        self._path = str(directory / f"{index}.sock")
        self._peers = [str(directory / f"{i}.sock") for i in range(count) if i != index]
        self._heard = 0  # the newest seq a sibling told: rung here, not passed on again
        self._inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._inbox.bind(self._path)
        self._outbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._outbox.setblocking(False)
        self._listener = threading.Thread(target=self._listen, name="bell-peers", daemon=True)
        self._listener.start()
        bell.listeners.append(self._tell)

    def _tell(self, seq: int) -> None:
        if seq <= self._heard:
            return
        message = str(seq).encode()
        for peer in self._peers:
            with contextlib.suppress(OSError):  # not listening yet, gone, or busy
                self._outbox.sendto(message, peer)

    def _listen(self) -> None:
        while True:
            message = self._inbox.recv(64)
            if not message.isdigit():
                return  # close() sends an empty datagram
            seq = int(message)
            self._heard = max(self._heard, seq)
            self._bell.ring(seq)

    def close(self) -> None:
        self._bell.listeners.remove(self._tell)
        with contextlib.suppress(OSError):
            self._outbox.sendto(b"", self._path)
        self._listener.join(5)
        self._inbox.close()
        self._outbox.close()
        with contextlib.suppress(OSError):
            Path(self._path).unlink()
