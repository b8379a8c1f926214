"""Queries over principals, team memberships, tokens and grants.

Mixed into ``Reader`` and ``Writer`` (store.py), so identity changes share the journal's
write transaction with the event that records them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, func, insert, select, update

from modelyard.domain.access import Grant, Principal, PrincipalKind, Role, Token
from modelyard.domain.models import DEFAULT_PROTECTED_ALIASES, utc_from_us
from modelyard.storage.db.tables import (
    grants,
    models,
    passwords,
    principals,
    team_members,
    tokens,
    web_sessions,
)


def protected_aliases(text: str | None) -> tuple[str, ...]:
    """The column's JSON list; NULL means the defaults."""
    return DEFAULT_PROTECTED_ALIASES if text is None else tuple(json.loads(text))


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A token row with its holder, as authentication needs it."""

    id: str
    salt: str
    secret_hash: str
    expires_at: int | None
    revoked_at: int | None
    model: str | None
    read_only: bool
    principal_id: int
    principal: str
    disabled: bool


_TOKEN = select(
    tokens.c.id,
    tokens.c.salt,
    tokens.c.secret_hash,
    tokens.c.expires_at,
    tokens.c.revoked_at,
    tokens.c.model,
    tokens.c.read_only,
    tokens.c.principal_id,
    principals.c.name.label("principal"),
    principals.c.disabled_at,
).join(principals, tokens.c.principal_id == principals.c.id)


@dataclass(frozen=True, slots=True)
class PasswordRecord:
    """A principal as signing in needs it: its kind, whether it is enabled, its hash."""

    principal_id: int
    name: str
    kind: str
    disabled: bool
    hash: str | None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A web session with what decides whether it still stands: its holder, its token."""

    id: str
    secret_hash: str
    expires_at: int
    ended_at: int | None
    principal_id: int
    principal: str
    disabled: bool
    token: TokenRecord | None


_PASSWORD = select(
    principals.c.id,
    principals.c.name,
    principals.c.kind,
    principals.c.disabled_at,
    passwords.c.hash,
).outerjoin(passwords, passwords.c.principal_id == principals.c.id)

_SESSION = select(web_sessions, principals.c.name, principals.c.disabled_at).join(
    principals, web_sessions.c.principal_id == principals.c.id
)


