"""The search filter language, e.g. ``metrics.auc >= 0.85 and tags.team = "growth"``.

Parsing, field validation and type checks all happen here, before any SQL exists, so every
mistake is reported with its exact position in the user's text, and storage backends only
compile ASTs that are known to be well-typed.

Syntax: comparisons ``field op value`` with ``= != < <= > >=``, ``[not] like "pattern"``
and ``[not] in (v1, v2, ...)``, combined with ``not`` > ``and`` > ``or`` and parentheses.
Keywords are case-insensitive. Values are quoted strings (``"..."`` or ``'...'`` with the
escapes ``\\\\ \\" \\' \\n \\t \\r``; ``\\%`` and ``\\_`` are kept as written so that they
escape the wildcard in ``like`` patterns), numbers and ``true``/``false``. Keys that do not
fit ``[A-Za-z0-9_.-/:]`` can be quoted with backticks: ``metrics.`my key```.

Versions have ``online.metrics.K`` too: the newest value of K reported from production.
Policy rules (target ``rules``, evaluated by ``domain/rules.py``) are the same language over
the versions' fields plus ``checks.NAME``, ``card`` and ``advisories.severity`` (ordered
``none`` < ``low`` < ... < ``critical`` < ``unknown``, written quoted or bare); a comparison
may take
``current.FIELD [+|- N]`` (the version in the target stage) or ``FIELD [+|- N]`` (of the
version itself) where a value goes, and ``==`` means ``=``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from typing import Final, Literal, TypeAlias

from modelyard.domain.errors import InvalidFilter
from modelyard.domain.online import ONLINE_NAMESPACE

MAX_FILTER_LENGTH: Final = 4096
MAX_DEPTH: Final = 32

Scalar: TypeAlias = str | int | float | bool
Op: TypeAlias = Literal["=", "!=", "<", "<=", ">", ">=", "like", "not like", "in", "not in"]


class Target(StrEnum):
    """What a filter searches: each target has its own set of fields."""

    VERSIONS = "versions"
    MODELS = "models"
    RULES = "rules"  # policy rules: versions' fields, checks.NAME and current.FIELD


class FieldType(Enum):
    TEXT = "a string"
    NUMBER = "a number"
    TIME = "an ISO date or datetime string"
    BOOL = "true or false"
    PARAM = "a string or a number"  # params are stored as text but often hold numbers
    SEVERITY = "a severity: none, low, medium, high, critical or unknown"


# The scale ``advisories.severity`` compares on, lowest first (domain/advisories.py says
# what a version's value is). ``unknown`` (an advisory nobody rated, an environment
# nobody captured) is above ``critical``: nothing shows it to be lower, so every limit
# refuses it.
SEVERITY_SCALE: Final = ("none", "low", "medium", "high", "critical", "unknown")


@dataclass(frozen=True, slots=True)
class Field:
    """``name`` is Field(None, "name"); ``metrics.auc`` is Field("metrics", "auc")."""

    namespace: str | None
    key: str

    def __str__(self) -> str:
        if self.namespace is None:
            return self.key
        key = self.key if _PLAIN_KEY_RE.fullmatch(self.key) else f"`{self.key}`"
        return f"{self.namespace}.{key}"


@dataclass(frozen=True, slots=True)
class Comparison:
    """One test. ``value`` is a tuple for in/not in; times are microseconds since the epoch.

    In rules only, ``against`` names a field of the current version (``current.FIELD``),
    or of the version itself when ``current`` is False (``online.metrics.auc >=
    metrics.auc - 0.02``), and ``value`` is then the number added to it (0 without
    ``+ N``/``- N``).
    """

    field: Field
    op: Op
    value: Scalar | tuple[Scalar, ...]
    against: Field | None = None
    current: bool = True


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


Node: TypeAlias = Comparison | And | Or | Not


@dataclass(frozen=True, slots=True)
class OrderTerm:
    field: Field
    descending: bool = False


_Type = FieldType  # short alias for the tables below
_FIELDS: Final[dict[Target, dict[str, FieldType]]] = {
    Target.VERSIONS: {
        "name": _Type.TEXT,
        "version": _Type.NUMBER,
        "stage": _Type.TEXT,
        "creator": _Type.TEXT,
        "created": _Type.TIME,
        "description": _Type.TEXT,
        "framework": _Type.TEXT,
        "format": _Type.TEXT,
        "run": _Type.TEXT,
        "dataset.name": _Type.TEXT,
        "dataset.version": _Type.TEXT,
        "dataset.digest": _Type.TEXT,
        "source.repo": _Type.TEXT,
        "source.commit": _Type.TEXT,
        "source.branch": _Type.TEXT,
        "source.dirty": _Type.BOOL,
    },
    Target.MODELS: {
        "name": _Type.TEXT,
        "description": _Type.TEXT,
        "created": _Type.TIME,
        "updated": _Type.TIME,
        "latest_version": _Type.NUMBER,
    },
}
# Rules read a version's model card too (``card``: its text), and the highest severity of
# the known vulnerabilities in its environment (its ``advisories`` check), which searches
# do not.
ADVISORY_SEVERITY: Final = "advisories.severity"
_FIELDS[Target.RULES] = {
    **_FIELDS[Target.VERSIONS],
    "card": _Type.TEXT,
    ADVISORY_SEVERITY: _Type.SEVERITY,
}
# Namespaces whose keys are free-form (key/value tables).
_KEYED: Final[dict[Target, dict[str, FieldType]]] = {
    Target.VERSIONS: {
        "tags": _Type.TEXT,
        "params": _Type.PARAM,
        "metrics": _Type.NUMBER,
        # The newest value of each metric reported from production (domain/online.py).
        ONLINE_NAMESPACE: _Type.NUMBER,
    },
    Target.MODELS: {"tags": _Type.TEXT},
}
_KEYED[Target.RULES] = {**_KEYED[Target.VERSIONS], "checks": _Type.TEXT}
CURRENT: Final = "current."  # in rules: the version now in the target stage

_ORDERING_OPS: Final = frozenset({"<", "<=", ">", ">="})
_KEYWORDS: Final = frozenset({"and", "or", "not", "like", "in", "true", "false", "asc", "desc"})
_SPACE_RE: Final = re.compile(r"\s+")
_WORD_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/:]*")
_PLAIN_KEY_RE: Final = re.compile(r"[A-Za-z0-9_.\-/:]+")
_NUMBER_RE: Final = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_OP_RE: Final = re.compile(r"==|<=|>=|!=|[=<>]")
_COMPARISON_OPS: Final[dict[str, Op]] = {
    "=": "=",
    "==": "=",  # rules only: the policy syntax before rules were filters had it
    "!=": "!=",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
}
_PUNCTUATION: Final[dict[str, Literal["(", ")", ","]]] = {"(": "(", ")": ")", ",": ","}
_ESCAPES: Final = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}
_MAX_INT: Final = 2**63 - 1  # what both databases store in a BIGINT
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EXCERPT_WIDTH: Final = 72


def parse_filter(text: str, target: Target | str = Target.VERSIONS) -> Node | None:
    """Parse and type-check a filter for ``target``; None when the text is blank.

    Raises InvalidFilter with ``details["position"]`` (0-based) on any mistake.
    """
    parser = _Parser(text, Target(target))
    if parser.at_end:
        return None
    node = parser.expression()
    if not parser.at_end:
        raise parser.fail(parser.peek.pos, "expected 'and', 'or' or the end of the filter")
    return node


def parse_order_by(text: str, target: Target | str = Target.VERSIONS) -> list[OrderTerm]:
    """Parse ``field [asc|desc], ...`` (ascending by default); [] when the text is blank."""
    parser = _Parser(text, Target(target))
    terms: list[OrderTerm] = []
    if parser.at_end:
        return terms
    while True:
        field, _ = parser.field()
        descending = False
        if parser.peek.keyword in ("asc", "desc"):
            descending = parser.advance().keyword == "desc"
        terms.append(OrderTerm(field, descending))
        if parser.at_end:
            return terms
        if parser.peek.kind != ",":
            raise parser.fail(parser.peek.pos, "expected 'asc', 'desc', ',' or the end")
        parser.advance()


def valid_fields(target: Target | str = Target.VERSIONS) -> list[str]:
    """The field names of ``target`` as users write them, for help texts and error messages."""
    target = Target(target)
    return [*_FIELDS[target], *(f"{ns}.<key>" for ns in _KEYED[target])]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["word", "string", "number", "bool", "op", "(", ")", ",", "+", "-", "end"]
    text: str
    pos: int
    value: Scalar = ""
    keyword: str | None = None  # lower-cased, when the word is a keyword
    quoted_key: str | None = None  # the key of metrics.`my key`


class _Parser:
    """Recursive descent over a token list; ``depth`` counts open '(' and 'not'."""

    def __init__(self, text: str, target: Target) -> None:
        self.text = text
        self.target = target
        self.depth = 0
        self.index = 0
        if len(text) > MAX_FILTER_LENGTH:
            raise self.fail(
                MAX_FILTER_LENGTH, f"the filter is longer than {MAX_FILTER_LENGTH} characters"
            )
        self.tokens = self._tokenize()

    @property
    def peek(self) -> _Token:
        return self.tokens[self.index]

    @property
    def at_end(self) -> bool:
        return self.peek.kind == "end"

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def fail(self, position: int, message: str, hint: str = "") -> InvalidFilter:
        return InvalidFilter(
            f"{message} at position {position}{hint}\n{_excerpt(self.text, position)}",
            position=position,
        )

    # -- grammar ---------------------------------------------------------------------------

    def expression(self) -> Node:
        operands = [self._conjunction()]
        while self.peek.keyword == "or":
            self.advance()
            operands.append(self._conjunction())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def _conjunction(self) -> Node:
        operands = [self._unary()]
        while self.peek.keyword == "and":
            self.advance()
            operands.append(self._unary())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def _unary(self) -> Node:
        token = self.peek
        if token.keyword == "not" or token.kind == "(":
            self.advance()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(token.pos, f"the filter nests deeper than {MAX_DEPTH} levels")
            if token.kind == "(":
                node = self.expression()
                if self.peek.kind != ")":
                    raise self.fail(
                        self.peek.pos, "expected ')'", f" to close the '(' at position {token.pos}"
                    )
                self.advance()
            else:
                node = Not(self._unary())
            self.depth -= 1
            return node
        return self._comparison()

    def _comparison(self) -> Comparison:
        field, field_type = self.field()
        token = self.advance()
        if token.kind == "op":
            if token.text == "==" and self.target is not Target.RULES:
                raise self.fail(token.pos, "'==' is written '=' here")
            op = _COMPARISON_OPS[token.text]
            self._check_op(field, field_type, op, token.pos)
            if (
                self.target is Target.RULES
                and self.peek.kind == "word"
                and not self.peek.keyword
                and not self._severity_word(field_type)
            ):
                return self._relative(field, field_type, op)
            value, position = self._value(token.text, field_type)
            return Comparison(field, op, self._check(field, field_type, op, value, position))
        negated = token.keyword == "not"
        if negated:
            token = self.advance()
            if token.keyword not in ("like", "in"):
                raise self.fail(token.pos, "expected 'like' or 'in' after 'not'")
        if token.keyword == "like":
            op = "not like" if negated else "like"
            self._check_op(field, field_type, op, token.pos)
            value, position = self._value(token.text)
            return Comparison(field, op, self._check(field, field_type, op, value, position))
        if token.keyword == "in":
            op = "not in" if negated else "in"
            self._check_op(field, field_type, op, token.pos)
            return Comparison(field, op, self._values(field, field_type, op, token.text))
        raise self.fail(
            token.pos,
            f"expected an operator (= != < <= > >= like in, not like, not in) after '{field}'",
            _found(token),
        )

    def _values(
        self, field: Field, field_type: FieldType, op: Op, after: str
    ) -> tuple[Scalar, ...]:
        if self.peek.kind != "(":
            raise self.fail(self.peek.pos, f"expected '(' after '{after}'")
        self.advance()
        values: list[Scalar] = []
        while True:
            value, position = self._value("(" if not values else ",", field_type)
            values.append(self._check(field, field_type, op, value, position))
            token = self.advance()
            if token.kind == ")":
                return tuple(values)
            if token.kind != ",":
                raise self.fail(token.pos, f"expected ',' or ')' in the '{op}' list")

    def _relative(self, field: Field, field_type: FieldType, op: Op) -> Comparison:
        """``current.FIELD`` or a FIELD of the version itself, then for numbers an
        optional ``+ N`` or ``- N``."""
        token = self.peek
        current = token.text.lower().startswith(CURRENT)
        against, against_type = self.field(skip=len(CURRENT) if current else 0)
        if against_type is not field_type:
            raise self.fail(
                token.pos,
                f"'{field}' takes {field_type.value}, and '{token.text}' is {against_type.value}",
            )
        sign = self.peek
        if sign.kind not in ("+", "-") and not (sign.kind == "number" and sign.text[0] == "-"):
            return Comparison(field, op, 0, against, current)
        if field_type is not FieldType.NUMBER:
            raise self.fail(sign.pos, f"only numbers take '+ N' or '- N'; '{field}' does not")
        if sign.kind != "number":
            self.advance()
        number = self.advance()
        if number.kind != "number" or isinstance(number.value, str):
            raise self.fail(number.pos, f"expected a number after '{sign.text}'", _found(number))
        offset = -number.value if sign.kind == "-" else number.value
        return Comparison(field, op, offset, against, current)

    def field(self, skip: int = 0) -> tuple[Field, FieldType]:
        """Consume a field name (after ``skip`` characters, as of ``current.``) and resolve
        it against the target's fields."""
        token = self.peek
        if token.kind != "word" or token.keyword is not None:
            raise self.fail(
                token.pos, "expected a field such as 'name' or 'metrics.auc'", _found(token)
            )
        self.advance()
        fields, keyed = _FIELDS[self.target], _KEYED[self.target]
        namespace, dot, key = _split_field(token.text[skip:], keyed)
        if token.quoted_key is not None:
            key = token.quoted_key
        elif token.text[skip:] in fields:
            name = token.text[skip:]
            return Field(namespace if dot else None, key if dot else namespace), fields[name]
        if namespace in keyed:
            if not key:
                raise self.fail(token.pos, f"'{namespace}' needs a key, as in {namespace}.<key>")
            return Field(namespace, key), keyed[namespace]
        raise self.fail(
            token.pos,
            f"unknown field '{token.text[skip:]}' for {self.target.value}",
            f"; valid fields: {', '.join(valid_fields(self.target))}",
        )

    def _value(self, after: str, field_type: FieldType | None = None) -> tuple[Scalar, int]:
        token = self.peek
        if self._severity_word(field_type):
            self.advance()
            return token.text, token.pos
        if token.kind not in ("string", "number", "bool"):
            raise self.fail(token.pos, f"expected a value after '{after}'", _found(token))
        self.advance()
        return token.value, token.pos

    def _severity_word(self, field_type: FieldType | None) -> bool:
        """Whether the next token is a severity written bare (``advisories.severity <
        high``): no field has such a name, so it cannot be a ``current.FIELD``."""
        token = self.peek
        return (
            field_type is FieldType.SEVERITY
            and token.kind == "word"
            and token.text.lower() in SEVERITY_SCALE
        )

    # -- types -----------------------------------------------------------------------------

    def _check_op(self, field: Field, field_type: FieldType, op: Op, position: int) -> None:
        if field_type is FieldType.BOOL and op not in ("=", "!="):
            raise self.fail(position, f"'{field}' takes only = or != (true or false)")
        if op.endswith("like") and field_type not in (FieldType.TEXT, FieldType.PARAM):
            raise self.fail(
                position, f"'like' needs a text field; '{field}' takes {field_type.value}"
            )

    def _check(
        self, field: Field, field_type: FieldType, op: Op, value: Scalar, position: int
    ) -> Scalar:
        """Reject a value of the wrong type; return it as the compiler needs it."""
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if op.endswith("like"):
            if not isinstance(value, str):
                raise self.fail(position, "'like' needs a quoted pattern such as \"churn%\"")
            if (len(value) - len(value.rstrip("\\"))) % 2:
                raise self.fail(
                    position, "a like pattern must not end with a lone '\\' (use \\\\\\\\)"
                )
            return value
        if field_type is FieldType.SEVERITY:
            if not isinstance(value, str) or value.lower() not in SEVERITY_SCALE:
                raise self.fail(position, f"'{field}' takes {field_type.value}")
            return value.lower()
        if field_type is FieldType.TIME:
            micros = _micros(value) if isinstance(value, str) else None
            if micros is None:
                raise self.fail(
                    position,
                    f"'{field}' takes an ISO date or datetime in quotes,"
                    ' such as "2024-09-01" or "2024-09-01T12:00:00Z"',
                )
            return micros
        ok = {
            FieldType.TEXT: isinstance(value, str),
            FieldType.NUMBER: is_number,
            FieldType.BOOL: isinstance(value, bool),
            FieldType.PARAM: isinstance(value, str) or is_number,
        }[field_type]
        if not ok:
            raise self.fail(position, f"'{field}' takes {field_type.value}, not {_kind(value)}")
        return value

    # -- tokens ----------------------------------------------------------------------------

    def _tokenize(self) -> list[_Token]:
        text, pos, tokens = self.text, 0, []
        while True:
            space = _SPACE_RE.match(text, pos)
            if space:
                pos = space.end()
            if pos >= len(text):
                tokens.append(_Token("end", "", len(text)))
                return tokens
            char = text[pos]
            if char in "\"'":
                value, end = self._string(pos)
                tokens.append(_Token("string", text[pos:end], pos, value))
            elif match := _WORD_RE.match(text, pos):
                end = match.end()
                word = match.group()
                quoted_key = None
                if word.endswith(".") and text.startswith("`", end):
                    quoted_key, end = self._quoted_key(pos, end)
                keyword = word.lower() if word.lower() in _KEYWORDS else None
                if keyword in ("true", "false"):
                    tokens.append(_Token("bool", word, pos, keyword == "true"))
                else:
                    source = text[pos:end]
                    tokens.append(
                        _Token("word", source, pos, keyword=keyword, quoted_key=quoted_key)
                    )
            elif match := _NUMBER_RE.match(text, pos):
                end = match.end()
                tokens.append(_Token("number", match.group(), pos, self._number(match, pos)))
            elif match := _OP_RE.match(text, pos):
                end = match.end()
                tokens.append(_Token("op", match.group(), pos))
            elif char in _PUNCTUATION:
                end = pos + 1
                tokens.append(_Token(_PUNCTUATION[char], char, pos))
            elif char in "+-":  # an offset's sign, as in current.metrics.auc - 0.005
                end = pos + 1
                tokens.append(_Token("+" if char == "+" else "-", char, pos))
            else:
                raise self.fail(pos, f"unexpected character {char!r}")
            pos = end

    def _string(self, start: int) -> tuple[str, int]:
        text, quote = self.text, self.text[start]
        out: list[str] = []
        pos = start + 1
        while pos < len(text):
            char = text[pos]
            if char == quote:
                return "".join(out), pos + 1
            if char == "\x00":
                raise self.fail(pos, "NUL is not allowed in a string")
            if char == "\\" and pos + 1 < len(text):
                escaped = text[pos + 1]
                if escaped in "%_":
                    out.append(char + escaped)
                elif escaped in _ESCAPES:
                    out.append(_ESCAPES[escaped])
                else:
                    raise self.fail(pos, f"unknown escape '\\{escaped}' (use \\\\ for a backslash)")
                pos += 2
                continue
            out.append(char)
            pos += 1
        raise self.fail(start, f"unterminated string: no closing {quote}")

    def _quoted_key(self, start: int, tick: int) -> tuple[str, int]:
        close = self.text.find("`", tick + 1)
        if close < 0:
            raise self.fail(tick, "unterminated `quoted key`")
        key = self.text[tick + 1 : close]
        if not key or any(ord(c) < 32 or c == "\x7f" for c in key):
            raise self.fail(tick, "a `quoted key` must be non-empty and printable")
        namespace = self.text[start : tick - 1]
        if self.target is Target.RULES and namespace.lower().startswith(CURRENT):
            namespace = namespace[len(CURRENT) :]
        if "." in namespace and namespace not in _KEYED[self.target]:
            raise self.fail(start, "a `quoted key` must follow the namespace, as in metrics.`a b`")
        return key, close + 1

    def _number(self, match: re.Match[str], pos: int) -> int | float:
        end = match.end()
        if end < len(self.text) and (self.text[end].isalnum() or self.text[end] in "_."):
            raise self.fail(pos, "malformed number")
        literal = match.group()
        if literal.lstrip("-").isdigit():
            number = int(literal)
            if abs(number) > _MAX_INT:
                raise self.fail(pos, "integer out of range")
            return number
        value = float(literal)
        if math.isinf(value):
            raise self.fail(pos, "number out of range")
        return value


