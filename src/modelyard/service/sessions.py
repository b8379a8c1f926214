"""Sign-in to the web UI: server-side sessions behind a signed cookie.

A session is a row (its public id, the SHA-256 of its secret, its holder, the token it was
made with if any, its expiry, when it ended); the cookie carries ``ID.SECRET.MAC``, signed
with the server's key derived for "session". Looking a session up is cached like a token
(``StampedCache`` under the identity stamp): a sign-out, a revoked token, a disabled user
or a new password appends an event that moves the stamp, so the session stops at the next
request on every replica; expiry is checked against the clock on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from dataclasses import dataclass, field

from modelyard.domain.access import (
    Caller,
    new_session,
    parse_session_cookie,
    session_cookie,
    session_secret_hash,
)
from modelyard.domain.errors import TooManyRequests, Unauthorized
from modelyard.domain.events import SessionEnded, SessionStarted
from modelyard.domain.keys import ServerKey
from modelyard.domain.models import iso, utc_from_us
from modelyard.service.access import AccessControl
from modelyard.service.caches import StampedCache
from modelyard.service.identity import IdentityService
from modelyard.storage.db.store import Database, Writer

HOUR_US = 3_600_000_000
DEFAULT_LIFETIME_US = 12 * HOUR_US
MINUTE_US = 60_000_000
MAX_CLIENT = 64  # what the journal keeps of a client's address
MAX_NAME = 64  # the longest principal name


@dataclass
class FailureThrottle:
    """Failed sign-ins remembered per key (a user name, a client address) in this process.

    After ``limit`` failures within ``window_us``, the key is refused until its oldest
    failure in the window ages out. Refusals are decided before any password is checked,
    so a refused guess cannot succeed. Replicas each keep their own counts.
    """

    limit: int
    window_us: int
    max_keys: int = 10_000
    _failures: dict[str, list[int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_us(self, key: str, now: int) -> int:
        """How long ``key`` must wait before its next attempt (0: it may try now)."""
        with self._lock:
            recent = self._recent(key, now)
            if len(recent) < self.limit:
                return 0
            return recent[-self.limit] + self.window_us - now

    def failed(self, key: str, now: int) -> None:
        with self._lock:
            if len(self._failures) >= self.max_keys:
                for stale in [
                    k for k, times in self._failures.items() if not self._live(times, now)
                ]:
                    del self._failures[stale]
                if len(self._failures) >= self.max_keys:
                    self._failures.clear()  # bounded memory before exact counts
            self._failures[key] = [*self._recent(key, now), now]

    def forget(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _recent(self, key: str, now: int) -> list[int]:
        return [t for t in self._failures.get(key, ()) if t > now - self.window_us]

    def _live(self, times: list[int], now: int) -> bool:
        return bool(times) and times[-1] > now - self.window_us


class SessionService:
    def __init__(
        self, db: Database, access: AccessControl, identity: IdentityService, key: ServerKey
    ) -> None:
        self.db = db
        self.access = access
        self.identity = identity
        self._key = key.derive("session")
        self.lifetime_us = DEFAULT_LIFETIME_US
        # Ten wrong passwords per user name, thirty failures per address, per 15 minutes.
        self.per_user = FailureThrottle(limit=10, window_us=15 * MINUTE_US)
        self.per_client = FailureThrottle(limit=30, window_us=15 * MINUTE_US)
        # Keyed by the sha256 of the cookie (never the cookie itself): (caller, expiry).
        self._callers: StampedCache[str, tuple[Caller, int]] = StampedCache(
            lambda _key: self.db.identity_stamp()
        )

    # -- signing in and out ---------------------------------------------------------------------

    def start_session(
        self, username: str, password: str, *, client: str | None = None
    ) -> tuple[str, Caller]:
        """Sign in with a password: the cookie's value and the caller it stands for."""
        user_key = f"user:{username[:MAX_NAME]}"  # no name is longer: bounded memory
        self._throttle(user_key, client)
        try:
            caller, rehashed = self.identity.check_password(username, password)
        except Unauthorized:
            self._failed(user_key, client)
            raise
        self.per_user.forget(user_key)
        with self.db.write() as tx:
            if rehashed is not None:
                assert caller.principal_id is not None
                tx.set_password(caller.principal_id, rehashed, caller.name, self.access.clock())
            cookie = self._start(tx, caller, "password", None, client)
        return cookie, caller

    def start_session_with_token(
        self, token: str, *, client: str | None = None
    ) -> tuple[str, Caller]:
        """Sign in with an API token: the session keeps its limits (model scope, read-only),
        ends when it is revoked, and lasts no longer than it does."""
        self._throttle(None, client)
        try:
            caller = self.access.authenticate(token.strip())
        except Unauthorized:
            self._failed(None, client)
            raise Unauthorized(
                "this token is not valid, or no longer", code="signin_failed"
            ) from None
        with self.db.write() as tx:
            record = tx.token(caller.token_id or "")
            expires = record.expires_at if record is not None else None
            cookie = self._start(tx, caller, "token", expires, client)
        return cookie, caller

    def _start(
        self, tx: Writer, caller: Caller, method: str, limit: int | None, client: str | None
    ) -> str:
        assert caller.principal_id is not None
        now = self.access.clock()
        expires = now + self.lifetime_us if limit is None else min(now + self.lifetime_us, limit)
        parts = new_session()
        tx.purge_web_sessions(now)
        tx.insert_web_session(
            {
                "id": parts.token_id,
                "principal_id": caller.principal_id,
                "token_id": caller.token_id,
                "secret_hash": session_secret_hash(parts.secret),
                "created_at": now,
                "expires_at": expires,
            }
        )
        started = SessionStarted(
            caller.name,
            parts.token_id,
            method,
            iso(utc_from_us(expires)),
            client[:MAX_CLIENT] if client else None,
        )
        tx.append_event(caller, started, now=now)
        return session_cookie(self._key, parts)

    def end_session(self, cookie: str) -> None:
        """Sign out: the session ends server-side, so the cookie is worthless even if kept.
        A cookie that names no live session is ignored (signing out twice is fine)."""
        parts = parse_session_cookie(self._key, cookie)
        if parts is None:
            return
        with self.db.write() as tx:
            record = tx.web_session(parts.token_id)
            if record is None or not _secret_matches(parts.secret, record.secret_hash):
                return
            now = self.access.clock()
            if tx.end_web_sessions(now, session_id=record.id):
                token_id = record.token.id if record.token is not None else None
                actor = Caller(record.principal, record.principal_id, token_id)
                tx.append_event(
                    actor, SessionEnded(record.principal, record.id, "signed_out"), now=now
                )

    # -- who is looking -------------------------------------------------------------------------

    def session_caller(self, cookie: str) -> Caller:
        """The caller a session cookie stands for; Unauthorized unless it is valid right now."""
        parts = parse_session_cookie(self._key, cookie)
        if parts is None:
            raise Unauthorized("this sign-in is not valid: sign in again", code="session_invalid")
        key = hashlib.sha256(cookie.encode()).hexdigest()
        caller, expires_at = self._callers.get(
            key, lambda: self._load(parts.token_id, parts.secret)
        )
        if self.access.clock() >= expires_at:
            raise Unauthorized("your sign-in has expired: sign in again", code="session_expired")
        return caller

    def _load(self, session_id: str, secret: str) -> tuple[Caller, int]:
        """The caller of a session that exists, matches and stands (not ended, its holder
        enabled, its token not revoked); and when it expires (checked on every request)."""
        with self.db.read() as tx:
            record = tx.web_session(session_id)
        if record is None or not _secret_matches(secret, record.secret_hash):
            raise Unauthorized("this sign-in is not valid: sign in again", code="session_invalid")
        token = record.token
        if (
            record.ended_at is not None
            or record.disabled
            or (token is not None and (token.revoked_at is not None or token.disabled))
        ):
            raise Unauthorized("this sign-in has ended: sign in again", code="session_ended")
        expires = record.expires_at
        if token is not None and token.expires_at is not None:
            expires = min(expires, token.expires_at)
        caller = Caller(
            name=record.principal,
            principal_id=record.principal_id,
            token_id=token.id if token else None,
            scope_model=token.model if token else None,
            read_only=token.read_only if token else False,
        )
        return caller, expires

    # -- brute force ----------------------------------------------------------------------------

    def _throttle(self, user_key: str | None, client: str | None) -> None:
        now = self.access.clock()
        waits = [self.per_client.wait_us(f"client:{client[:MAX_CLIENT]}", now)] if client else []
        if user_key is not None:
            waits.append(self.per_user.wait_us(user_key, now))
        wait = max(waits, default=0)
        if wait > 0:
            minutes = -(-wait // MINUTE_US)
            raise TooManyRequests(
                f"too many failed sign-ins; try again in {minutes} minute(s)",
                code="signin_throttled",
                retry_after=-(-wait // 1_000_000),
            )

    def _failed(self, user_key: str | None, client: str | None) -> None:
        now = self.access.clock()
        if user_key is not None:
            self.per_user.failed(user_key, now)
        if client:
            self.per_client.failed(f"client:{client[:MAX_CLIENT]}", now)


def _secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(session_secret_hash(secret), stored_hash)
