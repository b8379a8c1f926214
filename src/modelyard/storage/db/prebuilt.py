"""Statements of the hot paths, compiled once per dialect and run on the DBAPI cursor.

SQLAlchemy's execution path (an execution context, a cursor result, a ``Row`` per row)
costs several times what SQLite takes to run the small statements of a registration, a
resolve or a page of versions: ~40 µs a statement and ~1 µs a row. A ``Prebuilt`` keeps
SQLAlchemy for what it is good at here (writing the SQL of both dialects from the table
definitions, and the bind processing of their types) and runs the result on the cursor of
the transaction's own connection, so it commits or rolls back with everything else.
"""

from __future__ import annotations

import operator
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Args = tuple[Any, ...] | dict[str, Any]
# The SQL, its parameters, and whether to count its changed rows.
_Compiled = tuple[str, Callable[[Mapping[str, Any]], Args], bool]
# Statements that changed rows on a PostgreSQL connection so far, in its Connection.info:
# Database.write refuses a transaction that changed rows without an event (SQLite counts
# changed rows itself).
CHANGES = "modelyard.changed_rows"


def count_change(conn: Connection, cursor: Any) -> None:
    """Count a DML statement that changed rows (an unknown count, -1, counts)."""
    if cursor.rowcount != 0:
        conn.info[CHANGES] = conn.info.get(CHANGES, 0) + 1


class Prebuilt:
    """One statement. Like ``Connection.execute``, it compiles the statement for the keys of
    its parameters (an INSERT sets exactly those columns; no Python-side defaults apply),
    once per dialect and set of keys."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled] = {}

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run it; the rows it returns, as tuples in the order of its columns."""
        sql, args, counted = self._for(conn.dialect, params)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, args(params))
            if counted:
                count_change(conn, cursor)
            return list(cursor.fetchall()) if cursor.description is not None else []
        finally:
            cursor.close()

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The first column of the first row, or None."""
        rows = self.rows(conn, params)
        return rows[0][0] if rows else None

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run it once per parameter set (executemany; all with the keys of the first)."""
        if not rows:
            return
        sql, args, counted = self._for(conn.dialect, rows[0])
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(sql, [args(row) for row in rows])  # type: ignore[arg-type]
            if counted:
                count_change(conn, cursor)
        finally:
            cursor.close()

    def insert_all(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run an INSERT for many rows (all with the keys of the first) in as few statements
        as the database takes: on SQLite one multi-row ``VALUES`` per chunk of its variable
        limit, elsewhere executemany (which psycopg sends as one pipeline). SQLite's
        executemany steps once per row, and a step lets other threads take the
        interpreter's lock from the one holding the database's write lock."""
        if not rows:
            return
        if conn.dialect.name != "sqlite":
            self.many(conn, rows)
            return
        sql, args, _ = self._for(conn.dialect, rows[0])
        head, _, group = sql.rpartition(" VALUES ")
        if not (group.startswith("(") and group.endswith(")")):
            raise ValueError(f"insert_all needs a plain INSERT ... VALUES (...): {sql}")
        raw: Any = conn.connection.dbapi_connection
        limit = raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        per_statement = max(1, limit // max(1, group.count("?")))
        cursor = raw.cursor()
        try:
            for start in range(0, len(rows), per_statement):
                chunk = rows[start : start + per_statement]
                groups = ", ".join([group] * len(chunk))
                cursor.execute(f"{head} VALUES {groups}", [v for row in chunk for v in args(row)])
        finally:
            cursor.close()

    def _for(self, dialect: Dialect, params: Mapping[str, Any]) -> _Compiled:
        key = (dialect.name, tuple(sorted(params)))
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = self._compile(dialect, list(key[1]))
        return found

    def _compile(self, dialect: Dialect, keys: list[str]) -> _Compiled:
        compiled = self.statement.compile(dialect=dialect, column_keys=keys)
        assert isinstance(compiled, SQLCompiler)
        binds = compiled.binds
        processors = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for name, bind in binds.items()
        }
        # Literals of the statement itself (``id = 1``) travel as parameters too.
        fixed = {name: bind.effective_value for name, bind in binds.items() if not bind.required}
        positions = compiled.positiontup  # None for a named paramstyle (psycopg)
        dml = compiled.isinsert or compiled.isupdate or compiled.isdelete
        counted = dml and dialect.name != "sqlite"

        names = list(positions) if positions is not None else list(processors)
        if not fixed and not any(processors.values()):  # the common case: values as given
            if positions is None:
                return compiled.string, lambda params: params, counted
            if len(names) == 1:
                only = names[0]
                return compiled.string, lambda params: (params[only],), counted
            pick = operator.itemgetter(*names)
            return compiled.string, lambda params: pick(params), counted

        def value(params: Mapping[str, Any], name: str) -> Any:
            given = params[name] if name in params or name not in fixed else fixed[name]
            process = processors[name]
            return given if process is None else process(given)

        if positions is not None:
            return compiled.string, lambda params: tuple(value(params, n) for n in names), counted
        return compiled.string, lambda params: {n: value(params, n) for n in names}, counted
