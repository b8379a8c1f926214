"""Webhook delivery: the journal is the outbox.

Each subscription keeps a cursor into the journal (the last event it is done with). The
``Deliverer`` reads the events after it, as the subscription's creator may see them now,
keeps those its filter matches, and sends them one at a time, in order: a failed one holds
the line (it becomes a pending delivery, retried on the schedule) until it is delivered or
given up, and only then do later events go. Nothing is sent for a transaction that rolled
back (its events never existed) and nothing is lost in a crash (the cursor moves only
after the receiver answered 2xx): delivery is at least once, and the ``webhook-id`` lets a
receiver drop the copies.

Each subscription has a worker thread of its own, so a slow receiver delays nobody else.
A replica works on a subscription only while it holds its lease (``webhooks.lease_owner``,
renewed every third of its length): on PostgreSQL exactly one replica delivers it at a
time, and another takes over once a dead one's lease expires. Workers sleep on the
journal bell: a commit in this process wakes them at once, one elsewhere within its poll.

Successful deliveries are written by one thread (``_Ledger``) in batches, once deliveries
pause and at most every 2 s in a burst: registrations then rarely wait for SQLite's write
lock, and a lost batch
(a crash before it committed) only means those events are delivered again.
"""

from __future__ import annotations

import bisect
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modelyard.domain.access import Caller, Visibility
from modelyard.domain.delivery import (
    DELIVERED,
    FAILED,
    PENDING,
    Delivery,
    ProbeResult,
    RetrySchedule,
    error_class_of,
    event_body,
    message_id,
    parse_retry_after,
    probe_body,
    signed_headers,
    version_of,
)
from modelyard.domain.errors import InvalidInput, NotFound, TooLarge
from modelyard.domain.events import decode
from modelyard.domain.models import Event, Version, to_us, utc_from_us
from modelyard.domain.pagination import validate_page_size
from modelyard.domain.references import Reference, RefKind
from modelyard.domain.webhooks import Subscription
from modelyard.service.caches import StampedCache
from modelyard.service.outbound import OutboundError
from modelyard.storage.db.deliveries import AttemptRecord, Delivered, Pending
from modelyard.storage.db.store import Database, Reader, now_us

if TYPE_CHECKING:
    from modelyard.service.registry import RegistryService

log = logging.getLogger("modelyard.delivery")

KEEPER_PAUSE_SECONDS = 0.2
PENDING_LOOK_SECONDS = 2.0
COMPLAIN_SECONDS = 60.0
CLAIM_SECONDS = 2.0
MAX_REDELIVERY = 1000  # events one redelivery may queue
_NOTHING = Visibility(all_models=False)
_BODY_CACHE = 4096  # events whose bodies are kept: every subscriber of one gets the same


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """How delivery retries and leases (MODELYARD_WEBHOOK_RETRIES, _LEASE_SECONDS)."""

    retries: RetrySchedule = field(default_factory=RetrySchedule)
    lease_seconds: float = 15.0
    batch: int = 100  # events read at a time
    window: int = 5000  # recent events kept for every worker to read (about 1 KiB each)
    ledger_seconds: float = 2.0  # the bookkeeping commits at most this often, in a burst
    ledger_pause: float = 0.05  # and once deliveries pause for this long


@dataclass(frozen=True, slots=True)
class _Sent:
    """One attempt's record and what it means."""

    record: AttemptRecord
    error_class: str | None  # None: delivered
    retry_after: float | None


_complained: dict[str, float] = {}


def _complain(where: str, message: str) -> None:
    """Log the exception being handled, at most once a minute for each ``where``: a
    database that is away fails every retry, and a flood of tracebacks helps nobody (and
    would fill a pipe nobody reads)."""
    now = time.monotonic()
    if now - _complained.get(where, -COMPLAIN_SECONDS) >= COMPLAIN_SECONDS:
        _complained[where] = now
        log.exception("%s (%s)", message, where)


