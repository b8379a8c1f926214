"""References: the one syntax every interface uses to point at a version.

``churn`` (latest), ``churn/42``, ``churn@champion`` (alias or stage), ``churn@sha256:<hex>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from modelyard.domain.errors import InvalidReference, ModelyardError
from modelyard.domain.names import validate_alias_name, validate_model_name

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")

# Version numbers are 32-bit signed integers in the database.
MAX_VERSION_NUMBER = 2**31 - 1


class RefKind(Enum):
    LATEST = "latest"
    NUMBER = "number"
    ALIAS = "alias"
    DIGEST = "digest"


@dataclass(frozen=True, slots=True)
class Reference:
    model: str
    kind: RefKind
    value: str | int | None = None

    def __str__(self) -> str:
        if self.kind is RefKind.NUMBER:
            return f"{self.model}/{self.value}"
        if self.kind in (RefKind.ALIAS, RefKind.DIGEST):
            return f"{self.model}@{self.value}"
        return self.model


def parse_reference(text: str) -> Reference:
    """Parse a reference string, raising InvalidReference with a hint on any mistake."""
    if not isinstance(text, str) or not text:
        raise InvalidReference("reference must not be empty; try 'NAME', 'NAME/3' or 'NAME@alias'")
    try:
        if "@" in text:
            model, _, target = text.partition("@")
            validate_model_name(model)
            if target.startswith("sha256:"):
                if _DIGEST_RE.fullmatch(target) is None:
                    raise InvalidReference(
                        f"{text!r}: a digest reference needs 'sha256:' and 64 lowercase hex digits"
                    )
                return Reference(model, RefKind.DIGEST, target)
            if target == "latest":
                return Reference(model, RefKind.LATEST)
            validate_alias_name(target)
            return Reference(model, RefKind.ALIAS, target)
        if "/" in text:
            model, _, number = text.partition("/")
            validate_model_name(model)
            valid = number.isdigit() and number.isascii() and len(number) <= 10
            if not valid or not 1 <= int(number) <= MAX_VERSION_NUMBER:
                raise InvalidReference(
                    f"{text!r}: the part after '/' must be a version number (1, 2, 3, ...)"
                )
            return Reference(model, RefKind.NUMBER, int(number))
        validate_model_name(text)
        return Reference(text, RefKind.LATEST)
    except InvalidReference:
        raise
    except ModelyardError as exc:
        raise InvalidReference(f"invalid reference {text!r}: {exc.message}") from exc
