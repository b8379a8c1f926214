"""What keeps the UI's pages safe in a browser: the headers on every page, and the CSRF
check on every form that changes something.

CSRF uses a signed double submit: a random seed in a cookie (HttpOnly, SameSite=Lax) and,
in each form, an HMAC under the server's key of the seed and the session cookie. Another
site can make a browser post to the registry, even one in local mode on loopback, but can
neither read the cookies nor compute the token; ``Origin`` and ``Sec-Fetch-Site``, when the
browser sends them, must also name the registry itself. Binding the token to the session
means a token obtained in one session (say, an attacker's own) is worthless in another,
even if the attacker could plant their seed cookie; signing in and out also rotates the
seed. Lax, not Strict: a Strict cookie is not sent when a person follows a link from chat,
so that page would mint a new seed and break the forms open in other tabs; a cross-site
POST carries no Lax cookie either way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from modelyard.domain.errors import Forbidden
from modelyard.web.session import SESSION_COOKIE

CSRF_COOKIE = "myd_csrf"
CSRF_FIELD = "csrf"

# Nothing but the registry's own origin; no inline script; reports and attachments are
# framed only from the registry itself and never frame it.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self';"
    " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self';"
    " frame-src 'self'"
)
# An HTML report: rendered in a sandboxed frame (no script, no same origin, no forms).
REPORT_POLICY = (
    "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox;"
    " frame-ancestors 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def _sign(request: Request, seed: str) -> str:
    key = request.app.state.service.key.derive("csrf")
    session = request.cookies.get(SESSION_COOKIE, "")
    mac = hmac.new(key, f"{seed}\n{session}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def csrf_token(request: Request) -> str:
    """The token this request's forms carry. Creates the cookie's seed when the browser
    has none yet; ``set_csrf_cookie`` then sends it with the page."""
    seed = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf_seed", None)
    if seed is None:
        seed = secrets.token_urlsafe(32)
        request.state.new_csrf_seed = seed
    return _sign(request, seed)


def set_csrf_cookie(request: Request, response: Response) -> None:
    seed = getattr(request.state, "new_csrf_seed", None)
    if seed is not None:
        response.set_cookie(
            CSRF_COOKIE, seed, httponly=True, samesite="lax", secure=is_https(request)
        )


def rotate_csrf(request: Request, response: Response) -> None:
    """A new seed with the response: at sign-in and sign-out, so that nothing learnt before
    (a seed planted or seen) carries over into the new session."""
    request.state.new_csrf_seed = secrets.token_urlsafe(32)
    set_csrf_cookie(request, response)


def verify_csrf(request: Request, submitted: str | None) -> None:
    """Refuse a state-changing request without this browser's token, or from elsewhere."""
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin is not None and origin != own:
        raise Forbidden(f"a form posted from {origin} is refused", code="csrf_failed")
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise Forbidden("a form posted from another site is refused", code="csrf_failed")
    seed = request.cookies.get(CSRF_COOKIE)
    if (
        seed is None
        or submitted is None
        or not hmac.compare_digest(_sign(request, seed), submitted)
    ):
        raise Forbidden(
            "this form has expired or did not come from this registry; reload the page and"
            " try again",
            code="csrf_failed",
        )
