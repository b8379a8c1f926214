"""Who is calling: a bearer token, or (nobody configured, not reached from the network) the
local user."""

from __future__ import annotations

from typing import Any

from modelyard.domain.access import Caller
from modelyard.domain.errors import Unauthorized

REALM = 'Bearer realm="modelyard"'


def authenticate(app: Any, authorization: str | None) -> Caller:
    """The caller of a request, from its Authorization header.

    Without a header, access control decides from how the app is reached
    (``app.state.reach``): the local user in single-user local mode, else 401.
    """
    service = app.state.service
    if authorization is None:
        anonymous: Caller = service.access.anonymous(app.state.reach, app.state.local_user)
        return anonymous
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
