"""Compile filter ASTs (modelyard.domain.filters) to SQLAlchemy Core for SQLite and PostgreSQL.

The AST is already validated and typed, so this module only maps fields to columns. Where the
two databases differ, the choice is made here once so that both return the same rows:

* ``like`` is case-insensitive for ASCII letters only (A-Z = a-z; "É" != "é"), on both:
  SQLite's LIKE and lower() fold ASCII only, so PostgreSQL folds A-Z with translate().
  Patterns use ``\\`` as the escape character on both.
* Text ordering (``< <= > >=`` on strings, ORDER BY) is by code point: SQLite's default
  BINARY collation, ``COLLATE "C"`` on PostgreSQL (whose default follows the locale).
* A NULL column never satisfies a comparison, and comparisons are two-valued, so ``not``
  is the exact complement: ``framework != "torch"`` skips versions without a framework,
  ``not framework = "torch"`` includes them.
* Sort orders put NULLs (e.g. a missing metric) last in both directions.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from string import ascii_lowercase, ascii_uppercase
from typing import Any, Final

from sqlalchemy import (
    Column,
    Float,
    String,
    Table,
    and_,
    case,
    cast,
    exists,
    func,
    not_,
    or_,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from modelyard.domain.filters import (
    MAX_NUMERIC_TEXT,
    NUMERIC_TEXT,
    And,
    Comparison,
    Field,
    Node,
    Not,
    Op,
    Or,
    OrderTerm,
    Scalar,
    number_texts,
)
from modelyard.domain.online import ONLINE_NAMESPACE
from modelyard.storage.db.tables import (
    model_tags,
    models,
    online_metrics_latest,
    version_metrics,
    version_params,
    version_tags,
    versions,
)

_ASCII_LOWER: Final = str.maketrans(ascii_uppercase, ascii_lowercase)


@dataclass(frozen=True, slots=True)
class _Schema:
    """Where a target's fields live: plain columns and key/value tables owned by ``owner_id``."""

    columns: Mapping[Field, Column[Any]]
    keyed: Mapping[str, tuple[Table, Column[int]]]  # namespace -> (table, its owner column)
    owner_id: Column[int]


_VERSIONS: Final = _Schema(
    columns={
        Field(None, "name"): models.c.name,
        Field(None, "version"): versions.c.number,
        Field(None, "stage"): versions.c.stage,
        Field(None, "creator"): versions.c.creator,
        Field(None, "created"): versions.c.created_at,
        Field(None, "description"): versions.c.description,
        Field(None, "framework"): versions.c.framework,
        Field(None, "format"): versions.c.format,
        Field(None, "run"): versions.c.run,
        Field("dataset", "name"): versions.c.dataset_name,
        Field("dataset", "version"): versions.c.dataset_version,
        Field("dataset", "digest"): versions.c.dataset_digest,
        Field("source", "repo"): versions.c.source_repo,
        Field("source", "commit"): versions.c.source_commit,
        Field("source", "branch"): versions.c.source_branch,
        Field("source", "dirty"): versions.c.source_dirty,
    },
    keyed={
        "tags": (version_tags, version_tags.c.version_id),
        "params": (version_params, version_params.c.version_id),
        "metrics": (version_metrics, version_metrics.c.version_id),
        # The newest value of each online metric (storage/db/online.py).
        ONLINE_NAMESPACE: (online_metrics_latest, online_metrics_latest.c.version_id),
    },
    owner_id=versions.c.id,
)

_MODELS: Final = _Schema(
    columns={
        Field(None, "name"): models.c.name,
        Field(None, "description"): models.c.description,
        Field(None, "created"): models.c.created_at,
        Field(None, "updated"): models.c.updated_at,
        Field(None, "latest_version"): models.c.latest_version,
    },
    keyed={"tags": (model_tags, model_tags.c.model_id)},
    owner_id=models.c.id,
)


@functools.lru_cache(maxsize=256)
def version_condition(node: Node) -> ColumnElement[bool]:
    """WHERE clause for ``versions JOIN models``, from a filter parsed with target "versions".

    ``tags.K``/``params.K``/``metrics.K``/``online.metrics.K`` become correlated EXISTS on
    the key/value tables,
    which their (key, value) indexes serve. ``!=``, ``not in`` and ``not like`` on them mean
    "has key K with a different value"; ``not tags.K = v`` also matches versions without K.
    Params are text: ordering against a number compares numerically (values that are not
    numbers never match), and ``=``/``!=``/``in`` against a number compare with its usual
    text forms (5 matches "5" and "5.0"; 0.1 matches "0.1").

    Kept per filter (ASTs are frozen, SQL expressions immutable): building one cost more
    than SQLite takes to find a page's ids, and the same searches come again and again.
    """
    return _condition(node, _VERSIONS)


def model_condition(node: Node) -> ColumnElement[bool]:
    """WHERE clause for ``models``, from a filter parsed with target "models"."""
    return _condition(node, _MODELS)


def version_sort_key(field: Field) -> ColumnElement[Any]:
    """ORDER BY expression for a version field (tags/params/metrics: correlated subquery)."""
    return _sort_key(field, _VERSIONS)


def model_sort_key(field: Field) -> ColumnElement[Any]:
    """ORDER BY expression for a model field."""
    return _sort_key(field, _MODELS)


