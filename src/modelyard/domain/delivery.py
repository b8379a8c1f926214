"""What a webhook delivery sends and when it tries again: Standard Webhooks signing, the
message id, the body, and the retry schedule.

Signing follows the Standard Webhooks specification (standardwebhooks.com), so a receiver
verifies with any of its libraries: ``webhook-id``, ``webhook-timestamp`` (seconds, the
time of this attempt: receivers refuse stale ones, which defeats replays) and
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` under the secret
``whsec_<base64>``. The id is derived from the subscription and the event, so every retry
and every redelivery of one event to one subscription carries the same id and a receiver
can drop the copies that at-least-once delivery sends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from modelyard.domain.errors import InvalidInput
from modelyard.domain.events import AliasDeleted, AliasSet, JournalEvent, VersionEvent
from modelyard.domain.models import Event, Model, Version, iso, parse_iso
from modelyard.domain.webhooks import SECRET_PREFIX

TEST_KIND = "webhook.test"  # the type of the body ``webhooks test`` sends, not a journal kind


def message_id(webhook_id: int, event_hash: str) -> str:
    """The ``webhook-id`` of one event's delivery to one subscription, retries included.

    The event's hash, not its seq, so two registries (or one restored from a backup into
    another journal) never send one id for different events."""
    digest = hashlib.sha256(f"{webhook_id}:{event_hash}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def sign(secret: str, message: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` and base64 of the HMAC-SHA256."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secret: str, message: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message, timestamp, body),
    }


def version_of(event: JournalEvent) -> int | None:
    """The version an event is about, for the summary the body carries: a version's own
    events, and the version an alias now names (or named, when it was deleted)."""
    if isinstance(event, VersionEvent):
        return event.version
    if isinstance(event, AliasSet):
        return event.after
    if isinstance(event, AliasDeleted):
        return event.before
    return None


def version_summary(version: Version) -> dict[str, Any]:
    """A version as the REST API gives it, without its file list and environment (which
    can be long; a receiver that needs them asks the API)."""
    summary = version.as_dict(environment=False)
    del summary["files"], summary["environment"]
    summary["files"] = len(version.files)
    return summary


def event_body(event: Event, model: Model | None, version: Version | None) -> bytes:
    """The body of an event's delivery: its kind, its time and, as ``data``, the event as
    ``GET /api/v1/events`` gives it with the model and the version as they are now (None
    once deleted), so a receiver can act without calling back."""
    data = {
        "event": event.as_dict(),
        "model": model.as_dict() if model else None,
        "version": version_summary(version) if version else None,
    }
    return _body(event.kind, event.time, data)


def probe_body(webhook_id: int, now: datetime) -> bytes:
    """What ``webhooks test`` sends: signed like an event, of type ``webhook.test``."""
    return _body(TEST_KIND, now, {"webhook": webhook_id, "message": "a test from Modelyard"})


def _body(kind: str, time: datetime, data: dict[str, Any]) -> bytes:
    document = {"type": kind, "timestamp": iso(time), "data": data}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


# -- outcomes and retries ------------------------------------------------------------------


def error_class_of(status: int) -> str | None:
    """None when ``status`` means delivered (2xx); else what the log calls the failure."""
    if 200 <= status < 300:
        return None
    if status == 410:
        return "gone"
    if 300 <= status < 400:
        return "redirect"  # never followed: a receiver that moved is told by its owner
    return "client_error" if status < 500 else "server_error"


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Exponential backoff with jitter: the n-th retry waits about ``first * 2**(n-1)``
    seconds, at most ``longest``, drawn between half and all of it so that receivers that
    failed together are not retried together; retries go on until ``give_up_after``
    seconds have passed since the first attempt. The defaults retry for a day, which a
    receiver down over a night recovers from.
    """

    first: float = 5.0
    longest: float = 3600.0
    give_up_after: float = 86_400.0

    @classmethod
    def parse(cls, text: str) -> RetrySchedule:
        """``FIRST,LONGEST,GIVE_UP_AFTER`` in seconds (MODELYARD_WEBHOOK_RETRIES)."""
        try:
            first, longest, give_up = (float(part) for part in text.split(","))
        except ValueError:
            raise InvalidInput(
                f"webhook retries {text!r}: give FIRST,LONGEST,GIVE_UP_AFTER in seconds,"
                " such as 5,3600,86400"
            ) from None
        if not 0 < first <= longest <= give_up:
            raise InvalidInput(
                f"webhook retries {text!r}: need 0 < FIRST <= LONGEST <= GIVE_UP_AFTER"
            )
        return cls(first, longest, give_up)

    def delay(
        self,
        attempts: int,
        since_first: float,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds until the next attempt after ``attempts`` failed ones, or None: give up.

        A receiver's Retry-After is honoured (never retried sooner), up to ``longest``.
        """
        if since_first >= self.give_up_after:
            return None
        ceiling = min(self.longest, self.first * 2.0 ** min(attempts - 1, 60))
        wait = (rng or random).uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.longest))
        # The last attempt comes at the deadline, not past it by up to an hour.
        return min(wait, max(self.give_up_after - since_first, 0.0))


def parse_retry_after(text: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from now: a number of seconds or an HTTP date; None if
    absent or unreadable (then the schedule alone decides)."""
    if not text:
        return None
    text = text.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max((when - now).total_seconds(), 0.0)


# -- the delivery log ----------------------------------------------------------------------

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try: when, the answer's status (None: no answer), how long, what went wrong,
    and at most a short prefix of the answer's body (shown to admins only)."""

    at: datetime
    status: int | None
    latency_us: int
    error_class: str | None
    response_prefix: str | None

    def as_dict(self, *, with_response: bool) -> dict[str, Any]:
        answer = {
            "at": iso(self.at),
            "status": self.status,
            "latency_ms": round(self.latency_us / 1000, 3),
            "error_class": self.error_class,
        }
        if with_response:
            answer["response_prefix"] = self.response_prefix
        return answer

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attempt:
        return cls(
            at=parse_iso(data["at"]),
            status=data.get("status"),
            latency_us=round(float(data["latency_ms"]) * 1000),
            error_class=data.get("error_class"),
            response_prefix=data.get("response_prefix"),
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event's delivery to one subscription (or a redelivery someone asked for)."""

    id: int
    webhook_id: int
    seq: int
    message_id: str
    status: str  # pending, delivered, failed
    redelivery: bool
    next_attempt: datetime | None
    created: datetime
    updated: datetime
    attempts: tuple[Attempt, ...]

    def as_dict(self, *, with_response: bool = False) -> dict[str, Any]:
        return {
            "id": self.id,
            "webhook_id": self.webhook_id,
            "seq": self.seq,
            "message_id": self.message_id,
            "status": self.status,
            "redelivery": self.redelivery,
            "next_attempt": iso(self.next_attempt) if self.next_attempt else None,
            "created": iso(self.created),
            "updated": iso(self.updated),
            "attempts": [a.as_dict(with_response=with_response) for a in self.attempts],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Delivery:
        return cls(
            id=int(data["id"]),
            webhook_id=int(data["webhook_id"]),
            seq=int(data["seq"]),
            message_id=data["message_id"],
            status=data["status"],
            redelivery=bool(data.get("redelivery")),
            next_attempt=parse_iso(data["next_attempt"]) if data.get("next_attempt") else None,
            created=parse_iso(data["created"]),
            updated=parse_iso(data["updated"]),
            attempts=tuple(Attempt.from_dict(a) for a in data.get("attempts") or ()),
        )


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What ``webhooks test`` reports: the status and the latency, never the body."""

    status: int | None
    latency_us: int
    error_class: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "latency_ms": round(self.latency_us / 1000, 3),
            "error_class": self.error_class,
            "delivered": self.error_class is None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeResult:
        return cls(
            status=data.get("status"),
            latency_us=round(float(data["latency_ms"]) * 1000),
            error_class=data.get("error_class"),
        )