class IdentityReader:
    conn: Connection

    def principal(self, name: str) -> Row[Any] | None:
        return self.conn.execute(select(principals).where(principals.c.name == name)).first()

    def principals(self, kind: PrincipalKind, name: str | None = None) -> list[Principal]:
        """Every principal of a kind (or the one named), teams with their members."""
        stmt = select(principals).where(principals.c.kind == kind.value)
        if name is not None:
            stmt = stmt.where(principals.c.name == name)
        rows = self.conn.execute(stmt.order_by(principals.c.name)).all()
        members: dict[int, list[str]] = {r.id: [] for r in rows}
        if kind is PrincipalKind.TEAM and rows:
            member = principals.alias("member")
            stmt = (
                select(team_members.c.team_id, member.c.name)
                .join(member, team_members.c.member_id == member.c.id)
                .where(team_members.c.team_id.in_(list(members)))
                .order_by(member.c.name)
            )
            for team_id, name in self.conn.execute(stmt):
                members[team_id].append(name)
        return [principal_from_row(r, members[r.id]) for r in rows]

    def has_admin(self) -> bool:
        """An enabled principal holds registry-wide admin (directly; teams count too)."""
        member = principals.alias("member")
        direct = (
            select(grants.c.id)
            .join(principals, grants.c.principal_id == principals.c.id)
            .where(
                grants.c.model.is_(None),
                grants.c.role == Role.ADMIN.label,
                principals.c.disabled_at.is_(None),
                principals.c.kind != PrincipalKind.TEAM.value,
            )
        )
        via_team = (
            select(grants.c.id)
            .join(team_members, grants.c.principal_id == team_members.c.team_id)
            .join(member, team_members.c.member_id == member.c.id)
            .where(
                grants.c.model.is_(None),
                grants.c.role == Role.ADMIN.label,
                member.c.disabled_at.is_(None),
            )
        )
        return any(self.conn.execute(stmt.limit(1)).first() for stmt in (direct, via_team))

    def token(self, token_id: str) -> TokenRecord | None:
        row = self.conn.execute(_TOKEN.where(tokens.c.id == token_id)).first()
        if row is None:
            return None
        return TokenRecord(
            id=row.id,
            salt=row.salt,
            secret_hash=row.secret_hash,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            model=row.model,
            read_only=bool(row.read_only),
            principal_id=row.principal_id,
            principal=row.principal,
            disabled=row.disabled_at is not None,
        )

    def password(self, name: str) -> PasswordRecord | None:
        row = self.conn.execute(_PASSWORD.where(principals.c.name == name)).first()
        if row is None:
            return None
        return PasswordRecord(row.id, row.name, row.kind, row.disabled_at is not None, row.hash)

    def web_session(self, session_id: str) -> SessionRecord | None:
        row = self.conn.execute(_SESSION.where(web_sessions.c.id == session_id)).first()
        if row is None:
            return None
        return SessionRecord(
            id=row.id,
            secret_hash=row.secret_hash,
            expires_at=row.expires_at,
            ended_at=row.ended_at,
            principal_id=row.principal_id,
            principal=row.name,
            disabled=row.disabled_at is not None,
            token=self.token(row.token_id) if row.token_id is not None else None,
        )

    def tokens(self, principal_id: int | None, token_id: str | None = None) -> list[Token]:
        """Tokens of one principal, or of everyone (None), newest first; or the one named."""
        stmt = select(tokens, principals.c.name.label("principal")).join(
            principals, tokens.c.principal_id == principals.c.id
        )
        if principal_id is not None:
            stmt = stmt.where(tokens.c.principal_id == principal_id)
        if token_id is not None:
            stmt = stmt.where(tokens.c.id == token_id)
        rows = self.conn.execute(stmt.order_by(tokens.c.created_at.desc()))
        return [
            Token(
                id=r.id,
                principal=r.principal,
                name=r.name,
                created_at=utc_from_us(r.created_at),
                created_by=r.created_by,
                expires_at=utc_from_us(r.expires_at) if r.expires_at is not None else None,
                revoked_at=utc_from_us(r.revoked_at) if r.revoked_at is not None else None,
                model=r.model,
                read_only=bool(r.read_only),
            )
            for r in rows
        ]

    def teams_of(self, principal_id: int) -> list[Row[Any]]:
        """(id, name) of the teams a principal belongs to."""
        stmt = (
            select(principals.c.id, principals.c.name)
            .join(team_members, team_members.c.team_id == principals.c.id)
            .where(team_members.c.member_id == principal_id)
            .order_by(principals.c.name)
        )
        return list(self.conn.execute(stmt))

    def granted_roles(self, principal_ids: Sequence[int]) -> list[tuple[str | None, Role]]:
        """(model or None for registry-wide, role) of every grant to these principals."""
        stmt = select(grants.c.model, grants.c.role).where(
            grants.c.principal_id.in_(list(principal_ids))
        )
        return [(model, Role.parse(role)) for model, role in self.conn.execute(stmt)]

    def grants(self, model: str | None, *, everything: bool = False) -> list[Grant]:
        """Grants on ``model`` (None: registry-wide ones), or all of them."""
        stmt = select(grants, principals.c.name, principals.c.kind).join(
            principals, grants.c.principal_id == principals.c.id
        )
        if not everything:
            stmt = stmt.where(
                grants.c.model.is_(None) if model is None else grants.c.model == model
            )
        rows = self.conn.execute(stmt.order_by(grants.c.model, principals.c.name))
        return [
            Grant(
                principal=r.name,
                kind=PrincipalKind(r.kind),
                model=r.model,
                role=Role.parse(r.role),
                created_at=utc_from_us(r.created_at),
                created_by=r.created_by,
            )
            for r in rows
        ]

    def grant_role(self, principal_id: int, model: str | None) -> Role | None:
        row = self.conn.execute(
            select(grants.c.role).where(_grant_key(principal_id, model))
        ).scalar()
        return Role.parse(row) if row else None

    def protected_aliases(self, model: str) -> tuple[str, ...]:
        text = self.conn.execute(
            select(models.c.protected_aliases).where(models.c.name == model)
        ).scalar()
        return protected_aliases(text)