def version_order_by(terms: Sequence[OrderTerm]) -> list[ColumnElement[Any]]:
    """ORDER BY clauses with direction and NULLs last, the same on both databases."""
    return [_ordered(version_sort_key(term.field), term) for term in terms]


def model_order_by(terms: Sequence[OrderTerm]) -> list[ColumnElement[Any]]:
    """ORDER BY clauses for models with direction and NULLs last."""
    return [_ordered(model_sort_key(term.field), term) for term in terms]


class _AsciiLower(FunctionElement[str]):
    """lower() that folds only A-Z: SQLite's built-in lower() already does exactly that."""

    type = String()
    name = "ascii_lower"
    inherit_cache = True


@compiles(_AsciiLower)
def _ascii_lower(element: _AsciiLower, compiler: SQLCompiler, **kw: Any) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(_AsciiLower, "postgresql")
def _ascii_lower_postgresql(element: _AsciiLower, compiler: SQLCompiler, **kw: Any) -> str:
    argument = compiler.process(element.clauses, **kw)
    return f"translate({argument}, '{ascii_uppercase}', '{ascii_lowercase}')"


class _CodePointOrder(FunctionElement[str]):
    """A text expression compared and sorted by code point, as SQLite's BINARY collation does."""

    type = String()
    name = "code_point_order"
    inherit_cache = True


@compiles(_CodePointOrder)
def _code_point_order(element: _CodePointOrder, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(_CodePointOrder, "postgresql")
def _code_point_order_postgresql(element: _CodePointOrder, compiler: SQLCompiler, **kw: Any) -> str:
    return f'{compiler.process(element.clauses, **kw)} COLLATE "C"'


def _condition(node: Node, schema: _Schema) -> ColumnElement[bool]:
    if isinstance(node, And):
        return and_(*(_condition(operand, schema) for operand in node.operands))
    if isinstance(node, Or):
        return or_(*(_condition(operand, schema) for operand in node.operands))
    if isinstance(node, Not):
        return not_(_condition(node.operand, schema))
    return _comparison(node, schema)


def _comparison(node: Comparison, schema: _Schema) -> ColumnElement[bool]:
    field = node.field
    if key_values := _key_values(field, schema):
        table, owner = key_values
        value_test = (
            _param_test(table.c.value, node.op, node.value)
            if field.namespace == "params"
            else _test(table.c.value, node.op, node.value)
        )
        return exists().where(owner == schema.owner_id, table.c.key == field.key, value_test)
    column = _column(field, schema)
    test = _test(column, node.op, node.value)
    return and_(column.is_not(None), test) if column.nullable else test


def _test(
    column: ColumnElement[Any], op: Op, value: Scalar | tuple[Scalar, ...]
) -> ColumnElement[bool]:
    if isinstance(value, tuple):
        return column.in_(value) if op == "in" else column.not_in(value)
    if op in ("like", "not like"):
        assert isinstance(value, str)
        like = _AsciiLower(column).like(value.translate(_ASCII_LOWER), escape="\\")
        return not_(like) if op == "not like" else like
    if isinstance(value, str) and op in ("<", "<=", ">", ">="):
        column = _CodePointOrder(column)
    return _compare(column, op, value)


def _param_test(
    column: ColumnElement[Any], op: Op, value: Scalar | tuple[Scalar, ...]
) -> ColumnElement[bool]:
    """Params are text; number literals compare numerically or by their text forms."""
    if isinstance(value, str):
        return _test(column, op, value)
    if isinstance(value, tuple):
        return _test(column, op, tuple(text for item in value for text in number_texts(item)))
    if op in ("=", "!="):
        return _test(column, "in" if op == "=" else "not in", number_texts(value))
    numeric = case(
        (
            and_(func.length(column) <= MAX_NUMERIC_TEXT, column.regexp_match(NUMERIC_TEXT)),
            cast(column, Float),
        ),
        else_=None,
    )
    return _compare(numeric, op, value)


def _compare(left: ColumnElement[Any], op: Op, right: Scalar) -> ColumnElement[bool]:
    if op == "=":
        return left == right
    if op == "!=":
        return left != right
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    if op == ">=":
        return left >= right
    raise AssertionError(f"not a comparison operator: {op}")


def _column(field: Field, schema: _Schema) -> Column[Any]:
    try:
        return schema.columns[field]
    except KeyError:
        raise ValueError(
            f"'{field}' is not a field of this search (was the filter parsed for another target?)"
        ) from None


def _key_values(field: Field, schema: _Schema) -> tuple[Table, Column[int]] | None:
    return None if field.namespace is None else schema.keyed.get(field.namespace)


def _sort_key(field: Field, schema: _Schema) -> ColumnElement[Any]:
    key: ColumnElement[Any]
    if key_values := _key_values(field, schema):
        table, owner = key_values
        key = (
            select(table.c.value)
            .where(owner == schema.owner_id, table.c.key == field.key)
            .scalar_subquery()
        )
        return key if isinstance(table.c.value.type, Float) else _CodePointOrder(key)
    key = _column(field, schema)
    return _CodePointOrder(key) if isinstance(key.type, String) else key


def _ordered(key: ColumnElement[Any], term: OrderTerm) -> ColumnElement[Any]:
    return (key.desc() if term.descending else key.asc()).nulls_last()
