"""Delivery by real ``modelyard serve`` processes: kill -9 one in the middle of a burst and
nothing is lost; two replicas on one PostgreSQL deliver each event once, and one takes
over when the other is killed.

The events are written by this test process into the server's database (the server hears
of them through its bell's poll, as it would of another replica's), so the burst goes on
while the server is down. Receivers are on loopback, allowed by the servers' configuration;
retries and leases are shortened by configuration too.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from modelyard.config import Settings, open_service
from modelyard.domain.access import Caller
from modelyard.service import RegistryService
from modelyard.storage.db.tables import webhooks
from tests.conftest import LiveServer
from tests.receivers import Received, Reply, receiving

ME = Caller.local_user("tester")
BURST = 300
KILL_AT = 30


@pytest.fixture
def delivery_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the servers (and this process's service) are configured with."""
    monkeypatch.setenv("MODELYARD_WEBHOOK_ALLOW_HTTP", "true")
    monkeypatch.setenv("MODELYARD_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    monkeypatch.setenv("MODELYARD_WEBHOOK_RETRIES", "0.05,0.2,30")
    # Short, for the takeover; long enough that no renewal comes late on a loaded machine.
    monkeypatch.setenv("MODELYARD_WEBHOOK_LEASE_SECONDS", "5")
    monkeypatch.setenv("MODELYARD_SECRET_KEY", secrets.token_hex(32))  # replicas share it


@pytest.fixture
def writer(
    tmp_path: Path, database_url: str | None, delivery_env: None
) -> Iterator[RegistryService]:
    """This process's own service on the servers' database: it writes the events."""
    service = open_service(Settings.from_env(str(tmp_path / "server-data"), database_url))
    yield service
    service.close()


def burst(service: RegistryService, count: int, done: threading.Event) -> None:
    for i in range(count):
        service.update_model("churn", description=f"step {i}", caller=ME)
    done.set()


def seqs_of(requests: list[Received]) -> list[int]:
    return [json.loads(r.body)["data"]["event"]["seq"] for r in requests]


def journal_seqs(service: RegistryService) -> list[int]:
    found = service.events(caller=ME, after=0, limit=1000, kind="model.updated")
    return [e.seq for e in found]


def assert_in_order_at_least_once(received: list[int], expected: list[int], restarts: int) -> None:
    """Every expected seq arrived; the sequence only goes back where a process died (it
    resends from its durable cursor), and between those points it strictly increases."""
    assert set(received) == set(expected), "an event was lost (or one not sent arrived)"
    descents = [i for i in range(1, len(received)) if received[i] <= received[i - 1]]
    assert len(descents) <= restarts, f"out of order at {descents[:5]}"


def test_kill_9_in_a_burst_loses_nothing(
    tmp_path: Path, database_url: str | None, writer: RegistryService
) -> None:
    writer.create_model("churn", caller=ME)
    server = LiveServer(tmp_path / "server-data", database_url)
    server.start()
    try:
        gate = threading.Event()
        held = Reply(hold=gate)
        answered = 0

        def script(_: Received) -> Reply:
            nonlocal answered
            answered += 1
            return held if answered == KILL_AT else Reply()

        with receiving(script) as receiver:
            writer.webhooks.create(ME, url=receiver.url(), events=["model.updated"])
            done = threading.Event()
            thread = threading.Thread(target=burst, args=(writer, BURST, done))
            thread.start()
            # Killed while the receiver holds an answer: a delivery in flight, the next
            # ones waiting behind it, the burst still being written.
            receiver.wait_for(KILL_AT, timeout=60)
            server.kill()
            gate.set()
            assert len(receiver.received) == KILL_AT
            server.start()
            thread.join(120)
            assert done.is_set()
            expected = journal_seqs(writer)
            assert len(expected) == BURST
            receiver.wait_for(len(expected), timeout=120)
            # Redeliveries after the restart may still be arriving: wait for every seq.
            while set(seqs_of(receiver.received)) != set(expected):
                receiver.wait_for(len(receiver.received) + 1, timeout=60)
            assert_in_order_at_least_once(seqs_of(receiver.received), expected, restarts=1)
    finally:
        server.stop()


def test_two_replicas_deliver_each_event_once_and_take_over(
    tmp_path: Path, database_url: str | None, writer: RegistryService
) -> None:
    if database_url is None:
        pytest.skip("replicas share a PostgreSQL database")
    writer.create_model("churn", caller=ME)
    servers = [LiveServer(tmp_path / f"replica-{n}", database_url) for n in "ab"]
    for server in servers:
        server.start()
    try:
        with receiving() as one, receiving() as two:
            for receiver in (one, two):
                writer.webhooks.create(ME, url=receiver.url(), events=["model.updated"])
            burst(writer, 100, threading.Event())
            expected = journal_seqs(writer)
            for receiver in (one, two):
                assert seqs_of(receiver.wait_for(100, timeout=60)) == expected
            # Steady state: each event exactly once per subscription, in order.
            for receiver in (one, two):
                ids = [r.headers["webhook-id"] for r in receiver.received]
                assert len(set(ids)) == len(ids) == 100, "an event was delivered twice"

            engine = create_engine(database_url)
            with engine.connect() as conn:
                owners = set(conn.execute(select(webhooks.c.lease_owner)).scalars())
            engine.dispose()
            # The lease holder is a server's delivery process: kill -9 it and its server,
            # as a machine dying would (a server killed alone would see its delivery
            # process stop and free the leases at once).
            (owner,) = {owner for owner in owners if owner}
            holder = int(owner.split(":")[1])
            parent = int(Path(f"/proc/{holder}/stat").read_text().rsplit(")", 1)[1].split()[1])
            victim = next(s for s in servers if s.process is not None and s.process.pid == parent)
            os.kill(holder, signal.SIGKILL)
            victim.kill()
            burst(writer, 50, threading.Event())
            expected = journal_seqs(writer)
            for receiver in (one, two):
                receiver.wait_for(150, timeout=60)
                while set(seqs_of(receiver.received)) != set(expected):
                    receiver.wait_for(len(receiver.received) + 1, timeout=60)
                assert_in_order_at_least_once(seqs_of(receiver.received), expected, restarts=1)
    finally:
        for server in servers:
            server.stop()


def delivery_children(pid: int) -> list[int]:
    """The server's delivery process, if it runs (whichever of its threads started it)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"delivery_process" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


def test_the_delivery_process_starts_with_the_first_subscription(
    tmp_path: Path, database_url: str | None, writer: RegistryService
) -> None:
    """No webhooks, no second interpreter; the first subscription, made by another process
    (as another replica or a CLI in local mode would), starts it and is delivered to."""
    writer.create_model("churn", caller=ME)
    server = LiveServer(tmp_path / "server-data", database_url)
    server.start()
    try:
        assert server.process is not None
        writer.update_model("churn", description="before any webhook", caller=ME)
        assert delivery_children(server.process.pid) == []
        with receiving(lambda _: Reply()) as receiver:
            writer.webhooks.create(ME, url=receiver.url(), events=["model.updated"])
            writer.update_model("churn", description="the first one delivered", caller=ME)
            receiver.wait_for(1, timeout=60)
            assert seqs_of(receiver.received) == journal_seqs(writer)[-1:]
        assert len(delivery_children(server.process.pid)) == 1
    finally:
        server.stop()
