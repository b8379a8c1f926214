"""The two transports' own duties, below what the SDK tests see: HTTP connections, proxies
and redirects; the in-process app's lifespan and streams."""

from __future__ import annotations

import http.client
import http.server
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

import modelyard
from modelyard.api import create_app
from modelyard.client.asgi import AsgiTransport
from modelyard.client.connections import proxied
from modelyard.client.http import HttpTransport
from modelyard.client.transport import Request
from modelyard.domain.access import Reach
from modelyard.service import RegistryService
from tests.conftest import LiveServer, serving

Tree = Callable[[dict[str, bytes]], Path]
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


class Handler(http.server.BaseHTTPRequestHandler):
    """Answers with ``self.server.answer(handler)``: (status, headers, body)."""

    server: Any

    def do_GET(self) -> None:  # the name http.server calls
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def _answer(self) -> None:
        status, headers, body = self.server.answer(self)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextmanager
def http_server(
    answer: Callable[[Handler], tuple[int, dict[str, str], bytes]],
) -> Iterator[str]:
    """A plain HTTP server on a loopback port, answering every request with ``answer``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.answer = answer  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def forward_proxy(upstream: str, seen: list[str]) -> Callable[[Handler], Any]:
    """A forward proxy that sends every request it is asked for to ``upstream``."""
    target = urlsplit(upstream)

    def answer(handler: Handler) -> tuple[int, dict[str, str], bytes]:
        asked = urlsplit(handler.path)  # a proxy is asked for the absolute URL
        seen.append(f"{handler.command} {asked.hostname} {asked.path}")
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        skip = {"host", "connection", "proxy-connection", "content-length"}
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in skip}
        conn = http.client.HTTPConnection(target.hostname or "", target.port)
        path = asked.path + (f"?{asked.query}" if asked.query else "")
        conn.request(handler.command, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        drop = {"content-length", "transfer-encoding", "connection"}
        kept = {k: v for k, v in response.getheaders() if k.lower() not in drop}
        return response.status, kept, data

    return answer


# -- HTTP ---------------------------------------------------------------------------------


def test_an_unreachable_server_is_a_clear_error() -> None:
    with (
        modelyard.connect("http://127.0.0.1:9") as reg,
        pytest.raises(modelyard.ModelyardError) as caught,
    ):
        reg.resolve("churn")
    assert caught.value.code == "unreachable"
    assert "modelyard serve" in caught.value.message


def test_each_thread_has_its_connection_and_it_goes_with_the_thread(
    live_server: LiveServer, make_tree: Tree
) -> None:
    with modelyard.connect(live_server.url) as reg:
        reg.register("m", make_tree({"w.bin": b"weights"}))
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(lambda _: reg.resolve("m").version, range(100))) == {1}
        # the pool's threads are gone, and their connections with them: the main one stays
        direct = reg._transport._direct  # type: ignore[attr-defined]
        assert len(direct._opened) == 1


def test_the_sdk_reconnects_after_the_server_restarts(
    live_server: LiveServer, make_tree: Tree
) -> None:
    with modelyard.connect(live_server.url) as reg:
        reg.register("m", make_tree({"w.bin": b"weights"}))
        assert reg.resolve("m").version == 1
        live_server.stop()  # the kept-alive connection is now closed by the other end
        live_server.start(port=live_server.port)
        assert reg.resolve("m").version == 1
        assert reg.register("m", make_tree({"w.bin": b"new weights"})).version == 2


def test_requests_go_through_httpx_when_a_proxy_applies(
    no_proxy_settings: pytest.MonkeyPatch,
) -> None:
    url = "http://registry.internal:8080"
    assert not proxied(url)
    direct = HttpTransport(url)
    assert direct._direct is not None
    direct.close()
    no_proxy_settings.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    assert proxied(url)
    assert not proxied("https://registry.internal")
    through_httpx = HttpTransport(url)
    assert through_httpx._direct is None
    through_httpx.close()
    no_proxy_settings.setenv("NO_PROXY", "registry.internal")
    assert not proxied(url)


def test_uploads_and_downloads_honour_the_proxy_settings(
    service: RegistryService, make_tree: Tree, tmp_path: Path, no_proxy_settings: pytest.MonkeyPatch
) -> None:
    """The registry's name does not even resolve here: only the proxy can reach it."""
    seen: list[str] = []
    data = os.urandom(300_000)  # above the inline limit: uploaded, then downloaded, as blobs
    with (
        serving(create_app(service, reach=Reach.LOOPBACK)) as upstream,
        http_server(forward_proxy(upstream, seen)) as proxy,
    ):
        no_proxy_settings.setenv("HTTP_PROXY", proxy)
        with modelyard.connect("http://registry.invalid") as reg:
            version = reg.register("churn", make_tree({"w.bin": data}))
            reg.download("churn/1", tmp_path / "out")
    assert (tmp_path / "out" / "w.bin").read_bytes() == data
    blob = f"/api/v1/blobs/sha256:{version.files[0].sha256}"
    assert seen == [
        "GET registry.invalid /api/v1/blobs/direct-uploads",  # asked once: it takes the bytes
        "POST registry.invalid /api/v1/blobs/uploads",
        "POST registry.invalid /api/v1/models/churn/versions",
        "GET registry.invalid /api/v1/resolve/churn/1",
        f"GET registry.invalid {blob}",
    ]


