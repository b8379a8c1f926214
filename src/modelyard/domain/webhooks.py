"""Webhook subscriptions: what is sent where, the event filter, and the signing secret.

A subscription names a receiver's URL, the kinds of journal events it wants (exact kinds of
the catalogue, a family wildcard such as ``version.*``, or ``*``) and its scope: one model,
or the whole registry. Delivery signs every request with the subscription's secret, per the
Standard Webhooks specification; the secret is generated here, shown once, and kept only
sealed (AES-GCM) under a key derived from the server's secret, bound to the subscription's
id so that a sealed secret copied onto another row does not open.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, NamedTuple

from modelyard.domain.errors import InvalidInput, TooLarge
from modelyard.domain.events import CATALOGUE
from modelyard.domain.models import iso, parse_iso

SECRET_PREFIX: Final = "whsec_"
SECRET_BYTES: Final = 32  # Standard Webhooks asks for 24 to 64
MAX_DESCRIPTION: Final = 1000
MAX_FILTERS: Final = 64
# Per scope (one model, or the registry): each subscription is one more delivery of every
# event, so a scope cannot make the registry send without bound.
MAX_SUBSCRIPTIONS: Final = 50
MAX_REASON: Final = 500
_NONCE_BYTES: Final = 12
WILDCARD: Final = "*"


def families() -> list[str]:
    """The families of the catalogue (``version``, ``alias``, ...), for ``family.*``."""
    return sorted({kind.partition(".")[0] for kind in CATALOGUE})


def parse_event_filter(entries: Sequence[str]) -> tuple[str, ...]:
    """The filter as given, checked: each entry a catalogue kind, ``FAMILY.*`` or ``*``.

    An unknown kind is refused with the list of the known ones, rather than accepted and
    never matched: a typo would otherwise be a subscription that silently receives nothing.
    """
    if isinstance(entries, str) or not isinstance(entries, Sequence):
        raise InvalidInput("events must be a list of event kinds", code="invalid_event_filter")
    if not entries:
        raise InvalidInput(
            "name at least one event kind (or '*' for every event)", code="invalid_event_filter"
        )
    if len(entries) > MAX_FILTERS:
        raise TooLarge(f"an event filter has at most {MAX_FILTERS} entries")
    known_families = families()
    kept: list[str] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise InvalidInput("events must be strings", code="invalid_event_filter")
        family, dot, rest = entry.partition(".")
        wildcard = entry == WILDCARD or (rest == WILDCARD and dot and family in known_families)
        if not wildcard and entry not in CATALOGUE:
            raise InvalidInput(
                f"unknown event kind {entry!r}: use '*', one of the families"
                f" {', '.join(f + '.*' for f in known_families)},"
                f" or one of the kinds {', '.join(sorted(CATALOGUE))}",
                code="unknown_event_kind",
            )
        if entry not in kept:
            kept.append(entry)
    return tuple(kept)


def filter_matches(entries: Sequence[str], kind: str) -> bool:
    """Whether an event of ``kind`` passes a (parsed) filter."""
    wanted = (WILDCARD, kind, kind.partition(".")[0] + ".*")
    return any(e in wanted for e in entries)


# -- the secret --------------------------------------------------------------------------------


def new_secret() -> str:
    """A signing secret in the Standard Webhooks form: ``whsec_`` and base64 of 32 bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class SecretBox:
    """Seals and opens signing secrets with AES-GCM under one key (the server's, derived
    for this purpose). Each sealing draws a fresh nonce; the subscription's id is the
    associated data, so a sealed secret opens only on the row it was sealed for."""

    def __init__(self, key: bytes) -> None:
        # Imported here: the SDK and CLI read this module for Subscription and need no
        # cipher (cryptography costs them 14 ms of start-up).
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(<key>)"

    def seal(self, webhook_id: int, secret: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret.encode(), _bound_to(webhook_id))

    def open(self, webhook_id: int, sealed: bytes) -> str:
        """The secret; ValueError if it was sealed for another row or under another key."""
        from cryptography.exceptions import InvalidTag

        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, ciphertext, _bound_to(webhook_id)).decode()
        except InvalidTag:
            raise ValueError(
                f"the secret of webhook {webhook_id} does not open: sealed for another"
                " webhook, or under another server key (MODELYARD_SECRET_KEY changed?)"
            ) from None


def _bound_to(webhook_id: int) -> bytes:
    return f"modelyard webhook {webhook_id}".encode()


# -- values ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscription:
    """A webhook as everyone but its delivery sees it: never its secret."""

    id: int
    model: str | None  # None: every model of the registry
    url: str
    events: tuple[str, ...]
    description: str
    creator: str
    creator_id: int | None
    enabled: bool
    disabled_reason: str | None
    created: datetime
    updated: datetime

    def matches(self, kind: str) -> bool:
        """Whether events of ``kind`` are for this subscription (its filter; not its scope)."""
        return filter_matches(self.events, kind)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "url": self.url,
            "events": list(self.events),
            "description": self.description,
            "creator": self.creator,
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "created": iso(self.created),
            "updated": iso(self.updated),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Subscription:
        return cls(
            id=int(data["id"]),
            model=data.get("model"),
            url=data["url"],
            events=tuple(data.get("events") or ()),
            description=data.get("description") or "",
            creator=data.get("creator") or "",
            creator_id=None,  # server-internal
            enabled=bool(data.get("enabled")),
            disabled_reason=data.get("disabled_reason"),
            created=parse_iso(data["created"]),
            updated=parse_iso(data["updated"]),
        )


class NewSubscription(NamedTuple):
    """A subscription just created, or whose secret was just rotated: the only answers
    that carry the secret. It unpacks as ``(subscription, secret)``; its repr hides the
    secret, which must never reach a log."""

    subscription: Subscription
    secret: str

    def __repr__(self) -> str:
        return f"NewSubscription({self.subscription!r}, secret=<hidden>)"

    def as_dict(self) -> dict[str, Any]:
        return {**self.subscription.as_dict(), "secret": self.secret}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NewSubscription:
        return cls(Subscription.from_dict(data), data["secret"])
