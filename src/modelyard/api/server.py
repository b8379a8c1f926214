"""Serving the app with uvicorn (``modelyard serve``): one process, or ``--workers N``.

With several workers the parent has already done what must happen once (migrations, the
start-up clean-up, which needs the blob store to itself); it closes its service and
supervises (``modelyard.processes``). Each worker opens the registry anew and serves the
same port. What keeps them one registry:

- Every cache is stamped by the journal head read from the database (service/caches.py),
  so a change through one worker is seen by the next request to any other.
- Their journal bells ring each other (``BellPeers``): a stream or long poll in one hears
  a commit in another at once, not at the bell's poll.
- Worker 0 alone runs webhook delivery (its delivery process hears every worker's commits
  through its bell); the leases would keep N deliverers safe, at N times the processes.
- Metrics: each worker writes its values to files in a directory private to this server
  (made empty at start, removed at the end), and a scrape sums them.
- Per process still: the sign-in throttle (``FailureThrottle``), so N workers allow up to
  N times its failures, since the kernel picks a worker per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from modelyard.api import logs
from modelyard.api.app import create_app
from modelyard.api.metrics import Metrics
from modelyard.api.rawbody import RawBodyProtocol
from modelyard.api.telemetry import TRUSTED_PROXY, Telemetry
from modelyard.config import DEFAULT_HOST, DEFAULT_PORT, Settings, open_service
from modelyard.domain.access import Reach
from modelyard.processes import listening_socket, run_workers
from modelyard.service import RegistryService
from modelyard.storage.db.bell import BellPeers

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """How ``modelyard serve`` serves (its flags), apart from what the registry is."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    log_level: str = "info"
    log_format: str = "text"  # or json: one object a line
    access_log: bool = False  # a log record per request
    workers: int = 1
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Peers whose X-Forwarded-For, X-Forwarded-Proto and X-Request-Id are believed.
    forwarded_allow_ips: str = "127.0.0.1"
    timeout_keep_alive: int = 5  # seconds: uvicorn's default
    metrics_token_sha256: str | None = None  # of the scraper's token; never the token


def serve(service: RegistryService, options: ServerOptions, reach: Reach) -> int:
    """Serve until told to stop (SIGINT, SIGTERM); the exit status. The service is this
    process's with one worker; with several it is closed and each worker opens its own."""
    # The delivery process, started by the server with a plain environment, reads it.
    os.environ[logs.LOG_FORMAT_VARIABLE] = options.log_format
    if options.workers <= 1:
        app = _app(service, options, reach, deliver=True, metrics=None)
        _run(app, service, options, sockets=None)
        return 0
    settings = service.settings
    if settings is None:
        raise ValueError("several workers open the registry from its Settings")
    service.close()
    runtime = Path(tempfile.mkdtemp(prefix="modelyard-serve-"))  # 0700, empty
    (runtime / "metrics").mkdir()
    (runtime / "bell").mkdir()
    # Before any worker imports prometheus_client: it picks its mode at import.
    os.environ[MULTIPROC_VARIABLE] = str(runtime / "metrics")
    try:
        args = [(settings, options, reach, i, runtime) for i in range(options.workers)]
        return run_workers(_worker, args, "modelyard-serve")
    finally:
        os.environ.pop(MULTIPROC_VARIABLE, None)
        shutil.rmtree(runtime, ignore_errors=True)


def _worker(
    settings: Settings, options: ServerOptions, reach: Reach, index: int, runtime: Path
) -> None:
    logs.configure(options.log_format, options.log_level)
    service = open_service(settings)
    peers = BellPeers(service.db.bell, runtime / "bell", index, options.workers)
    try:
        app = _app(service, options, reach, deliver=index == 0, metrics=runtime / "metrics")
        sock = listening_socket(options.host, options.port, shared=True)
        _run(app, service, options, sockets=[sock])
    finally:
        peers.close()
        service.close()


def _app(
    service: RegistryService,
    options: ServerOptions,
    reach: Reach,
    *,
    deliver: bool,
    metrics: Path | None,
) -> FastAPI:
    telemetry = Telemetry(
        Metrics(service.db, metrics),
        log_requests=options.access_log,
        scrape_token_sha256=options.metrics_token_sha256,
    )
    return create_app(service, reach=reach, deliver=deliver, telemetry=telemetry)


def _run(
    app: FastAPI,
    service: RegistryService,
    options: ServerOptions,
    sockets: list[object] | None,
) -> None:
    config = uvicorn.Config(
        TrustedProxy(app, options.forwarded_allow_ips),
        host=options.host.strip("[]"),
        port=options.port,
        log_level=options.log_level,
        log_config=logs.logging_config(options.log_format, options.log_level),
        access_log=False,  # telemetry's request logs name the route, never the path
        proxy_headers=False,  # TrustedProxy does it, and tells the app whom it trusted
        forwarded_allow_ips=options.forwarded_allow_ips,
        timeout_keep_alive=options.timeout_keep_alive,
        ssl_certfile=options.tls_cert,
        ssl_keyfile=options.tls_key,
        http=RawBodyProtocol,  # big uploads read from the socket (api/rawbody.py)
    )
    _StreamEndingServer(config, service).run(sockets=sockets)  # type: ignore[arg-type]


class TrustedProxy(ProxyHeadersMiddleware):
    """uvicorn's proxy headers (the client's address and scheme from X-Forwarded-For and
    X-Forwarded-Proto, from trusted peers only), marking in the scope whether the peer was
    trusted: only then is its X-Request-Id kept (``api/telemetry.py``)."""

    def __init__(self, app: ASGIApp, trusted_hosts: str) -> None:
        super().__init__(app, trusted_hosts=trusted_hosts)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] == "http":
            client = scope.get("client")
            scope[TRUSTED_PROXY] = client is not None and client[0] in self.trusted_hosts
        await super().__call__(scope, receive, send)  # type: ignore[arg-type]


TICK_SECONDS = 1.0  # how often the server's main loop renews the Date header


class _StreamEndingServer(uvicorn.Server):
    """uvicorn, ending the event streams when told to stop: it waits for the responses in
    progress before it shuts down, and a stream lasts up to an hour. Their clients resume
    with Last-Event-ID on the next server."""

    def __init__(self, config: uvicorn.Config, service: RegistryService) -> None:
        super().__init__(config)
        self._service = service
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit_asked = asyncio.Event()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._service.feed.close()
        super().handle_exit(sig, frame)
        loop = self._loop  # wake main_loop now rather than at its next tick
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._exit_asked.set)

    async def main_loop(self) -> None:
        """uvicorn's loop, ticking once a second instead of ten times (its ticks were an
        idle server's CPU: 2.3 ms a second); a signal to stop wakes it at once."""
        self._loop = asyncio.get_running_loop()
        # What exists once the app has started (modules, routes, the service) lives as
        # long as the process: frozen, the cyclic collector stops walking it at each
        # collection, which was 45% of a busy server's CPU.
        gc.collect()
        gc.freeze()
        ticks = 0
        while not await self.on_tick(ticks):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit_asked.wait(), TICK_SECONDS)
            ticks += 10  # on_tick counts tenths of a second: the Date header is renewed
