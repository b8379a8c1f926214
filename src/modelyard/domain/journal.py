"""The journal's hash chain: hash = sha256(prev_hash || canonical_json(event)).

Kept pure so that the server that writes the chain and whoever verifies it (the CLI,
over the REST API, trusting nothing but the events it reads) compute the same bytes.

Chain versions: version 1 hashed seq, time, actor, kind, subject, payload and (when
present) the token; version 2 also covers the event's model, which history, as-of answers
and visibility depend on, and its own version number. Events keep the version they were
written with, so journals written before version 2 still verify; once an event of
version 2 exists no later one may be older.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from modelyard.domain.errors import InvalidInput
from modelyard.domain.models import Event, to_us
from modelyard.domain.projection import Difference

GENESIS_HASH = "0" * 64
CHAIN_VERSION = 2
_CHECKPOINT_RE = re.compile(r"([0-9]{1,18}):([0-9a-f]{64})")


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
    model: str | None = None,
    chain: int = CHAIN_VERSION,
) -> str:
    fields: dict[str, Any] = {
        "seq": seq,
        "time_us": time_us,
        "actor": actor,
        "kind": kind,
        "subject": subject,
        "payload": payload,
    }
    if chain == 1:
        # The token only when present, so that events written before tokens kept theirs.
        if token_id is not None:
            fields["token_id"] = token_id
    else:
        fields.update(chain=chain, token_id=token_id, model=model)
    body = canonical_json(fields)
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One event of the journal, named by its sequence number and hash (``SEQ:HASH``): an
    auditor keeps one outside the registry to prove later that nothing before it changed
    and that the journal still reaches it."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        found = _CHECKPOINT_RE.fullmatch(text.strip())
        if found is None:
            raise InvalidInput(
                f"{text!r} is not a checkpoint: expected SEQ:HASH, as 'modelyard journal head'"
                " prints it (e.g. 42:3f2a...; 64 lowercase hex digits)"
            )
        return cls(int(found.group(1)), found.group(2))

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "checkpoint": str(self)}


@dataclass(frozen=True, slots=True)
class JournalReport:
    """The outcome of recomputing the chain: how many events, the first broken link or
    the newest event verified, and (``verify --state``) where the tables differ."""

    events: int
    ok: bool
    first_broken_seq: int | None = None
    reason: str | None = None
    head: Checkpoint | None = None
    differences: tuple[Difference, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "ok": self.ok,
            "first_broken_seq": self.first_broken_seq,
            "reason": self.reason,
            "head": str(self.head) if self.head else None,
            "differences": [d.as_dict() for d in self.differences],
        }


def verify_chain(
    events: Iterable[Event],
    *,
    head: Checkpoint | None = None,
    checkpoint: Checkpoint | None = None,
) -> JournalReport:
    """Recompute every hash from the genesis and stop at the first event that disagrees.

    ``head``: the registry's record of its newest event (read before the events): the
    chain must reach it, so deleting the newest events is caught. ``checkpoint``: an
    event an auditor kept; the journal must still hold that exact event.
    """
    marks = [(m, what) for m, what in ((head, "head"), (checkpoint, "checkpoint")) if m]
    prev = GENESIS_HASH
    count = 0
    newest = 1
    for event in events:
        count += 1
        broken = _broken_link(event, count, prev, newest)
        if broken is not None:
            return JournalReport(count, False, count, broken)
        for mark, what in marks:
            if mark.seq == event.seq and mark.hash != event.hash:
                return JournalReport(count, False, event.seq, _rewritten(mark, what))
        prev, newest = event.hash, max(newest, event.chain)
    for mark, what in marks:
        if mark.seq > count:
            return JournalReport(count, False, count + 1, _missing(mark, what, count))
    return JournalReport(count, True, head=Checkpoint(count, prev))


def verify_slice(events: Iterable[Event]) -> JournalReport:
    """Check some events of a journal, in order but not necessarily adjacent (a bundle
    carries those of the versions it holds): each one's content hashes to its hash from
    its own ``prev_hash``, seqs increase, chain versions never go back, and an event that
    follows another directly names its hash as ``prev_hash``. What lies between is not
    there to check; the slice's signature vouches for what is."""
    count = 0
    newest = 1
    previous: Event | None = None
    for event in events:
        count += 1
        after = previous.seq if previous is not None else 0
        broken = (
            (f"it comes after event {after}: out of order" if event.seq <= after else None)
            or _chain_flaw(event, newest)
            or (_unlinked(event, previous.hash) if previous and event.seq == after + 1 else None)
            or _altered(event, event.prev_hash)
        )
        if broken is not None:
            return JournalReport(count, False, event.seq, broken)
        previous, newest = event, max(newest, event.chain)
    head = Checkpoint(previous.seq, previous.hash) if previous is not None else None
    return JournalReport(count, True, head=head)


def _broken_link(event: Event, seq: int, prev: str, newest: int) -> str | None:
    """Why ``event`` cannot be the ``seq``th event after one hashing to ``prev``, if so."""
    if event.seq != seq:
        missing = f"event {seq}" if event.seq == seq + 1 else f"events {seq} to {event.seq - 1}"
        return f"{missing} missing: the journal skips from {seq - 1} to {event.seq}"
    return _chain_flaw(event, newest) or _unlinked(event, prev) or _altered(event, prev)


def _chain_flaw(event: Event, newest: int) -> str | None:
    if event.chain not in (1, CHAIN_VERSION):
        return f"it names chain version {event.chain}, which does not exist"
    if event.chain < newest:
        return f"it uses chain version {event.chain} after an event of version {newest}"
    return None


def _unlinked(event: Event, prev: str) -> str | None:
    if event.prev_hash != prev:
        return (
            f"its prev_hash is not the hash of event {event.seq - 1}: events were deleted,"
            " inserted or reordered here"
        )
    return None


def _altered(event: Event, prev: str) -> str | None:
    computed = event_hash(
        prev,
        seq=event.seq,
        time_us=to_us(event.time),
        actor=event.actor,
        kind=event.kind,
        subject=event.subject,
        payload=event.payload,
        token_id=event.token_id,
        model=event.model,
        chain=event.chain,
    )
    if computed != event.hash:
        return "its content does not match its hash: it was altered"
    return None


def _rewritten(mark: Checkpoint, what: str) -> str:
    if what == "head":
        return f"the registry's head names event {mark.seq} with another hash"
    return f"event {mark.seq} is not the one of the checkpoint: the journal was rewritten"


def _missing(mark: Checkpoint, what: str, count: int) -> str:
    holder = "the registry's head" if what == "head" else "the checkpoint"
    return (
        f"the journal ends at event {count} but {holder} is event {mark.seq}: the newest"
        f" {mark.seq - count} event(s) were deleted"
    )
