"""Authentication and authorization: the one gate every use case passes.

``AccessControl.check`` decides every action: the role a caller holds on the model (their
own grants and their teams', on the model or registry-wide, narrowed by the token) against
the permission the action needs. Rules may raise what an action needs: a protected alias
needs ``alias.set_protected`` (maintainer); the lifecycle's "needs approval" plugs in there.

Authentication, grants and local mode are cached per process (``StampedCache``) under the
identity stamp: every change to users, teams, tokens and grants appends an event that moves
it, so one indexed read tells whether a cached answer still holds, while registrations and
other changes to models leave these caches warm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from modelyard.domain.access import (
    MINIMUM_ROLE,
    Caller,
    Permission,
    Reach,
    Role,
    Visibility,
    parse_token,
    secret_matches,
)
from modelyard.domain.errors import Conflict, Forbidden, NotFound, Unauthorized
from modelyard.service.caches import StampedCache
from modelyard.storage.db.store import Database, Reader, now_us


@dataclass(frozen=True, slots=True)
class Action:
    """What a caller asks to do, with what the rules need to know about it."""

    permission: Permission
    model: str | None = None
    alias: str | None = None


# A rule looks at an action and names a further permission it needs, or None.
Rule = Callable[[Reader, Action], Permission | None]


def protected_alias_rule(tx: Reader, action: Action) -> Permission | None:
    """Moving or deleting a protected alias (champion, production, ...) takes a maintainer."""
    if (
        action.permission is Permission.SET_ALIAS
        and action.model is not None
        and action.alias in tx.protected_aliases(action.model)
    ):
        return Permission.SET_PROTECTED_ALIAS
    return None


class AccessControl:
    def __init__(self, db: Database, rules: Sequence[Rule] = (protected_alias_rule,)) -> None:
        self.db = db
        self.rules = list(rules)
        self.clock: Callable[[], int] = now_us  # microseconds; tests move it to expire tokens
        # Keyed by the sha256 of the token (never the secret itself): (caller, expiry).
        self._callers: StampedCache[str, tuple[Caller, int | None]] = StampedCache(
            self._identity_stamp
        )
        self._grants: StampedCache[int, list[tuple[str | None, Role]]] = StampedCache(
            self._identity_stamp
        )
        self._configured: StampedCache[None, bool] = StampedCache(self._identity_stamp)

    def _identity_stamp(self, _key: object) -> int:
        return self.db.identity_stamp()

    # -- modes --------------------------------------------------------------------------------

    def is_configured(self) -> bool:
        """Whether any user, team or service account exists (else: single-user local mode)."""
        return self._configured.get(None, self.db.has_principals)

    def has_admin(self) -> bool:
        with self.db.read() as tx:
            return tx.has_admin()

    def local_mode(self, reach: Reach) -> bool:
        """Single-user local mode: a caller without a token acts as the registry's owner.

        Only while no user, team or service account exists, and never for a registry
        reached from other machines. In-process callers get no exception: once users
        exist they need a token too (``modelyard admin create`` is the way in).
        """
        return reach.allows_local_mode and not self.is_configured()

    def anonymous(self, reach: Reach, local_user: str) -> Caller:
        """The caller of a request that carries no token: the local user, else 401."""
        if self.local_mode(reach):
            return Caller.local_user(local_user)
        raise Unauthorized(
            "this registry needs a token: send 'Authorization: Bearer <token>'"
            " (the CLI and SDK read MODELYARD_TOKEN or what 'modelyard login' saved)",
            code="token_missing",
        )

    def require_servable(self, reach: Reach) -> None:
        """Refuse to serve other machines before an admin exists: anyone could use it."""
        if reach is Reach.NETWORK and not self.has_admin():
            raise Conflict(
                "refusing to serve beyond this machine with no admin: anyone could use it."
                " Create the first admin where the data lives, with 'modelyard admin create"
                " NAME' (it prints the admin's token once), or bind to 127.0.0.1 for"
                " single-user local mode",
                code="no_admin",
            )

    # -- authentication -----------------------------------------------------------------------

    def authenticate(self, token: str) -> Caller:
        """The caller a bearer token stands for; Unauthorized unless it is valid right now."""
        key = hashlib.sha256(token.encode()).hexdigest()
        caller, expires_at = self._callers.get(key, lambda: self._load_caller(token))
        if expires_at is not None and self.clock() >= expires_at:
            raise Unauthorized(f"token {caller.token_id} has expired", code="token_expired")
        return caller

    def _load_caller(self, token: str) -> tuple[Caller, int | None]:
        """The caller of a token that exists, matches and is not revoked; and its expiry
        (checked on every request by ``authenticate``, not here)."""
        parts = parse_token(token)
        with self.db.read() as tx:
            record = tx.token(parts.token_id)
        if record is None or not secret_matches(record.salt, parts.secret, record.secret_hash):
            raise Unauthorized("the token is not valid", code="token_invalid")
        if record.revoked_at is not None or record.disabled:
            raise Unauthorized(f"token {record.id} has been revoked", code="token_revoked")
        caller = Caller(
            name=record.principal,
            principal_id=record.principal_id,
            token_id=record.id,
            scope_model=record.model,
            read_only=record.read_only,
        )
        return caller, record.expires_at

    # -- authorization ------------------------------------------------------------------------

    def grants_of(self, caller: Caller, tx: Reader | None = None) -> list[tuple[str | None, Role]]:
        """(model or None, role) of every grant to the caller and to the caller's teams."""
        principal_id = caller.principal_id
        if principal_id is None:
            return []

        def load() -> list[tuple[str | None, Role]]:
            if tx is not None:
                return _grants(tx, principal_id)
            with self.db.read() as own:
                return _grants(own, principal_id)

        # Read in the caller's transaction, the grants are cached only if it sees the
        # identity stamp the cache read (see StampedCache.get).
        seen = tx.identity_seq if tx is not None else None
        return self._grants.get(principal_id, load, seen)

    def role(self, caller: Caller, model: str | None, tx: Reader | None = None) -> Role | None:
        """The role the caller may use on ``model`` (None: registry-wide), or None."""
        return self.roles(caller, [model], tx)[model]

    def roles(
        self, caller: Caller, models: Sequence[str | None], tx: Reader | None = None
    ) -> dict[str | None, Role | None]:
        """``role`` for several models at once, reading the caller's grants once."""
        if caller.local:
            return dict.fromkeys(models, Role.ADMIN)
        granted = self.grants_of(caller, tx)
        return {model: caller.limit(_best(granted, model), model) for model in models}

    def require(
        self,
        caller: Caller,
        permission: Permission,
        model: str | None = None,
        tx: Reader | None = None,
    ) -> Role:
        """Pass, or raise: 404 for a model the caller may not see, else 403 naming what lacks."""
        role = self.role(caller, model, tx)
        needed = MINIMUM_ROLE[permission]
        if role is not None and role >= needed:
            return role
        if model is not None and role is None:
            # Exactly what a model that does not exist answers: no existence leak.
            hint = (
                " (registering a new model takes contributor on it, or registry-wide)"
                if permission is Permission.REGISTER
                else ""
            )
            raise NotFound(f"model {model!r} not found{hint}", code="model_not_found")
        raise _forbidden(caller, permission, model, role)

    def allows(self, caller: Caller, permission: Permission, model: str | None = None) -> bool:
        """Whether ``require`` would pass: for an adapter deciding what to offer (a
        download link), never instead of the check the action itself makes."""
        role = self.role(caller, model)
        return role is not None and role >= MINIMUM_ROLE[permission]

    def check(self, tx: Reader, caller: Caller, action: Action) -> None:
        """``require`` for the action's permission and for every one its rules add."""
        self.require(caller, action.permission, action.model, tx)
        for rule in self.rules:
            extra = rule(tx, action)
            if extra is not None:
                self.require(caller, extra, action.model, tx)

    def require_anywhere(self, caller: Caller, permission: Permission) -> None:
        """For actions on no model in particular (uploading blobs): the role on some model."""
        if caller.local:
            return
        needed = MINIMUM_ROLE[permission]
        candidates = (
            [caller.scope_model]
            if caller.scope_model is not None
            else [model for model, _ in self.grants_of(caller)]
        )
        if any(r is not None and r >= needed for r in self.roles(caller, candidates).values()):
            return
        raise _forbidden(caller, permission, None, None)

    def visibility(self, caller: Caller) -> Visibility | None:
        """Which models the caller may list and read events of; None: everything."""
        if caller.local:
            return None
        granted = self.grants_of(caller)
        if caller.scope_model is None:
            wide = caller.limit(_best(granted, None), None)
            if wide is Role.ADMIN:
                return None
            if wide is not None:
                return Visibility(all_models=True)
            return Visibility(False, frozenset(m for m, _ in granted if m is not None))
        sees_scope = self.role(caller, caller.scope_model) is not None
        return Visibility(False, frozenset({caller.scope_model} if sees_scope else ()))


def _best(granted: list[tuple[str | None, Role]], model: str | None) -> Role | None:
    """The highest role granted on ``model`` or registry-wide."""
    return max((role for on, role in granted if on is None or on == model), default=None)


def _grants(tx: Reader, principal_id: int) -> list[tuple[str | None, Role]]:
    ids = [principal_id, *(team.id for team in tx.teams_of(principal_id))]
    return tx.granted_roles(ids)


def _forbidden(
    caller: Caller, permission: Permission, model: str | None, role: Role | None
) -> Forbidden:
    needed = MINIMUM_ROLE[permission]
    where = f"on model {model!r}" if model else "registry-wide"
    held = f"holds {role.label}" if role else "holds no role"
    narrowed = " with this token" if caller.scope_model or caller.read_only else ""
    return Forbidden(
        f"{permission} needs {needed.label} {where}; {caller.name} {held}{narrowed}",
        permission=str(permission),
        required_role=needed.label,
    )
