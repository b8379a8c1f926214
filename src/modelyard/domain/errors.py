"""Errors that every layer raises and every adapter translates.

Each error carries a stable machine-readable ``code`` (part of the public API, never
renamed) and the HTTP status it maps to, so that the REST layer, the SDK and the CLI
agree on what went wrong without re-deciding it.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ModelyardError(Exception):
    """Base of every error Modelyard raises on purpose."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details

    def __str__(self) -> str:
        return self.message


class InvalidInput(ModelyardError):
    status = 400
    default_code = "invalid_input"
    title = "Invalid input"


class InvalidName(InvalidInput):
    default_code = "invalid_name"
    title = "Invalid name"


class InvalidPath(InvalidInput):
    default_code = "invalid_path"
    title = "Invalid file path"


class InvalidReference(InvalidInput):
    default_code = "invalid_reference"
    title = "Invalid reference"


class InvalidFilter(InvalidInput):
    default_code = "invalid_filter"
    title = "Invalid filter"


class DigestMismatch(InvalidInput):
    default_code = "digest_mismatch"
    title = "Digest mismatch"


class SignatureInvalid(InvalidInput):
    """A signature that does not verify, or files that are not the ones signed."""

    default_code = "signature_invalid"
    title = "Signature invalid"


class BundleInvalid(InvalidInput):
    """A bundle that is not what its signed manifest says, or not signed by a trusted
    registry; ``member`` names the part at fault."""

    default_code = "bundle_invalid"
    title = "Bundle invalid"


class TooLarge(ModelyardError):
    status = 413
    default_code = "too_large"
    title = "Too large"


class Unauthorized(ModelyardError):
    """No valid credentials: a missing, malformed, unknown, expired or revoked token."""

    status = 401
    default_code = "unauthorized"
    title = "Unauthorized"


class Forbidden(ModelyardError):
    """Authenticated, but the role held lacks the permission named in ``permission``."""

    status = 403
    default_code = "forbidden"
    title = "Forbidden"


class NotFound(ModelyardError):
    status = 404
    default_code = "not_found"
    title = "Not found"


class Conflict(ModelyardError):
    status = 409
    default_code = "conflict"
    title = "Conflict"


class MissingBlobs(Conflict):
    default_code = "missing_blobs"
    title = "Missing blobs"


class PolicyFailed(Conflict):
    """A promotion the policy refuses; ``failures`` lists every failed rule with its values."""

    default_code = "policy_failed"
    title = "Policy failed"


class TooManyRequests(ModelyardError):
    """Refused for a while: too many failed sign-ins for a user or from an address."""

    status = 429
    default_code = "too_many_requests"
    title = "Too many requests"


class Unavailable(ModelyardError):
    status = 503
    default_code = "unavailable"
    title = "Service unavailable"


class Misconfigured(ModelyardError):
    """The server's own configuration is unsafe or broken (e.g. a key file others can read):
    nothing the caller can fix, said in full so that the operator can."""

    default_code = "misconfigured"
    title = "Server misconfigured"


class MissingExtra(ModelyardError):
    """A feature whose packages are an optional extra that is not installed."""

    default_code = "missing_extra"
    title = "Not installed"


_BY_STATUS: dict[int, type[ModelyardError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    503: Unavailable,
}


def _subclasses(cls: type[ModelyardError]) -> list[type[ModelyardError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def error_from_problem(status: int, problem: dict[str, Any]) -> ModelyardError:
    """Rebuild the error a server reported, so remote and in-process callers catch the same."""
    by_code = {sub.default_code: sub for sub in _subclasses(ModelyardError)}
    cls = by_code.get(str(problem.get("code")), _BY_STATUS.get(status, ModelyardError))
    known = {"type", "title", "status", "detail", "code", "instance"}
    details = {k: v for k, v in problem.items() if k not in known}
    message = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    return cls(message, code=str(problem.get("code") or cls.default_code), **details)
