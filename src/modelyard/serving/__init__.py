"""``modelyard serve-model``: a model server that follows a reference.

It serves the version ``churn@production`` points at and moves with it: the new version is
fetched, verified, loaded and warmed before an atomic swap, so no request fails. It starts
from its verified local cache when the registry is down. Light on purpose: the SDK, a raw
ASGI app, uvicorn and prometheus_client; never the registry's server stack.

>>> from modelyard.serving import ServeOptions, serve
>>> serve(ServeOptions("churn@production", registry="http://registry:8080", port=9000))
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from modelyard.client.registry import connect
from modelyard.domain.errors import InvalidInput
from modelyard.domain.references import parse_reference
from modelyard.processes import listening_socket, run_workers
from modelyard.serving._app import ServingApp
from modelyard.serving._cache import ModelCache, default_cache_dir, discard_staging
from modelyard.serving._follower import Follower, Notify, log_notice
from modelyard.serving._metrics import ServingMetrics
from modelyard.serving._package import Package, package
from modelyard.serving._report import Reporter

__all__ = [
    "Package",
    "ServeOptions",
    "ServingApp",
    "create_app",
    "default_cache_dir",
    "package",
    "serve",
]

log = logging.getLogger("modelyard.serving")


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What ``serve-model`` was asked for (the CLI's flags, one to one)."""

    reference: str
    registry: str = "http://127.0.0.1:8080"
    host: str = "127.0.0.1"
    port: int = 9000
    pin: bool = False
    offline: bool = False  # serve what the cache holds for the reference; no registry at all
    workers: int = 1
    cache_dir: Path = field(default_factory=default_cache_dir)
    poll_interval: float = 5.0
    report_every: float = 60.0  # 0: no reports
    max_body: int = 16 * 1024 * 1024
    unsafe_pickle: bool = False  # load pickled versions: only when whoever logged them is trusted
    token: str | None = None
    log_level: str = "warning"


def create_app(options: ServeOptions, notify: Notify = log_notice) -> ServingApp:
    """The ASGI app of one server process: it starts following on the lifespan's startup."""
    parse_reference(options.reference)
    registry = connect(options.registry, token=options.token)
    metrics = ServingMetrics()
    follower = Follower(
        options.reference,
        registry,
        ModelCache(options.cache_dir),
        metrics,
        pin=options.pin,
        offline=options.offline,
        poll_interval=options.poll_interval,
        unsafe_pickle=options.unsafe_pickle,
        notify=notify,
    )
    reporter = None
    if options.report_every > 0 and not options.offline:
        # A client of its own: the follower closes its own when it stops.
        reporter = Reporter(
            connect(options.registry, token=options.token), metrics, options.report_every, notify
        )
    return ServingApp(follower, metrics, reporter=reporter, max_body=options.max_body)


def serve(options: ServeOptions, notify: Notify = log_notice) -> int:
    """Serve until told to stop; the exit status. ``workers`` > 1: that many processes on
    one port (``modelyard.processes``), each following on its own."""
    parse_reference(options.reference)
    cache = ModelCache(options.cache_dir)
    if options.offline and cache.last_served(options.reference) is None:
        raise InvalidInput(
            f"--offline: {options.cache_dir} holds nothing served for {options.reference}"
            " (`modelyard package` writes a cache that does; else serve once with the registry)"
        )
    discard_staging(options.cache_dir)  # before any worker stages anything
    if options.workers <= 1:
        _run_worker(options, notify)
        return 0
    return run_workers(_run_worker, [(options, notify)] * options.workers, "serve-model")


def _run_worker(options: ServeOptions, notify: Notify) -> None:
    import uvicorn

    logging.basicConfig(level=options.log_level.upper(), stream=sys.stderr)
    app = create_app(options, notify)
    config = uvicorn.Config(
        app,
        log_level=options.log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[listening_socket(options.host, options.port, shared=options.workers > 1)])
