"""Shared fixtures: real databases (SQLite and PostgreSQL), a service, an API client, a
server process (``live_server``), uvicorn in a thread (``serving``), a statement counter
(``count_queries``) and a real browser (``browser``, ``browser_context``).

PostgreSQL is the server at 127.0.0.1:5432 (trust auth). Each test process migrates one
database of its own there, empties it before every test and drops it at the end. When the
server is unreachable those tests skip with the reason, except in CI (CI=true), where that
is a failure.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
import typer.main
import typer.testing
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp

from modelyard.api import create_app
from modelyard.config import Settings, open_service
from modelyard.domain.access import Reach
from modelyard.domain.journal import GENESIS_HASH
from modelyard.service import RegistryService
from modelyard.storage.db.engine import create_db_engine, migrate
from modelyard.storage.db.prebuilt import Prebuilt
from modelyard.storage.db.store import Database
from modelyard.storage.db.tables import metadata

if TYPE_CHECKING:
    import numpy as np
    from playwright.sync_api import Browser, BrowserContext, Page

# typer's CliRunner turns the Typer app into a click command on every invoke: ~0.15 s of
# CPU for modelyard's hundred commands, paid by each of the suite's in-process CLI calls.
# The app is the same all session and the conversion reads nothing from the environment
# (options read theirs when a command runs), so one conversion per app serves them all.
typer.testing._get_command = functools.cache(typer.main.get_command)


def pytest_configure(config: pytest.Config) -> None:
    """Where PYTHONDONTWRITEBYTECODE is set (many CI images set it), every interpreter the
    suite starts (each `modelyard serve`, each CLI call of the tours) compiles the
    modelyard modules it imports again: 0.2-0.4 s of CPU apiece, over hundreds of
    processes. The variable stops writing, not reading: compiled once here, before any
    worker starts, into the package's own (git-ignored) __pycache__, they are read."""
    if hasattr(config, "workerinput") or not sys.flags.dont_write_bytecode:
        return
    import compileall

    import modelyard

    compileall.compile_dir(Path(modelyard.__file__).parent, quiet=1)


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
        _emptier(url).dispose()
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The per-process PostgreSQL database, emptied for this test (faster than a new one)."""
    return emptied(pg_database)


@functools.cache
def _emptier(pg_database: str) -> Engine:
    """One connection per test process that empties its database before each test.

    A new backend would load the catalog entries of every table and index again, which
    cost PostgreSQL about 60 ms of CPU per test; this one keeps them. A forked child drops
    it without closing it, so that the parent's connection survives the child."""
    engine = create_engine(pg_database, pool_size=1, pool_pre_ping=True)
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    return engine


