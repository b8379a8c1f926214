"""Webhook subscriptions as use cases: subscribe, list, edit, pause, rotate the secret.

Who may manage: a model's maintainers manage its webhooks, admins the registry-wide ones
(and every other). To anyone else a webhook answers exactly what a missing one does (404
``webhook_not_found``), so its existence leaks to nobody; a read-only token manages none.
A subscription's URL is checked by the outbound policy (https, a public address, unless
an admin allowed more) when subscribing, on every change of URL and when enabled again.

Every change is journaled (``webhook.*``, under the subscription's model: whoever reads
the model's journal sees its URLs, which are no secret). The signing secret is in no
event, answer or log: it is shown once, by ``create`` and ``rotate_secret``, and kept
sealed under a key derived from the server's.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from modelyard.domain.access import MINIMUM_ROLE, Caller, Permission, Role
from modelyard.domain.delivery import Delivery, ProbeResult
from modelyard.domain.errors import Conflict, NotFound
from modelyard.domain.events import (
    WebhookChange,
    WebhookCreated,
    WebhookDeleted,
    WebhookDisabled,
    WebhookEnabled,
    WebhookEvent,
    WebhookSecretRotated,
    WebhookUpdated,
)
from modelyard.domain.keys import ServerKey
from modelyard.domain.names import validate_model_name
from modelyard.domain.webhooks import (
    MAX_DESCRIPTION,
    MAX_REASON,
    MAX_SUBSCRIPTIONS,
    NewSubscription,
    SecretBox,
    Subscription,
    new_secret,
    parse_event_filter,
    validate_text,
)
from modelyard.service.access import AccessControl
from modelyard.service.delivery import DeliveryService
from modelyard.storage.db.store import Database, Reader, Writer, now_us

# Who acts when the registry itself disables a subscription (its receiver answered 410). A
# colon is not allowed in principal names, so no user, team or service account can be it.
SYSTEM = Caller(name="modelyard:delivery")

# Refuses a URL the server must not send to, malformed ones included (the outbound
# policy's check_url: the one place that reads a webhook URL, here and at each delivery).
UrlCheck = Callable[[str], None]


def _permission(model: str | None) -> Permission:
    """What managing a webhook of this scope takes: registry-wide ones are for admins."""
    return Permission.MANAGE_WEBHOOKS if model is not None else Permission.ADMIN


def _manages(role: Role | None, model: str | None) -> bool:
    """Whether ``role``, the caller's on ``model``, manages that scope's webhooks."""
    return role is not None and role >= MINIMUM_ROLE[_permission(model)]


def _not_found(webhook_id: int) -> NotFound:
    return NotFound(f"webhook {webhook_id} not found", code="webhook_not_found")


def _event(cls: type[WebhookEvent], sub: Subscription, **fields: Any) -> WebhookEvent:
    return cls(sub.id, sub.model, sub.url, list(sub.events), **fields)


class WebhookService:
    def __init__(
        self,
        db: Database,
        access: AccessControl,
        key: ServerKey,
        check_url: UrlCheck,
        deliveries: DeliveryService,
    ) -> None:
        self.db = db
        self.access = access
        self._box = SecretBox(key.derive("webhook-secrets"))
        self._check_url = check_url
        self._deliveries = deliveries

    # -- reading ------------------------------------------------------------------------------

    def list(self, caller: Caller, *, model: str | None = None) -> list[Subscription]:
        """The subscriptions the caller may manage (of one model when ``model`` is given),
        by id: to others there are none."""
        if model is not None:
            validate_model_name(model)
        with self.db.read() as tx:
            found = tx.webhooks(None if model is None else [model])
            # The caller's roles on every scope listed, read once: not a query per webhook.
            roles = self.access.roles(caller, list({s.model for s in found}), tx)
            return [s for s in found if _manages(roles[s.model], s.model)]

    def get(self, caller: Caller, webhook_id: int) -> Subscription:
        with self.db.read() as tx:
            return self._manageable(tx, caller, webhook_id)

    def may_manage(self, caller: Caller, model: str | None) -> bool:
        """Whether the caller may create and manage webhooks of this scope (None: the
        registry-wide ones): for an adapter deciding what to offer, never instead of the
        check each action makes."""
        return self.access.allows(caller, _permission(model), model)

    def secret_of(self, webhook_id: int) -> str:
        """The signing secret, for delivery only (server-internal: no caller, no check)."""
        with self.db.read() as tx:
            sealed = tx.webhook_secret(webhook_id)
        if sealed is None:
            raise _not_found(webhook_id)
        return self._box.open(webhook_id, sealed)

    # -- changing -----------------------------------------------------------------------------

    def create(
        self,
        caller: Caller,
        *,
        url: str,
        events: Sequence[str],
        model: str | None = None,
        description: str = "",
    ) -> NewSubscription:
        """Subscribe ``url`` to ``events`` of one model (or, for an admin, of every model);
        answers the subscription and its signing secret, which is never shown again.

        It receives the events appended from now on: its cursor starts at the journal's
        head, so its own ``webhook.created`` is the first it may receive.
        """
        if model is not None:
            validate_model_name(model)
        self.access.require(caller, _permission(model), model)
        kinds = parse_event_filter(events)
        validate_text(description, "description", MAX_DESCRIPTION)
        # Before the write transaction: resolving a name can take seconds, and a write
        # holds the journal's lock (every registration would wait).
        self._check_url(url)
        secret = new_secret()
        with self.db.write() as tx:
            if model is not None and tx.model_id(model) is None:
                raise NotFound(f"model {model!r} not found", code="model_not_found")
            if tx.count_webhooks(model) >= MAX_SUBSCRIPTIONS:
                where = f"model {model!r}" if model else "the registry"
                raise Conflict(
                    f"{where} already has {MAX_SUBSCRIPTIONS} webhooks, the most it may have;"
                    " delete one, or subscribe one receiver to more events",
                    code="too_many_webhooks",
                )
            now = now_us()
            webhook_id = tx.insert_webhook(
                model=model,
                url=url,
                events=kinds,
                description=description,
                creator=caller.name,
                creator_id=caller.principal_id,
                cursor=tx.head_seq,
                now=now,
            )
            tx.set_webhook_secret(webhook_id, self._box.seal(webhook_id, secret), now)
            created = self._load(tx, webhook_id)
            tx.append_event(
                caller, _event(WebhookCreated, created, description=description), now=now
            )
            return NewSubscription(created, secret)

    def update(
        self,
        caller: Caller,
        webhook_id: int,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | None = None,
    ) -> Subscription:
        """Change the URL, the event filter or the description (those given); the same
        values again change nothing and journal nothing."""
        kinds = parse_event_filter(events) if events is not None else None
        if description is not None:
            validate_text(description, "description", MAX_DESCRIPTION)
        with self.db.read() as tx:
            current = self._manageable(tx, caller, webhook_id)
        if url is not None and url != current.url:
            self._check_url(url)
        with self.db.write() as tx:
            current = self._manageable(tx, caller, webhook_id)
            before: WebhookChange = {}
            after: WebhookChange = {}
            if url is not None and url != current.url:
                before["url"], after["url"] = current.url, url
            if kinds is not None and kinds != current.events:
                before["events"], after["events"] = list(current.events), list(kinds)
            if description is not None and description != current.description:
                before["description"], after["description"] = current.description, description
            if not after:
                return current
            now = now_us()
            tx.update_webhook(webhook_id, now=now, url=url, events=kinds, description=description)
            updated = self._load(tx, webhook_id)
            tx.append_event(
                caller, _event(WebhookUpdated, updated, before=before, after=after), now=now
            )
            return updated

    def disable(self, caller: Caller, webhook_id: int, reason: str = "") -> Subscription:
        """Stop deliveries until enabled again (a disabled one stays disabled)."""
        validate_text(reason, "reason", MAX_REASON)
        with self.db.write() as tx:
            return self._disable(tx, caller, self._manageable(tx, caller, webhook_id), reason)

    def disabled_by_receiver(self, webhook_id: int, reason: str) -> None:
        """Delivery's: the receiver answered 410 Gone. Journaled as the registry itself
        (``modelyard:delivery``); a webhook deleted or disabled meanwhile is left alone."""
        with self.db.write() as tx:
            current = tx.webhook(webhook_id)
            if current is not None:
                self._disable(tx, SYSTEM, current, reason[:MAX_REASON])

    def enable(self, caller: Caller, webhook_id: int) -> Subscription:
        """Deliver again. The URL is checked again: the policy, or its DNS, may have
        changed since it was subscribed."""
        current = self.get(caller, webhook_id)
        if current.enabled:
            return current
        self._check_url(current.url)
        with self.db.write() as tx:
            current = self._manageable(tx, caller, webhook_id)
            if current.enabled:
                return current
            now = now_us()
            tx.set_webhook_enabled(webhook_id, True, None, now)
            enabled = self._load(tx, webhook_id)
            tx.append_event(caller, _event(WebhookEnabled, enabled), now=now)
            return enabled

    def rotate_secret(self, caller: Caller, webhook_id: int) -> NewSubscription:
        """A new signing secret, shown once; the old one signs nothing from now on."""
        secret = new_secret()
        with self.db.write() as tx:
            current = self._manageable(tx, caller, webhook_id)
            now = now_us()
            tx.set_webhook_secret(webhook_id, self._box.seal(webhook_id, secret), now)
            rotated = self._load(tx, webhook_id)
            tx.append_event(caller, _event(WebhookSecretRotated, current), now=now)
            return NewSubscription(rotated, secret)

    def delete(self, caller: Caller, webhook_id: int) -> None:
        """Unsubscribe: the subscription goes, with its deliveries and their log."""
        with self.db.write() as tx:
            current = self._manageable(tx, caller, webhook_id)
            tx.delete_webhook(webhook_id)
            tx.append_event(caller, _event(WebhookDeleted, current), now=now_us())

    # -- delivery, for those who manage the webhook ------------------------------------------

    def deliveries(
        self,
        caller: Caller,
        webhook_id: int,
        *,
        limit: int | None = None,
        before: int | None = None,
        first_seq: int | None = None,
        last_seq: int | None = None,
    ) -> builtins.list[Delivery]:  # (``list`` is a method here)
        """The webhook's delivery log, newest first (``before``: a delivery's id, to page
        back), each delivery with its attempts. The first bytes of each answer's body only
        for admins: a receiver's answer may be an internal page its managers should not
        read through the registry."""
        self.get(caller, webhook_id)
        found = self._deliveries.log(
            webhook_id, limit=limit, before=before, first_seq=first_seq, last_seq=last_seq
        )
        if self.access.role(caller, None) is Role.ADMIN:
            return found
        return [_without_answers(d) for d in found]

    def redeliver(
        self, caller: Caller, webhook_id: int, first_seq: int, last_seq: int | None = None
    ) -> int:
        """Send the event ``first_seq`` (to ``last_seq``) again, those the webhook would
        receive, with their original ``webhook-id``s; how many were queued."""
        self.get(caller, webhook_id)
        last = first_seq if last_seq is None else last_seq
        return self._deliveries.redeliver(webhook_id, first_seq, last)

    def send_test(self, caller: Caller, webhook_id: int) -> ProbeResult:
        """Send a signed ``webhook.test`` now (enabled or not): the status and the latency
        of the answer, never its body."""
        subscription = self.get(caller, webhook_id)
        return self._deliveries.send_test(subscription, self.secret_of(webhook_id))

    # -- the rule -----------------------------------------------------------------------------

    def _may_manage(self, tx: Reader, caller: Caller, model: str | None) -> bool:
        return _manages(self.access.role(caller, model, tx), model)

    def _manageable(self, tx: Reader, caller: Caller, webhook_id: int) -> Subscription:
        """The subscription, if the caller may manage it; else exactly a missing one's 404."""
        found = tx.webhook(webhook_id)
        if found is None or not self._may_manage(tx, caller, found.model):
            raise _not_found(webhook_id)
        return found

    def _load(self, tx: Reader, webhook_id: int) -> Subscription:
        found = tx.webhook(webhook_id)
        assert found is not None  # read in the transaction that wrote it
        return found

    def _disable(
        self, tx: Writer, caller: Caller, current: Subscription, reason: str
    ) -> Subscription:
        if not current.enabled:
            return current
        now = now_us()
        tx.set_webhook_enabled(current.id, False, reason, now)
        disabled = self._load(tx, current.id)
        tx.append_event(caller, _event(WebhookDisabled, disabled, reason=reason), now=now)
        return disabled


def _without_answers(delivery: Delivery) -> Delivery:
    """A delivery as its managers who are not admins see it: no answer's body."""
    attempts = tuple(replace(a, response_prefix=None) for a in delivery.attempts)
    return replace(delivery, attempts=attempts)
