"""Who may do what: principals, roles, permissions, tokens.

Pure rules and values. The service decides with them (``service/access.py``), the API and
SDK only carry them; so a REST caller, the CLI and the in-process SDK are judged alike.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any, Final

from modelyard.domain.errors import InvalidInput, InvalidName, Unauthorized
from modelyard.domain.models import iso, parse_iso

TOKEN_PREFIX: Final = "myd"
PRINCIPAL_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}"  # also in OpenAPI
_PRINCIPAL_RE: Final = re.compile(PRINCIPAL_PATTERN)
_TOKEN_RE: Final = re.compile(r"myd_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_SESSION_RE: Final = re.compile(r"([0-9a-f]{16})\.([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]{43})")
MIN_PASSWORD_LENGTH: Final = 12
MAX_PASSWORD_LENGTH: Final = 1024


class Role(IntEnum):
    """Ordered: each role can do everything the roles below it can.

    Only the labels are stored, so a role may be added between two others. A checker
    (the CI service account that scans and tests) is a contributor that may also report
    check results; contributors may not, so nobody passes their own checks.
    """

    VIEWER = 1
    READER = 2
    CONTRIBUTOR = 3
    CHECKER = 4
    MAINTAINER = 5
    ADMIN = 6

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            names = ", ".join(r.label for r in cls)
            raise InvalidName(f"unknown role {text!r}: use one of {names}") from None


class Permission(StrEnum):
    """What an action needs. Named in every 403, and in the OpenAPI operation it guards."""

    VIEW = "model.view"
    DOWNLOAD = "model.download"
    REGISTER = "model.register"
    EDIT = "model.edit"
    SET_ALIAS = "alias.set"
    SET_PROTECTED_ALIAS = "alias.set_protected"
    DELETE_MODEL = "model.delete"
    MANAGE_MODEL = "model.manage"
    PROMOTE = "model.promote"
    APPROVE = "model.approve"
    ARCHIVE = "model.archive"
    ROLLBACK = "model.rollback"
    DELETE_VERSION = "version.delete"
    REPORT_CHECK = "version.check"
    REPORT_ONLINE_METRICS = "metrics.report"
    ATTACH = "version.attach"
    COMMENT = "model.comment"
    MANAGE_WEBHOOKS = "webhook.manage"
    ADMIN = "registry.admin"


MINIMUM_ROLE: Final[dict[Permission, Role]] = {
    Permission.VIEW: Role.VIEWER,
    Permission.DOWNLOAD: Role.READER,
    Permission.REGISTER: Role.CONTRIBUTOR,
    Permission.EDIT: Role.CONTRIBUTOR,
    Permission.SET_ALIAS: Role.CONTRIBUTOR,
    Permission.SET_PROTECTED_ALIAS: Role.MAINTAINER,
    Permission.DELETE_MODEL: Role.MAINTAINER,
    Permission.MANAGE_MODEL: Role.MAINTAINER,
    Permission.PROMOTE: Role.CONTRIBUTOR,
    # Anyone who sees the model may review; the stage's policy says whose approval counts.
    Permission.APPROVE: Role.VIEWER,
    Permission.ARCHIVE: Role.MAINTAINER,
    Permission.ROLLBACK: Role.MAINTAINER,
    Permission.DELETE_VERSION: Role.MAINTAINER,
    Permission.REPORT_CHECK: Role.CHECKER,
    # Online metrics are evidence a policy may gate production on: like check results they
    # come from a checker (the serving or monitoring service account), so the contributor
    # who registered a version cannot report its production figures.
    Permission.REPORT_ONLINE_METRICS: Role.CHECKER,
    # Evidence: attaching takes a contributor; viewers (reviewers among them) comment.
    Permission.ATTACH: Role.CONTRIBUTOR,
    Permission.COMMENT: Role.VIEWER,
    # A model's webhooks send its events elsewhere: its maintainers decide (registry-wide
    # ones take an admin, registry.admin).
    Permission.MANAGE_WEBHOOKS: Role.MAINTAINER,
    Permission.ADMIN: Role.ADMIN,
}


class Reach(StrEnum):
    """How callers reach the registry: what a request without a token may be trusted as.

    The app is built for one reach (``create_app(service, reach=...)``); access control
    decides what follows from it (``AccessControl.anonymous``, ``require_servable``).
    """

    PROCESS = "process"  # the SDK in the caller's own process: ``connect("./dir")``
    LOOPBACK = "loopback"  # a server bound to 127.0.0.1: this machine's users only
    NETWORK = "network"  # any other address: other machines too

    @property
    def allows_local_mode(self) -> bool:
        """Whether an empty registry may treat a caller without a token as its owner."""
        return self is not Reach.NETWORK


class PrincipalKind(StrEnum):
    USER = "user"
    TEAM = "team"
    SERVICE_ACCOUNT = "service_account"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")

    @classmethod
    def parse(cls, kind: str | PrincipalKind | None) -> PrincipalKind | None:
        if kind is None or isinstance(kind, PrincipalKind):
            return kind
        try:
            return cls(kind)
        except ValueError:
            raise InvalidName(f"unknown kind {kind!r}: use user, team or service_account") from None

    @property
    def collection(self) -> str:
        """The REST collection: users, teams, service-accounts."""
        return self.value.replace("_", "-") + "s"


def validate_principal_name(name: str) -> str:
    """Users, teams and service accounts share one namespace, so an actor name is unique."""
    if not isinstance(name, str) or _PRINCIPAL_RE.fullmatch(name) is None:
        raise InvalidName(
            f"name {name!r} is not allowed: use letters, digits, '.', '_', '@' and '-'"
            " (1..64 characters, starting with a letter or digit)"
        )
    return name


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is acting, as established by authentication, and what their token allows."""

    name: str
    principal_id: int | None = None
    token_id: str | None = None
    scope_model: str | None = None
    read_only: bool = False
    local: bool = False

    @classmethod
    def local_user(cls, name: str) -> Caller:
        """Single-user local mode: the registry's owner, allowed everything."""
        return cls(name=name, local=True)

    def limit(self, role: Role | None, model: str | None) -> Role | None:
        """The role a token lets its holder use: scoped to one model, or capped at reader."""
        if role is None:
            return None
        if self.scope_model is not None and model != self.scope_model:
            return None
        if self.read_only and role > Role.READER:
            return Role.READER
        return role