def emptied(pg_database: str) -> str:
    """Empty the per-process PostgreSQL database (every table, the journal's head reset).

    Only the tables holding rows are emptied, and only the identity sequences used are
    restarted: most tests touch a few of the schema's tables. A DELETE of a test's few
    rows costs far less than a TRUNCATE, which makes new files for a table and each of its
    indexes (about 5 ms a table).
    """
    names = [t.name for t in metadata.sorted_tables if t.name != "journal_head"]
    holding_rows = " UNION ALL ".join(
        f"SELECT '{name}' WHERE EXISTS (SELECT 1 FROM \"{name}\")" for name in names
    )
    sequences_used = """
        SELECT sequencename FROM pg_sequences
        WHERE schemaname = current_schema() AND last_value IS NOT NULL
    """
    with _emptier(pg_database).begin() as conn:
        written = set(conn.execute(text(holding_rows)).scalars())
        for name in reversed(names):  # what refers to a row goes before it
            if name in written:
                conn.execute(text(f'DELETE FROM "{name}"'))
        for sequence in conn.execute(text(sequences_used)).scalars():
            conn.execute(text(f'ALTER SEQUENCE "{sequence}" RESTART'))
        # identity_seq too: left over, it could equal a stamp this test makes, and a cache
        # filled before the test's first identity event would then hold across it.
        conn.execute(
            text("UPDATE journal_head SET seq = 0, hash = :genesis, identity_seq = 0"),
            {"genesis": GENESIS_HASH},
        )
    return pg_database


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database a test runs on: each test that takes it runs once per backend."""
    name: str = request.param
    return name


def on(backend: str, *, through: str = "backend") -> pytest.MarkDecorator:
    """Run a test on one backend: for a check of the UI's own behaviour (what a page
    escapes, a form's CSRF token, the offline API docs) that reads nothing a backend could
    change; the stories and every other test run on both.
    ``through``: the fixture parametrised by backend (a module's shared server, say)."""
    return pytest.mark.parametrize(through, [backend], indirect=True)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """None means the embedded default (SQLite in the data directory)."""
    if backend == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    return url


Built = TypeVar("Built")


@dataclass
class _Image:
    data_dir: Path
    built: Any
    # On PostgreSQL: the schema holding a copy of the tables the build wrote rows to (in
    # the order their foreign keys allow) and the values its identity sequences reached.
    schema: str | None = None
    tables: tuple[str, ...] = ()
    sequences: tuple[tuple[str, int], ...] = ()


class Images:
    """Registries built once per test process and backend, and restored for each test.

    Building a registry through the service (users, tokens, versions, requests) costs a
    second or more; restoring one is a directory copy and, on PostgreSQL, the built rows
    copied back into the emptied per-process database, in one transaction. (A database
    cloned from a template per test cost 0.3-0.5 s: DROP DATABASE waits for a checkpoint.)
    What ``build`` returns (tokens, ids) is handed to every restored copy.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[tuple[Callable[..., Any], str], _Image] = {}

    def restore(
        self,
        build: Callable[[RegistryService], Built],
        backend: str,
        data_dir: Path,
        request: pytest.FixtureRequest,
    ) -> tuple[Settings, Built]:
        """Settings of a fresh copy of ``build``'s registry in ``data_dir``, and what
        ``build`` returned."""
        url = request.getfixturevalue("pg_database") if backend == "postgresql" else None
        image = self._made.get((build, backend))
        if image is None:
            image = self._made[(build, backend)] = self._build(build, url)
        shutil.copytree(image.data_dir, data_dir)
        if url is None:
            return Settings(data_dir=data_dir), image.built
        with _emptier(emptied(url)).begin() as conn:
            conn.execute(text("DELETE FROM journal_head"))
            for name in image.tables:
                conn.execute(
                    text(
                        f'INSERT INTO "{name}" OVERRIDING SYSTEM VALUE'
                        f' SELECT * FROM "{image.schema}"."{name}"'
                    )
                )
            for sequence, value in image.sequences:
                conn.execute(
                    text("SELECT setval(:name, :value)"), {"name": f'"{sequence}"', "value": value}
                )
        return Settings(data_dir=data_dir, database_url=url), image.built

    def _build(self, build: Callable[[RegistryService], Any], url: str | None) -> _Image:
        backend = "postgresql" if url else "sqlite"
        data_dir = self.root / f"{build.__module__}.{build.__qualname__}-{backend}"
        if url is not None:
            emptied(url)
        service = open_service(Settings(data_dir=data_dir, database_url=url))
        try:
            built = build(service)
        finally:
            service.close()
        if url is None:
            return _Image(data_dir, built)
        schema = f"image_{len(self._made)}"
        names = [t.name for t in metadata.sorted_tables]
        with _emptier(url).begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            tables = []
            for name in names:
                if conn.execute(text(f'SELECT EXISTS (SELECT 1 FROM "{name}")')).scalar():
                    conn.execute(text(f'CREATE TABLE "{schema}"."{name}" AS TABLE "{name}"'))
                    tables.append(name)
            sequences = conn.execute(
                text(
                    "SELECT sequencename, last_value FROM pg_sequences"
                    " WHERE schemaname = current_schema() AND last_value IS NOT NULL"
                )
            ).all()
        return _Image(data_dir, built, schema, tuple(tables), tuple(map(tuple, sequences)))


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    """The schemas of PostgreSQL images go with the per-process database."""
    return Images(tmp_path_factory.mktemp("images"))


def _empty(service: RegistryService) -> None:
    """The image of a registry with nothing in it: a migrated schema."""


@pytest.fixture
def restored(
    images: Images, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[Callable[[RegistryService], Built]], tuple[RegistryService, Built]]:
    """``service, built = restored(build)``: a service on a fresh copy of the registry
    ``build`` made (built once per test process and backend), closed after the test."""

    def restore(build: Callable[[RegistryService], Built]) -> tuple[RegistryService, Built]:
        settings, built = images.restore(build, backend, tmp_path / "data", request)
        service = open_service(settings)
        request.addfinalizer(service.close)
        return service, built

    return restore


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def service(
    settings: Settings, images: Images, request: pytest.FixtureRequest
) -> Iterator[RegistryService]:
    if settings.database_url is None and not settings.data_dir.exists():
        images.restore(_empty, "sqlite", settings.data_dir, request)  # faster than migrating
    svc = open_service(settings)
    yield svc
    svc.close()


@pytest.fixture
def client(service: RegistryService) -> Iterator[TestClient]:
    with TestClient(create_app(service, reach=Reach.LOOPBACK, local_user="tester")) as test_client:
        yield test_client


@dataclass(frozen=True)
class S3Server:
    """A moto S3 server on a loopback port, in this test process (its threads)."""

    endpoint: str
    bucket: str

    def client(self) -> Any:
        """One client for the session: making one loads botocore's models (~0.5 s)."""
        return _s3_client(self.endpoint)

    def blob_url(self, prefix: str | None = None) -> str:
        """``s3://BUCKET/PREFIX``: a prefix of its own for each caller, so that tests
        sharing the server never see one another's blobs."""
        return f"s3://{self.bucket}/{prefix or 't-' + secrets.token_hex(6)}"

    def keys(self, prefix: str) -> list[str]:
        """Every object key under ``prefix`` in the bucket."""
        listed = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in listed.get("Contents", ()))

    def multipart_keys(self, prefix: str) -> list[str]:
        listed = self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return sorted(u["Key"] for u in listed.get("Uploads", ()))

    def age(self, key: str, seconds: float) -> None:
        """Move an object's LastModified (or an incomplete multipart upload's parts') into
        the past, in this process's moto server: S3 offers no way to, and a test must not
        wait an hour for a grace period."""
        from datetime import timedelta

        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        bucket = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[self.bucket]
        if key in bucket.keys:
            bucket.keys[key].last_modified -= timedelta(seconds=seconds)
        for upload in bucket.multiparts.values():
            if upload.key_name == key:
                for part in upload.parts.values():
                    part.last_modified -= timedelta(seconds=seconds)


