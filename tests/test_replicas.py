"""Two replicas: two `modelyard serve` processes, each with its own data directory, on one
PostgreSQL database and one blob store, reached by clients in turn as a load balancer
would send them.

Replicas share PostgreSQL by definition (SQLite is one file of one machine), so this
module runs only there: without a PostgreSQL server it skips with the reason, and with
CI=true it fails instead. The blob store is a prefix of a bucket on the tests' moto S3
server (``shared_blob_store``); a directory both servers open would do too
(``file:///PATH``: the flock each open store holds on it keeps one replica's start-up
clean-up from collecting what the other has in flight, tests/test_blobstore.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from modelyard import Registry, connect
from modelyard.client.http import HttpTransport
from modelyard.client.transport import Request, Response
from modelyard.config import Settings, open_service
from modelyard.domain.errors import Conflict, NotFound, Unauthorized
from modelyard.domain.models import Event
from tests.conftest import LiveServer, S3Server, free_port
from tests.test_cli import assert_user_error, invoke


def shared_blob_store(s3: S3Server) -> dict[str, str]:
    """The environment that gives the replicas one blob store: a prefix of the bucket."""
    return {"MODELYARD_BLOB_URL": s3.blob_url(), "MODELYARD_S3_ENDPOINT": s3.endpoint}


@dataclass
class Replicas:
    a: LiveServer
    b: LiveServer
    database_url: str
    root: str  # an admin's token
    early_blob: str  # uploaded through A before B started, not registered then
    early_size: int
    tmp: Path

    def registry(self, server: LiveServer, token: str | None = None) -> Registry:
        return connect(server.url, token=token or self.root)


def _upload(server: LiveServer, token: str, content: bytes) -> str:
    answer = httpx.post(
        f"{server.url}/api/v1/blobs/uploads",
        content=content,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert answer.status_code in (200, 201), answer.text
    digest: str = answer.json()["digest"].removeprefix("sha256:")
    return digest


@pytest.fixture(scope="module")
def replicas(
    pg_admin: Engine, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    tmp = tmp_path_factory.mktemp("replicas")
    name = f"modelyard_replicas_{secrets.token_hex(4)}"
    # Not created here: the first replica's role may create databases, so it makes it.
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    blobs = shared_blob_store(s3_server)
    # Replicas share the secret that signs page tokens and sessions and seals webhook
    # secrets: what one issues, the other reads.
    key = {"MODELYARD_SECRET_KEY": secrets.token_urlsafe(32)}
    a = LiveServer(tmp / "a", url, env={**key, **blobs})
    b = LiveServer(tmp / "b", url, env={**key, **blobs})
    try:
        a.start()
        ops = open_service(Settings(data_dir=tmp / "ops", database_url=url))
        try:
            root = ops.identity.bootstrap_admin("root", operator="test").token
        finally:
            ops.close()
        early = os.urandom(100_000)
        early_blob = _upload(a, root, early)
        b.start()  # the store is shared: B's start-up clean-up leaves the blob alone
        yield Replicas(a, b, url, root, early_blob, len(early), tmp)
    finally:
        b.stop()
        a.stop()
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _journal(reg: Registry) -> list[Event]:
    events: list[Event] = []
    while batch := reg.events(after=events[-1].seq if events else 0, limit=100):
        events += batch
    return events


def _model_dir(root: Path, content: bytes) -> Path:
    root.mkdir(parents=True)
    (root / "model.bin").write_bytes(content)
    return root


class BetweenUploadAndRegistration:
    """A transport that runs ``then`` once, when the files are up and before the request
    that registers them (a garbage collection on the other replica, landing in that
    window), and notes each request with its status."""

    def __init__(self, inner: HttpTransport, then: Callable[[], None]) -> None:
        self.inner = inner
        self.then: Callable[[], None] | None = then
        self.seen: list[str] = []

    def send(self, request: Request) -> Response:
        if self.then is not None and request.path.endswith("/versions"):
            then, self.then = self.then, None
            then()
        response = self.inner.send(request)
        self.seen.append(f"{request.method} {request.path} {response.status}")
        return response

    def close(self) -> None:
        self.inner.close()


def gc_on_one_replica_loses_nothing_uploaded_through_the_other(replicas: Replicas) -> None:
    """``modelyard gc --grace 0s`` on A between an upload through B and its registration."""
    content = os.urandom(200_000)  # past the inline limit: an upload of its own
    digest = hashlib.sha256(content).hexdigest()
    reports: list[str] = []

    def gc_on_a() -> None:
        result = invoke(
            "gc", "--grace", "0s", "--json",
            url=replicas.a.url, cwd=replicas.tmp, env={"MODELYARD_TOKEN": replicas.root},
        )  # fmt: skip
        assert result.returncode == 0, result.output
        reports.append(result.stdout)

    hooked = BetweenUploadAndRegistration(HttpTransport(replicas.b.url), gc_on_a)
    with Registry(hooked, token=replicas.root) as through_b:
        tree = _model_dir(replicas.tmp / "collected", content)
        version = through_b.register("late", tree, source=None, environment=None)
    # The collection did take the uploaded blob; the registration answered missing_blobs,
    # and the SDK sent the bytes again and registered.
    assert f"sha256:{digest}" in json.dumps(json.loads(reports[0])["removed"])
    registering = "POST /api/v1/models/late/versions"
    first = hooked.seen.index(f"{registering} 409")
    assert hooked.seen[first + 1 :] == [
        f"PUT /api/v1/blobs/sha256:{digest} 201",
        f"{registering} 201",
    ]
    assert [f.sha256 for f in version.files] == [digest]
    with replicas.registry(replicas.a) as a:
        a.download("late/1", replicas.tmp / "downloaded")
    assert (replicas.tmp / "downloaded" / "model.bin").read_bytes() == content


def writes_split_across_replicas_are_one_registry(replicas: Replicas) -> None:
    """Registrations from threads on both replicas: gapless numbers and journal."""
    a, b = replicas.registry(replicas.a), replicas.registry(replicas.b)

    # A third server with a key of its own is refused: what A and B sign and seal (page
    # tokens, sign-ins, webhook secrets) it could not read, nor they what it would.
    result = invoke(
        "serve", "--port", str(free_port()), "--data-dir", str(replicas.tmp / "c"),
        "--database-url", replicas.database_url,
        env={"MODELYARD_SECRET_KEY": secrets.token_urlsafe(32)}, url=None, cwd=replicas.tmp,
    )  # fmt: skip
    assert_user_error(result, contains="secret key (MODELYARD_SECRET_KEY) is not the one")

    # What B's start-up found in the shared store, uploaded through A, is still there.
    size = replicas.early_size
    answer = httpx.post(
        f"{replicas.b.url}/api/v1/models/kept/versions",
        json={"files": [{"path": "model.bin", "size": size, "sha256": replicas.early_blob}]},
        headers={"Authorization": f"Bearer {replicas.root}"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text

    # Registrations from eight threads, each alternating between the replicas.
    threads, each = 8, 3
    numbers: list[int] = []
    failures: list[BaseException] = []
    start = threading.Barrier(threads)

    def pipeline(worker: int) -> None:
        regs = [replicas.registry(replicas.a), replicas.registry(replicas.b)]
        start.wait()
        for i in range(each):
            content = f"churn {worker} {i}".encode()
            tree = _model_dir(replicas.tmp / f"w{worker}-{i}", content)
            try:
                version = regs[(worker + i) % 2].register(
                    "churn", tree, metrics={"auc": 0.8}, source=None, environment=None
                )
            except BaseException as exc:  # reported below
                failures.append(exc)
                return
            numbers.append(version.version)

    workers = [threading.Thread(target=pipeline, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert failures == []
    assert sorted(numbers) == list(range(1, threads * each + 1))  # gapless and unique
    journal = _journal(a)
    assert [e.seq for e in journal] == list(range(1, len(journal) + 1))
    registered = [e for e in journal if e.kind == "version.registered" and e.model == "churn"]
    assert sorted(e.subject for e in registered) == sorted(f"churn/{n}" for n in numbers)
    assert _journal(b) == journal

    # A page token one replica signed, the other reads.
    page = httpx.get(
        f"{replicas.a.url}/api/v1/models/churn/versions",
        params={"limit": 5},
        headers={"Authorization": f"Bearer {replicas.root}"},
    ).json()
    following = httpx.get(
        f"{replicas.b.url}/api/v1/models/churn/versions",
        params={"limit": 5, "page_token": page["next_page_token"]},
        headers={"Authorization": f"Bearer {replicas.root}"},
    )
    assert following.status_code == 200, following.text
    assert [v["version"] for v in following.json()["items"]] == [
        v["version"] - 5 for v in page["items"]
    ]


def what_one_replica_changes_the_other_answers_at_the_next_request(replicas: Replicas) -> None:
    """Aliases, stages, tokens, grants and users; and two promotions racing."""
    a, b = replicas.registry(replicas.a), replicas.registry(replicas.b)
    for number in range(1, 7):
        tree = _model_dir(replicas.tmp / f"fraud-{number}", f"fraud {number}".encode())
        (a, b)[number % 2].register("fraud", tree, source=None, environment=None)

    # An alias moved on A: B answers the new version at once, with the same ETag as A.
    a.set_alias("fraud", "champion", 1)
    assert b.resolve("fraud@champion").version == 1
    assert b.resolve("fraud@champion").version == 1  # now from B's cache
    a.set_alias("fraud", "champion", 2)
    assert b.resolve("fraud@champion").version == 2
    etags = [
        b.resolve_if_changed("fraud@champion")[1],
        a.resolve_if_changed("fraud@champion")[1],
    ]
    assert etags[0] is not None and etags[0] == etags[1]
    assert b.resolve_if_changed("fraud@champion", etags[1]) == (None, etags[1])
    a.archive("fraud/3")  # deprecated on A
    assert b.resolve("fraud/3").stage == "archived"

    # A long poll on B hears of a commit on A, waiting already (the journal bell polls the
    # head) or not.
    head = a.journal_head().seq
    heard: list[Event] = []
    waiter = threading.Thread(target=lambda: heard.extend(b.events(after=head, wait=20)))
    waiter.start()
    a.set_alias("fraud", "champion", 4)
    waiter.join(30)
    assert [e.kind for e in heard] == ["alias.set"]

    # Tokens, grants and users changed on one replica hold on the other at its next request.
    b.create_user("bob")
    a.grant("viewer", "bob", model="fraud")
    first, second = (b.create_token(principal="bob") for _ in range(2))
    bob = replicas.registry(replicas.b, first.token)
    assert bob.resolve("fraud@champion").version == 4
    assert bob.resolve("fraud@champion").version == 4  # authenticated from B's cache
    a.revoke("bob", model="fraud")
    with pytest.raises(NotFound):
        bob.resolve("fraud@champion")
    a.grant("viewer", "bob", model="fraud")
    assert bob.resolve("fraud@champion").version == 4
    a.revoke_token(first.info.id)
    with pytest.raises(Unauthorized) as refused:
        bob.resolve("fraud@champion")
    assert refused.value.code == "token_revoked"
    also_bob = replicas.registry(replicas.b, second.token)
    assert also_bob.resolve("fraud").model == "fraud"
    a.disable_user("bob")
    with pytest.raises(Unauthorized):
        also_bob.resolve("fraud")

    # Two promotions into production approved at once, one on each replica: one wins.
    b.create_user("carol")
    a.grant("maintainer", "carol", model="fraud")
    carol = b.create_token(principal="carol").token
    requests = [a.promote("fraud/5", "production"), b.promote("fraud/6", "production")]
    assert [p.status for p in requests] == ["open", "open"]
    deciders = [replicas.registry(replicas.a, carol), replicas.registry(replicas.b, carol)]
    start = threading.Barrier(2)
    outcomes: dict[int, str] = {}

    def approve(decider: Registry, request_id: int) -> None:
        start.wait()
        try:
            outcomes[request_id] = decider.approve(request_id).status
        except Conflict as exc:
            outcomes[request_id] = exc.code

    ids = [p.request.id for p in requests if p.request is not None]
    racing = [
        threading.Thread(target=approve, args=pair) for pair in zip(deciders, ids, strict=True)
    ]
    for thread in racing:
        thread.start()
    for thread in racing:
        thread.join(60)
    assert sorted(outcomes.values()) == ["executed", "request_closed"]
    winner = 5 if outcomes[ids[0]] == "executed" else 6
    into_production = [
        e for e in _journal(a) if e.kind == "version.stage" and e.payload["after"] == "production"
    ]
    assert [e.subject for e in into_production] == [f"fraud/{winner}"]
    assert a.resolve("fraud@production").version == b.resolve("fraud@production").version


def test_two_replicas_are_one_registry(replicas: Replicas) -> None:
    """One function, so that a parallel run starts the two servers once, not per test."""
    writes_split_across_replicas_are_one_registry(replicas)
    what_one_replica_changes_the_other_answers_at_the_next_request(replicas)
    gc_on_one_replica_loses_nothing_uploaded_through_the_other(replicas)
