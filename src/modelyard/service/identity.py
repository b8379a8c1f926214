"""Users, teams, service accounts, tokens and grants: who may act, all journaled.

Every change here is a write transaction with the journal event that records it, naming
the authenticated actor and the token that acted, like every other change.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Row

from modelyard.domain.access import (
    Caller,
    Grant,
    Identity,
    NewToken,
    Permission,
    Principal,
    PrincipalKind,
    Role,
    Token,
    hash_secret,
    new_salt,
    new_token,
    validate_password,
    validate_principal_name,
)
from modelyard.domain.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from modelyard.domain.events import (
    GrantRevoked,
    GrantSet,
    PasswordSet,
    PrincipalCreated,
    PrincipalDisabled,
    ProtectedAliasesSet,
    TeamDeleted,
    TeamMemberAdded,
    TeamMemberRemoved,
    TokenCreated,
    TokenRevoked,
)
from modelyard.domain.models import Model, to_us
from modelyard.domain.names import validate_alias_name, validate_model_name
from modelyard.service.access import AccessControl
from modelyard.storage.db.identity import principal_from_row
from modelyard.storage.db.store import Database, Reader, Writer, now_us

MAX_TOKEN_NAME = 128
WRONG_PASSWORD = "wrong user name or password"


class IdentityService:
    def __init__(self, db: Database, access: AccessControl) -> None:
        self.db = db
        self.access = access
        # Argon2id with argon2-cffi's defaults (RFC 9106's second recommendation: 64 MiB,
        # 3 passes); a hash stored with other parameters is rehashed at the next sign-in.
        self.passwords = PasswordHasher()
        self._dummy: tuple[PasswordHasher, str] | None = None
        self._dummy_lock = threading.Lock()

    # -- who am I -----------------------------------------------------------------------------

    def whoami(self, caller: Caller) -> Identity:
        if caller.local:
            return Identity(caller.name, "local", None, Role.ADMIN, local=True)
        with self.db.read() as tx:
            row = _principal(tx, caller.name)
            teams = tuple(team.name for team in tx.teams_of(row.id))
        return Identity(
            name=caller.name,
            kind=row.kind,
            token_id=caller.token_id,
            registry_role=self.access.role(caller, None),
            teams=teams,
            model=caller.scope_model,
            read_only=caller.read_only,
        )

    # -- principals ---------------------------------------------------------------------------

    def bootstrap_admin(self, name: str, *, operator: str) -> NewToken:
        """Make ``name`` a registry-wide admin (creating the user) and mint a token for it.

        For ``modelyard admin create``, run by whoever holds the database: no token to
        check, the OS user is the actor. Also the way back in when every admin token is lost.
        """
        validate_principal_name(name)
        actor = Caller.local_user(operator)
        with self.db.write() as tx:
            row = tx.principal(name)
            if row is None:
                principal_id = self._insert_principal(tx, actor, name, PrincipalKind.USER, "")
            elif row.kind != PrincipalKind.USER.value or row.disabled_at is not None:
                raise Conflict(
                    f"{name!r} is a {_kind(row).label}{' (disabled)' if row.disabled_at else ''};"
                    " an admin must be an enabled user",
                    code="principal_exists",
                )
            else:
                principal_id = row.id
            self._set_grant(tx, actor, principal_id, name, None, Role.ADMIN)
            return self._mint(tx, actor, principal_id, name, "admin create", None, None, False)

    def create_principal(
        self, caller: Caller, name: str, kind: PrincipalKind, description: str = ""
    ) -> Principal:
        validate_principal_name(name)
        if len(description) > 4096:
            raise InvalidInput("a description may be at most 4096 characters")
        self.access.require(caller, Permission.ADMIN)
        with self.db.write() as tx:
            if not tx.has_admin():
                raise Conflict(
                    "there is no admin yet: create the first one with"
                    " 'modelyard admin create NAME', which prints its token once",
                    code="no_admin",
                )
            self._insert_principal(tx, caller, name, kind, description)
            return principal_from_row(_principal(tx, name))

    def _insert_principal(
        self, tx: Writer, caller: Caller, name: str, kind: PrincipalKind, description: str
    ) -> int:
        existing = tx.principal(name)
        if existing is not None:
            raise Conflict(
                f"{name!r} already exists (a {_kind(existing).label}); users, teams and"
                " service accounts share one namespace",
                code="principal_exists",
            )
        now = now_us()
        principal_id = tx.insert_principal(name, kind, description, caller.name, now)
        created = PrincipalCreated(name, {"kind": kind.value, "description": description})
        tx.append_event(caller, created, now=now)
        return principal_id

    def principals(self, caller: Caller, kind: PrincipalKind) -> list[Principal]:
        self.access.require(caller, Permission.ADMIN)
        with self.db.read() as tx:
            return tx.principals(kind)

    def get_principal(self, caller: Caller, name: str, kind: PrincipalKind) -> Principal:
        self.access.require(caller, Permission.ADMIN)
        with self.db.read() as tx:
            row = _principal(tx, name, kind)
            if kind is PrincipalKind.TEAM:
                return tx.principals(kind, name)[0]
            return principal_from_row(row)

    def disable_principal(self, caller: Caller, name: str, kind: PrincipalKind) -> None:
        """Disable a user or service account and revoke its tokens; the name stays taken."""
        self.access.require(caller, Permission.ADMIN)
        if name == caller.name:
            raise Conflict("you cannot disable yourself", code="self_disable")
        with self.db.write() as tx:
            row = _principal(tx, name, kind)
            if row.disabled_at is not None:
                return
            now = now_us()
            tx.disable_principal(row.id, now)
            tx.append_event(caller, PrincipalDisabled(name), now=now)

    def delete_team(self, caller: Caller, name: str) -> None:
        """Delete a team, its memberships and its grants."""
        self.access.require(caller, Permission.ADMIN)
        with self.db.write() as tx:
            row = _principal(tx, name, PrincipalKind.TEAM)
            tx.delete_principal(row.id)
            tx.append_event(caller, TeamDeleted(name), now=now_us())

    def set_membership(self, caller: Caller, team: str, member: str, *, present: bool) -> Principal:
        """Add ``member`` (a user or service account) to ``team``, or remove it."""
        self.access.require(caller, Permission.ADMIN)
        with self.db.write() as tx:
            team_row = _principal(tx, team, PrincipalKind.TEAM)
            member_row = _principal(tx, member)
            if member_row.kind == PrincipalKind.TEAM.value:
                raise InvalidInput("teams hold users and service accounts, not other teams")
            if present:
                changed = tx.add_member(team_row.id, member_row.id)
            else:
                changed = tx.remove_member(team_row.id, member_row.id)
            if changed:
                event = TeamMemberAdded if present else TeamMemberRemoved
                tx.append_event(caller, event(team, member), now=now_us())
            return tx.principals(PrincipalKind.TEAM, team)[0]

    # -- passwords ----------------------------------------------------------------------------

    def set_password(self, caller: Caller, user: str, password: str) -> None:
        """Set a user's password (the user themselves, or an admin); ends their web sessions.

        Only the Argon2id hash is stored. A token limited to a model or to reading cannot
        change credentials, not even its holder's own.
        """
        validate_principal_name(user)
        validate_password(password)
        if caller.name != user or caller.local or caller.scope_model or caller.read_only:
            self.access.require(caller, Permission.ADMIN)
        hashed = self.passwords.hash(password)  # outside the transaction: it takes a while
        with self.db.write() as tx:
            row = _principal(tx, user, PrincipalKind.USER)
            if row.disabled_at is not None:
                raise Conflict(f"{user!r} is disabled", code="principal_disabled")
            now = now_us()
            tx.set_password(row.id, hashed, caller.name, now)
            ended = tx.end_web_sessions(now, principal_id=row.id)
            tx.append_event(caller, PasswordSet(user, ended), now=now)

    def verify_password(self, user: str, password: str) -> Caller:
        """The caller a user name and password stand for; Unauthorized, with one message
        and one cost whatever was wrong (no such user, no password, disabled, mismatch)."""
        return self.check_password(user, password)[0]

    def check_password(self, user: str, password: str) -> tuple[Caller, str | None]:
        """``verify_password``, and a fresh hash when the stored one has old parameters."""
        with self.db.read() as tx:
            record = tx.password(user) if isinstance(user, str) and len(user) <= 64 else None
        usable = (
            record is not None
            and record.kind == PrincipalKind.USER.value
            and not record.disabled
            and record.hash is not None
        )
        stored = record.hash if usable and record is not None else None
        hasher = self.passwords
        try:
            hasher.verify(stored or self._dummy_hash(hasher), password)
        except (VerificationError, InvalidHashError):
            stored = None
        if stored is None or record is None:
            raise Unauthorized(WRONG_PASSWORD, code="signin_failed")
        rehashed = hasher.hash(password) if hasher.check_needs_rehash(stored) else None
        return Caller(name=record.name, principal_id=record.principal_id), rehashed

    def _dummy_hash(self, hasher: PasswordHasher) -> str:
        """What a user who does not exist (or has no password) is verified against, so
        that a wrong name costs what a wrong password costs: timing tells nothing. Made
        once per hasher, with its parameters."""
        with self._dummy_lock:
            if self._dummy is None or self._dummy[0] is not hasher:
                self._dummy = (hasher, hasher.hash(new_salt()))
            return self._dummy[1]

    # -- tokens -------------------------------------------------------------------------------

    def create_token(
        self,
        caller: Caller,
        *,
        principal: str | None = None,
        name: str = "",
        expires_at: datetime | None = None,
        model: str | None = None,
        read_only: bool = False,
    ) -> NewToken:
        """A token for the caller, or (admins) for another user or service account.

        A token made with a narrowed token is at least as narrow: same model, read-only.
        """
        if len(name) > MAX_TOKEN_NAME:
            raise InvalidInput(f"a token name may be at most {MAX_TOKEN_NAME} characters")
        if model is not None:
            validate_model_name(model)
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidInput("the expiry needs a time zone, e.g. 2026-12-31T00:00Z")
        expires_us = to_us(expires_at) if expires_at is not None else None
        if expires_us is not None and expires_us <= now_us():
            raise InvalidInput("the expiry must be in the future")
        holder = principal or caller.name
        if caller.local and principal is None:
            raise InvalidInput(
                "in single-user local mode there are no users to hold tokens: create an admin"
                " with 'modelyard admin create NAME'"
            )
        if caller.read_only:
            read_only = True  # the caller's own limits carry over
        if caller.scope_model is not None:
            if model not in (None, caller.scope_model):
                raise _narrower(caller)
            model = caller.scope_model
        if holder != caller.name:
            self.access.require(caller, Permission.ADMIN)
        elif caller.read_only and not read_only:
            raise _narrower(caller)
        with self.db.write() as tx:
            row = _principal(tx, holder)
            if row.kind == PrincipalKind.TEAM.value:
                raise InvalidInput("teams cannot hold tokens: make one for a member instead")
            if row.disabled_at is not None:
                raise Conflict(f"{holder!r} is disabled", code="principal_disabled")
            return self._mint(tx, caller, row.id, holder, name, expires_us, model, read_only)

    def _mint(
        self,
        tx: Writer,
        caller: Caller,
        principal_id: int,
        holder: str,
        name: str,
        expires_us: int | None,
        model: str | None,
        read_only: bool,
    ) -> NewToken:
        token, parts = new_token()
        salt = new_salt()
        now = now_us()
        tx.insert_token(
            {
                "id": parts.token_id,
                "principal_id": principal_id,
                "name": name,
                "salt": salt,
                "secret_hash": hash_secret(salt, parts.secret),
                "created_at": now,
                "created_by": caller.name,
                "expires_at": expires_us,
                "model": model,
                "read_only": read_only,
            }
        )
        info = tx.tokens(principal_id, parts.token_id)[0]
        tx.append_event(caller, TokenCreated(holder, info.as_dict()), now=now)
        return NewToken(token, info)

    def tokens(self, caller: Caller, principal: str | None = None) -> list[Token]:
        """The caller's own tokens; admins may name anyone, or '*' for everyone's."""
        if caller.local and principal is None:
            principal = "*"
        if principal is not None and principal != caller.name:
            self.access.require(caller, Permission.ADMIN)
        with self.db.read() as tx:
            if principal == "*":
                return tx.tokens(None)
            return tx.tokens(_principal(tx, principal or caller.name).id)

    def revoke_token(self, caller: Caller, token_id: str) -> Token:
        """Revoke one of your own tokens, or (admins) anyone's."""
        is_admin = self.access.role(caller, None) is Role.ADMIN
        with self.db.write() as tx:
            record = tx.token(token_id) if len(token_id) == 16 else None
            if record is None or (record.principal != caller.name and not is_admin):
                raise NotFound(f"token {token_id!r} not found", code="token_not_found")
            if record.revoked_at is None:
                now = now_us()
                tx.revoke_token(token_id, now)
                tx.append_event(caller, TokenRevoked(record.principal, token_id), now=now)
            return tx.tokens(record.principal_id, token_id)[0]

    # -- grants -------------------------------------------------------------------------------

    def set_grant(
        self,
        caller: Caller,
        principal: str,
        role: Role,
        *,
        model: str | None = None,
        kind: PrincipalKind | None = None,
    ) -> Grant:
        """Grant ``role`` on ``model`` (maintainers of it), or registry-wide (admins)."""
        self._require_grant_rights(caller, model, role)
        with self.db.write() as tx:
            row = _principal(tx, principal, kind)
            self._set_grant(tx, caller, row.id, principal, model, role)
            return next(g for g in tx.grants(model) if g.principal == principal)

    def _set_grant(
        self,
        tx: Writer,
        caller: Caller,
        principal_id: int,
        principal: str,
        model: str | None,
        role: Role,
    ) -> None:
        before = tx.grant_role(principal_id, model)
        if before is role:
            return
        now = now_us()
        tx.set_grant(principal_id, model, role, caller.name, now)
        granted = GrantSet(model, principal, before.label if before else None, role.label)
        tx.append_event(caller, granted, now=now)

    def revoke_grant(
        self,
        caller: Caller,
        principal: str,
        *,
        model: str | None = None,
        kind: PrincipalKind | None = None,
    ) -> None:
        self._require_grant_rights(caller, model, None)
        with self.db.write() as tx:
            row = _principal(tx, principal, kind)
            before = tx.grant_role(row.id, model)
            if before is None:
                where = f"on model {model!r}" if model else "registry-wide"
                raise NotFound(f"{principal!r} holds no role {where}", code="grant_not_found")
            tx.delete_grant(row.id, model)
            tx.append_event(caller, GrantRevoked(model, principal, before.label), now=now_us())

    def _require_grant_rights(self, caller: Caller, model: str | None, role: Role | None) -> None:
        if model is None:
            self.access.require(caller, Permission.ADMIN)
            return
        validate_model_name(model)
        if role is Role.ADMIN:
            raise InvalidInput("admin is a registry-wide role: grant it without a model")
        self.access.require(caller, Permission.MANAGE_MODEL, model)

    def grants(self, caller: Caller, model: str | None = None) -> list[Grant]:
        """Who holds which role on ``model`` (and registry-wide), or (admins) every grant."""
        if model is None:
            self.access.require(caller, Permission.ADMIN)
            with self.db.read() as tx:
                return tx.grants(None, everything=True)
        validate_model_name(model)
        self.access.require(caller, Permission.VIEW, model)
        with self.db.read() as tx:
            return tx.grants(model) + tx.grants(None)

    # -- protected aliases --------------------------------------------------------------------

    def set_protected_aliases(self, caller: Caller, model: str, aliases: list[str]) -> Model:
        """Which aliases only maintainers may move (default: champion, production)."""
        validate_model_name(model)
        for alias in aliases:
            validate_alias_name(alias)
        if len(aliases) > 100:
            raise InvalidInput("at most 100 protected aliases per model")
        self.access.require(caller, Permission.MANAGE_MODEL, model)
        with self.db.write() as tx:
            model_id = tx.model_id(model)
            if model_id is None:
                raise NotFound(f"model {model!r} not found", code="model_not_found")
            before = list(tx.protected_aliases(model))
            after = sorted(set(aliases))
            if before != after:
                now = now_us()
                tx.set_protected_aliases(model_id, after)
                tx.append_event(caller, ProtectedAliasesSet(model, before, after), now=now)
            found = tx.get_model(model)
            assert found is not None
            return found


def _principal(tx: Reader, name: str, kind: PrincipalKind | None = None) -> Row[Any]:
    row = tx.principal(name)
    if row is None:
        what = kind.label if kind else "user, team or service account"
        raise NotFound(f"no {what} named {name!r}", code="principal_not_found")
    if kind is not None and row.kind != kind.value:
        raise InvalidInput(f"{name!r} is a {_kind(row).label}, not a {kind.label}")
    return row


def _kind(row: Row[Any]) -> PrincipalKind:
    return PrincipalKind(row.kind)


def _narrower(caller: Caller) -> Forbidden:
    limits = []
    if caller.scope_model:
        limits.append(f"to model {caller.scope_model!r}")
    if caller.read_only:
        limits.append("to reading")
    return Forbidden(
        f"this token is limited {' and '.join(limits)}; tokens made with it are limited alike",
        permission="token.create",
    )
