"""Who is calling: a bearer token, or (loopback, nobody configured) the local user."""

from __future__ import annotations

from typing import Any

from modelyard.domain.access import Caller
from modelyard.domain.errors import Unauthorized

REALM = 'Bearer realm="modelyard"'


def authenticate(app: Any, authorization: str | None) -> Caller:
    """The caller of a request, from its Authorization header.

    Without a header: the server's local user in single-user local mode (bound to loopback
    and no user, team or service account exists yet), else 401.
    """
    service = app.state.service
    if authorization is None:
        local_user: str | None = app.state.local_user
        if local_user is not None and not service.access.is_configured():
            return Caller.local_user(local_user)
        raise Unauthorized(
            "this registry needs a token: send 'Authorization: Bearer <token>'"
            " (the CLI and SDK read MODELYARD_TOKEN or what 'modelyard login' saved)",
            code="token_missing",
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "the Authorization header must read 'Bearer <token>'", code="token_malformed"
        )
    caller: Caller = service.access.authenticate(token.strip())
    return caller


def challenge(code: str) -> str:
    """The WWW-Authenticate value of a 401 (RFC 6750)."""
    if code == "token_missing":
        return REALM
    return f'{REALM}, error="invalid_token"'
