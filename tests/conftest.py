"""Shared fixtures: real databases (SQLite and PostgreSQL), a service, an API client, a
server process (``live_server``) and uvicorn in a thread (``serving``).

PostgreSQL is the server at 127.0.0.1:5432 (trust auth). Each test process migrates one
database of its own there, empties it before every test and drops it at the end. When the
server is unreachable those tests skip with the reason, except in CI (CI=true), where that
is a failure.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp

from modelyard.api import create_app
from modelyard.config import Settings, open_service
from modelyard.domain.access import Reach
from modelyard.domain.journal import GENESIS_HASH
from modelyard.service import RegistryService
from modelyard.storage.db.engine import create_db_engine, migrate
from modelyard.storage.db.tables import metadata

PG_ADMIN_URL = os.environ.get(
    "MODELYARD_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    engine = create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        engine.dispose()
        reason = f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc.orig}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)")
        pytest.skip(reason)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg_database(pg_admin: Engine) -> Iterator[str]:
    """One migrated PostgreSQL database per test process, dropped at the end of the session."""
    name = f"modelyard_test_{secrets.token_hex(6)}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = pg_admin.url.set(database=name).render_as_string(hide_password=False)
    engine = create_db_engine(url)
    migrate(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The per-process PostgreSQL database, emptied for this test (faster than a new one)."""
    engine = create_engine(pg_database)
    names = ", ".join(t.name for t in metadata.sorted_tables if t.name != "journal_head")
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        # identity_seq too: left over, it could equal a stamp this test makes, and a cache
        # filled before the test's first identity event would then hold across it.
        conn.execute(
            text("UPDATE journal_head SET seq = 0, hash = :genesis, identity_seq = 0"),
            {"genesis": GENESIS_HASH},
        )
    engine.dispose()
    return pg_database


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None means the embedded default (SQLite in the data directory)."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def service(settings: Settings) -> Iterator[RegistryService]:
    svc = open_service(settings)
    yield svc
    svc.close()


@pytest.fixture
def client(service: RegistryService) -> Iterator[TestClient]:
    with TestClient(create_app(service, reach=Reach.LOOPBACK, local_user="tester")) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def _isolated_hash_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELYARD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def make_tree(tmp_path: Path) -> Callable[[dict[str, bytes]], Path]:
    """Write {relative path: bytes} under a new directory and return it."""
    counter = iter(range(1_000_000))

    def build(files: dict[str, bytes]) -> Path:
        root = tmp_path / f"tree{next(counter)}"
        for rel, content in files.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        return root

    return build


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """A real `modelyard serve` process on a free loopback port."""

    data_dir: Path
    database_url: str | None
    host: str = "127.0.0.1"  # what it binds; it is always reached through loopback
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0, port: int | None = None) -> None:
        self.port = port or free_port()
        command = [sys.executable, "-m", "modelyard", "serve", "--port", str(self.port)]
        command += ["--host", self.host]
        command += ["--data-dir", str(self.data_dir), "--log-level", "warning"]
        if self.database_url:
            command += ["--database-url", self.database_url]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"server exited with {self.process.returncode}: {stderr}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)  # polling for readiness, not standing in for it
        raise RuntimeError("server did not become ready in time")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, exactly like a crash."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def live_server(tmp_path: Path, database_url: str | None) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path / "server-data", database_url)
    server.start()
    yield server
    server.stop()


@contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """uvicorn serving ``app`` on a free loopback port, in a thread; yields its URL.

    The socket listens before uvicorn starts, so connections wait in its backlog rather
    than failing: nothing to poll for.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
