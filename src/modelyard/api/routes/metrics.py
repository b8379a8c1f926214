"""``GET /metrics``: Prometheus, for admins and for the scraper holding the metrics token.

Who may scrape: the figures name no model, but they tell how busy the registry is, which
routes fail and how many events it holds, which is no business of a viewer's. So an
admin's token reads them, or the token the server was started with for its scraper
(``--metrics-token``, of which only the SHA-256 is kept; compared in constant time), and
in single-user local mode the local user, as every admin route. Anyone else gets the
answer of any admin route: 401 without a token, 403 with one.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import APIRouter, Request
from starlette.responses import Response

from modelyard.api.deps import caller, needs, service
from modelyard.domain.access import Permission
from modelyard.domain.errors import NotFound

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, openapi_extra=needs("registry.admin"))
def metrics(request: Request) -> Response:
    """Prometheus text exposition: requests by route template and status, latency, blob
    bytes, database pool use, the journal head; summed over every worker process."""
    telemetry = request.app.telemetry
    if not _is_scraper(request.headers.get("authorization"), telemetry.scrape_token_sha256):
        service(request).access.require(caller(request), Permission.ADMIN)
    if telemetry.metrics is None:
        raise NotFound("this app keeps no metrics (modelyard serve does)", code="metrics_off")
    body, media_type = telemetry.metrics.render()
    return Response(body, media_type=media_type, headers={"Cache-Control": "no-store"})


def _is_scraper(authorization: str | None, expected_sha256: str | None) -> bool:
    if not expected_sha256 or authorization is None:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    presented = hashlib.sha256(token.strip().encode()).hexdigest()
    return hmac.compare_digest(presented, expected_sha256)
