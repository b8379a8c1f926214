"""Who is looking at a page: the person signed in (a session cookie), a bearer token, or
(single-user local mode) the registry's owner.

The session cookie is HttpOnly (no script reads it), SameSite=Lax (another site can link
to a page but cannot post with it), Secure when the page is served over https, and lives as
long as the session; the server ends the session itself at sign-out, so a copied cookie is
worthless afterwards.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from modelyard.domain.access import Caller
from modelyard.domain.errors import Unauthorized

SESSION_COOKIE = "myd_session"


def web_caller(request: Request) -> Caller:
    """The caller of a page; raises Unauthorized (the pages send the browser to sign in).

    A valid session cookie first; else an ``Authorization: Bearer`` token (scripts, tests);
    else local mode, which refuses once users exist or when reached from the network.
    """
    found: Caller | None = getattr(request.state, "caller", None)
    if found is None:
        found = _authenticate(request)
        request.state.caller = found
    return found


def _authenticate(request: Request) -> Caller:
    from modelyard.api.auth import authenticate  # api/ mounts web/: imported when used

    app = request.app
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        try:
            caller: Caller = app.state.service.sessions.session_caller(cookie)
            return caller
        except Unauthorized:
            pass  # ended or expired: no sign-in, as if there were no cookie
    return authenticate(app, request.headers.get("authorization"))


def signed_in(request: Request) -> Caller | None:
    """The caller, or None where a page is also shown to nobody (the sign-in page)."""
    try:
        return web_caller(request)
    except Unauthorized:
        return None


def set_session_cookie(request: Request, response: Response, value: str) -> None:
    lifetime_us: int = request.app.state.service.sessions.lifetime_us
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=lifetime_us // 1_000_000,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, httponly=True, samesite="lax", secure=request.url.scheme == "https"
    )
