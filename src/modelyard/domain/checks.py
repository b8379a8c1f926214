"""Check results: what a checker (a scanner, a test suite in CI) reported about a version.

A check is named (``tests``, ``bias-audit``) and holds the latest status reported for it
on one version, with a details URL, who reported it and when; every report is journaled.
Policies read them as ``checks.NAME = "pass"``. Only checkers report them (the
``version.check`` permission), and tags under ``check.`` are refused, so the author of a
version cannot pass its checks with a tag.

``scan`` is the registry's own check (``SCAN_CHECK``): the server scans every file and
attachment itself and records the report as the check's ``details``. Nobody reports it;
an admin may only accept its findings, with a reason. ``advisories`` is the registry's
too (``ADVISORIES_CHECK``): a version's environment matched against the OSV dump an admin
loaded, re-evaluated when a newer one is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

from modelyard.domain.errors import Forbidden, InvalidInput, InvalidName
from modelyard.domain.models import iso, parse_iso

CHECK_TAG_PREFIX: Final = "check."
SCAN_CHECK: Final = "scan"
ADVISORIES_CHECK: Final = "advisories"
SERVER_REPORTER: Final = "modelyard"  # the reporter of the checks the registry runs
MAX_URL: Final = 2048
CHECK_NAME_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"  # also in OpenAPI
_NAME_RE: Final = re.compile(CHECK_NAME_PATTERN)


class CheckStatus(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    PENDING = "pending"

    @classmethod
    def parse(cls, text: str) -> CheckStatus:
        try:
            return cls(text)
        except ValueError:
            raise InvalidInput(
                f"unknown check status {text!r}: use pass, fail or pending", code="invalid_status"
            ) from None


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The latest report of one check on one version."""

    model: str
    version: int
    name: str
    status: CheckStatus
    url: str | None
    reporter: str
    reported_at: datetime
    details: dict[str, Any] | None = None  # what the registry's own checks found

    @property
    def reference(self) -> str:
        return f"{self.model}/{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "name": self.name,
            "status": self.status.value,
            "url": self.url,
            "reporter": self.reporter,
            "reported_at": iso(self.reported_at),
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        return cls(
            model=data["model"],
            version=int(data["version"]),
            name=data["name"],
            status=CheckStatus(data["status"]),
            url=data.get("url"),
            reporter=data["reporter"],
            reported_at=parse_iso(data["reported_at"]),
            details=data.get("details"),
        )


def validate_check_name(name: str) -> str:
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise InvalidName(
            f"check name {name!r} is not allowed: use letters, digits, '.', '_' and '-'"
            " (1..64 characters, starting with a letter or digit)"
        )
    return name


# The registry's own checks, and why nobody else reports them.
_RESERVED: Final = {
    SCAN_CHECK: "the server scans every file when it is registered, and nobody else reports"
    " it. Report your CI's scanner under its own name (e.g. ci-scan); an admin may accept"
    " scan findings: modelyard accept-scan REF --reason TEXT",
    ADVISORIES_CHECK: "the server matches every version's environment against the OSV dump"
    " an admin loaded (modelyard advisories load FILE.zip), and nobody else reports it."
    " Report your CI's audit under its own name (e.g. pip-audit)",
}


def validate_reported_check(name: str) -> str:
    """A name a checker may report: any valid one but the registry's own checks."""
    validate_check_name(name)
    if name in _RESERVED:
        raise Forbidden(
            f"{name!r} is the registry's own check: {_RESERVED[name]}", code="reserved_check"
        )
    return name


def validate_check_url(url: str | None) -> str | None:
    """A details URL is an absolute http(s) URL without credentials, or nothing."""
    if url is None or url == "":
        return None
    if not isinstance(url, str) or len(url) > MAX_URL:
        raise InvalidInput(f"a details URL is a string of at most {MAX_URL} characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise InvalidInput("a details URL must not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"a details URL must be an absolute http(s) URL, got {url[:80]!r}")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("a details URL must not carry credentials")
    return url


def refuse_check_tags(keys: Any) -> None:
    """Tags under ``check.`` are refused: check results come from checkers, not tags."""
    for key in keys:
        if isinstance(key, str) and key.lower().startswith(CHECK_TAG_PREFIX):
            raise InvalidInput(
                f"tag {key!r} is refused: tags under '{CHECK_TAG_PREFIX}' are reserved. A check"
                " result is reported by a checker: modelyard check REF NAME --status pass",
                code="reserved_tag",
            )
