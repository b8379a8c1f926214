"""``modelyard serve`` in production dress: ``--workers 2`` on SQLite and on PostgreSQL,
TLS, ``/metrics``, request ids and JSON logs (docs/deploy.md).

One server per backend for the whole module: on SQLite it serves https with a certificate
made here, on PostgreSQL plain http with no trusted proxy. Which worker answered a
connection is read from /proc (the socket's inode in the worker's descriptors), so the
tests pin a connection to each worker instead of hoping the kernel spreads them.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gc
import hashlib
import http.client
import ipaddress
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine, text

import modelyard
from modelyard.api import create_app
from modelyard.api import server as server_module
from modelyard.api.metrics import Metrics
from modelyard.api.routes.resolve import RESOLVE_ROUTE
from modelyard.api.telemetry import BLOB_ROUTES, Telemetry
from modelyard.config import Settings, open_service
from modelyard.domain.access import Reach
from modelyard.service import RegistryService
from tests.conftest import BACKENDS, free_port, on, run_async
from tests.receivers import receiving
from tests.test_access import _RoutesOnly

DEADLINE = 30.0
METRICS_TOKEN = "scrape-" + secrets.token_hex(20)
PASSWORD = "correct horse battery staple"


@dataclass
class Server:
    """A ``modelyard serve --workers 2`` process and what the tests need of it."""

    backend: str
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    admin_token: str
    ca_file: Path | None
    data_dir: Path
    secrets_used: list[str] = field(default_factory=list)

    def context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None

    def connection(self) -> Connection:
        return Connection(self)

    def records(self) -> list[dict[str, Any]]:
        """Every line the server logged so far, each one JSON object."""
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def workers(self) -> dict[int, set[int]]:
        """The worker processes listening on the port: pid -> its socket inodes."""
        listening = {row.inode for row in tcp_table() if row.local == self.port and row.listen}
        found = {}
        for pid in children(self.process.pid):
            inodes = socket_inodes(pid)
            if inodes & listening:
                found[pid] = inodes
        return found

    def descendants(self, marker: str) -> list[int]:
        """Processes under the server whose command line holds ``marker``."""
        found, todo = [], [self.process.pid]
        while todo:
            for child in children(todo.pop()):
                todo.append(child)
                if marker in cmdline(child):
                    found.append(child)
        return found


class Connection:
    """One keep-alive connection, answered by one worker for its whole life."""

    def __init__(self, server: Server) -> None:
        self.server = server
        host = "127.0.0.1"
        context = server.context()
        self.conn: http.client.HTTPConnection = (
            http.client.HTTPSConnection(host, server.port, context=context, timeout=DEADLINE)
            if context
            else http.client.HTTPConnection(host, server.port, timeout=DEADLINE)
        )
        self.worker = 0

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        token: str | None = "admin",
    ) -> tuple[int, dict[str, str], bytes]:
        sent = dict(headers or {})
        if token == "admin":
            token = self.server.admin_token
        if token:
            sent["Authorization"] = f"Bearer {token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        self.conn.request(method, path, body=payload, headers=sent)
        answer = self.conn.getresponse()
        data = answer.read()
        if not self.worker:
            self.worker = self._worker()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, data

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, _, data = self.request(method, path, body, **kw)
        assert 200 <= status < 300, (status, data[:300])
        return json.loads(data)

    def _worker(self) -> int:
        """The pid of the worker holding the server's side of this connection."""
        assert self.conn.sock is not None
        mine = self.conn.sock.getsockname()[1]
        inodes = {
            row.inode
            for row in tcp_table()
            if row.local == self.server.port and row.remote == mine and not row.listen
        }
        holders = [pid for pid, held in self.server.workers().items() if held & inodes]
        assert len(holders) == 1, (holders, inodes)
        return holders[0]

    def close(self) -> None:
        self.conn.close()


def pinned_pair(server: Server) -> tuple[Connection, Connection]:
    """Two connections answered by two different workers."""
    first = server.connection()
    first.request("GET", "/healthz", token=None)
    for _ in range(64):
        other = server.connection()
        other.request("GET", "/healthz", token=None)
        if other.worker != first.worker:
            return first, other
        other.close()
    raise AssertionError("64 connections in a row went to one worker")


