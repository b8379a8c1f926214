"""Webhook delivery's bookkeeping: each subscription's cursor and lease, its deliveries and
their attempts.

This state is not journaled: it records what the server did with the journal (which is
the outbox), not a change anyone made, and it changes at every delivery. ``Bookkeeper``
is the transaction ``Database.bookkeeping()`` opens for it; it does not lock the journal
head, so delivering never queues behind registrations on PostgreSQL, and it can change
nothing but these columns and tables. Readers of the log (``DeliveriesReader``) are part of
every ``Reader``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    text,
    update,
)

from modelyard.domain.delivery import DELIVERED, PENDING, Attempt, Delivery
from modelyard.domain.models import utc_from_us
from modelyard.storage.db.prebuilt import Prebuilt
from modelyard.storage.db.tables import webhook_attempts, webhook_deliveries, webhooks

_DELIVERY_COLUMNS = (
    webhook_deliveries.c.id,
    webhook_deliveries.c.webhook_id,
    webhook_deliveries.c.seq,
    webhook_deliveries.c.message_id,
    webhook_deliveries.c.status,
    webhook_deliveries.c.redelivery,
    webhook_deliveries.c.next_attempt_at,
    webhook_deliveries.c.created_at,
    webhook_deliveries.c.updated_at,
)
_ATTEMPT_COLUMNS = (
    webhook_attempts.c.delivery_id,
    webhook_attempts.c.attempted_at,
    webhook_attempts.c.status_code,
    webhook_attempts.c.latency_us,
    webhook_attempts.c.error_class,
    webhook_attempts.c.response_prefix,
)
# The statements of every delivery, compiled once (Prebuilt): building them each time
# took half of the delivery process's time.
_INSERT_DELIVERY = Prebuilt(insert(webhook_deliveries).returning(webhook_deliveries.c.id))
_INSERT_ATTEMPT = Prebuilt(insert(webhook_attempts))
_INSERT_DELIVERIES = Prebuilt(insert(webhook_deliveries))
_DRAW_DELIVERY_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('webhook_deliveries', 'id')) FROM generate_series(1, :n)"
)
_MOVED = and_(webhooks.c.lease_owner == bindparam("owner"), webhooks.c.cursor < bindparam("target"))
_ADVANCE = Prebuilt(
    update(webhooks)
    .where(webhooks.c.id == bindparam("webhook"), webhooks.c.created_at == bindparam("created"))
    .values(cursor=case((_MOVED, bindparam("target")), else_=webhooks.c.cursor))
    .returning(webhooks.c.id)
)


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """An attempt as the deliverer writes it (times in microseconds)."""

    at_us: int
    status: int | None
    latency_us: int
    error_class: str | None
    response_prefix: str | None

    def row(self, delivery_id: int) -> dict[str, Any]:
        return {
            "delivery_id": delivery_id,
            "attempted_at": self.at_us,
            "status_code": self.status,
            "latency_us": self.latency_us,
            "error_class": self.error_class,
            "response_prefix": self.response_prefix,
        }


@dataclass(frozen=True, slots=True)
class Delivered:
    """A delivery that its first attempt delivered, as the ledger writes it."""

    webhook_id: int
    seq: int
    message_id: str
    attempt: AttemptRecord


@dataclass(frozen=True, slots=True)
class Held:
    """A subscription this replica holds the lease of, with its cursor."""

    webhook_id: int
    cursor: int


@dataclass(frozen=True, slots=True)
class Pending:
    """A delivery waiting for its next attempt (a retry, or a redelivery asked for)."""

    id: int
    seq: int
    message_id: str
    redelivery: bool
    attempts: int
    next_attempt_us: int
    created_us: int


def _delivery(row: Any, attempts: Sequence[Attempt]) -> Delivery:
    id_, webhook_id, seq, message, status, redelivery, next_at, created, updated = row
    return Delivery(
        id=int(id_),
        webhook_id=int(webhook_id),
        seq=int(seq),
        message_id=message,
        status=status,
        redelivery=bool(redelivery),
        next_attempt=utc_from_us(next_at) if next_at is not None else None,
        created=utc_from_us(created),
        updated=utc_from_us(updated),
        attempts=tuple(attempts),
    )


class DeliveriesReader:
    conn: Connection

    def deliveries(
        self,
        webhook_id: int,
        *,
        limit: int,
        before: int | None = None,
        first_seq: int | None = None,
        last_seq: int | None = None,
    ) -> list[Delivery]:
        """A subscription's deliveries, newest first, with their attempts in order."""
        stmt = select(*_DELIVERY_COLUMNS).where(webhook_deliveries.c.webhook_id == webhook_id)
        if before is not None:
            stmt = stmt.where(webhook_deliveries.c.id < before)
        if first_seq is not None:
            stmt = stmt.where(webhook_deliveries.c.seq >= first_seq)
        if last_seq is not None:
            stmt = stmt.where(webhook_deliveries.c.seq <= last_seq)
        rows = self.conn.execute(stmt.order_by(webhook_deliveries.c.id.desc()).limit(limit)).all()
        attempts: dict[int, list[Attempt]] = {int(row[0]): [] for row in rows}
        if attempts:
            found = self.conn.execute(
                select(*_ATTEMPT_COLUMNS)
                .where(webhook_attempts.c.delivery_id.in_(list(attempts)))
                .order_by(webhook_attempts.c.id)
            )
            for delivery_id, at, status, latency, error, prefix in found:
                attempts[int(delivery_id)].append(
                    Attempt(utc_from_us(at), status, int(latency), error, prefix)
                )
        return [_delivery(row, attempts[int(row[0])]) for row in rows]

    def pending_deliveries(self, webhook_id: int) -> list[Pending]:
        """What waits for an attempt, oldest first: its head holds the line."""
        stmt = (
            select(
                webhook_deliveries.c.id,
                webhook_deliveries.c.seq,
                webhook_deliveries.c.message_id,
                webhook_deliveries.c.redelivery,
                webhook_deliveries.c.attempts,
                webhook_deliveries.c.next_attempt_at,
                webhook_deliveries.c.created_at,
            )
            .where(
                webhook_deliveries.c.webhook_id == webhook_id,
                webhook_deliveries.c.status == PENDING,
            )
            .order_by(webhook_deliveries.c.id)
        )
        return [
            Pending(int(i), int(s), m, bool(r), int(a), int(n or 0), int(c))
            for i, s, m, r, a, n, c in self.conn.execute(stmt)
        ]

    def webhook_cursor(self, webhook_id: int) -> int | None:
        stmt = select(webhooks.c.cursor).where(webhooks.c.id == webhook_id)
        found = self.conn.execute(stmt).scalar()
        return None if found is None else int(found)