def test_downloads_follow_redirects_and_keep_the_token_to_the_registry() -> None:
    data = os.urandom(100_000)
    tokens: dict[str, str | None] = {}

    def bucket(handler: Handler) -> tuple[int, dict[str, str], bytes]:
        tokens["bucket"] = handler.headers.get("Authorization")
        return 200, {}, data

    with http_server(bucket) as store:

        def registry(handler: Handler) -> tuple[int, dict[str, str], bytes]:
            tokens[handler.path] = handler.headers.get("Authorization")
            if handler.path == "/api/v1/blobs/sha256:abc":  # moved, on the same origin
                return 308, {"Location": "/api/v1/blobs/elsewhere/abc"}, b""
            return 307, {"Location": f"{store}/bucket/abc?signature=s"}, b""

        with http_server(registry) as url:
            transport = HttpTransport(url)
            asked = Request(
                "GET",
                "/api/v1/blobs/sha256:abc",
                headers={"Authorization": "Bearer t"},
                stream=True,
            )
            response = transport.send(asked)
            assert (response.status, response.read()) == (200, data)
            transport.close()
    assert tokens == {
        "/api/v1/blobs/sha256:abc": "Bearer t",
        "/api/v1/blobs/elsewhere/abc": "Bearer t",
        "bucket": None,  # another origin never sees the registry's token
    }


def test_a_redirect_loop_is_a_clear_error() -> None:
    def loop(handler: Handler) -> tuple[int, dict[str, str], bytes]:
        return 302, {"Location": handler.path}, b""

    with http_server(loop) as url:
        transport = HttpTransport(url)
        with pytest.raises(modelyard.ModelyardError) as caught:
            transport.send(Request("GET", "/api/v1/blobs/sha256:abc", stream=True))
        transport.close()
    assert caught.value.code == "too_many_redirects"


# -- in-process ---------------------------------------------------------------------------


def test_the_in_process_app_gets_its_lifespan_and_streams_both_ways() -> None:
    events: list[str] = []
    release = threading.Event()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        events.append("startup")
        yield {"greeting": "hello"}
        events.append("shutdown")

    async def echo(request: StarletteRequest) -> JSONResponse:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
        return JSONResponse({"received": received, "greeting": request.state.greeting})

    async def endless(request: StarletteRequest) -> StreamingResponse:
        async def chunks() -> Any:
            try:
                while True:
                    yield b"x" * 1024
            finally:
                release.set()  # cancelled when the reader stopped

        return StreamingResponse(chunks())

    app = Starlette(
        routes=[Route("/echo", echo, methods=["POST"]), Route("/endless", endless)],
        lifespan=lifespan,
    )
    transport = AsgiTransport(app)
    assert events == ["startup"]
    upload = (b"a" * 1000 for _ in range(50))
    answer = transport.send(Request("POST", "/echo", body=upload))
    assert answer.body == b'{"received":50000,"greeting":"hello"}'
    endless_answer = transport.send(Request("GET", "/endless", stream=True))
    assert endless_answer.chunks is not None
    assert next(endless_answer.chunks) == b"x" * 1024
    endless_answer.close()
    assert release.wait(10)
    transport.close()
    assert events == ["startup", "shutdown"]


def test_a_failing_upload_raises_its_own_error_in_process() -> None:
    async def sink(request: StarletteRequest) -> JSONResponse:
        async for _ in request.stream():
            pass
        return JSONResponse({})

    def broken() -> Iterator[bytes]:
        yield b"start"
        raise OSError("the disk went away")

    transport = AsgiTransport(Starlette(routes=[Route("/sink", sink, methods=["POST"])]))
    with pytest.raises(OSError, match="the disk went away"):
        transport.send(Request("POST", "/sink", body=broken()))
    transport.close()
