"""Webhook delivery against real receivers on loopback, on SQLite and PostgreSQL: signed
per Standard Webhooks (checked with the independent ``standardwebhooks`` library), in
order, retried, given up, disabled by a 410, redelivered; a slow receiver delays nobody
else; a name rebound to a private address is refused at delivery; leases let one deliverer
of two send each event once. The retry schedule is shortened by configuration."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from modelyard.config import Settings, open_service
from modelyard.domain.access import Caller, PrincipalKind, Role
from modelyard.domain.delivery import (
    DELIVERED,
    FAILED,
    Delivery,
    RetrySchedule,
    parse_retry_after,
)
from modelyard.domain.errors import InvalidInput
from modelyard.domain.manifest import FileEntry
from modelyard.domain.versions import NewVersion
from modelyard.service import RegistryService
from modelyard.service.delivery import Deliverer, DeliveryConfig
from modelyard.service.outbound import OutboundPolicy
from tests.receivers import Received, Reply, receiving
from tests.test_outbound import PUBLIC, FakeDns

ME = Caller.local_user("tester")
FAST = DeliveryConfig(retries=RetrySchedule(0.02, 0.05, 0.5), lease_seconds=2.0)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def wait_until(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll ``condition`` until it is truthy (a state in the database, not a signal)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def delivering(service: RegistryService) -> Iterator[RegistryService]:
    """The service with loopback receivers allowed, short retries and a deliverer running."""
    service.outbound = OutboundPolicy.from_config(True, "127.0.0.1")
    service.deliveries.config = FAST
    deliverer = Deliverer(service)
    deliverer.start()
    yield service
    deliverer.stop()


_counter = itertools.count()


def register(
    service: RegistryService, model: str = "churn", caller: Caller = ME, **fields: Any
) -> int:
    """Register a version (one small inline file); its number."""
    content = f"weights {next(_counter)}".encode()
    digest = hashlib.sha256(content).hexdigest()
    spec = NewVersion(files=[FileEntry("model.bin", len(content), digest)], **fields)
    return service.register_version(model, spec, caller=caller, inline={digest: content}).version


def subscribe(service: RegistryService, url: str, events: list[str], **options: Any) -> Any:
    return service.webhooks.create(ME, url=url, events=events, **options)


def bodies(requests: list[Received]) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in requests]


def deliveries(service: RegistryService, webhook_id: int) -> list[Delivery]:
    return list(reversed(service.deliveries.log(webhook_id, limit=1000)))


def test_events_arrive_signed_in_order_with_what_a_receiver_needs(
    delivering: RegistryService,
) -> None:
    service = delivering
    with receiving() as receiver:
        sub, secret = subscribe(service, receiver.url(), ["version.*", "alias.set"])
        first = register(service, metrics={"auc": 0.8})
        second = register(service, metrics={"auc": 0.9})
        service.set_alias("churn", "champion", second, caller=ME)
        service.update_model("churn", description="ignored: not subscribed", caller=ME)
        requests = receiver.wait_for(3)

        verifier = Webhook(secret)
        for request in requests:
            headers = {k.lower(): v for k, v in request.headers.items()}
            verifier.verify(request.body, headers)  # raises unless the signature is right
        documents = bodies(requests)
        assert [d["type"] for d in documents] == [
            "version.registered",
            "version.registered",
            "alias.set",
        ]
        seqs = [d["data"]["event"]["seq"] for d in documents]
        assert seqs == sorted(seqs)
        journal = {e.seq: e for e in service.events(caller=ME, after=0, limit=1000)}
        for document in documents:
            event = document["data"]["event"]
            assert event == journal[event["seq"]].as_dict()
            assert document["timestamp"] == event["time"]
        registered = documents[0]["data"]["version"]
        assert registered["version"] == first
        assert registered["metrics"] == {"auc": 0.8}
        assert registered["manifest_digest"].startswith("sha256:") or registered["manifest_digest"]
        assert registered["stage"] == "development"
        assert documents[2]["data"]["version"]["aliases"] == ["champion"]
        assert documents[2]["data"]["model"]["name"] == "churn"
        ids = [r.headers["webhook-id"] for r in requests]
        assert len(set(ids)) == 3

        log = wait_until(
            lambda: len(deliveries(service, sub.id)) == 3 and deliveries(service, sub.id)
        )
        assert [d.status for d in log] == [DELIVERED] * 3
        assert [d.message_id for d in log] == ids
        assert all(d.attempts[0].status == 200 for d in log)

        # Redelivery: the same ids again, marked as such.
        assert service.deliveries.redeliver(sub.id, seqs[0], seqs[-1]) == 3
        again = receiver.wait_for(6)[3:]
        assert [r.headers["webhook-id"] for r in again] == ids
        for request in again:
            Webhook(secret).verify(request.body, {k.lower(): v for k, v in request.headers.items()})
        log = wait_until(
            lambda: len(deliveries(service, sub.id)) == 6 and deliveries(service, sub.id)
        )
        assert [d.redelivery for d in log] == [False] * 3 + [True] * 3

        # The test send: status and latency only.
        probe = service.deliveries.send_test(sub, secret)
        assert (probe.status, probe.error_class) == (200, None)
        assert json.loads(receiver.wait_for(7)[6].body)["type"] == "webhook.test"


def test_a_failure_holds_the_line_and_is_retried_with_the_same_id(
    delivering: RegistryService,
) -> None:
    service = delivering
    answers = iter([Reply(500, body=b"database down"), Reply(503, {"Retry-After": "0"})])
    with receiving(lambda _: next(answers, Reply())) as receiver:
        sub, _ = subscribe(service, receiver.url(), ["version.registered"])
        register(service)
        register(service)
        requests = receiver.wait_for(4)
        numbers = [json.loads(r.body)["data"]["version"]["version"] for r in requests]
        assert numbers == [1, 1, 1, 2]  # version 2 waited behind version 1's retries
        assert len({r.headers["webhook-id"] for r in requests[:3]}) == 1
        log = wait_until(
            lambda: (
                [d.status for d in deliveries(service, sub.id)] == [DELIVERED] * 2
                and deliveries(service, sub.id)
            )
        )
        assert [a.status for a in log[0].attempts] == [500, 503, 200]
        assert log[0].attempts[0].error_class == "server_error"
        assert log[0].attempts[0].response_prefix == "database down"


def test_after_the_last_try_a_delivery_fails_and_the_next_goes(
    delivering: RegistryService,
) -> None:
    service = delivering
    with receiving() as elsewhere:
        moved = Reply(302, {"Location": elsewhere.url("/stolen")}, b"")
        with receiving(lambda r: moved if b'"version":1' in r.body else Reply()) as receiver:
            sub, _ = subscribe(service, receiver.url(), ["version.registered"])
            register(service)
            register(service)
            log = wait_until(
                lambda: (
                    [d.status for d in deliveries(service, sub.id)] == [FAILED, DELIVERED]
                    and deliveries(service, sub.id)
                )
            )
        assert len(log[0].attempts) > 2  # retried for the whole (shortened) schedule
        assert {a.status for a in log[0].attempts} == {302}
        assert {a.error_class for a in log[0].attempts} == {"redirect"}
        assert elsewhere.received == []  # never followed


def test_410_disables_the_subscription(delivering: RegistryService) -> None:
    service = delivering
    with receiving(lambda _: Reply(410)) as gone, receiving() as healthy:
        sub, _ = subscribe(service, gone.url(), ["version.registered"])
        other, _ = subscribe(service, healthy.url(), ["version.registered"])
        register(service)
        disabled = wait_until(lambda: not (s := service.webhooks.get(ME, sub.id)).enabled and s)
        assert "410" in (disabled.disabled_reason or "")
        kinds = [e.kind for e in service.events(caller=ME, after=0, limit=1000)]
        assert "webhook.disabled" in kinds
        register(service)
        healthy.wait_for(2)
        assert len(gone.received) == 1
        assert [d.status for d in deliveries(service, sub.id)] == [FAILED]
        assert service.webhooks.get(ME, other.id).enabled


def test_a_slow_receiver_does_not_hold_up_the_others(delivering: RegistryService) -> None:
    service = delivering
    release = threading.Event()
    with receiving(lambda _: Reply(hold=release)) as slow, receiving() as fast:
        subscribe(service, slow.url(), ["version.registered"])
        subscribe(service, fast.url(), ["version.registered"])
        for _ in range(3):
            register(service)
        fast.wait_for(3)
        slow.wait_for(1)  # its first request, which it has not answered
        assert len(slow.received) == 1  # nothing more is sent it while it holds the answer
        release.set()
        slow.wait_for(3)


def test_a_name_rebound_to_a_private_address_is_refused_at_delivery(
    service: RegistryService,
) -> None:
    dns = FakeDns({"hooks.example": [PUBLIC]})
    service.outbound = OutboundPolicy(allow_http=True, resolver=dns)
    service.deliveries.config = FAST
    with receiving() as receiver:
        url = f"http://hooks.example:{receiver.port}/hook"
        for private in ("127.0.0.1", "10.0.0.1", "169.254.169.254", "[::1]"):
            with pytest.raises(InvalidInput) as refused:
                subscribe(service, f"http://{private}:{receiver.port}/", ["*"])
            assert refused.value.code == "webhook_url_refused"
        sub, _ = subscribe(service, url, ["version.registered"])  # public when subscribed
        dns.answers["hooks.example"] = ["127.0.0.1"]  # rebinding
        deliverer = Deliverer(service)
        deliverer.start()
        try:
            register(service)
            log = wait_until(
                lambda: (d := deliveries(service, sub.id)) and d[0].status == FAILED and d
            )
        finally:
            deliverer.stop()
        assert {a.error_class for a in log[0].attempts} == {"refused"}
        assert "loopback" in (log[0].attempts[0].response_prefix or "")
        assert receiver.received == []


def test_two_deliverers_send_each_event_once(service: RegistryService) -> None:
    """Leases: two deliverers on one database (replicas), each event once per receiver.

    A lease long enough that no renewal can come late on a loaded machine (a lease that
    expires under a working deliverer lets the other send too: at least once, not once);
    the takeover is the one a clean stop allows, at once."""
    service.outbound = OutboundPolicy.from_config(True, "127.0.0.1")
    service.deliveries.config = DeliveryConfig(retries=FAST.retries, lease_seconds=30.0)
    with receiving() as one, receiving() as two:
        subscribe(service, one.url(), ["version.registered"])
        subscribe(service, two.url(), ["version.registered"])
        replicas = [Deliverer(service, owner="replica-a"), Deliverer(service, owner="replica-b")]
        for replica in replicas:
            replica.start()
        try:
            for _ in range(20):
                register(service)
            for receiver in (one, two):
                requests = receiver.wait_for(20)
                numbers = [json.loads(r.body)["data"]["version"]["version"] for r in requests]
                assert numbers == list(range(1, 21))
            # Stopping one frees its leases; the other takes them over.
            replicas[0].stop()
            for _ in range(5):
                register(service)
            for receiver in (one, two):
                assert len(receiver.wait_for(25)) >= 25
        finally:
            for replica in replicas:
                if replica._keeper.is_alive():
                    replica.stop()
        for receiver in (one, two):
            ids = [r.headers["webhook-id"] for r in receiver.received]
            assert len(ids) == len(set(ids)) == 25, "an event was delivered twice"


def test_a_subscriber_receives_only_what_its_creator_may_see_now(
    delivering: RegistryService,
) -> None:
    service = delivering
    register(service)  # in local mode: the model exists
    with receiving() as local, receiving() as watcher, receiving() as control:
        subscribe(service, local.url(), ["version.registered"])
        register(service)
        local.wait_for(1)

        root = service.access.authenticate(
            service.identity.bootstrap_admin("root", operator="tester").token
        )
        service.identity.create_principal(root, "mia", PrincipalKind.USER)
        service.identity.set_grant(root, "mia", Role.MAINTAINER, model="churn")
        mia = service.access.authenticate(
            service.identity.create_token(root, principal="mia").token
        )
        service.webhooks.create(mia, url=watcher.url(), events=["version.*"], model="churn")
        service.webhooks.create(root, url=control.url(), events=["version.registered"])
        register(service, caller=root)
        watcher.wait_for(1)
        control.wait_for(1)

        service.identity.disable_principal(root, "mia", PrincipalKind.USER)
        register(service, caller=root)
        control.wait_for(2)
        # Mia may see nothing now; the local-mode subscription has nobody whose view it
        # could take once users exist.
        assert len(watcher.received) == 1
        assert len(local.received) == 1


def test_a_new_subscription_in_a_deleted_ones_place_gets_every_event(
    delivering: RegistryService,
) -> None:
    """SQLite gives a new row the id of a deleted one: the old worker must not deliver
    (or skip) the new subscription's events with its filter and URL."""
    service = delivering
    with receiving() as before, receiving() as after:
        old, _ = subscribe(service, before.url(), ["version.registered"])
        register(service)
        before.wait_for(1)
        service.webhooks.delete(ME, old.id)
        new, _ = subscribe(service, after.url(), ["model.updated"])
        for i in range(30):
            service.update_model("churn", description=f"step {i}", caller=ME)
        register(service)
        requests = after.wait_for(30)
        changes = [json.loads(r.body)["data"]["event"]["payload"]["after"] for r in requests]
        assert changes == [{"description": f"step {i}"} for i in range(30)]
        assert len(before.received) == 1
        assert {json.loads(r.body)["type"] for r in requests} == {"model.updated"}
        log = wait_until(
            lambda: len(deliveries(service, new.id)) == 30 and deliveries(service, new.id)
        )
        assert [d.seq for d in log] == sorted(d.seq for d in log)


