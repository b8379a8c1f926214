"""Queries over webhook subscriptions, mixed into ``Reader`` and ``Writer`` (store.py).

The subscription as people manage it; its delivery state (cursor, lease) is the delivery's
bookkeeping (storage/db/deliveries.py), apart from the cursor's start, set at creation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from modelyard.domain.models import utc_from_us
from modelyard.domain.webhooks import Subscription
from modelyard.storage.db.tables import webhooks

_SUBSCRIPTIONS = select(
    webhooks.c.id,
    webhooks.c.model,
    webhooks.c.url,
    webhooks.c.events,
    webhooks.c.description,
    webhooks.c.creator,
    webhooks.c.creator_id,
    webhooks.c.enabled,
    webhooks.c.disabled_reason,
    webhooks.c.created_at,
    webhooks.c.updated_at,
).order_by(webhooks.c.id)


def subscription_from_row(row: Any) -> Subscription:
    (
        id_,
        model,
        url,
        events,
        description,
        creator,
        creator_id,
        enabled,
        reason,
        created,
        updated,
    ) = row
    return Subscription(
        id=int(id_),
        model=model,
        url=url,
        events=tuple(json.loads(events)),
        description=description,
        creator=creator,
        creator_id=creator_id,
        enabled=bool(enabled),
        disabled_reason=reason,
        created=utc_from_us(created),
        updated=utc_from_us(updated),
    )


class WebhooksReader:
    conn: Connection

    def webhook(self, webhook_id: int) -> Subscription | None:
        row = self.conn.execute(_SUBSCRIPTIONS.where(webhooks.c.id == webhook_id)).first()
        return subscription_from_row(row) if row else None

    def webhooks(self, models: Sequence[str | None] | None = None) -> list[Subscription]:
        """Every subscription, by id; or those of the named scopes (None in ``models``:
        the registry-wide ones)."""
        stmt = _SUBSCRIPTIONS
        if models is not None:
            named = webhooks.c.model.in_([m for m in models if m is not None])
            stmt = stmt.where(named | webhooks.c.model.is_(None) if None in models else named)
        return [subscription_from_row(r) for r in self.conn.execute(stmt)]

    def any_webhook(self) -> bool:
        """Whether any subscription exists, enabled or not (one row read at most)."""
        return self.conn.execute(select(webhooks.c.id).limit(1)).first() is not None

    def count_webhooks(self, model: str | None) -> int:
        """How many subscriptions a scope has (None: registry-wide)."""
        where = webhooks.c.model.is_(None) if model is None else webhooks.c.model == model
        stmt = select(func.count()).select_from(webhooks).where(where)
        return int(self.conn.execute(stmt).scalar_one())

    def webhook_secret(self, webhook_id: int) -> bytes | None:
        """The sealed secret (SecretBox), or None if there is no such subscription."""
        stmt = select(webhooks.c.secret).where(webhooks.c.id == webhook_id)
        found: bytes | None = self.conn.execute(stmt).scalar()
        return None if found is None else bytes(found)


class WebhooksWriter(WebhooksReader):
    def insert_webhook(
        self,
        *,
        model: str | None,
        url: str,
        events: Sequence[str],
        description: str,
        creator: str,
        creator_id: int | None,
        cursor: int,
        now: int,
    ) -> int:
        """A new, enabled subscription without its secret yet (it is sealed for the id this
        returns: ``set_webhook_secret``). Delivery starts after ``cursor``."""
        stmt = (
            insert(webhooks)
            .values(
                model=model,
                url=url,
                events=json.dumps(list(events)),
                description=description,
                secret=b"",
                creator=creator,
                creator_id=creator_id,
                enabled=True,
                disabled_reason=None,
                created_at=now,
                updated_at=now,
                cursor=cursor,
            )
            .returning(webhooks.c.id)
        )
        return int(self.conn.execute(stmt).scalar_one())

    def set_webhook_secret(self, webhook_id: int, sealed: bytes, now: int) -> None:
        self._update_webhook(webhook_id, {"secret": sealed, "updated_at": now})

    def update_webhook(
        self,
        webhook_id: int,
        *,
        now: int,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | None = None,
    ) -> None:
        values: dict[str, Any] = {"updated_at": now}
        if url is not None:
            values["url"] = url
        if events is not None:
            values["events"] = json.dumps(list(events))
        if description is not None:
            values["description"] = description
        self._update_webhook(webhook_id, values)

    def set_webhook_enabled(
        self, webhook_id: int, enabled: bool, reason: str | None, now: int
    ) -> None:
        """Enable (reason None) or disable with the reason."""
        self._update_webhook(
            webhook_id, {"enabled": enabled, "disabled_reason": reason, "updated_at": now}
        )

    def delete_webhook(self, webhook_id: int) -> None:
        """The subscription, and with it (cascade) its deliveries and their attempts."""
        self.conn.execute(delete(webhooks).where(webhooks.c.id == webhook_id))

    def _update_webhook(self, webhook_id: int, values: dict[str, Any]) -> None:
        self.conn.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(**values))