class IdentityWriter(IdentityReader):
    def insert_principal(
        self, name: str, kind: PrincipalKind, description: str, created_by: str, now: int
    ) -> int:
        return int(
            self.conn.execute(
                insert(principals)
                .values(
                    name=name,
                    kind=kind.value,
                    description=description,
                    created_at=now,
                    created_by=created_by,
                )
                .returning(principals.c.id)
            ).scalar_one()
        )

    def disable_principal(self, principal_id: int, now: int) -> None:
        """Disable and revoke every live token: a disabled principal can no longer act."""
        self.conn.execute(
            update(principals).where(principals.c.id == principal_id).values(disabled_at=now)
        )
        self.conn.execute(
            update(tokens)
            .where(tokens.c.principal_id == principal_id, tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    def delete_principal(self, principal_id: int) -> None:
        self.conn.execute(delete(principals).where(principals.c.id == principal_id))

    def add_member(self, team_id: int, member_id: int) -> bool:
        key = and_(team_members.c.team_id == team_id, team_members.c.member_id == member_id)
        if self.conn.execute(select(func.count()).where(key)).scalar_one():
            return False
        self.conn.execute(insert(team_members).values(team_id=team_id, member_id=member_id))
        return True

    def remove_member(self, team_id: int, member_id: int) -> bool:
        result = self.conn.execute(
            delete(team_members).where(
                team_members.c.team_id == team_id, team_members.c.member_id == member_id
            )
        )
        return bool(result.rowcount)

    def insert_token(self, values: dict[str, Any]) -> None:
        self.conn.execute(insert(tokens).values(**values))

    def revoke_token(self, token_id: str, now: int) -> None:
        self.conn.execute(update(tokens).where(tokens.c.id == token_id).values(revoked_at=now))

    def set_password(self, principal_id: int, hashed: str, set_by: str, now: int) -> None:
        self.conn.execute(delete(passwords).where(passwords.c.principal_id == principal_id))
        self.conn.execute(
            insert(passwords).values(
                principal_id=principal_id, hash=hashed, set_at=now, set_by=set_by
            )
        )

    def insert_web_session(self, values: dict[str, Any]) -> None:
        self.conn.execute(insert(web_sessions).values(**values))

    def end_web_sessions(
        self, now: int, *, session_id: str | None = None, principal_id: int | None = None
    ) -> int:
        """End one session, or every live one of a principal; how many ended."""
        stmt = update(web_sessions).where(
            web_sessions.c.ended_at.is_(None), web_sessions.c.expires_at > now
        )
        if session_id is not None:
            stmt = stmt.where(web_sessions.c.id == session_id)
        if principal_id is not None:
            stmt = stmt.where(web_sessions.c.principal_id == principal_id)
        return int(self.conn.execute(stmt.values(ended_at=now)).rowcount)

    def purge_web_sessions(self, now: int) -> None:
        """Forget sessions that ended or expired: the journal keeps their story."""
        self.conn.execute(
            delete(web_sessions).where(
                (web_sessions.c.expires_at <= now) | web_sessions.c.ended_at.is_not(None)
            )
        )

    def set_grant(
        self, principal_id: int, model: str | None, role: Role, created_by: str, now: int
    ) -> None:
        self.delete_grant(principal_id, model)
        self.conn.execute(
            insert(grants).values(
                principal_id=principal_id,
                model=model,
                role=role.label,
                created_at=now,
                created_by=created_by,
            )
        )

    def delete_grant(self, principal_id: int, model: str | None) -> None:
        self.conn.execute(delete(grants).where(_grant_key(principal_id, model)))

    def set_protected_aliases(self, model_id: int, names: Sequence[str]) -> None:
        self.conn.execute(
            update(models)
            .where(models.c.id == model_id)
            .values(protected_aliases=json.dumps(sorted(set(names))))
        )


def _grant_key(principal_id: int, model: str | None) -> Any:
    return and_(
        grants.c.principal_id == principal_id,
        grants.c.model.is_(None) if model is None else grants.c.model == model,
    )


def principal_from_row(row: Row[Any], members: Sequence[str] = ()) -> Principal:
    return Principal(
        name=row.name,
        kind=PrincipalKind(row.kind),
        description=row.description,
        created_at=utc_from_us(row.created_at),
        disabled=row.disabled_at is not None,
        members=tuple(members),
    )