def test_an_edit_applies_to_every_event_after_it(delivering: RegistryService) -> None:
    """Workers read the subscription's row again only when the journal says it changed:
    an event committed after an edit goes to the new URL, under the new filter."""
    service = delivering
    with receiving() as old, receiving() as new:
        sub, _ = subscribe(service, old.url(), ["version.registered"])
        register(service)
        old.wait_for(1)
        service.webhooks.update(ME, sub.id, url=new.url(), events=["version.*", "model.*"])
        service.update_model("churn", description="now subscribed", caller=ME)
        register(service)
        requests = new.wait_for(2)
        assert [json.loads(r.body)["type"] for r in requests] == [
            "model.updated",
            "version.registered",
        ]
        assert len(old.received) == 1


def test_a_subscription_behind_the_shared_window_gets_every_event_in_order(
    service: RegistryService,
) -> None:
    """Workers share a window of the newest events; one held back (its receiver failing)
    while the others move the window on reads what it missed from the database."""
    service.outbound = OutboundPolicy.from_config(True, "127.0.0.1")
    service.deliveries.config = DeliveryConfig(
        retries=RetrySchedule(0.02, 0.05, 60), lease_seconds=2.0, window=3, batch=2
    )
    recovered = threading.Event()
    deliverer = Deliverer(service)
    deliverer.start()
    try:
        with (
            receiving(lambda _: Reply() if recovered.is_set() else Reply(503)) as failing,
            receiving() as healthy,
        ):
            register(service)
            subscribe(service, failing.url(), ["model.updated"])
            subscribe(service, healthy.url(), ["model.updated"])
            for i in range(20):
                service.update_model("churn", description=f"step {i}", caller=ME)
            healthy.wait_for(20)
            recovered.set()

            def changes() -> list[str]:
                documents = bodies(list(failing.received))
                return [d["data"]["event"]["payload"]["after"]["description"] for d in documents]

            wait_until(lambda: changes()[-1:] == ["step 19"])
            # The first event was tried until the receiver recovered, then every one in order.
            first_tries = changes().count("step 0")
            assert first_tries > 1
            assert changes()[first_tries - 1 :] == [f"step {i}" for i in range(20)]
    finally:
        deliverer.stop()


