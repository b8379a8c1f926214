"""Rules: the search language (domain/filters.py) judged against one version, in Python.

Policy rules and the gate's comparisons are rules. A search runs as SQL over every
version; a rule is evaluated here against one candidate and the version now in the target
stage (``current.FIELD``) or itself (``online.metrics.auc >= metrics.auc - 0.02``), with
``checks.NAME`` reading the candidate's reported checks, ``online.metrics.K`` the newest
value reported from production and ``advisories.severity`` the highest severity of the
known vulnerabilities its ``advisories`` check found, compared on ``SEVERITY_SCALE``.
The semantics are the SQL's (storage/db/filters.py), so a rule and a search with the same
text agree: a missing field satisfies no comparison, ``not`` is the exact complement,
``like`` folds A-Z only, params compare as numbers against numbers.

A comparison with ``current.`` holds when the stage is empty (nothing to be worse than);
a comparison of two fields tolerates binary noise (0.3 - 0.1 >= 0.2 holds): its target is
computed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from string import ascii_lowercase, ascii_uppercase
from typing import Final, TypeGuard

from modelyard.domain.errors import InvalidFilter
from modelyard.domain.filters import (
    ADVISORY_SEVERITY,
    MAX_NUMERIC_TEXT,
    NUMERIC_TEXT,
    SEVERITY_SCALE,
    And,
    Comparison,
    Field,
    Node,
    Not,
    Op,
    Or,
    Scalar,
    Target,
    number_texts,
    parse_filter,
)
from modelyard.domain.models import Version, to_us
from modelyard.domain.online import ONLINE_NAMESPACE

_ASCII_LOWER: Final = str.maketrans(ascii_uppercase, ascii_lowercase)
_NUMERIC_RE: Final = re.compile(NUMERIC_TEXT)
_SHOWN: Final = 60  # characters of a text value quoted in a detail


@dataclass(frozen=True, slots=True)
class Subject:
    """What a rule reads: a version, the status of each check reported on it, its card,
    the newest value of each of its online metrics; who signed it (what a policy's
    ``signed_by`` reads); the severity its ``advisories`` check found (None: no check)."""

    version: Version
    checks: Mapping[str, str] = field(default_factory=dict)
    card: str | None = None  # the text of the version's model card
    online: Mapping[str, float] = field(default_factory=dict)
    # Each principal whose key signed exactly its files, and the teams each belongs to.
    signers: frozenset[str] = frozenset()
    advisories: str | None = None


def parse_rule(text: str) -> Node:
    """Parse a rule; InvalidFilter (with the position) on a mistake or a blank rule."""
    node = parse_filter(text, Target.RULES)
    if node is None:
        raise InvalidFilter("a rule cannot be empty", position=0)
    return node


def relative(metric: Field, op: Op, offset: float) -> Comparison:
    """``M OP current.M + offset``: the gate's comparison of one metric (``metrics.auc``,
    ``online.metrics.auc``)."""
    return Comparison(metric, op, offset, metric)


def evaluate(node: Node, subject: Subject, current: Subject | None) -> tuple[bool, str]:
    """Whether the rule holds, and what it read ("metrics.auc = 0.84; needs >= 0.85")."""
    details: list[str] = []
    passed = _Evaluation(subject, current, details).holds(node)
    return passed, "; ".join(dict.fromkeys(details))


@dataclass(slots=True)
class _Evaluation:
    subject: Subject
    current: Subject | None
    details: list[str]

    def holds(self, node: Node) -> bool:
        # Every operand is evaluated (no short cut), so the details name all it read.
        if isinstance(node, And):
            return all([self.holds(operand) for operand in node.operands])
        if isinstance(node, Or):
            return any([self.holds(operand) for operand in node.operands])
        if isinstance(node, Not):
            return not self.holds(node.operand)
        if node.against is not None:
            return self._relative(node, node.against)
        value = value_of(self.subject, node.field)
        self.details.append(
            f"{node.field} is missing"
            if value is None
            else f"{node.field} = {_show(value)}; needs {node.op} {_show(node.value)}"
        )
        return value is not None and _test(node.field, node.op, value, node.value)

    def _relative(self, node: Comparison, against: Field) -> bool:
        other = self.current if node.current else self.subject
        if other is None:
            self.details.append("no current version in the stage to compare with")
            return True
        ours = value_of(self.subject, node.field)
        theirs = value_of(other, against)
        named = f"current.{against}" if node.current else str(against)
        where = f" ({other.version.reference})" if node.current else ""
        if ours is None:
            self.details.append(f"{node.field} is missing")
            return False
        if theirs is None:
            self.details.append(f"{named} is missing{where}")
            return False
        target: Scalar = theirs
        if _is_number(theirs) and _is_number(node.value):
            target = theirs + node.value
        shown = f"{node.field} = {_show(ours)}, {named} = {_show(theirs)}{where}"
        self.details.append(f"{shown}; needs {node.op} {_show(target)}")
        if _is_number(ours) and _is_number(target):
            close = math.isclose(ours, target, rel_tol=1e-9, abs_tol=1e-12)
            if close:
                return node.op in ("=", "<=", ">=")
        return _compare(node.op, _ordered(node.field, ours), _ordered(node.field, target))


def value_of(subject: Subject, field: Field) -> Scalar | None:
    """A version's value of a field, as the search language names it; None when missing."""
    v = subject.version
    if field.namespace == "tags":
        return v.tags.get(field.key)
    if field.namespace == "params":
        return v.params.get(field.key)
    if field.namespace == "metrics":
        return v.metrics.get(field.key)
    if field.namespace == "checks":
        return subject.checks.get(field.key)
    if field.namespace == ONLINE_NAMESPACE:
        return subject.online.get(field.key)
    if str(field) == ADVISORY_SEVERITY:
        return subject.advisories
    if field.namespace == "dataset":
        return getattr(v.dataset, field.key) if v.dataset else None
    if field.namespace == "source":
        return getattr(v.source, field.key) if v.source else None
    if field.key == "name":
        return v.model
    if field.key == "created":
        return to_us(v.created_at)
    if field.key == "card":
        return subject.card
    plain: dict[str, Scalar | None] = {
        "version": v.version,
        "stage": v.stage,
        "creator": v.creator,
        "description": v.description,
        "framework": v.framework,
        "format": v.format,
        "run": v.run,
    }
    return plain[field.key]