@functools.cache
def _s3_client(endpoint: str) -> Any:
    from modelyard.storage.blobs.s3 import make_client

    return make_client(endpoint)


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "modelyard-test",
    "AWS_SECRET_ACCESS_KEY": "modelyard-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server per test process, with one bucket; tests take a prefix each.

    Credentials and region come from the standard AWS variables, set here for the whole
    session, so a `modelyard serve` process started by a test finds them as a user's would.
    """
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        reason = f"moto is not installed ({exc}): pip install 'moto[server]'"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: S3 tests must run)")
        pytest.skip(reason)
    saved = {name: os.environ.get(name) for name in S3_ENV}
    os.environ.update(S3_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    made = S3Server(f"http://{host}:{port}", "modelyard-test")
    made.client().create_bucket(Bucket=made.bucket)
    yield made
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _isolated_hash_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELYARD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    # `modelyard watch` keeps its progress there: never in the developer's own.
    monkeypatch.setenv("MODELYARD_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    # And serve-model its versions (what it served last, served again at a restart).
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


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


Result = TypeVar("Result")


def run_async(coroutine: Coroutine[Any, Any, Result]) -> Result:
    """`asyncio.run` on a thread of its own: once a browser test has run, this process's
    main thread holds Playwright's loop, and `asyncio.run` refuses to start beside it."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


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
    env: dict[str, str] = field(default_factory=dict)  # MODELYARD_* settings of its own

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
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, **self.env},
        )
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


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server on the embedded default, for a test that asks no backend of it."""
    server = LiveServer(tmp_path / "server-data", None)
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


@dataclass
class CountedQueries:
    """The SQL statements run while a ``count_queries()`` block was open, in order."""

    statements: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.statements)


CountQueries = Callable[[], AbstractContextManager[CountedQueries]]


@pytest.fixture
def count_queries(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountQueries]:
    """``with count_queries() as counted: client.get(...)``, then ``counted.count``.

    Counts every statement this process runs on any database, by each of the three ways
    the code reaches one: SQLAlchemy's execution (its ``before_cursor_execute`` event),
    ``Prebuilt`` statements on the DBAPI cursor, and the stamp reads on a detached
    connection (``Database._quick_scalar``). Caches fill on a first request, so warm a
    page up before counting it, then compare two sizes: a page's count must not grow with
    its rows.
    """
    active: list[CountedQueries] = []

    def record(sql: str) -> None:
        for counted in active:
            counted.statements.append(sql)

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        record(statement)

    original_rows, original_many = Prebuilt.rows, Prebuilt.many
    original_insert_all = Prebuilt.insert_all
    original_quick = Database._quick_scalar

    def rows(self: Prebuilt, conn: Any, params: Any) -> list[tuple[Any, ...]]:
        record(str(self.statement))
        return original_rows(self, conn, params)

    def many(self: Prebuilt, conn: Any, params: Any) -> None:
        record(str(self.statement))
        original_many(self, conn, params)

    def insert_all(self: Prebuilt, conn: Any, rows: Any) -> None:
        # On SQLite it runs one statement per chunk of the variable limit on the cursor
        # (a row binds one variable per key); elsewhere it calls ``many``, counted above.
        if rows and conn.dialect.name == "sqlite":
            raw = conn.connection.dbapi_connection
            per_statement = raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(rows[0])
            for _ in range(0, len(rows), max(1, per_statement)):
                record(str(self.statement))
        original_insert_all(self, conn, rows)

    def quick(self: Database, sql: str, params: tuple[Any, ...] = ()) -> Any:
        record(sql)
        return original_quick(self, sql, params)

    monkeypatch.setattr(Prebuilt, "rows", rows)
    monkeypatch.setattr(Prebuilt, "many", many)
    monkeypatch.setattr(Prebuilt, "insert_all", insert_all)
    monkeypatch.setattr(Database, "_quick_scalar", quick)
    event.listen(Engine, "before_cursor_execute", on_execute)

    @contextmanager
    def counting() -> Iterator[CountedQueries]:
        counted = CountedQueries()
        active.append(counted)
        try:
            yield counted
        finally:
            active.remove(counted)

    try:
        yield counting
    finally:
        event.remove(Engine, "before_cursor_execute", on_execute)


# -- a real browser ---------------------------------------------------------------------

# Debian's chromium: `make test` installs it when it is missing (tests/ensure_chromium.sh).
# Playwright's own browser download cannot work without the network, so it is never used.
CHROMIUM = Path("/usr/bin/chromium")
# Big enough for the pages' tables, small enough that screenshots stay light.
VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One Chromium per test process; each test takes a fresh context of its own."""
    if not CHROMIUM.exists():
        reason = (
            f"no browser: {CHROMIUM} is missing (`make test` installs Debian's chromium"
            " when it runs as root with apt-get; else `apt-get install chromium`)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: the browser tests must run)")
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=10_000)  # a shared 2-core machine: generous, never a sleep
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def browser_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """``browser_context(base_url)``: a new context (its own cookies), closed after the test."""
    made: list[BrowserContext] = []

    def new(base_url: str, **options: Any) -> BrowserContext:
        context = browser.new_context(base_url=base_url, viewport=VIEWPORT, **options)
        context.set_default_timeout(10_000)
        made.append(context)
        return context

    yield new
    for context in made:
        context.close()


