"""Events out, live: the long poll of GET /events?wait=, the Server-Sent Events stream
(resumed with Last-Event-ID, heartbeats, visibility, the end of a stream) and the SDK's
stream and watch, over a real uvicorn and in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from modelyard.api import create_app
from modelyard.client.registry import Registry, open_transport
from modelyard.client.sse import Message, messages
from modelyard.config import Settings
from modelyard.domain.access import Caller, PrincipalKind, Reach, Role
from modelyard.domain.manifest import FileEntry
from modelyard.domain.versions import NewVersion
from modelyard.service import RegistryService
from tests.conftest import serving

LOCAL = Caller.local_user("tester")
DEADLINE = 30.0  # for conditions waited on; a shared 2-core machine is slow, never this slow


def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition`` with a deadline: synchronisation, not a sleep."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def waiting_on_bell(service: RegistryService) -> bool:
    return bool(service.db.bell._futures)


def stream(url: str, headers: dict[str, str] | None = None, **params: Any) -> list[Message]:
    """The messages of a finite stream (``timeout`` or ``limit`` in ``params``)."""
    with httpx.stream(
        "GET", f"{url}/api/v1/events/stream", params=params, headers=headers, timeout=DEADLINE
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        return list(messages(response.iter_raw()))


def seqs(found: list[Message]) -> list[int]:
    return [int(m.id) for m in found if m.data and m.id is not None]


def register(service: RegistryService, model: str, caller: Caller = LOCAL) -> int:
    """The next version of ``model``, with one small file of its own."""
    content = f"weights {time.monotonic_ns()}".encode()
    digest = hashlib.sha256(content).hexdigest()
    spec = NewVersion(files=[FileEntry("model.bin", len(content), digest)])
    return service.register_version(model, spec, caller=caller, inline={digest: content}).version


@pytest.fixture
def url(service: RegistryService) -> Iterator[str]:
    with serving(create_app(service, reach=Reach.LOOPBACK, local_user="tester")) as found:
        yield found


# -- the long poll ----------------------------------------------------------------------------


def test_long_poll_answers_at_the_first_event_or_at_its_end(
    service: RegistryService, url: str
) -> None:
    service.db.bell.poll = 60.0  # only this process's commit can wake the poll in time
    service.create_model("a", caller=LOCAL)

    def commit_once_waiting() -> None:
        until(lambda: waiting_on_bell(service), "the poll to wait")
        service.create_model("b", caller=LOCAL)

    writer = threading.Thread(target=commit_once_waiting)
    writer.start()
    started = time.monotonic()
    answer = httpx.get(f"{url}/api/v1/events", params={"after": 1, "wait": 60}, timeout=90)
    early = time.monotonic() - started
    writer.join()
    assert [e["subject"] for e in answer.json()["items"]] == ["b"]
    assert early < 30  # woken by the commit, not by the end of the wait
    started = time.monotonic()
    empty = httpx.get(f"{url}/api/v1/events", params={"after": 2, "wait": 0.3}).json()
    assert empty == {"items": [], "next_after": None}
    assert time.monotonic() - started >= 0.3  # it did wait
    # Events already there: no wait at all; and the bound is the documented one.
    assert len(httpx.get(f"{url}/api/v1/events", params={"wait": 60}).json()["items"]) == 2
    refused = httpx.get(f"{url}/api/v1/events", params={"wait": 61})
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_input"


# -- the stream -------------------------------------------------------------------------------


def test_stream_resumes_with_last_event_id_and_beats(service: RegistryService, url: str) -> None:
    for name in ("a", "b", "c", "d"):
        service.create_model(name, caller=LOCAL)
    first = stream(url, after=0, limit=2)
    assert first[0] == Message("0", "message", "")  # where it starts, nothing else
    assert seqs(first) == [1, 2]
    event = json.loads(first[2].data)
    assert first[2].event == event["kind"] == "model.created"
    assert event == httpx.get(f"{url}/api/v1/events", params={"after": 1}).json()["items"][0]
    # An EventSource reconnects to the same URL with the last id it saw: the header wins.
    resumed = stream(url, {"Last-Event-ID": "2"}, after=0, limit=2)
    assert resumed[0].id == "2" and seqs(resumed) == [3, 4]
    # No `after`: from now, announced as the newest event the caller may see.
    now = stream(url, timeout=0)
    assert now[0].id == "4" and seqs(now) == []
    service.feed.heartbeat = 0.05
    with httpx.stream(
        "GET", f"{url}/api/v1/events/stream", params={"timeout": 0.5}, timeout=DEADLINE
    ) as response:
        raw = response.read()
    assert raw.count(b": heartbeat\n\n") >= 3  # a comment every 0.05 s of silence
    bad = httpx.get(f"{url}/api/v1/events/stream", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_input"


def test_stream_filters_by_kind_as_webhooks_do(service: RegistryService, url: str) -> None:
    register(service, "churn")
    register(service, "churn")
    service.set_alias("churn", "champion", 1, caller=LOCAL)
    service.update_model("churn", caller=LOCAL, description="weekly")

    def kinds(text: str) -> list[str]:
        found = stream(url, after=0, timeout=0, kinds=text)
        return [m.event for m in found if m.data]

    assert kinds("alias.set") == ["alias.set"]
    assert kinds("version.*,alias.*") == ["version.registered"] * 2 + ["alias.set"]
    assert len(kinds("*")) == len(service.events(caller=LOCAL))
    too_many = httpx.get(f"{url}/api/v1/events/stream", params={"kinds": "alias.set," * 65})
    assert too_many.status_code == 413  # as the OpenAPI document says
    for wrong in ("alias.nope", "nope.*", ""):
        refused = httpx.get(f"{url}/api/v1/events/stream", params={"kinds": wrong})
        assert refused.status_code == 400, wrong
        assert refused.json()["code"] in ("unknown_event_kind", "invalid_event_filter"), wrong


def test_a_stream_ends_with_its_client_and_holds_no_thread(
    service: RegistryService, url: str
) -> None:
    """More streams than the server has worker threads (40), each idle on the bell: the
    server still answers, and each stream ends as soon as its client goes away."""
    host, port = url.removeprefix("http://").split(":")
    sockets = []
    for _ in range(50):
        sock = socket.create_connection((host, int(port)), timeout=DEADLINE)
        sock.sendall(b"GET /api/v1/events/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        sockets.append(sock)
    for sock in sockets:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    until(lambda: service.feed.open_streams == 50, "every stream to open")
    started = time.monotonic()
    assert httpx.get(f"{url}/api/v1/events", timeout=DEADLINE).status_code == 200
    assert time.monotonic() - started < 5
    for sock in sockets:
        sock.close()
    until(lambda: service.feed.open_streams == 0, "every stream to end with its client")


def test_the_stream_shows_a_caller_only_what_it_may_see(service: RegistryService, url: str) -> None:
    root = service.identity.bootstrap_admin("root", operator="test")
    admin = service.access.authenticate(root.token)
    identity = service.identity
    for name in ("alice", "mallory"):
        identity.create_principal(admin, name, PrincipalKind.USER)
    identity.set_grant(admin, "alice", Role.VIEWER, model="a")
    alice = identity.create_token(admin, principal="alice").token
    spare = identity.create_token(admin, principal="alice")
    mallory = identity.create_token(admin, principal="mallory").token
    for name in ("a", "b"):
        service.create_model(name, caller=admin)

    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    everything = stream(url, auth(root.token), after=0, timeout=0)
    mine = stream(url, auth(alice), after=0, timeout=0)
    assert {json.loads(m.data)["model"] for m in mine if m.data} == {"a"}
    assert set(seqs(mine)) < set(seqs(everything))
    # No role: nothing, not even with the model named, exactly as for a model that does
    # not exist; and the start announced is no journal head to learn activity from.
    for params in ({}, {"model": "a"}, {"model": "nothing-here"}):
        nothing = stream(url, auth(mallory), after=0, timeout=0, **params)
        assert nothing == [Message("0", "message", "")], params
    assert stream(url, auth(mallory), timeout=0) == [Message("0", "message", "")]
    anonymous = httpx.get(f"{url}/api/v1/events/stream", params={"timeout": 0})
    assert anonymous.status_code == 401

    # Live: an event of b is not given to alice; the next one of a is.
    service.db.bell.poll = 60.0
    got: list[list[Message]] = []
    reader = threading.Thread(target=lambda: got.append(stream(url, auth(alice), limit=1)))
    reader.start()
    until(lambda: service.feed.open_streams == 1, "alice's stream")
    until(lambda: waiting_on_bell(service), "alice's stream to wait")
    service.update_model("b", caller=admin, description="secret plans")
    service.update_model("a", caller=admin, description="public")
    reader.join(DEADLINE)
    (received,) = got
    assert [json.loads(m.data)["subject"] for m in received if m.data] == ["a"]

    # A long poll by a caller with no role is not cut short by an event it may not see:
    # an early empty answer would tell it that something happened.
    def commit_once_polling() -> None:
        until(lambda: waiting_on_bell(service), "mallory's poll to wait")
        service.update_model("b", caller=admin, description="more secret plans")

    writer = threading.Thread(target=commit_once_polling)
    writer.start()
    started = time.monotonic()
    polled = httpx.get(
        f"{url}/api/v1/events", params={"after": 0, "wait": 1}, headers=auth(mallory)
    )
    writer.join()
    assert polled.json() == {"items": [], "next_after": None}
    assert time.monotonic() - started >= 1

    # A revoked token ends its stream, with nothing more handed over.
    got.clear()
    reader = threading.Thread(target=lambda: got.append(stream(url, auth(spare.token))))
    reader.start()
    until(lambda: service.feed.open_streams == 1, "the spare token's stream")
    identity.revoke_token(admin, spare.info.id)
    service.update_model("a", caller=admin, description="after the revocation")
    reader.join(DEADLINE)
    assert not reader.is_alive()
    assert seqs(got[0]) == []


# -- the SDK ----------------------------------------------------------------------------------


@pytest.fixture(params=["http", "process"])
def reg(
    request: pytest.FixtureRequest, service: RegistryService, settings: Settings
) -> Iterator[Registry]:
    if request.param == "http":
        with (
            serving(create_app(service, reach=Reach.LOOPBACK)) as found,
            Registry(open_transport(found)) as opened,
        ):
            yield opened
    else:
        location = str(settings.data_dir)
        with Registry(open_transport(location, settings.database_url)) as opened:
            yield opened


def test_sdk_streams_waits_and_watches_a_stage(service: RegistryService, reg: Registry) -> None:
    me = Caller.local_user(service.access.anonymous(Reach.LOOPBACK, "x").name)
    for _ in range(3):
        register(service, "churn", me)
    journal = [e.seq for e in service.events(caller=me)]
    events = reg.stream_events(after=0, model="churn")
    assert [next(events).seq for _ in journal] == journal
    assert [e.seq for e in reg.events(after=0, wait=5)] == journal  # there: no wait

    watching = reg.watch("churn@production")
    service.lifecycle.promote(me, "churn/1", "production", override="first deployment")
    assert next(watching).reference == "churn/1"  # nothing there at first: waited for
    service.lifecycle.promote(me, "churn/3", "production", override="the better one")
    assert next(watching).reference == "churn/3"
    service.lifecycle.rollback(me, "churn", "production")
    assert next(watching).reference == "churn/1"
    watching.close()
    # The stream from before saw every change since, in order, once.
    later = service.events(caller=me, after=journal[-1])
    assert [next(events) for _ in later] == later
    assert [e.kind for e in later].count("version.stage") >= 3
    events.close()
    staged = [e.seq for e in later if e.kind == "version.stage"]
    stages = reg.stream_events(after=0, kinds=["version.stage"])
    assert [next(stages).seq for _ in staged] == staged
    stages.close()
    again = reg.watch("churn@production")
    assert next(again).reference == "churn/1"  # at start: where it points now
    again.close()


def test_sse_messages_whatever_the_line_ends_and_the_chunking() -> None:
    text = (
        b"retry: 2000\nid: 3\n\n: heartbeat\n\n"
        b'id: 4\r\nevent: alias.set\r\ndata: {"a": 1}\r\n\r\n'
        b"id: 5\revent: x\rdata: one\rdata:two\r\r"
    )
    expected = [
        Message("3", "message", ""),
        Message("4", "alias.set", '{"a": 1}'),
        Message("5", "x", "one\ntwo"),
    ]
    for size in (1, 2, 3, 7, len(text)):
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        assert list(messages(chunks)) == expected, size