# A param value that both databases can CAST to a float without an error or overflow;
# \A and \Z mean the same in Python's re (SQLite's REGEXP) and PostgreSQL's regexes.
# Rules (domain/rules.py) read params by the same definitions as the SQL does.
NUMERIC_TEXT: Final = r"\A[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,2})?\Z"
MAX_NUMERIC_TEXT: Final = 32


def number_texts(value: Scalar) -> tuple[str, ...]:
    """How a value may have been stored as text: a string as is, a number as str() of an int
    or a float (5 -> "5", "5.0"; 0.1 -> "0.1"; 1e20 -> "100000000000000000000", "1e+20")."""
    if isinstance(value, str):
        return (value,)
    number = float(value)
    forms = [str(int(number)), repr(number)] if number.is_integer() else [repr(number)]
    return tuple(dict.fromkeys(forms))


def _micros(text: str) -> int | None:
    """ISO date or datetime -> microseconds since the epoch; naive times are taken as UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _split_field(text: str, keyed: dict[str, FieldType]) -> tuple[str, str, str]:
    """``namespace, ".", key``: at the first dot, but a namespace with a dot of its own
    (``online.metrics``) takes the key after it."""
    for namespace in keyed:
        if "." in namespace and text.startswith(namespace + "."):
            return namespace, ".", text[len(namespace) + 1 :]
    return text.partition(".")


def _found(token: _Token) -> str:
    return "" if token.kind == "end" else f" (found '{token.text}')"


def _kind(value: Scalar) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return "a string"
    return f"the number {value} (quote it to compare as text)"


def _excerpt(text: str, position: int) -> str:
    """The text (or a window of it) on one line and a caret under ``position`` on the next."""
    start = max(0, min(position - _EXCERPT_WIDTH // 2, len(text) - _EXCERPT_WIDTH))
    end = start + _EXCERPT_WIDTH
    line = re.sub(r"[\x00-\x1f\x7f]", " ", text[start:end])
    prefix = "..." if start > 0 else ""
    suffix = "..." if end < len(text) else ""
    return f"  {prefix}{line}{suffix}\n  {' ' * (len(prefix) + position - start)}^"
