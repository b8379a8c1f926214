"""What keeps delivery from slowing registrations down: the ledger's few, batched commits
(once deliveries pause, and at most one an interval while they keep coming), each in a constant
number of statements; the workers holding off while it writes; an event's body made once
for all its subscribers. On SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from modelyard.config import Settings, open_service
from modelyard.domain.delivery import DELIVERED
from modelyard.service import RegistryService
from modelyard.service.delivery import Deliverer, DeliveryService
from modelyard.service.outbound import OutboundPolicy
from modelyard.storage.db.deliveries import AttemptRecord, Bookkeeper, Delivered
from tests.conftest import CountQueries
from tests.receivers import receiving
from tests.test_delivery import FAST, deliveries, register, subscribe, wait_until


@pytest.fixture
def loopback(service: RegistryService) -> RegistryService:
    service.outbound = OutboundPolicy.from_config(True, "127.0.0.1")
    service.deliveries.config = FAST
    return service


def delivered(webhook_id: int, n: int, first_seq: int = 1) -> list[Delivered]:
    return [
        Delivered(webhook_id, seq, f"msg_{seq}", AttemptRecord(seq * 10, 204, seq, None, "ok"))
        for seq in range(first_seq, first_seq + n)
    ]


def test_a_batch_of_deliveries_takes_the_same_statements_whatever_its_size(
    loopback: RegistryService, count_queries: CountQueries
) -> None:
    sub, _ = subscribe(loopback, "http://127.0.0.1:9/hook", ["version.*"])
    counts = []
    for first, n in ((1, 3), (4, 400)):
        with count_queries() as counted, loopback.db.bookkeeping() as books:
            books.add_delivered(delivered(sub.id, n, first), now=1_000)
        counts.append(counted.count)
    assert counts[0] == counts[1] <= 4
    log = deliveries(loopback, sub.id)
    assert [d.seq for d in log] == list(range(1, 404))
    assert {d.status for d in log} == {DELIVERED}
    # Each attempt belongs to its own delivery.
    assert all(d.message_id == f"msg_{d.seq}" for d in log)
    assert [(d.attempts[0].status, d.attempts[0].latency_us) for d in log] == [
        (204, d.seq) for d in log
    ]


def test_on_sqlite_a_big_batch_is_split_at_the_variable_limit(tmp_path: Path) -> None:
    sqlite = open_service(
        Settings(
            data_dir=tmp_path / "data", webhook_allow_http=True, webhook_allow_hosts="127.0.0.1"
        )
    )
    try:
        split_at_the_limit(sqlite)
    finally:
        sqlite.close()


def split_at_the_limit(loopback: RegistryService) -> None:
    sub, _ = subscribe(loopback, "http://127.0.0.1:9/hook", ["version.*"])
    with loopback.db.bookkeeping() as books:
        raw: Any = books.conn.connection.dbapi_connection
        limit = raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 25)  # two rows a statement
        try:
            books.add_delivered(delivered(sub.id, 7), now=1_000)
        finally:
            raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    log = deliveries(loopback, sub.id)
    assert [(d.seq, len(d.attempts), d.attempts[0].latency_us) for d in log] == [
        (seq, 1, seq) for seq in range(1, 8)
    ]


def counting_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of deliveries in every batch the ledger commits, as it commits them."""
    sizes: list[int] = []
    original = Bookkeeper.add_delivered

    def add_delivered(self: Bookkeeper, batch: Any, now: int) -> None:
        original(self, batch, now)
        sizes.append(len(batch))

    monkeypatch.setattr(Bookkeeper, "add_delivered", add_delivered)
    return sizes


