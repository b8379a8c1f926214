"""A big upload's body read straight from its socket, past uvicorn's body handling.

Through ASGI every byte of a request body is copied four times in the server process
(httptools hands ``on_body`` a ``bytes``, uvicorn appends it to a ``bytearray``,
``receive()`` copies that into a new ``bytes``, the route copies it into the transfer's
buffers), 64 KiB per turn of the event loop, each turn pausing and resuming the socket.
On the benchmark machine that cost more CPU than the sha256 of the same bytes. So
``modelyard serve`` runs uvicorn with ``RawBodyProtocol``, which offers each request with a
``Content-Length`` body an ASGI extension, ``modelyard.raw_body``: the upload routes take
the connection's socket over for the rest of the body and a worker thread reads it with
``recv_into`` into the transfer's own buffers (one copy, the kernel's).

After a take-over the connection serves no other request: its answer says
``Connection: close``. Wherever the extension is missing (another server, TLS, the
in-process transport, a chunked body) the routes read ``receive()`` as before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
from typing import Any, cast

from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

EXTENSION = "modelyard.raw_body"
# Set in the scope by a route that read the socket: the body's bytes, for the telemetry
# (which counts what passes through ``receive()``, and the socket's bytes do not).
RECEIVED = "modelyard.raw_received"
# A client that sends nothing for this long has gone: the upload is aborted.
IDLE_TIMEOUT_S = 300.0


class ClientGone(ClientDisconnect):
    """The client closed the connection, or went silent, before its body was whole (what
    ``request.stream()`` raises when the client goes away, so both paths end alike)."""


class RawBody:
    """The rest of one request's body, read from a duplicate of its socket.

    ``head`` holds what the parser had already read; ``read`` (on a worker thread, never
    the event loop: it waits for the network) fills a buffer from the socket, never past
    the body's end. ``close`` lets the duplicate go.
    """

    def __init__(self, head: bytes, fd: int, remaining: int) -> None:
        self.head = head
        self.remaining = remaining
        self.received = len(head)  # of the body, so far
        self._fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def read(self, view: memoryview) -> int:
        """Fill ``view`` (up to the body's end) with what has arrived; 0 once it is whole."""
        want = min(len(view), self.remaining)
        if want == 0:
            return 0
        with view[:want] as part:
            while True:
                try:
                    n = os.readv(self._fd, [part])
                except BlockingIOError:
                    if not self._poll.poll(IDLE_TIMEOUT_S * 1000):
                        raise ClientGone("the client sent nothing for too long") from None
                    continue
                except OSError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    raise ClientGone(f"the connection broke ({exc})") from None
                break
        if n == 0:
            raise ClientGone(f"the client went away {self.remaining} bytes before the end")
        self.remaining -= n
        self.received += n
        return n

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


class _Offer:
    """What the extension holds: ``take()`` the body, once, on the event loop."""

    def __init__(self, protocol: RawBodyProtocol, cycle: RequestResponseCycle, length: int):
        self._protocol = protocol
        self._cycle = cycle
        self._length = length

    def take(self) -> RawBody | None:
        """The socket for the rest of the body, or None when the parser is past it or the
        connection is gone (then ``receive()`` tells the route what happened)."""
        protocol, cycle = self._protocol, self._cycle
        transport = protocol.transport
        if cycle is not protocol.cycle or cycle.disconnected or transport.is_closing():
            return None
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        protocol.flow.pause_reading()
        if cycle.waiting_for_100_continue:
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            cycle.waiting_for_100_continue = False
        head = bytes(cycle.body)
        cycle.body = bytearray()
        # The parser will never see the rest: this connection ends with its answer, and
        # a late receive() finds the body ended instead of resuming the socket.
        cycle.keep_alive = False
        cycle.more_body = False
        cycle.flow = cast(FlowControl, _NeverResume(protocol.flow))
        cycle.message_event.set()
        remaining = self._length - protocol.body_seen
        return RawBody(head, os.dup(sock.fileno()), remaining)


class _NeverResume:
    """The connection's flow control, except that reading stays paused (taken over)."""

    def __init__(self, inner: FlowControl) -> None:
        self._inner = inner

    @property
    def write_paused(self) -> bool:
        return self._inner.write_paused

    async def drain(self) -> None:
        await self._inner.drain()

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        pass


class RawBodyProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, offering ``modelyard.raw_body`` to PUT and POST
    requests with a ``Content-Length`` body over plain TCP."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body_seen = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.body_seen = 0

    def on_body(self, body: bytes) -> None:
        self.body_seen += len(body)
        super().on_body(body)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None or cycle.scope is not self.scope or self.scheme != "http":
            return
        if self.scope["method"] not in ("PUT", "POST"):
            return
        length = _content_length(self.headers)
        if length is not None:
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            extensions[EXTENSION] = _Offer(self, cycle, length)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body's declared length; None for a chunked body or a doubtful header."""
    lengths = [value for name, value in headers if name == b"content-length"]
    if any(name == b"transfer-encoding" for name, _ in headers) or len(lengths) != 1:
        return None
    value = lengths[0].strip()
    return int(value) if value.isdigit() and len(value) <= 18 else None


def take_raw_body(scope: dict[str, Any] | Any) -> RawBody | None:
    """The request's body as a socket to read, where the server offers it (on the loop,
    before anything called ``receive()``); None: read ``receive()`` instead."""
    offer = scope.get("extensions", {}).get(EXTENSION) if isinstance(scope, dict) else None
    return offer.take() if isinstance(offer, _Offer) else None