@dataclass(frozen=True, slots=True)
class Visibility:
    """What a caller who is not an admin may see: every model, or only the named ones.

    Identity events (users, teams, tokens, registry-wide grants) are for admins only.
    """

    all_models: bool
    models: frozenset[str] = frozenset()

    def admits(self, model: str | None) -> bool:
        """Whether an event about ``model`` (None: about no model) may be shown."""
        return model is not None and (self.all_models or model in self.models)


# -- tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecretParts:
    """A public id and its secret: of a token, or of a web session."""

    token_id: str
    secret: str


def new_token() -> tuple[str, SecretParts]:
    """A fresh token: ``myd_<16 hex id>_<43 chars, 256 random bits>``."""
    parts = SecretParts(secrets.token_hex(8), secrets.token_urlsafe(32))
    return f"{TOKEN_PREFIX}_{parts.token_id}_{parts.secret}", parts


def parse_token(text: str) -> SecretParts:
    match = _TOKEN_RE.fullmatch(text)
    if match is None:
        raise Unauthorized("the token is malformed", code="token_malformed")
    return SecretParts(match.group(1), match.group(2))


def hash_secret(salt: str, secret: str) -> str:
    """Salted SHA-256. The secrets carry 256 random bits, so a slow password hash would
    only cost every request time without making a guess any likelier to succeed."""
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def secret_matches(salt: str, secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(salt, secret), stored_hash)


def new_salt() -> str:
    return secrets.token_hex(16)


# -- passwords and web sessions ---------------------------------------------------------------


def validate_password(password: str) -> str:
    """Long enough to resist guessing (NIST SP 800-63B: length, not composition rules);
    bounded so that hashing stays cheap. The message never repeats the password."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"a password needs at least {MIN_PASSWORD_LENGTH} characters; a few words make"
            " a good one",
            code="password_too_short",
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(
            f"a password may have at most {MAX_PASSWORD_LENGTH} characters",
            code="password_too_long",
        )
    return password


def new_session() -> SecretParts:
    """A session's public id (16 hex) and its secret (256 random bits)."""
    return SecretParts(secrets.token_hex(8), secrets.token_urlsafe(32))