class Bookkeeper(DeliveriesReader):
    """The write transaction of delivery state (``Database.bookkeeping()``)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # -- leases ---------------------------------------------------------------------------

    def claim_leases(self, owner: str, now: int, expires: int) -> list[Held]:
        """Renew this owner's leases and take every enabled subscription's that is free or
        expired; answers what it holds now. On PostgreSQL each row's condition is
        re-checked under its row lock, so of two replicas claiming one lease, one wins."""
        self.conn.execute(
            update(webhooks)
            .where(webhooks.c.lease_owner == owner, ~webhooks.c.enabled)
            .values(lease_owner=None, lease_expires_at=None)
        )
        self.conn.execute(
            update(webhooks)
            .where(
                webhooks.c.enabled,
                or_(
                    webhooks.c.lease_owner == owner,
                    webhooks.c.lease_owner.is_(None),
                    webhooks.c.lease_expires_at < now,
                ),
            )
            .values(lease_owner=owner, lease_expires_at=expires)
        )
        stmt = (
            select(webhooks.c.id, webhooks.c.cursor)
            .where(webhooks.c.lease_owner == owner)
            .order_by(webhooks.c.id)
        )
        return [Held(int(i), int(c)) for i, c in self.conn.execute(stmt)]

    def release_leases(self, owner: str, webhook_ids: Sequence[int]) -> None:
        if webhook_ids:
            self.conn.execute(
                update(webhooks)
                .where(webhooks.c.lease_owner == owner, webhooks.c.id.in_(list(webhook_ids)))
                .values(lease_owner=None, lease_expires_at=None)
            )

    # -- progress -------------------------------------------------------------------------

    def advance(self, webhook_id: int, created_us: int, owner: str, cursor: int) -> bool:
        """Move the cursor forward, if this owner still holds the lease; False when the
        subscription is gone. A subscription is its id and its creation time: SQLite
        reuses the id of a deleted row, and a worker of the deleted one must not move the
        cursor of its successor. The update also locks the row (PostgreSQL) until commit,
        so the subscription cannot be deleted under the rows written next."""
        params = {"webhook": webhook_id, "created": created_us, "owner": owner, "target": cursor}
        return bool(_ADVANCE.rows(self.conn, params))

    def add_delivery(
        self,
        webhook_id: int,
        *,
        seq: int,
        message_id: str,
        status: str,
        redelivery: bool,
        attempts: Sequence[AttemptRecord],
        next_attempt_us: int | None,
        now: int,
    ) -> int:
        row = {
            "webhook_id": webhook_id,
            "seq": seq,
            "message_id": message_id,
            "status": status,
            "redelivery": redelivery,
            "attempts": len(attempts),
            "next_attempt_at": next_attempt_us,
            "created_at": now,
            "updated_at": now,
        }
        delivery_id = int(_INSERT_DELIVERY.scalar(self.conn, row))
        _INSERT_ATTEMPT.many(self.conn, [a.row(delivery_id) for a in attempts])
        return delivery_id

    def add_delivered(self, delivered: Sequence[Delivered], now: int) -> None:
        """Deliveries that succeeded, each with its one attempt, in three statements
        however many there are (the ledger writes them under SQLite's one write lock)."""
        if not delivered:
            return
        ids = self._new_delivery_ids(len(delivered))
        _INSERT_DELIVERIES.insert_all(
            self.conn,
            [
                {
                    "id": id_,
                    "webhook_id": d.webhook_id,
                    "seq": d.seq,
                    "message_id": d.message_id,
                    "status": DELIVERED,
                    "redelivery": False,
                    "attempts": 1,
                    "next_attempt_at": None,
                    "created_at": now,
                    "updated_at": now,
                }
                for id_, d in zip(ids, delivered, strict=True)
            ],
        )
        _INSERT_ATTEMPT.insert_all(
            self.conn, [d.attempt.row(id_) for id_, d in zip(ids, delivered, strict=True)]
        )

    def _new_delivery_ids(self, n: int) -> list[int]:
        """Ids for ``n`` new deliveries, in order, so their attempts can name them without
        a RETURNING row each. SQLite: past the largest (this transaction holds the write
        lock: nobody inserts meanwhile); PostgreSQL: drawn from the id's sequence."""
        if self.conn.dialect.name == "sqlite":
            top = select(func.coalesce(func.max(webhook_deliveries.c.id), 0))
            first = int(self.conn.execute(top).scalar_one()) + 1
            return list(range(first, first + n))
        drawn = self.conn.execute(_DRAW_DELIVERY_IDS, {"n": n}).scalars()
        return sorted(int(i) for i in drawn)

    def add_deliveries(self, webhook_id: int, rows: Sequence[dict[str, Any]]) -> None:
        """Many deliveries at once with no attempt yet (a redelivery asked for)."""
        if rows:
            self.conn.execute(
                insert(webhook_deliveries), [{"webhook_id": webhook_id, **r} for r in rows]
            )

    def record_attempt(
        self,
        delivery_id: int,
        attempt: AttemptRecord,
        *,
        status: str,
        attempts: int,
        next_attempt_us: int | None,
        now: int,
    ) -> None:
        """An attempt of a pending delivery and its state after it."""
        _INSERT_ATTEMPT.many(self.conn, [attempt.row(delivery_id)])
        self.conn.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.id == delivery_id)
            .values(
                status=status, attempts=attempts, next_attempt_at=next_attempt_us, updated_at=now
            )
        )
