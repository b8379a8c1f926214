"""A real HTTP receiver on loopback for the webhook tests: it records every request and
answers what the test scripted (status, headers, body, or holding the answer back)."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the body was read
    client_port: int = 0  # which connection it came on


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    hold: threading.Event | None = None  # answer only once this is set


Script = Callable[[Received], Reply]


class Receiver:
    """``script`` decides each answer; the default answers 200."""

    def __init__(self, script: Script | None = None, keep_alive: bool = False) -> None:
        self.script: Script = script or (lambda _: Reply())
        self.keep_alive = keep_alive
        self.closed = 0  # connections ended (by either side)
        self.received: list[Received] = []
        self._cond = threading.Condition()
        self.server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def url(self, path: str = "/hook", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def record(self, request: Received) -> None:
        with self._cond:
            self.received.append(request)
            self._cond.notify_all()

    def connection_ended(self) -> None:
        with self._cond:
            self.closed += 1
            self._cond.notify_all()

    def wait_for_closed(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.closed < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.closed} of {count} connections ended")
                self._cond.wait(left)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Block until ``count`` requests arrived (or fail at the deadline)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.received)} of {count} requests arrived")
                self._cond.wait(left)
            return list(self.received)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            request = Received(
                self.path,
                dict(self.headers.items()),
                body,
                time.monotonic(),
                int(self.client_address[1]),
            )
            receiver.record(request)
            reply = receiver.script(request)
            if reply.hold is not None:
                reply.hold.wait(30)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            if not receiver.keep_alive:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)

        def finish(self) -> None:
            super().finish()
            receiver.connection_ended()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def receiving(
    script: Script | None = None,
    tls: ssl.SSLContext | None = None,
    keep_alive: bool = False,
    idle_timeout: float | None = None,
) -> Iterator[Receiver]:
    """A receiver listening on 127.0.0.1 (an ephemeral port) for the block's duration;
    ``keep_alive`` keeps connections open between requests, closing one idle for
    ``idle_timeout`` seconds."""
    receiver = Receiver(script, keep_alive)
    handler = _handler(receiver)
    handler.timeout = idle_timeout
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    receiver.server = server
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