def _session_mac(key: bytes, session_id: str, secret: str) -> str:
    mac = hmac.new(key, f"{session_id}.{secret}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def session_cookie(key: bytes, parts: SecretParts) -> str:
    """The cookie's value: ``ID.SECRET.MAC``, signed with the server's session key."""
    return f"{parts.token_id}.{parts.secret}.{_session_mac(key, parts.token_id, parts.secret)}"


def parse_session_cookie(key: bytes, value: str) -> SecretParts | None:
    """The id and secret of a cookie this server signed; None for anything else (forged,
    truncated, from another registry), decided without reading the database."""
    match = _SESSION_RE.fullmatch(value)
    if match is None:
        return None
    session_id, secret, mac = match.groups()
    if not hmac.compare_digest(_session_mac(key, session_id, secret), mac):
        return None
    return SecretParts(session_id, secret)


def session_secret_hash(secret: str) -> str:
    """What the sessions table keeps of a cookie's secret (256 random bits: SHA-256)."""
    return hashlib.sha256(secret.encode()).hexdigest()


# -- values ---------------------------------------------------------------------------------


def _iso_or_none(value: datetime | None) -> str | None:
    return iso(value) if value is not None else None


def _parse_or_none(value: str | None) -> datetime | None:
    return parse_iso(value) if value else None


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    kind: PrincipalKind
    description: str
    created_at: datetime
    disabled: bool
    members: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind.value,
            "description": self.description,
            "created_at": iso(self.created_at),
            "disabled": self.disabled,
        }
        if self.kind is PrincipalKind.TEAM:
            data["members"] = list(self.members)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Principal:
        return cls(
            name=data["name"],
            kind=PrincipalKind(data["kind"]),
            description=data.get("description") or "",
            created_at=parse_iso(data["created_at"]),
            disabled=bool(data.get("disabled")),
            members=tuple(data.get("members") or ()),
        )


@dataclass(frozen=True, slots=True)
class Token:
    """What the registry keeps of a token: everything but the secret."""

    id: str
    principal: str
    name: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    model: str | None
    read_only: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "principal": self.principal,
            "name": self.name,
            "created_at": iso(self.created_at),
            "created_by": self.created_by,
            "expires_at": _iso_or_none(self.expires_at),
            "revoked_at": _iso_or_none(self.revoked_at),
            "model": self.model,
            "read_only": self.read_only,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Token:
        return cls(
            id=data["id"],
            principal=data["principal"],
            name=data.get("name") or "",
            created_at=parse_iso(data["created_at"]),
            created_by=data.get("created_by") or "",
            expires_at=_parse_or_none(data.get("expires_at")),
            revoked_at=_parse_or_none(data.get("revoked_at")),
            model=data.get("model"),
            read_only=bool(data.get("read_only")),
        )


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token just created: the only time its secret is seen."""

    token: str
    info: Token

    def as_dict(self) -> dict[str, Any]:
        return {"token": self.token, **self.info.as_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NewToken:
        return cls(token=data["token"], info=Token.from_dict(data))


@dataclass(frozen=True, slots=True)
class Grant:
    """A role on one model, or registry-wide when ``model`` is None."""

    principal: str
    kind: PrincipalKind
    model: str | None
    role: Role
    created_at: datetime
    created_by: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "kind": self.kind.value,
            "model": self.model,
            "role": self.role.label,
            "created_at": iso(self.created_at),
            "created_by": self.created_by,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grant:
        return cls(
            principal=data["principal"],
            kind=PrincipalKind(data["kind"]),
            model=data.get("model"),
            role=Role.parse(data["role"]),
            created_at=parse_iso(data["created_at"]),
            created_by=data.get("created_by") or "",
        )


@dataclass(frozen=True, slots=True)
class Identity:
    """The answer to whoami."""

    name: str
    kind: str
    token_id: str | None
    registry_role: Role | None
    teams: tuple[str, ...] = field(default=())
    model: str | None = None
    read_only: bool = False
    local: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "token_id": self.token_id,
            "registry_role": self.registry_role.label if self.registry_role else None,
            "teams": list(self.teams),
            "model": self.model,
            "read_only": self.read_only,
            "local": self.local,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Identity:
        role = data.get("registry_role")
        return cls(
            name=data["name"],
            kind=data["kind"],
            token_id=data.get("token_id"),
            registry_role=Role.parse(role) if role else None,
            teams=tuple(data.get("teams") or ()),
            model=data.get("model"),
            read_only=bool(data.get("read_only")),
            local=bool(data.get("local")),
        )
