"""Signing in and out: a password or an API token starts a server-side session."""

from __future__ import annotations

import string
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Form
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from modelyard.domain.errors import TooManyRequests, Unauthorized
from modelyard.service import RegistryService
from modelyard.web.render import page
from modelyard.web.routing import page_router
from modelyard.web.security import rotate_csrf, verify_csrf
from modelyard.web.session import SESSION_COOKIE, clear_session_cookie, set_session_cookie

router = page_router()

Field = Annotated[str, Form()]
_UNSAFE = set(string.whitespace) | {"\\"} | {chr(c) for c in range(32)} | {"\x7f"}


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this registry, else ``/``.

    Never another origin: not ``//host`` or ``https://host``, nor what browsers turn into
    one (``/\\host``, ``/<tab>/host``).
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if any(c in _UNSAFE for c in target):
        return "/"
    parts = urlsplit(target)
    return "/" if parts.scheme or parts.netloc else target


def _service(request: Request) -> RegistryService:
    service: RegistryService = request.app.state.service
    return service


def _local(request: Request) -> bool:
    return _service(request).access.local_mode(request.app.state.reach)


def _form(
    request: Request, target: str, *, error: str | None = None, user: str = "", status: int = 200
) -> Response:
    return page(
        request,
        "signin.html",
        status=status,
        next=target,
        error=error,
        user=user,
        local=_local(request),
    )


@router.get("/signin")
def signin_page(request: Request, next: str = "/") -> Response:
    """The sign-in form (in local mode: a page saying none is needed)."""
    return _form(request, safe_next(next))


@router.post("/signin")
def signin(
    request: Request,
    csrf: Field = "",
    user: Field = "",
    password: Field = "",
    token: Field = "",
    next: Field = "/",
) -> Response:
    """Check the password (or token), start a session, and go where the person was going.

    A failure says the same whatever was wrong, and costs the same (``verify_password``).
    """
    verify_csrf(request, csrf)
    target = safe_next(next)
    if _local(request):
        return RedirectResponse(target, status_code=303)
    sessions = _service(request).sessions
    client = request.client.host if request.client else None
    try:
        if token.strip():
            cookie, _ = sessions.start_session_with_token(token, client=client)
        else:
            cookie, _ = sessions.start_session(user, password, client=client)
    except Unauthorized as exc:
        return _form(request, target, error=exc.message, user=user, status=401)
    except TooManyRequests as exc:
        refused = _form(request, target, error=exc.message, user=user, status=429)
        refused.headers["Retry-After"] = str(exc.details["retry_after"])
        return refused
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:  # signing in as someone else ends the session this browser had
        sessions.end_session(previous)
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(request, response, cookie)
    rotate_csrf(request, response)
    return response


@router.post("/signout")
def signout(request: Request, csrf: Field = "") -> Response:
    """End the session server-side (the cookie is worthless even if kept) and forget it."""
    verify_csrf(request, csrf)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        _service(request).sessions.end_session(cookie)
    response = RedirectResponse("/signin", status_code=303)
    clear_session_cookie(request, response)
    rotate_csrf(request, response)
    return response
