"""An ASGI app as a Transport: the very app a server runs, driven in this process.

``modelyard.connect("./dir")`` talks through this to ``create_app(service,
reach=Reach.PROCESS)``: the same authentication, validation, serialisation and
problem+json errors as over HTTP, with no socket. The app runs on an event loop in a
thread of its own, as under uvicorn, lifespan included; a request costs one hop to that
thread and back. Streams flow both ways with backpressure: an upload is read a chunk at a
time as the app asks for it, a download is handed over a chunk at a time as it is read.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar
from urllib.parse import unquote

from starlette.types import ASGIApp, Message

from modelyard.client.transport import Chunks, Request, Response
from modelyard.domain.errors import Unavailable

T = TypeVar("T")
_END = object()  # after the last chunk of a streamed answer


class AsgiTransport:
    def __init__(self, app: ASGIApp, *, on_close: Callable[[], None] | None = None) -> None:
        """``on_close`` runs once the app has shut down (the service's ``close``)."""
        self._app = app
        self._on_close = on_close
        self._state: dict[str, Any] = {}  # lifespan state, copied into each request
        self._lifespan: tuple[asyncio.Queue[Message], asyncio.Future[None]] | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="modelyard-asgi", daemon=True
        )
        self._thread.start()
        self._closed = False
        try:
            self._call(self._startup())
        except BaseException:
            self._stop_loop()
            raise

    def send(self, request: Request) -> Response:
        exchange = _Exchange(request)
        scope = self._scope(request)
        if not request.stream:
            self._call(exchange.run(self._app, scope))
            return Response(exchange.status, exchange.headers, bytes(exchange.buffer))
        task = asyncio.run_coroutine_threadsafe(exchange.run(self._app, scope), self._loop)
        try:
            self._call(exchange.started.wait())
        except BaseException:
            task.cancel()
            raise
        if not exchange.answered:
            task.result()  # raises what the app raised before answering
        return Response(exchange.status, exchange.headers, chunks=self._chunks(exchange, task))

    def _chunks(self, exchange: _Exchange, task: Future[None]) -> Chunks:
        try:
            while (item := self._call(exchange.queue.get())) is not _END:
                yield item  # type: ignore[misc]  # bytes, or _END
            if not exchange.complete:
                raise Unavailable(
                    f"the registry failed while answering {exchange.request.path}",
                    code="unreachable",
                )
        finally:
            if not task.done():  # the reader stopped early: stop the app sending
                exchange.abandoned = True
                task.cancel()

    def _scope(self, request: Request) -> dict[str, Any]:
        headers = [(b"host", b"localhost")]
        headers += [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()
        ]
        if isinstance(request.body, bytes) and request.body:
            headers.append((b"content-length", str(len(request.body)).encode()))
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": "http",
            "path": unquote(request.path),
            "raw_path": request.path.encode("ascii"),
            "query_string": request.query.encode("ascii"),
            "root_path": "",
            "headers": headers,
            "client": None,
            "server": None,
            "state": dict(self._state),
        }

    # -- the loop and the app's lifespan ----------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the app's loop and wait for it; an interrupted wait (Ctrl-C)
        cancels it there too, as a closed connection would under a server."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    async def _startup(self) -> None:
        messages: asyncio.Queue[Message] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        phases = {"startup": loop.create_future(), "shutdown": loop.create_future()}

        async def send(message: Message) -> None:
            phase, _, outcome = message["type"].removeprefix("lifespan.").partition(".")
            if outcome == "complete":
                phases[phase].set_result(None)
            else:
                failure = f"the app's {phase} failed: {message.get('message', '')}"
                phases[phase].set_exception(RuntimeError(failure))

        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self._state}
        app = asyncio.ensure_future(self._app(scope, messages.get, send))
        await messages.put({"type": "lifespan.startup"})
        await asyncio.wait([phases["startup"], app], return_when=asyncio.FIRST_COMPLETED)
        if not phases["startup"].done():  # it returned or raised: it does not use lifespan
            if not app.cancelled():
                app.exception()
            return
        phases["startup"].result()
        self._lifespan = (messages, phases["shutdown"])

    async def _shutdown(self) -> None:
        if self._lifespan is not None:
            messages, finished = self._lifespan
            await messages.put({"type": "lifespan.shutdown"})
            await finished
        # Requests still in progress (an event stream whose reader stopped) end before the
        # service closes, as under asyncio.run: a database read of theirs on a worker
        # thread would otherwise run on after the database was closed.
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._shutdown())
        finally:
            self._stop_loop()
            if self._on_close is not None:
                self._on_close()

    def _stop_loop(self) -> None:
        self._call(self._loop.shutdown_default_executor())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class _Exchange:
    """One request and its answer, as the app sees them (all but construction on the loop)."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.status = 0
        self.headers: dict[str, str] = {}
        self.answered = False  # the app started its answer
        self.complete = False  # and finished it
        self.started = asyncio.Event()  # answered, or the app returned without answering
        self.buffer = bytearray()  # the body, unless streamed
        self.queue: asyncio.Queue[object] = asyncio.Queue(maxsize=2)  # streamed chunks
        self.abandoned = False
        self._finished = asyncio.Event()
        self._request_sent = False
        self._upload: Iterator[bytes] | None = None
        self.upload_error: BaseException | None = None

    async def run(self, app: ASGIApp, scope: dict[str, Any]) -> None:
        try:
            await app(scope, self.receive, self.send)
        except Exception:
            if not self.answered and self.upload_error is None:
                raise  # no answer at all: the caller gets the error itself
            # Answered (a 500 problem) and re-raised after, as Starlette does, the app
            # has logged it as it would under a server; or the upload failed (below).
        finally:
            self._finished.set()
            self.started.set()
            if self.request.stream and not self.abandoned:
                await self.queue.put(_END)
        if self.upload_error is not None:
            raise self.upload_error

    async def receive(self) -> Message:
        body = self.request.body
        if self._request_sent:
            await self._finished.wait()
            return {"type": "http.disconnect"}
        if isinstance(body, bytes):
            self._request_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if self._upload is None:
            self._upload = iter(body)
        try:
            # Off the loop: the chunks come from reading a file.
            chunk = await asyncio.to_thread(next, self._upload, None)
        except Exception as exc:  # the caller's file failed: as if the client went away
            self.upload_error = exc
            self._request_sent = True
            return {"type": "http.disconnect"}
        if chunk is None:
            self._request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            for name, value in message.get("headers", ()):
                key = name.decode("latin-1").lower()
                text = value.decode("latin-1")
                self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text
            self.answered = True
            self.started.set()
        elif message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            if self.request.stream:
                if chunk:
                    await self.queue.put(chunk)
            else:
                self.buffer += chunk
            if not message.get("more_body", False):
                self.complete = True
                self._finished.set()
