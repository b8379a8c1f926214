"""What the server tells its operators: request ids, Prometheus metrics and request logs.

``ModelyardApp`` calls ``Telemetry.track`` at the very edge of every HTTP request, outside
the whole middleware stack and the fast resolve path, so every answer (error pages and
the fast routes included) carries ``X-Request-Id`` and is counted once.

- **Request ids.** An incoming ``X-Request-Id`` is kept only when the request came through
  a trusted proxy (``--forwarded-allow-ips``: the server marks the scope, see
  ``api/server.py``) and is well formed (``REQUEST_ID``); otherwise the server makes one.
  Anyone else could write what they liked into the logs of other requests.
- **Metrics** are labelled by the route's template (``/api/v1/resolve/{reference}``), never
  by the raw path: a model's name is no label, and a scan of random paths adds one series
  (``unmatched``), not one per path. Methods outside ``METHODS`` count as ``other``.
  With ``--workers N`` every process writes its values to files in a private directory
  (prometheus_client's multiprocess mode) and a scrape, whichever worker answers it, sums
  them; the journal head is read from the database at each scrape.
- **Request logs** (``--access-log``) go to the ``modelyard.access`` logger with method,
  route, status, duration and request id: no path, query, header or body, so no token,
  cookie or name a caller typed.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.types import Message, Receive, Scope, Send

from modelyard.api.rawbody import RECEIVED

if TYPE_CHECKING:
    from modelyard.api.metrics import Metrics

access_log = logging.getLogger("modelyard.access")

REQUEST_ID_HEADER = b"x-request-id"
# What an incoming request id may be: the characters of UUIDs, hex, base64url and the
# "Root=1-..." ids of cloud load balancers, at most 128 of them; nothing that could break
# a log line or a header.
REQUEST_ID = re.compile(r"[A-Za-z0-9._~:+=/-]{1,128}")
# Set in the scope by the server when the peer is a trusted proxy (``TrustedProxy``).
TRUSTED_PROXY = "modelyard.trusted_proxy"
# Set in the scope by the routes that answer without FastAPI's router, which would set
# ``scope["route"]``: the template they answer.
ROUTE = "modelyard.route"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
# The routes that carry a blob's bytes: uploads in (PUT, POST), downloads out (GET).
BLOB_ROUTES = frozenset(
    {
        "/api/v1/blobs/{digest}",
        "/api/v1/blobs/uploads",
        "/api/v1/models/{name}/versions/{number}/files/{path}",
        "/api/v1/models/{name}/versions/{number}/attachments/{path}",
        "/models/{name}/versions/{number}/files/{path}",
        "/models/{name}/versions/{number}/attachments/{path}",
        "/models/{name}/versions/{version}/attachments",
    }
)


class Telemetry:
    """Request ids always; metrics when ``metrics`` is given; request logs when asked."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        *,
        log_requests: bool = False,
        scrape_token_sha256: str | None = None,
    ) -> None:
        self.metrics = metrics
        self.log_requests = log_requests
        # The SHA-256 (hex) of the token a scraper presents for /metrics; never the token.
        self.scrape_token_sha256 = scrape_token_sha256

    async def track(
        self, scope: Scope, receive: Receive, send: Send, app: Callable[..., Any]
    ) -> None:
        """Run ``app(scope, receive, send)`` for one HTTP request: the request id added to
        its answer, its figures counted."""
        request_id = _incoming_id(scope) or secrets.token_hex(16)
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        metrics, log_requests = self.metrics, self.log_requests
        if metrics is None and not log_requests:

            async def send_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", ()), header]
                await send(message)

            await app(scope, receive, send_id)
            return

        started = time.perf_counter()
        status = 0
        received = 0
        recorded = False

        def record(answered: int) -> None:
            nonlocal recorded
            recorded = True
            elapsed = time.perf_counter() - started
            route = route_of(scope)
            method = scope["method"] if scope["method"] in METHODS else "other"
            if metrics is not None:
                metrics.observe(method, route, answered, elapsed)
                if route in BLOB_ROUTES and method in ("PUT", "POST"):
                    metrics.blob_bytes(received + scope.get(RECEIVED, 0), 0)
            if log_requests:
                access_log.info(
                    "%s %s %d %.1f ms %s",
                    method,
                    route,
                    answered,
                    elapsed * 1000,
                    request_id,
                    extra={
                        "method": method,
                        "route": route,
                        "status": answered,
                        "duration_ms": round(elapsed * 1000, 3),
                        "request_id": request_id,
                    },
                )

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            elif message["type"] == "http.response.body":
                size = len(message.get("body", b""))
                # A download's bytes are counted as each chunk leaves, not at its end: a
                # streamed answer ends with an empty message that its client, which knew
                # the length, need not wait for before it scrapes.
                if (
                    size
                    and metrics is not None
                    and scope["method"] == "GET"
                    and route_of(scope) in BLOB_ROUTES
                ):
                    metrics.blob_bytes(0, size)
                if not message.get("more_body", False):
                    # Counted before the answer's end leaves: whoever has read a whole
                    # answer finds it counted (a scrape right after, on another worker).
                    record(status)
            await send(message)

        try:
            await app(scope, counting_receive, counting_send)
        finally:
            if not recorded:
                # Ended before its answer did: the client left (499, as nginx logs it), or
                # an exception escaped before any answer (the 500 uvicorn then sends).
                record(status or (500 if _escaping() else 499))


def route_of(scope: Scope) -> str:
    """The template of the route that answered (``/api/v1/models/{name}``), never the path."""
    fast: str | None = scope.get(ROUTE)
    if fast is not None:
        return fast
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) and template else UNMATCHED


def _incoming_id(scope: Scope) -> str | None:
    if not scope.get(TRUSTED_PROXY):
        return None
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            text = value.decode("latin-1")
            return text if REQUEST_ID.fullmatch(text) else None
    return None


def _escaping() -> bool:
    return sys.exc_info()[0] is not None
