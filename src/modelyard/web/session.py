"""Who is looking at a page: single-user local mode, or (on a shared server) the person
signed in."""

from __future__ import annotations

from starlette.requests import Request

from modelyard.domain.access import Caller
from modelyard.domain.errors import Unauthorized


def web_caller(request: Request) -> Caller:
    """The caller of a page; raises Unauthorized (the pages send the browser to sign in)."""
    found: Caller | None = getattr(request.state, "caller", None)
    if found is None:
        app = request.app
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            # A token, as the API takes it (scripts, tests): a browser never sends one by
            # itself, so a form from elsewhere cannot ride on it.
            found = app.state.service.access.authenticate(token.strip())
        else:
            found = app.state.service.access.anonymous(app.state.reach, app.state.local_user)
        request.state.caller = found
    return found


def signed_in(request: Request) -> Caller | None:
    """The caller, or None where a page is also shown to nobody (the sign-in page)."""
    try:
        return web_caller(request)
    except Unauthorized:
        return None
