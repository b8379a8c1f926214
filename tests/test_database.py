"""Reaching PostgreSQL: a missing database, an unknown role, an unreachable server; and
the schema the migrations make, on both backends.

Each is one line on the CLI (serve, admin commands) and a ``DatabaseUnavailable`` from
the SDK in local mode, never a traceback. A missing database is created when the URL's
role may create databases, and named with its ``createdb`` command when it may not: the
test makes a throwaway role of each kind and drops them. (Passwords are not tried: the
test server trusts loopback, so it asks for none.)
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, text

from modelyard import connect
from modelyard.service import RegistryService
from modelyard.storage.db.engine import DatabaseUnavailable, create_db_engine, migrate
from modelyard.storage.db.migrations import HEAD_REVISION
from modelyard.storage.db.tables import metadata
from tests.conftest import free_port
from tests.test_cli import assert_user_error, invoke


@pytest.fixture
def roles(pg_admin: Engine) -> Iterator[dict[str, str]]:
    """Two throwaway login roles, one that may create databases and one that may not, and
    the name of a database neither has: dropped, with what they made, afterwards."""
    suffix = secrets.token_hex(4)
    made = {"creator": f"myd_creator_{suffix}", "plain": f"myd_plain_{suffix}"}
    database = f"myd_missing_{suffix}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{made["creator"]}" LOGIN CREATEDB'))
        conn.execute(text(f'CREATE ROLE "{made["plain"]}" LOGIN'))
    try:
        yield {**made, "database": database}
    finally:
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            for role in made.values():
                conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


def _url(role: str, database: str, port: int = 5432) -> str:
    return f"postgresql://{role}@127.0.0.1:{port}/{database}"


def _owner(pg_admin: Engine, database: str) -> str | None:
    with pg_admin.connect() as conn:
        owner: str | None = conn.execute(
            text("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :name"),
            {"name": database},
        ).scalar()
    return owner


def test_a_missing_database_is_named_with_createdb_or_created_when_the_role_may(
    pg_admin: Engine, roles: dict[str, str], tmp_path: Path
) -> None:
    database = roles["database"]
    plain = _url(roles["plain"], database)
    command = f"createdb -h 127.0.0.1 -p 5432 -U postgres -O {roles['plain']} {database}"

    # A role without CREATEDB: one line naming the command, and nothing created.
    for args in (
        ("admin", "create", "alice", "--data-dir", str(tmp_path / "a"), "--database-url", plain),
        ("serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "s")),
    ):
        env = {"MODELYARD_DATABASE_URL": plain} if args[0] == "serve" else {}
        result = invoke(*args, url=None, cwd=tmp_path, env=env)
        line = assert_user_error(result, contains=f'database "{database}" does not exist')[0]
        assert line.endswith(f"create it with: {command}"), line
    with pytest.raises(DatabaseUnavailable) as raised:
        connect(tmp_path / "sdk", database_url=plain)
    assert raised.value.code == "database_missing"
    assert command in raised.value.message
    assert _owner(pg_admin, database) is None

    # A role with CREATEDB: the database is made (its owner), migrated and used.
    creator = _url(roles["creator"], database)
    result = invoke(
        "admin",
        "create",
        "alice",
        "--data-dir",
        str(tmp_path / "c"),
        "--database-url",
        creator,
        url=None,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.output
    assert result.stdout.startswith("myd_")
    assert _owner(pg_admin, database) == roles["creator"]
    engine = create_db_engine(creator)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
                HEAD_REVISION
            )
            assert conn.execute(text("SELECT count(*) FROM principals")).scalar() == 1
    finally:
        engine.dispose()


def test_an_unreachable_server_and_an_unknown_role_are_one_line_each(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    cases = {
        _url("postgres", "modelyard", port=free_port()): "cannot reach PostgreSQL at 127.0.0.1:",
        _url(f"myd_nobody_{secrets.token_hex(4)}", "modelyard"): "PostgreSQL at 127.0.0.1:5432"
        " refused role",
    }
    for url, says in cases.items():
        for args in (
            ("admin", "create", "alice", "--data-dir", data, "--database-url", url),
            ("serve", "--port", str(free_port()), "--data-dir", data, "--database-url", url),
        ):
            assert_user_error(invoke(*args, url=None, cwd=tmp_path), contains=says)
        with pytest.raises(DatabaseUnavailable, match=says):
            connect(tmp_path / "sdk", database_url=url)


def test_replicas_starting_together_on_a_new_database_migrate_once(
    pg_admin: Engine, roles: dict[str, str]
) -> None:
    """Both create the database and migrate at once: one of each happens, neither fails."""
    url = _url(roles["creator"], roles["database"])
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def replica() -> None:
        engine = create_db_engine(url)
        try:
            start.wait()
            migrate(engine)
        except BaseException as exc:  # reported below, with the other replica's
            failures.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
                HEAD_REVISION
            )
            assert conn.execute(text("SELECT seq FROM journal_head")).scalar() == 0
    finally:
        engine.dispose()


def test_the_migrated_schema_is_the_tables_metadata(service: RegistryService) -> None:
    """What the migrations create is what storage/db/tables.py declares (tables, columns,
    types, indexes, keys), on each backend: a migration that forgot a column, or metadata
    that forgot a migration, is named here rather than at a user's first write."""
    with service.db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