# -- /proc ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TcpRow:
    local: int
    remote: int
    listen: bool
    inode: int


def tcp_table() -> list[TcpRow]:
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            local, remote = (int(a.rsplit(":", 1)[1], 16) for a in (f[1], f[2]))
            rows.append(TcpRow(local, remote, f[3] == "0A", int(f[9])))
    return rows


def socket_inodes(pid: int) -> set[int]:
    found = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                found.add(int(target[8:-1]))
    except OSError:  # the process ended meanwhile
        pass
    return found


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_until(check: Any, what: str, seconds: float = DEADLINE) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)  # polling a condition, with a deadline
    raise AssertionError(f"not in time: {what}")


# -- the servers ------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost (its own CA), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelyard test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    backend: str = request.param
    root = tmp_path_factory.mktemp(f"ops-{backend}")
    data_dir = root / "data"
    database_url = None
    admin_engine: Engine | None = None
    name = f"modelyard_ops_{secrets.token_hex(4)}"
    if backend == "postgresql":
        admin_engine = request.getfixturevalue("pg_admin")
        with admin_engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        database_url = admin_engine.url.set(database=name).render_as_string(hide_password=False)
    # The first admin, and a staged upload a crash left behind (the start-up clean-up's).
    service = open_service(Settings(data_dir, database_url))
    admin = service.identity.bootstrap_admin("root", operator="test")
    leftover = service.blobs.begin_upload(None)
    leftover.write(b"half an upload")
    service.close()

    port = free_port()
    command = [sys.executable, "-m", "modelyard", "serve", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--workers", "2", "--log-format", "json"]
    command += ["--access-log", "--log-level", "info", "--timeout-keep-alive", "120"]
    ca_file = None
    if backend == "sqlite":
        cert, key = self_signed(root)
        command += ["--tls-cert", str(cert), "--tls-key", str(key)]
        ca_file = cert
    else:
        command += ["--database-url", str(database_url), "--forwarded-allow-ips", "10.9.9.9"]
    log = root / "server.log"
    env = {
        **os.environ,
        "MODELYARD_METRICS_TOKEN": METRICS_TOKEN,
        "MODELYARD_WEBHOOK_ALLOW_HTTP": "true",
        "MODELYARD_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    scheme = "https" if ca_file else "http"
    found = Server(
        backend,
        f"{scheme}://127.0.0.1:{port}",
        port,
        process,
        log,
        admin.token,
        ca_file,
        data_dir,
        secrets_used=[admin.token, METRICS_TOKEN],
    )
    try:
        wait_until(
            lambda: process.poll() is not None or len(found.workers()) == 2,
            "two workers listening",
            seconds=3 * DEADLINE,  # two fresh interpreters each, on a loaded machine
        )
        assert process.poll() is None, log.read_text()
        yield found
    finally:
        process.terminate()
        try:
            process.wait(2 * DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        if admin_engine is not None:
            with admin_engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def inline(content: bytes) -> dict[str, Any]:
    return {
        "files": [
            {
                "path": "model.bin",
                "size": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
                "content": base64.b64encode(content).decode(),
            }
        ]
    }


# -- one registry across workers ----------------------------------------------------------


def test_workers_are_one_registry(server: Server) -> None:
    """Registrations through both workers at once are numbered without gap or repeat; an
    alias moved through one is what the other resolves at its very next request; a long
    poll in one hears a commit in the other; a webhook is delivered by one process."""
    a, b = pinned_pair(server)
    assert server.descendants("modelyard.service.delivery_process") == []

    numbers: list[int] = []

    def register(conn: Connection, label: str) -> None:
        for i in range(8):
            version = conn.json(
                "POST", "/api/v1/models/split/versions", inline(b"%s%d" % (label.encode(), i))
            )
            numbers.append(version["version"])

    threads = [threading.Thread(target=register, args=(c, n)) for c, n in ((a, "a"), (b, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(numbers) == list(range(1, 17))

    # The alias: B resolves (and caches) it, A moves it, B's next request sees the move.
    a.json("PUT", "/api/v1/models/split/aliases/champion", {"version": 3})
    assert b.json("GET", "/api/v1/resolve/split@champion")["version"] == 3
    assert b.json("GET", "/api/v1/resolve/split@champion")["version"] == 3
    a.json("PUT", "/api/v1/models/split/aliases/champion", {"version": 4})
    assert b.json("GET", "/api/v1/resolve/split@champion")["version"] == 4

    # A long poll waiting in B wakes with what A commits.
    head = a.json("GET", "/api/v1/events/head")["seq"]
    heard: list[Any] = []
    poll = threading.Thread(
        target=lambda: heard.append(b.json("GET", f"/api/v1/events?after={head}&wait=25"))
    )
    poll.start()
    a.json("PUT", "/api/v1/models/split/aliases/champion", {"version": 5})
    poll.join(DEADLINE)
    assert [e["kind"] for e in heard[0]["items"]] == ["alias.set"]

    # Webhooks: subscribed through B, registered through A and B, delivered once each, by
    # the one delivery process (worker 0's; it starts with the first subscription).
    with receiving() as receiver:
        made = b.json(
            "POST",
            "/api/v1/webhooks",
            {"url": receiver.url(), "events": ["version.registered"], "model": "split"},
        )
        server.secrets_used.append(made["secret"])
        a.json("POST", "/api/v1/models/split/versions", inline(b"hooked by a"))
        b.json("POST", "/api/v1/models/split/versions", inline(b"hooked by b"))
        got = receiver.wait_for(2)
        ids = [r.headers["webhook-id"] for r in got]
        assert len(set(ids)) == 2
        assert sorted(json.loads(r.body)["data"]["version"]["version"] for r in got) == [17, 18]
        assert len(server.descendants("modelyard.service.delivery_process")) == 1
        deliveries = a.json("GET", f"/api/v1/webhooks/{made['id']}/deliveries")["items"]
        assert sorted(d["seq"] for d in deliveries) == sorted({d["seq"] for d in deliveries})

    # The start-up clean-up ran once, before the workers (each would have found the
    # store shared, and left the leftover to gc).
    cleaned = [r for r in server.records() if r["message"].startswith("start-up clean-up")]
    assert len(cleaned) == 1 and "removed 1 unfinished upload" in cleaned[0]["message"]
    a.close()
    b.close()


def test_metrics_sum_every_worker_and_only_admins_and_the_scraper_read_them(
    server: Server,
) -> None:
    a, b = pinned_pair(server)

    def scrape(conn: Connection) -> dict[str, float]:
        status, headers, body = conn.request("GET", "/metrics", token=METRICS_TOKEN)
        assert status == 200 and headers["content-type"].startswith("text/plain"), body[:200]
        values = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    healthz = 'modelyard_http_requests_total{method="GET",route="/healthz",status="200"}'
    resolved = (
        'modelyard_http_requests_total{method="GET",route="/api/v1/resolve/{reference}",'
        'status="404"}'
    )
    before = scrape(a)
    for conn, times in ((a, 3), (b, 5)):
        for _ in range(times):
            conn.request("GET", "/healthz", token=None)
            conn.request("GET", "/api/v1/resolve/no-such-model-anywhere")
    for conn in (a, b):  # whichever worker answers the scrape, it sums both
        after = scrape(conn)
        assert after[healthz] - before.get(healthz, 0) == 8
        assert after[resolved] - before.get(resolved, 0) == 8
    assert after["modelyard_journal_head_seq"] == a.json("GET", "/api/v1/events/head")["seq"]
    assert after["modelyard_db_pool_size"] == 2 * (8 if server.backend == "sqlite" else 10)
    assert 0 <= after["modelyard_db_pool_checked_out"] <= after["modelyard_db_pool_size"]
    assert any(k.startswith("modelyard_http_request_duration_seconds_bucket") for k in after)
    # Route templates, never paths: no model name is a label.
    text_ = a.request("GET", "/metrics", token=METRICS_TOKEN)[2].decode()
    assert "no-such-model-anywhere" not in text_ and "split" not in text_

    # Blob bytes: an upload in, a download out.
    data = secrets.token_bytes(70_000)
    digest = hashlib.sha256(data).hexdigest()
    a.conn.request(
        "PUT",
        f"/api/v1/blobs/sha256:{digest}",
        body=data,
        headers={"Authorization": f"Bearer {server.admin_token}"},
    )
    uploaded = a.conn.getresponse()
    assert uploaded.status in (200, 201), uploaded.read()
    uploaded.read()
    before = scrape(b)
    b.json(
        "POST",
        "/api/v1/models/bytes/versions",
        {"files": [{"path": "w.bin", "size": len(data), "sha256": digest}]},
    )
    status, _, body = a.request("GET", "/api/v1/models/bytes/versions/1/files/w.bin")
    assert status == 200 and body == data
    after = scrape(b)
    assert after["modelyard_blob_sent_bytes_total"] - before[
        "modelyard_blob_sent_bytes_total"
    ] == len(data)
    assert after["modelyard_blob_received_bytes_total"] >= len(data)

    # Who may not: no token (401), a viewer's (403), a wrong scraper token (401).
    viewer = a.json("POST", "/api/v1/users", {"name": "watcher"})["name"]
    a.json("PUT", f"/api/v1/grants/{viewer}", {"role": "viewer"})
    viewer_token = a.json("POST", "/api/v1/tokens", {"principal": viewer})["token"]
    server.secrets_used.append(viewer_token)
    for token, status in ((None, 401), (viewer_token, 403), ("scrape-" + "0" * 40, 401)):
        answer = httpx.get(
            f"{server.url}/metrics",
            headers={"Authorization": f"Bearer {token}"} if token else {},
            verify=server.context() or True,
        )
        assert answer.status_code == status, (token, answer.text)
        assert "modelyard_http_requests_total" not in answer.text
    a.close()
    b.close()


def test_request_ids_and_json_logs_without_secrets(server: Server) -> None:
    """Every answer carries X-Request-Id; a trusted proxy's is kept, anyone else's is not;
    every log line is a JSON object, the request logs name routes, and none holds a
    secret the run used (tokens, a password, the session cookie, a webhook's secret)."""
    conn = server.connection()
    status, headers, _ = conn.request("GET", "/api/v1/models/nope", token=None)
    assert status == 401 and re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    mine = "proxy-" + secrets.token_hex(8)
    for offered in (mine, "x" * 200, "has space", "<script>"):
        headers = conn.request("GET", "/healthz", headers={"X-Request-Id": offered})[1]
        # On SQLite the server trusts loopback (the default); on PostgreSQL only 10.9.9.9.
        kept = server.backend == "sqlite" and offered == mine
        assert (headers["x-request-id"] == offered) == kept, offered
    assert conn.request("GET", "/healthz", headers={"X-Request-Id": mine})[1]["x-request-id"]

    # A password set over the API, a sign-in with it (a session cookie), and a webhook
    # secret rotated: all used, none logged.
    conn.json("POST", "/api/v1/users", {"name": "alice"})
    assert conn.request("PUT", "/api/v1/users/alice/password", {"password": PASSWORD})[0] == 204
    with httpx.Client(base_url=server.url, verify=server.context() or True) as browser:
        page = browser.get("/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        signed = browser.post(
            "/signin",
            data={"user": "alice", "password": PASSWORD, "csrf": csrf.group(1)},
            follow_redirects=False,
        )
        assert signed.status_code == 303, signed.text[:300]
        cookie = browser.cookies["myd_session"]
        assert browser.get("/", headers={"Cookie": f"myd_session={cookie}"}).status_code == 200
    server.secrets_used += [PASSWORD, cookie, cookie.split(".")[1]]

    records = server.records()
    assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    requests = [r for r in records if r["logger"] == "modelyard.access"]
    assert {"method", "route", "status", "duration_ms", "request_id"} <= requests[-1].keys()
    assert any(r["route"] == "/api/v1/users/{name}/password" for r in requests)
    assert any(r["request_id"] == headers["x-request-id"] for r in requests)
    logged = server.log.read_text()
    for secret in server.secrets_used:
        assert secret not in logged, "a secret reached the log"
    assert "alice/password" not in logged  # paths are not logged, templates are
    conn.close()


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)  # the one serving https
def test_tls_with_the_sdk_and_a_ca_bundle(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK verifies the server against SSL_CERT_FILE, for its JSON requests
    (http.client) and its uploads (httpx) alike; without the bundle it refuses."""
    assert server.ca_file is not None
    model = server.data_dir.parent / "tls-model"
    model.mkdir()
    (model / "weights.bin").write_bytes(secrets.token_bytes(100_000))  # uploaded, not inline
    monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))
    with modelyard.connect(server.url, token=server.admin_token) as reg:
        version = reg.register("secure", model)
        assert reg.resolve("secure").manifest_digest == version.manifest_digest
    monkeypatch.delenv("SSL_CERT_FILE")
    refused = r"certificate"
    with (
        pytest.raises(Exception, match=refused),
        modelyard.connect(server.url, token=server.admin_token) as reg,
    ):
        reg.resolve("secure")


def test_the_routes_telemetry_names_are_routes_of_the_app() -> None:
    """The blob routes whose bytes are counted, and the templates the fast paths report,
    are templates of real routes: a renamed route must not silently stop being counted."""
    app = create_app(cast(RegistryService, _RoutesOnly()), reach=Reach.LOOPBACK)
    templates = set()
    routes = list(app.routes)
    while routes:
        route = routes.pop()
        templates.add(getattr(route, "path_format", ""))
        routes += getattr(getattr(route, "original_router", None), "routes", [])
    assert templates >= BLOB_ROUTES
    assert {RESOLVE_ROUTE, "/api/v1/versions", "/api/v1/models/{name}/versions"} <= templates


@dataclass
class _Route:
    path_format: str


def test_a_downloads_bytes_are_counted_before_its_last_message(
    service: RegistryService,
) -> None:
    """A streamed download ends with an empty message that its client, which knew the
    length, need not wait for: its bytes are counted as they leave, so a scrape taken the
    moment the client holds them all finds them (it read 0 once, on another worker)."""
    metrics = Metrics(service.db)
    telemetry = Telemetry(metrics)
    route = _Route("/api/v1/models/{name}/versions/{number}/files/{path}")
    assert route.path_format in BLOB_ROUTES
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/x", "headers": []}
    counted_when_received: list[float] = []

    def sent_bytes() -> float:
        exposition = metrics.render()[0].decode()
        found = re.search(r"^modelyard_blob_sent_bytes_total (\S+)$", exposition, re.M)
        assert found is not None
        return float(found[1])

    async def download(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = route
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 70_000, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def client(message: Any) -> None:
        if message["type"] == "http.response.body" and message["body"]:
            counted_when_received.append(sent_bytes())

    async def no_body() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    run_async(telemetry.track(scope, no_body, client, download))
    assert counted_when_received == [70_000]
    assert sent_bytes() == 70_000  # and once only


@pytest.fixture
def in_process(service: RegistryService) -> Iterator[server_module._StreamEndingServer]:
    """The server as `modelyard serve` runs it, for driving its main loop in the test; the
    heap the loop freezes is thawed afterwards, so this worker's later tests run as before."""
    config = uvicorn.Config(create_app(service, reach=Reach.LOOPBACK), lifespan="off")
    config.load()
    yield server_module._StreamEndingServer(config, service)
    gc.unfreeze()


@on("sqlite")
def test_the_server_freezes_the_heap_it_started_with(
    in_process: server_module._StreamEndingServer,
) -> None:
    """What exists once the server runs lives as long as it; frozen, the cyclic collector
    stops walking it at each collection (45% of the server's CPU in a direct upload)."""

    async def frozen_while_serving() -> int:
        task = asyncio.get_running_loop().create_task(in_process.main_loop())
        await asyncio.sleep(0)
        frozen = gc.get_freeze_count()
        in_process.handle_exit(signal.SIGTERM, None)
        await asyncio.wait_for(task, 30)
        return frozen

    assert gc.get_freeze_count() == 0
    assert run_async(frozen_while_serving()) > 10_000


@on("sqlite")
def test_a_signal_stops_the_server_between_its_ticks(
    in_process: server_module._StreamEndingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The main loop ticks once a second (an idle server's CPU was uvicorn's ten ticks a
    second); a signal to stop must wake it at once: with ticks an hour apart, only the
    wake can end the loop."""
    monkeypatch.setattr(server_module, "TICK_SECONDS", 3600.0)

    async def stop_soon() -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(in_process.main_loop())
        await asyncio.sleep(0)  # main_loop is now waiting for its next tick
        assert not task.done()
        threading.Thread(target=in_process.handle_exit, args=(signal.SIGTERM, None)).start()
        await asyncio.wait_for(task, 30)

    run_async(stop_soon())
    assert in_process.should_exit
