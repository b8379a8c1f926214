"""The journal's hash chain: hash = sha256(prev_hash || canonical_json(event)).

Kept pure so that the server that writes the chain and whoever verifies it (the CLI,
over the REST API, trusting nothing but the events it reads) compute the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from modelyard.domain.models import Event, to_us

GENESIS_HASH = "0" * 64


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(
    prev_hash: str,
    *,
    seq: int,
    time_us: int,
    actor: str,
    kind: str,
    subject: str,
    payload: dict[str, Any],
    token_id: str | None = None,
) -> str:
    fields: dict[str, Any] = {
        "seq": seq,
        "time_us": time_us,
        "actor": actor,
        "kind": kind,
        "subject": subject,
        "payload": payload,
    }
    # Hashed only when present, so that events written before tokens existed keep theirs.
    if token_id is not None:
        fields["token_id"] = token_id
    body = canonical_json(fields)
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class JournalReport:
    """The outcome of recomputing the chain: how many events, and the first broken link."""

    events: int
    ok: bool
    first_broken_seq: int | None = None
    reason: str | None = None


def verify_chain(events: Iterable[Event]) -> JournalReport:
    """Recompute every hash from the genesis and stop at the first event that disagrees."""
    prev = GENESIS_HASH
    count = 0
    for event in events:
        count += 1
        if event.seq != count:
            return JournalReport(count, False, count, f"event {count} is missing")
        if event.prev_hash != prev:
            return JournalReport(
                count, False, event.seq, "its prev_hash is not the previous event's hash"
            )
        computed = event_hash(
            prev,
            seq=event.seq,
            time_us=to_us(event.time),
            actor=event.actor,
            kind=event.kind,
            subject=event.subject,
            payload=event.payload,
            token_id=event.token_id,
        )
        if computed != event.hash:
            return JournalReport(count, False, event.seq, "its content does not match its hash")
        prev = event.hash
    return JournalReport(count, True)