def _test(field: Field, op: Op, value: Scalar, wanted: Scalar | tuple[Scalar, ...]) -> bool:
    if field.namespace == "params" and not isinstance(wanted, str):
        return _param_test(str(value), op, wanted)
    if isinstance(wanted, tuple):
        return (value in wanted) == (op == "in")
    if op in ("like", "not like"):
        assert isinstance(value, str) and isinstance(wanted, str)
        return _like(value, wanted) == (op == "like")
    return _compare(op, _ordered(field, value), _ordered(field, wanted))


def _ordered(field: Field, value: Scalar) -> Scalar:
    """A value as it orders: a severity by its place on the scale (one it does not know
    above them all), anything else as is."""
    if str(field) == ADVISORY_SEVERITY and isinstance(value, str):
        return SEVERITY_SCALE.index(value) if value in SEVERITY_SCALE else len(SEVERITY_SCALE)
    return value


def _param_test(value: str, op: Op, wanted: Scalar | tuple[Scalar, ...]) -> bool:
    """Params are text; numbers compare numerically or by their text forms, as in SQL."""
    if isinstance(wanted, tuple):
        texts = tuple(text for item in wanted for text in number_texts(item))
        return (value in texts) == (op == "in")
    if op in ("=", "!="):
        return (value in number_texts(wanted)) == (op == "=")
    if len(value) > MAX_NUMERIC_TEXT or not _NUMERIC_RE.match(value):
        return False
    return _compare(op, float(value), wanted)


def _compare(op: Op, left: Scalar, right: Scalar) -> bool:
    """Values of one type (the parser saw to it): text by code point, as the SQL does."""
    if op == "=":
        return left == right
    if op == "!=":
        return left != right
    if isinstance(left, str) != isinstance(right, str):
        return False
    if op == "<":
        return left < right  # type: ignore[operator]
    if op == "<=":
        return left <= right  # type: ignore[operator]
    if op == ">":
        return left > right  # type: ignore[operator]
    if op == ">=":
        return left >= right  # type: ignore[operator]
    raise AssertionError(f"not a comparison operator: {op}")


def _like(text: str, pattern: str) -> bool:
    """SQL LIKE with backslash escapes, folding A-Z only."""
    parts = []
    chars = iter(pattern.translate(_ASCII_LOWER))
    for char in chars:
        if char == "\\":
            parts.append(re.escape(next(chars, "\\")))
        elif char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.fullmatch("".join(parts), text.translate(_ASCII_LOWER), re.DOTALL) is not None


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: Scalar | tuple[Scalar, ...]) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_show(item) for item in value) + ")"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        shown = value if len(value) <= _SHOWN else value[: _SHOWN - 3] + "..."
        return '"' + shown.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{value:g}"