def test_in_a_burst_the_ledger_commits_at_most_once_an_interval(
    loopback: RegistryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each notification must not end its wait: a commit per delivery took the write lock
    from registrations a hundred times a second."""
    sizes = counting_batches(monkeypatch)
    # No pause ends a wait here: a loaded machine pauses deliveries now and then.
    loopback.deliveries.config = replace(FAST, ledger_seconds=0.5, ledger_pause=600)
    with receiving() as receiver:
        sub, _ = subscribe(loopback, receiver.url(), ["version.registered"])
        running = Deliverer(loopback)
        running.start()
        try:
            started = time.monotonic()
            for _ in range(30):
                register(loopback)
            receiver.wait_for(30, timeout=60)
            wait_until(lambda: len(deliveries(loopback, sub.id)) == 30, timeout=60)
            elapsed = time.monotonic() - started
        finally:
            running.stop()
    assert sum(sizes) == 30
    # The first at once, then one every half second at most.
    assert len(sizes) <= 2 + elapsed / 0.5, (sizes, elapsed)


def test_once_deliveries_pause_the_log_is_current_whatever_the_interval(
    loopback: RegistryService,
) -> None:
    """A quiet registry's log is current at once (the README's tour lists it next)."""
    loopback.deliveries.config = replace(FAST, ledger_seconds=600)
    with receiving() as receiver:
        sub, _ = subscribe(loopback, receiver.url(), ["version.registered"])
        running = Deliverer(loopback)
        running.start()
        try:
            for n in (1, 2, 3):
                register(loopback)
                wait_until(lambda n=n: len(deliveries(loopback, sub.id)) == n)  # not 600 s
        finally:
            running.stop()


def test_flush_writes_at_once_whatever_the_interval(loopback: RegistryService) -> None:
    loopback.deliveries.config = replace(FAST, ledger_seconds=600, ledger_pause=600)
    with receiving() as receiver:
        sub, _ = subscribe(loopback, receiver.url(), ["version.registered"])
        running = Deliverer(loopback)
        running.start()
        try:
            for n in (1, 2):
                register(loopback)
                receiver.wait_for(n)

                def flushed(n: int = n) -> bool:
                    # The delivery may not be handed to the ledger yet: flush until it is
                    # (each flush writes at once, not in 600 s, or this times out).
                    running.ledger.flush(timeout=5)
                    return len(deliveries(loopback, sub.id)) == n

                wait_until(flushed, timeout=20)
        finally:
            running.stop()


def test_a_failed_ledger_write_lets_the_workers_go_on_and_is_retried(
    loopback: RegistryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers hold off while the ledger writes: a write that raised must not leave
    them waiting for ever."""
    original = Bookkeeper.add_delivered
    failures = threading.Event()

    def flaky(self: Bookkeeper, batch: Any, now: int) -> None:
        if not failures.is_set():
            failures.set()
            raise sqlite3.OperationalError("database is locked")
        original(self, batch, now)

    monkeypatch.setattr(Bookkeeper, "add_delivered", flaky)
    with receiving() as receiver:
        sub, _ = subscribe(loopback, receiver.url(), ["version.registered"])
        running = Deliverer(loopback)
        running.start()
        try:
            register(loopback)
            wait_until(failures.is_set)
            register(loopback)
            receiver.wait_for(2)
            wait_until(lambda: len(deliveries(loopback, sub.id)) == 2)
            assert running.ledger.quiet.is_set()
        finally:
            running.stop()


def test_an_events_body_is_made_once_for_all_its_subscribers(
    loopback: RegistryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[int] = []
    asked = threading.Semaphore(0)
    make, ask = DeliveryService._make_body, DeliveryService.body

    def body(self: DeliveryService, event: Any) -> bytes:
        asked.release()
        return ask(self, event)

    def make_body(self: DeliveryService, event: Any) -> bytes:
        made.append(event.seq)
        for _ in range(6):  # every subscriber's worker has asked for it meanwhile
            assert asked.acquire(timeout=20)
        return make(self, event)

    monkeypatch.setattr(DeliveryService, "body", body)
    monkeypatch.setattr(DeliveryService, "_make_body", make_body)
    with receiving() as receiver:
        subs = [
            subscribe(loopback, receiver.url(f"/{i}"), ["version.registered"])[0] for i in range(6)
        ]
        running = Deliverer(loopback)
        running.start()
        try:
            # Every worker is staffed and idle before the event comes.
            wait_until(lambda: len(running._workers) == len(subs))
            register(loopback)
            requests = receiver.wait_for(len(subs))
        finally:
            running.stop()
    assert len({r.body for r in requests}) == 1
    assert len(made) == 1