def test_retry_and_lease_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_WEBHOOK_RETRIES", "1,60,600")
    monkeypatch.setenv("MODELYARD_WEBHOOK_LEASE_SECONDS", "5")
    service = open_service(Settings.from_env(str(tmp_path)))
    try:
        config = service.deliveries.config
        assert config.retries == RetrySchedule(1, 60, 600)
        assert config.lease_seconds == 5
    finally:
        service.close()
    monkeypatch.setenv("MODELYARD_WEBHOOK_LEASE_SECONDS", "0.1")
    with pytest.raises(InvalidInput, match="between 1 and 600"):
        Settings.from_env(str(tmp_path))
    monkeypatch.delenv("MODELYARD_WEBHOOK_LEASE_SECONDS")
    for wrong in ("5,60", "60,5,600", "a,b,c"):
        monkeypatch.setenv("MODELYARD_WEBHOOK_RETRIES", wrong)
        with pytest.raises(InvalidInput, match="webhook retries"):
            open_service(Settings.from_env(str(tmp_path / "other")))


def test_the_schedule_backs_off_with_jitter_for_a_day_and_honours_retry_after() -> None:
    schedule = RetrySchedule()
    rng = random.Random(1)
    waited, attempts = 0.0, 1
    delays = []
    while (delay := schedule.delay(attempts, waited, rng=rng)) is not None:
        delays.append(delay)
        waited += delay
        attempts += 1
    assert waited >= 86_400  # retried for at least a day
    assert 2.5 <= delays[0] <= 5 and max(delays) <= 3600
    assert delays[5] > delays[0] * 8  # exponential
    assert schedule.delay(1, 0, retry_after=120, rng=rng) == 120
    assert schedule.delay(1, 0, retry_after=10**6, rng=rng) == 3600  # within bounds
    assert parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT", utc(2026, 10, 21, 7, 27)) == 60
    assert parse_retry_after("soon", utc(2026, 10, 21)) is None