@dataclass(frozen=True, slots=True)
class _Entry:
    """What the ledger writes for a worker: the subscription (its id and creation time)
    is done up to ``cursor``; with ``sent``, it delivered the event of that seq."""

    webhook_id: int
    created_us: int
    cursor: int
    message: str | None
    sent: _Sent | None


class DeliveryService:
    """``service.deliveries``: the delivery log, redelivery and the test send, for the
    webhooks service's access-checked wrappers; and what the ``Deliverer`` reads."""

    def __init__(self, registry: RegistryService) -> None:
        self._registry = registry
        self.config = DeliveryConfig()
        self._bodies: OrderedDict[int, Future[bytes]] = OrderedDict()
        self._bodies_lock = threading.Lock()
        self._visibility: StampedCache[tuple[str, int | None], Visibility | None] = StampedCache(
            lambda _key: registry.db.identity_stamp()
        )
        # Called with a webhook's id when a redelivery is queued: the local deliverer.
        self.on_redeliver: list[Callable[[int], None]] = []

    # -- for people (through WebhookService) -----------------------------------------------

    def log(
        self,
        webhook_id: int,
        *,
        limit: int | None = None,
        before: int | None = None,
        first_seq: int | None = None,
        last_seq: int | None = None,
    ) -> list[Delivery]:
        """A subscription's deliveries, newest first, each with its attempts (the
        response prefix is in them: the caller decides who may see it)."""
        with self._registry.db.read() as tx:
            return tx.deliveries(
                webhook_id,
                limit=validate_page_size(limit),
                before=before,
                first_seq=first_seq,
                last_seq=last_seq,
            )

    def redeliver(self, webhook_id: int, first_seq: int, last_seq: int) -> int:
        """Send the events ``first_seq..last_seq`` again (those the subscription would
        receive), with their original ``webhook-id``s, ahead of new events; how many."""
        if not 0 < first_seq <= last_seq:
            raise InvalidInput("redeliver a range FIRST..LAST of sequence numbers, FIRST <= LAST")
        if last_seq - first_seq >= MAX_REDELIVERY:
            raise TooLarge(f"redeliver at most {MAX_REDELIVERY} events at once")
        with self._registry.db.read() as tx:
            sub = tx.webhook(webhook_id)
            if sub is None:
                raise NotFound(f"webhook {webhook_id} not found", code="webhook_not_found")
            found = self.events_for(tx, sub, first_seq - 1, MAX_REDELIVERY)[0]
        now = now_us()
        rows = [
            {
                "seq": e.seq,
                "message_id": message_id(webhook_id, e.hash),
                "status": PENDING,
                "redelivery": True,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for e in found
            if e.seq <= last_seq
        ]
        with self._registry.db.bookkeeping() as books:
            books.add_deliveries(webhook_id, rows)
        for nudge in self.on_redeliver:
            nudge(webhook_id)
        return len(rows)

    def send_test(self, subscription: Subscription, secret: str) -> ProbeResult:
        """Send a signed ``webhook.test`` now, outside the log: its status and latency only
        (the body of the answer is never shown: it could be an internal page)."""
        body = probe_body(subscription.id, utc_from_us(now_us()))
        sent = self.send(subscription.url, secret, f"msg_test_{secrets.token_hex(12)}", body)
        return ProbeResult(sent.record.status, sent.record.latency_us, sent.error_class)

    # -- for the deliverer -------------------------------------------------------------------

    def visibility(self, tx: Reader, sub: Subscription) -> Visibility | None:
        """What the subscription's creator may see now (None: everything). A creator who
        was disabled or deleted sees nothing, and so does a subscription made in
        single-user local mode once users exist: nobody's view is left to take."""
        if sub.creator_id is None:
            return _NOTHING if self._registry.access.is_configured() else None
        creator = tx.principal(sub.creator)
        if creator is None or creator.id != sub.creator_id or creator.disabled_at is not None:
            return _NOTHING
        return self._registry.event_visibility(Caller(name=sub.creator, principal_id=creator.id))

    def visible_now(self, sub: Subscription) -> Visibility | None:
        """``visibility`` as of now, cached until identities or grants change (a worker
        asks at every event)."""
        key = (sub.creator, sub.creator_id)
        return self._visibility.get(key, lambda: self._read_visibility(sub))

    def _read_visibility(self, sub: Subscription) -> Visibility | None:
        with self._registry.db.read() as tx:
            return self.visibility(tx, sub)

    @staticmethod
    def is_for(sub: Subscription, visible: Visibility | None, event: Event) -> bool:
        """Whether the subscription receives ``event``: in its scope, about a model its
        creator may see (``visible``: what ``visibility`` says), of a kind it asked for."""
        return (
            (sub.model is None or event.model == sub.model)
            and (visible is None or visible.admits(event.model))
            and sub.matches(event.kind)
        )

    def events_for(
        self, tx: Reader, sub: Subscription, after: int, limit: int
    ) -> tuple[list[Event], int]:
        """Of the ``limit`` events after ``after``, those for the subscription, and the seq
        it has looked up to."""
        found = tx.events_after(after, limit)
        visible = self.visibility(tx, sub)
        seen = found[-1].seq if found else after
        return [e for e in found if self.is_for(sub, visible, e)], seen

    def body(self, event: Event) -> bytes:
        """The body of an event's delivery, made once for all its subscribers: the first
        worker to ask makes it, the others (asking at once: they all woke on one commit)
        wait for it. Making it reads the model and the version, half of a delivery's CPU."""
        with self._bodies_lock:
            made = self._bodies.get(event.seq)
            mine = made is None
            if made is None:
                made = self._bodies[event.seq] = Future()
                while len(self._bodies) > _BODY_CACHE:
                    self._bodies.popitem(last=False)
        if mine:
            try:
                made.set_result(self._make_body(event))
            except Exception as exc:
                with self._bodies_lock:
                    self._bodies.pop(event.seq, None)  # the next to ask tries again
                made.set_exception(exc)
        return made.result()

    def _make_body(self, event: Event) -> bytes:
        number = version_of(decode(event))
        with self._registry.db.read() as tx:
            model = tx.get_model(event.model) if event.model else None
            version: Version | None = None
            if model is not None and number is not None:
                version_id = tx.resolve_id(Reference(model.name, RefKind.NUMBER, number))
                version = tx.load_versions([version_id])[0] if version_id is not None else None
        return event_body(event, model, version)

    def send(self, url: str, secret: str, message: str, body: bytes) -> _Sent:
        """One signed POST; never raises for the receiver's sake."""
        at = now_us()
        started = time.monotonic()
        headers = signed_headers(secret, message, at // 1_000_000, body)
        try:
            answer = self._registry.outbound.post(url, body, headers)
        except OutboundError as exc:
            latency = round((time.monotonic() - started) * 1_000_000)
            record = AttemptRecord(at, None, latency, exc.error_class, exc.detail[:512])
            return _Sent(record, exc.error_class, None)
        prefix = answer.body_prefix.decode("utf-8", "replace")
        error = error_class_of(answer.status)
        record = AttemptRecord(at, answer.status, answer.latency_us, error, prefix)
        retry_after = None
        if answer.retry_after is not None:  # the clock's time as a datetime only then
            retry_after = parse_retry_after(answer.retry_after, utc_from_us(at))
        return _Sent(record, error, retry_after)


class _Journal:
    """The journal's newest events, read once for every worker.

    Ten subscriptions woken by one commit would each read the same events (and the
    subscription's row, and its creator's grants): those reads were most of a delivery's
    CPU. Workers ask for the events after their cursor; the window holds every event after
    ``_start`` up to ``_hi``, and the first worker to reach ``_hi`` reads what follows, for
    all. A worker further behind than the window reads the database itself.

    It also notes the newest event about each subscription (``webhook.*``): a worker
    re-reads its own row only when one came after the row it holds, so it never sends an
    event to a URL, or under a filter, older than the event.
    """

    def __init__(self, db: Database, head: Callable[[], int], size: int) -> None:
        self._db = db
        self._head = head
        self._size = size
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._start: int | None = None  # None: nothing read yet
        self._hi = 0
        self._touched: dict[int, int] = {}  # webhook id -> seq of its newest event read

    def after(self, cursor: int, limit: int) -> list[Event]:
        """Up to ``limit`` events after ``cursor``, every kind and model, in order."""
        with self._lock:
            if self._start is None or cursor - self._hi > self._size:
                self._events, self._start, self._hi = [], cursor, cursor
                self._touched.clear()
            start = self._start
            if cursor >= start:
                if cursor >= self._hi and self._head() > self._hi:
                    self._extend(cursor - self._hi + limit)
                first = bisect.bisect_right(self._events, cursor, key=lambda e: e.seq)
                return self._events[first : first + limit]
        # Behind the window: read up to it (the worker then joins it), without the lock.
        with self._db.read() as tx:
            found = tx.events_after(cursor, limit)
        before = [e for e in found if e.seq <= start]
        return before if before or not found else self.after(start, limit)

    def changed_since(self, webhook_id: int, seq: int) -> bool:
        """Whether the subscription may have changed after ``seq`` (its row as read then)."""
        with self._lock:
            start = self._start
            return start is None or seq < start or self._touched.get(webhook_id, 0) > seq

    def _extend(self, limit: int) -> None:
        with self._db.read() as tx:
            found = tx.events_after(self._hi, limit)
        for event in found:
            if event.kind.startswith("webhook."):
                self._touched[int(event.subject.removeprefix("webhook/"))] = event.seq
        self._events.extend(found)
        if found:
            self._hi = found[-1].seq
        if len(self._events) > 2 * self._size:
            dropped = len(self._events) - self._size
            self._start = self._events[dropped - 1].seq
            del self._events[:dropped]


class _Ledger:
    """Writes what workers delivered (and cursors moved past events not for them) from one
    thread, in batches: once deliveries pause (``ledger_pause``), and while they keep
    coming, at most once every ``ledger_seconds``.

    On SQLite every commit takes the database's one write lock, which registrations then
    wait for in its busy handler (sleeping 1, 2, 5, ... ms): committing per event or per
    burst cost registrations a third of their rate with ten subscriptions. While it holds
    that lock, the workers hold off (``quiet``): ten busy workers would otherwise take the
    interpreter's lock from it at each statement, and a 2 ms write took 50.
    """

    def __init__(self, deliverer: Deliverer) -> None:
        self._deliverer = deliverer
        self._cond = threading.Condition()
        self._queue: list[_Entry] = []
        self._written = 0  # entries committed (or dropped with their subscription)
        self._queued = 0
        self._hurry = False  # flush() waits: write what is queued now
        self._stopping = False
        self._last_write = -float("inf")
        self._last_record = -float("inf")
        self.quiet = threading.Event()  # clear while the ledger holds the write lock
        self.quiet.set()
        self.thread = threading.Thread(target=self._run, name="webhook-ledger", daemon=True)

    def record(
        self, sub: Subscription, cursor: int, message: str | None = None, sent: _Sent | None = None
    ) -> None:
        """``sub`` is done up to ``cursor``; with ``sent``, it delivered that event."""
        with self._cond:
            self._last_record = time.monotonic()
            self._queue.append(_Entry(sub.id, to_us(sub.created), cursor, message, sent))
            self._queued += 1
            if len(self._queue) == 1:  # later ones: it wakes when its wait for a pause ends
                self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> None:
        """Write everything recorded so far now, and wait until it is committed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._queued
            self._hurry = True
            self._cond.notify_all()
            while self._written < target and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self.thread.join(10)

    def _run(self) -> None:
        every = self._deliverer.config.ledger_seconds
        pause = self._deliverer.config.ledger_pause
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                # Written once entries stop coming for a moment (a quiet registry's log is
                # current at once), or once every ``every`` while they keep coming (only
                # the log and the cursor wait: the events are already sent).
                while not (self._stopping or self._hurry):
                    due = min(self._last_write + every, self._last_record + pause)
                    left = due - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch, self._queue, self._hurry = self._queue, [], False
            try:
                self._write(batch)
            except Exception:
                _complain("ledger", "webhook bookkeeping failed; retrying")
                with self._cond:
                    self._queue[:0] = batch
                time.sleep(0.5)  # the database is away: do not spin on it
                continue
            finally:
                self._last_write = time.monotonic()
            with self._cond:
                self._written += len(batch)
                self._cond.notify_all()

    def _write(self, batch: list[_Entry]) -> None:
        owner = self._deliverer.owner
        cursors: dict[tuple[int, int], int] = {}
        delivered: list[tuple[tuple[int, int], Delivered]] = []
        for e in batch:
            key = (e.webhook_id, e.created_us)
            cursors[key] = max(e.cursor, cursors.get(key, 0))
            if e.sent is not None and e.message is not None:
                delivered.append((key, Delivered(e.webhook_id, e.cursor, e.message, e.sent.record)))
        self.quiet.clear()
        try:
            with self._deliverer.db.bookkeeping() as books:
                alive = {key for key, c in cursors.items() if books.advance(*key, owner, c)}
                books.add_delivered([d for key, d in delivered if key in alive], now_us())
        finally:
            self.quiet.set()


class _Worker:
    """Delivers one subscription, in order, while this replica holds its lease."""

    def __init__(self, deliverer: Deliverer, sub: Subscription) -> None:
        self.deliverer = deliverer
        self.sub = sub  # replaced by the keeper when the subscription is edited
        # Set by the keeper when the id now names another subscription (SQLite reuses the
        # id of a deleted row): this worker ends, and one for the new subscription starts.
        self.retired = False
        self.check_pending = True  # a retry or a redelivery may wait
        self._row_seq = -1  # the journal's head when ``sub`` was read (-1: read it again)
        # Redeliveries asked of another replica nudge nobody here: look now and then.
        self._next_pending_look = 0.0
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"webhook-{sub.id}", daemon=True)

    @property
    def webhook_id(self) -> int:
        return self.sub.id

    def _run(self) -> None:
        d = self.deliverer
        try:
            with d.db.read() as tx:
                cursor = tx.webhook_cursor(self.webhook_id)
            while (
                cursor is not None
                and not self.retired
                and d.holds(self.webhook_id)
                and self.sub.enabled
            ):
                try:
                    cursor = self._step(cursor)
                except Exception:
                    _complain(f"worker {self.webhook_id}", "webhook delivery failed; retrying")
                    self.wake.wait(1.0)
        finally:
            d.worker_done(self)

    def _step(self, cursor: int) -> int:
        """One round: the head of the line if one waits, else the next events; the cursor."""
        d = self.deliverer
        sub = self.sub
        if self.check_pending or time.monotonic() >= self._next_pending_look:
            with d.db.read() as tx:
                pending = tx.pending_deliveries(sub.id)
            if pending:
                self._attempt_pending(sub, pending[0])
                return cursor
            self.check_pending = False
            self._next_pending_look = time.monotonic() + PENDING_LOOK_SECONDS
        read = d.journal.after(cursor, d.config.batch)
        if d.journal.changed_since(sub.id, self._row_seq):
            # The subscription as it is now: one deleted, disabled or edited before the
            # events read gets none of them sent to its old URL.
            with d.db.read() as tx:
                self._row_seq = tx.journal_head().seq
                current = tx.webhook(sub.id)
            if current is None or current.created != sub.created or not current.enabled:
                self.retired = True
                return cursor
            self.sub = sub = current
        visible = d.service.visible_now(sub)
        events = [e for e in read if d.service.is_for(sub, visible, e)]
        seen = read[-1].seq if read else cursor
        secret = d.secret(sub) if events else ""
        for event in events:
            if not d.holds(sub.id) or self.check_pending or self.retired:
                return cursor
            message = message_id(sub.id, event.hash)
            d.ledger.quiet.wait()
            sent = d.service.send(sub.url, secret, message, d.service.body(event))
            if sent.error_class is None:
                d.ledger.record(sub, event.seq, message, sent)
                cursor = event.seq
                continue
            self._first_failure(sub, event, message, sent)
            return event.seq
        if seen > cursor:
            d.ledger.record(sub, seen)
        if not read:
            self._idle(seen)
        return seen

    def _idle(self, seen: int) -> None:
        """Sleep until the journal passes ``seen``, or a while (to look for redeliveries
        asked elsewhere and notice a lost lease)."""
        self.deliverer.bell.wait(seen, 0.5)
        if self.wake.is_set():
            self.wake.clear()
            self.check_pending = True

    def _first_failure(self, sub: Subscription, event: Event, message: str, sent: _Sent) -> None:
        """The event becomes a pending delivery at the head of the line (or, answered 410
        or out of retries, a failed one); the cursor moves past it either way."""
        d = self.deliverer
        now = now_us()
        delay = (
            None if sent.error_class == "gone" else d.config.retries.delay(1, 0, sent.retry_after)
        )
        d.ledger.flush()
        with d.db.bookkeeping() as books:
            if not books.advance(sub.id, to_us(sub.created), d.owner, event.seq):
                return
            books.add_delivery(
                sub.id,
                seq=event.seq,
                message_id=message,
                status=FAILED if delay is None else PENDING,
                redelivery=False,
                attempts=[sent.record],
                next_attempt_us=None if delay is None else now + round(delay * 1_000_000),
                now=now,
            )
        self.check_pending = True
        if sent.error_class == "gone":
            d.disable(sub)

    def _attempt_pending(self, sub: Subscription, head: Pending) -> None:
        d = self.deliverer
        wait = (head.next_attempt_us - now_us()) / 1_000_000
        if wait > 0:
            # A redelivery asked for meanwhile may be due sooner: look again when woken.
            self.wake.wait(min(wait, 1.0))
            self.wake.clear()
            return
        with d.db.read() as tx:
            found = tx.events_after(head.seq - 1, 1)
        event = found[0] if found and found[0].seq == head.seq else None
        now = now_us()
        if event is None:  # gone from the journal (it never is): nothing left to send
            record = AttemptRecord(now, None, 0, "missing_event", None)
            sent = _Sent(record, "missing_event", None)
            delay = None
        else:
            sent = d.service.send(sub.url, d.secret(sub), head.message_id, d.service.body(event))
            since_first = (now - head.created_us) / 1_000_000
            delay = (
                None
                if sent.error_class in (None, "gone")
                else d.config.retries.delay(head.attempts + 1, since_first, sent.retry_after)
            )
        status = DELIVERED if sent.error_class is None else FAILED if delay is None else PENDING
        with d.db.bookkeeping() as books:
            books.record_attempt(
                head.id,
                sent.record,
                status=status,
                attempts=head.attempts + 1,
                next_attempt_us=None if delay is None else now + round(delay * 1_000_000),
                now=now,
            )
        if sent.error_class == "gone":
            d.disable(sub)


class Deliverer:
    """Delivers every subscription this replica holds the lease of (see the module)."""

    def __init__(self, service: RegistryService, *, owner: str | None = None) -> None:
        self.registry = service
        self.service = service.deliveries
        self.config = service.deliveries.config
        self.db = service.db
        self.bell = service.db.bell
        self.owner = owner or f"{os.uname().nodename[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.ledger = _Ledger(self)
        self.journal = _Journal(service.db, service.db.bell.head, self.config.window)
        self._lock = threading.Lock()
        self._workers: dict[int, _Worker] = {}
        self._held_until: dict[int, float] = {}  # monotonic time each lease is safe until
        self._secrets: dict[int, tuple[object, str]] = {}
        self._stopping = threading.Event()
        self._keeper = threading.Thread(target=self._keep, name="webhook-leases", daemon=True)
        # Renew a third of the way through a lease, and look for leases another replica
        # freed (a clean stop) at least every 2 s: one small write.
        self._claim_every = min(self.config.lease_seconds / 3, CLAIM_SECONDS)

    def start(self) -> None:
        self.service.on_redeliver.append(self.nudge)
        self.ledger.thread.start()
        self._keeper.start()

    def stop(self) -> None:
        """Stop working, commit what was delivered and free the leases for another replica
        (the lease of a worker still waiting on a receiver is left to expire)."""
        self._stopping.set()
        self.service.on_redeliver.remove(self.nudge)
        self._keeper.join(5)
        with self._lock:
            held, self._held_until = list(self._held_until), {}
            workers = list(self._workers.values())
        for worker in workers:
            worker.wake.set()
        for worker in workers:
            worker.thread.join(2)
        self.ledger.stop()
        busy = {w.webhook_id for w in workers if w.thread.is_alive()}
        try:
            with self.db.bookkeeping() as books:
                books.release_leases(self.owner, [w for w in held if w not in busy])
        except Exception:
            log.exception("could not release the webhook leases (they expire)")

    # -- what workers ask --------------------------------------------------------------------

    def holds(self, webhook_id: int) -> bool:
        with self._lock:
            return self._held_until.get(webhook_id, 0.0) > time.monotonic()

    def secret(self, sub: Subscription) -> str:
        """The subscription's signing secret, opened once per version of the row."""
        cached = self._secrets.get(sub.id)
        if cached is not None and cached[0] == sub.updated:
            return cached[1]
        secret = self.registry.webhooks.secret_of(sub.id)
        self._secrets[sub.id] = (sub.updated, secret)
        return secret

    def disable(self, sub: Subscription) -> None:
        self.registry.webhooks.disabled_by_receiver(sub.id, "the receiver answered 410 Gone")
        with self._lock:
            self._held_until.pop(sub.id, None)

    def worker_done(self, worker: _Worker) -> None:
        with self._lock:
            if self._workers.get(worker.webhook_id) is worker:
                del self._workers[worker.webhook_id]

    def nudge(self, webhook_id: int) -> None:
        """A redelivery was queued for ``webhook_id``: its worker looks now."""
        with self._lock:
            worker = self._workers.get(webhook_id)
        if worker is not None:
            worker.check_pending = True
            worker.wake.set()

    # -- the lease keeper ------------------------------------------------------------------

    def _keep(self) -> None:
        """Claim and renew leases every third of their length (or 2 s), and at once when the
        subscriptions change; keep a worker on each one held."""
        fingerprint: object = None
        renewed = 0.0
        head = self.bell.head()
        subs: dict[int, Subscription] = {}
        while not self._stopping.is_set():
            try:
                with self.db.read() as tx:
                    subs = {s.id: s for s in tx.webhooks()}
                now_print = tuple((s.id, s.updated, s.enabled) for s in subs.values())
                due = time.monotonic() - renewed >= self._claim_every
                if due or now_print != fingerprint:
                    self._claim()
                    renewed = time.monotonic()
                    fingerprint = now_print
                self._staff(subs)
            except Exception:
                _complain("keeper", "webhook lease keeping failed; retrying")
            head = self.bell.wait(head, min(self._claim_every, 1.0))
            # New subscriptions may wait this long for their first delivery; it spares a
            # read of every subscription at every event.
            self._stopping.wait(KEEPER_PAUSE_SECONDS)

    def _claim(self) -> None:
        started = time.monotonic()
        now = now_us()
        expires = now + round(self.config.lease_seconds * 1_000_000)
        with self.db.bookkeeping() as books:
            held = books.claim_leases(self.owner, now, expires)
        # Safe a little short of the expiry, for clocks and the time the claim took.
        safe_until = started + self.config.lease_seconds * 0.8
        with self._lock:
            self._held_until = {h.webhook_id: safe_until for h in held}

    def _staff(self, subs: dict[int, Subscription]) -> None:
        """A worker for every subscription held; the edited one's worker told."""
        with self._lock:
            for webhook_id in self._held_until:
                sub = subs.get(webhook_id)
                if sub is None:
                    continue
                worker = self._workers.get(webhook_id)
                if worker is None:
                    worker = self._workers[webhook_id] = _Worker(self, sub)
                    worker.thread.start()
                elif worker.sub.created != sub.created:
                    worker.retired = True  # its successor starts once it has ended
                    worker.wake.set()
                elif worker.sub != sub:
                    worker.sub = sub
