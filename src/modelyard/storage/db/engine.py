"""Engines for SQLite (the embedded default) and PostgreSQL, and schema migration at start.

SQLite runs in WAL mode with synchronous=FULL (a committed version survives power loss),
foreign keys on, and reads through a memory map. Write transactions start with BEGIN
IMMEDIATE so concurrent writers queue on the busy timeout instead of failing on a lock
upgrade.

PostgreSQL is reached before anything is migrated (``migrate`` calls ``reach``): an
unreachable server, a refused role or password and a missing database are each one
sentence (``DatabaseUnavailable``) that says what to do, and a missing database is created
when the URL's role may create databases. Replicas starting together on one database
migrate one at a time (an advisory lock).
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import NullPool

from modelyard.domain.errors import InvalidInput, Unavailable
from modelyard.storage.db.migrations import HEAD_REVISION

log = logging.getLogger("modelyard")

_MIGRATIONS = Path(__file__).parent / "migrations"
_MMAP_BYTES = 256 * 1024 * 1024
# Seconds to wait for PostgreSQL to answer a connection: a host that drops packets would
# otherwise hold `modelyard serve` for the kernel's two minutes before it says anything.
CONNECT_TIMEOUT = 10
# The key of the advisory lock migrations hold on PostgreSQL ("modelyard" in ASCII, cut to
# a bigint): two replicas started at once on a new database would both create the tables.
_MIGRATION_LOCK = 0x6D6F64656C796172
# Where to ask whether a database exists: the maintenance databases every server has.
_MAINTENANCE = ("postgres", "template1")


class DatabaseUnavailable(Unavailable):
    """The database cannot be used: unreachable, the role or password refused, or missing.

    Its message is one sentence that names the server and what to do; never the password.
    """

    default_code = "database_unavailable"


def normalize_url(url: str) -> str:
    """Accept the URLs users type (postgresql://, postgres://) and pick the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_db_engine(url: str) -> Engine:
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidInput(f"cannot parse database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(
            url,
            pool_size=8,
            max_overflow=8,
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        connect_args = (
            {} if "connect_timeout" in parsed.query else {"connect_timeout": CONNECT_TIMEOUT}
        )
        return create_engine(
            url, pool_size=10, max_overflow=10, pool_pre_ping=True, connect_args=connect_args
        )
    raise InvalidInput(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite's own
        # transaction handling would defer it and cannot do BEGIN IMMEDIATE).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # Read through a shared memory map instead of each connection's 2 MB page cache: a
        # page of 100 versions scattered over the file (ordered by a metric) touches ~700
        # pages, which thrashed that cache into a pread and a copy each (1.8 -> 1.15 ms).
        cursor.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:  # no alembic_version table: an empty database
        return None


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; one query (and no Alembic) when it is.

    PostgreSQL is reached first (``reach``: a missing database may be created); there the
    migration holds an advisory lock and looks at the revision again under it, so of two
    replicas starting together on a new database one migrates and the other finds it done.
    """
    if engine.dialect.name == "postgresql":
        reach(engine)
    if current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            if _revision(conn) == HEAD_REVISION:
                return
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def _revision(conn: Connection) -> str | None:
    """The revision as this transaction sees it (None: no schema yet)."""
    exists = conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL")).scalar()
    if not exists:
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


# -- reaching PostgreSQL ------------------------------------------------------------------------


def reach(engine: Engine) -> None:
    """Connect once, or raise ``DatabaseUnavailable`` with what went wrong and what to do.

    A database that does not exist is created when the URL's role may create databases
    (CREATEDB, or a superuser), and logged; otherwise the error names the ``createdb``
    command. Whether it exists is asked of a maintenance database with the same
    credentials, not read from the server's (translatable) error text.
    """
    try:
        engine.connect().close()
        return
    except DBAPIError as exc:
        failure = _reason(exc)
    url = engine.url
    where = _where(url)
    maintenance = _maintenance(url)
    if maintenance is None:
        # The server or the credentials, not the database: the server's own words say which.
        if _unreachable(failure):
            raise DatabaseUnavailable(
                f"cannot reach PostgreSQL at {where}: {failure}", code="database_unreachable"
            ) from None
        raise DatabaseUnavailable(
            f'PostgreSQL at {where} refused role "{_role(url)}": {failure}',
            code="database_refused",
        ) from None
    name = url.database or ""
    with maintenance.connect() as conn:
        found = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        ).first()
        may_create = bool(
            conn.execute(
                text("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")
            ).scalar()
        )
        if found is not None:
            maintenance.dispose()
            raise DatabaseUnavailable(
                f'cannot connect to database "{name}" on {where} as "{_role(url)}": {failure}',
                code="database_refused",
            ) from None
        if not may_create:
            maintenance.dispose()
            raise DatabaseUnavailable(
                f'database "{name}" does not exist on {where}, and role "{_role(url)}" may not'
                f" create databases: create it with: {createdb_command(url)}",
                code="database_missing",
            ) from None
        quoted = conn.dialect.identifier_preparer.quote_identifier(name)
        try:
            conn.execute(text(f"CREATE DATABASE {quoted}"))
        except DBAPIError as exc:
            made_meanwhile = conn.execute(  # by another replica starting at the same moment
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
            if made_meanwhile is None:
                maintenance.dispose()
                raise DatabaseUnavailable(
                    f'could not create database "{name}" on {where}: {_reason(exc)}',
                    code="database_missing",
                ) from None
        else:
            log.warning(
                'created database "%s" on %s (role "%s" may create databases)',
                name,
                where,
                _role(url),
            )
    maintenance.dispose()
    try:
        engine.connect().close()
    except DBAPIError as exc:
        raise DatabaseUnavailable(
            f'cannot connect to database "{name}" on {where}: {_reason(exc)}',
            code="database_refused",
        ) from None


def createdb_command(url: URL) -> str:
    """The shell command that creates the URL's database for its role (run by a role that
    may create databases): host, port and owner from the URL, never its password."""
    parts = ["createdb"]
    host = url.host or url.query.get("host")
    if isinstance(host, str) and host:
        parts += ["-h", host]
    parts += ["-p", str(url.port or 5432)]
    parts += ["-U", "postgres"]
    if url.username:
        parts += ["-O", url.username]
    parts.append(url.database or "")
    return " ".join(shlex.quote(p) for p in parts)


def _maintenance(url: URL) -> Engine | None:
    """An engine on a maintenance database of the same server, as the same role (AUTOCOMMIT,
    so CREATE DATABASE may run), or None when none of them accepts a connection."""
    for database in _MAINTENANCE:
        if database == url.database:
            continue
        engine = create_engine(
            url.set(database=database),
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": CONNECT_TIMEOUT},
        )
        try:
            engine.connect().close()
        except DBAPIError:
            engine.dispose()
            continue
        return engine
    return None


def _where(url: URL) -> str:
    host = url.host or url.query.get("host") or "the local socket"
    return f"{host}:{url.port or 5432}"


def _role(url: URL) -> str:
    return url.username or "(the OS user)"


def _reason(exc: DBAPIError) -> str:
    """The driver's sentence, on one line, without libpq's "connection to server at ..."
    preamble (the message says where) and without the password, which libpq never prints."""
    text_ = str(exc.orig).strip()
    lines = [line.strip() for line in text_.splitlines() if line.strip()]
    first = lines[0] if lines else text_
    # "connection failed: connection to server at "h", port p failed: FATAL:  why"
    first = first.rsplit(" failed: ", 1)[-1]
    first = first.removeprefix("FATAL:").strip()
    return " ".join([first, *[f"({line})" for line in lines[1:]]])


def _unreachable(reason: str) -> bool:
    """Whether a failure to connect is the network's (no server answered), not a refusal."""
    lowered = reason.lower()
    return any(
        words in lowered
        for words in (
            "connection refused",
            "could not connect",
            "timeout expired",
            "timed out",
            "no route to host",
            "network is unreachable",
            "failed to resolve host",
            "name or service not known",
            "could not translate host name",
            "no such file or directory",  # a Unix socket that is not there
        )
    )