def sign_in(page: Page, user: str, password: str, then: str = "/requests") -> None:
    """Sign the page's browser context in through the /signin form, as a person does, and
    land on ``then``."""
    from playwright.sync_api import expect

    page.goto(f"/signin?next={then}")
    page.fill("#signin-user", user)
    page.fill("#signin-password", password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(re.compile(f"{re.escape(then)}$"))
    expect(page.locator("header .who .user")).to_contain_text(user)


# -- MLflow: its tracking server and a model it saved ------------------------------------


@dataclass
class Tracking:
    """A real MLflow tracking server serving artifacts, one per test process."""

    url: str


@pytest.fixture(scope="session")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracking]:
    root = tmp_path_factory.mktemp("mlflow-tracking")
    port = free_port()
    log = root / "server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--serve-artifacts"]
    command += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(root / "artifacts")]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # a third of its start
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "MLflow's tracking server did not start"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)  # polling for readiness, not standing in for it
        yield Tracking(url)
    finally:
        process.terminate()
        process.wait(20)


@dataclass(frozen=True)
class Trained:
    """A small scikit-learn model saved by MLflow, with what it predicts."""

    saved: Path
    features: np.ndarray
    predictions: np.ndarray


# Given, so that MLflow does not infer them by importing the model in a new interpreter
# (seconds each time).
REQUIREMENTS = ["scikit-learn"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=300).fit(features, labels)
    saved = tmp_path_factory.mktemp("iris") / "model"
    mlflow.sklearn.save_model(model, saved, pip_requirements=REQUIREMENTS)
    return Trained(saved, features[:20], model.predict(features[:20]))
