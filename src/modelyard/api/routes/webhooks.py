"""Webhook subscriptions: subscribe, list, edit, pause, rotate the secret, unsubscribe.

A model's maintainers manage its webhooks, admins the registry-wide ones; to anyone else a
webhook is 404, as if it did not exist. Only creating and rotating answer the secret. They
also read its delivery log, redeliver events and send it a test.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from modelyard.api.deps import caller, json_response, needs, service
from modelyard.api.schemas import (
    DeliveryListOut,
    NewWebhookOut,
    ProbeOut,
    RedeliveredOut,
    WebhookDisableIn,
    WebhookIn,
    WebhookListOut,
    WebhookOut,
    WebhookPatchIn,
    WebhookRedeliverIn,
)
from modelyard.domain.pagination import DEFAULT_PAGE_SIZE
from modelyard.service.webhooks import WebhookService

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])
WebhookId = Annotated[int, Path(ge=1, le=2**31 - 1)]
MANAGE = needs("webhook.manage")


def webhooks(request: Request) -> WebhookService:
    return service(request).webhooks


@router.post(
    "",
    status_code=201,
    response_model=NewWebhookOut,
    openapi_extra=MANAGE,
    operation_id="create_webhook",
)
def create_webhook(body: WebhookIn, request: Request) -> Response:
    """Subscribe a URL to events of one model (its maintainers) or of every model (admins).

    The answer carries the signing secret once; the registry keeps it encrypted. The URL
    must be https to a public address unless an admin allowed more.
    """
    made = webhooks(request).create(
        caller(request),
        url=body.url,
        events=body.events,
        model=body.model,
        description=body.description,
    )
    return json_response(made.as_dict(), status=201)


@router.get("", response_model=WebhookListOut, openapi_extra=needs("authenticated"))
def list_webhooks(
    request: Request, model: Annotated[str | None, Query(max_length=128)] = None
) -> Response:
    """The webhooks you may manage (of one model, with `model`)."""
    found = webhooks(request).list(caller(request), model=model)
    return json_response({"items": [s.as_dict() for s in found]})


@router.get("/{webhook_id}", response_model=WebhookOut, openapi_extra=MANAGE)
def get_webhook(webhook_id: WebhookId, request: Request) -> Response:
    return json_response(webhooks(request).get(caller(request), webhook_id).as_dict())


@router.patch("/{webhook_id}", response_model=WebhookOut, openapi_extra=MANAGE)
def update_webhook(webhook_id: WebhookId, body: WebhookPatchIn, request: Request) -> Response:
    """Change the URL, the events or the description (the fields given)."""
    updated = webhooks(request).update(
        caller(request),
        webhook_id,
        url=body.url,
        events=body.events,
        description=body.description,
    )
    return json_response(updated.as_dict())


@router.delete("/{webhook_id}", status_code=204, openapi_extra=MANAGE)
def delete_webhook(webhook_id: WebhookId, request: Request) -> Response:
    """Unsubscribe: the webhook goes, with its deliveries and their log."""
    webhooks(request).delete(caller(request), webhook_id)
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret", response_model=NewWebhookOut, openapi_extra=MANAGE)
def rotate_webhook_secret(webhook_id: WebhookId, request: Request) -> Response:
    """A new signing secret, in this answer only; the old one signs nothing from now on."""
    return json_response(webhooks(request).rotate_secret(caller(request), webhook_id).as_dict())


@router.post("/{webhook_id}/disable", response_model=WebhookOut, openapi_extra=MANAGE)
def disable_webhook(
    webhook_id: WebhookId, request: Request, body: WebhookDisableIn | None = None
) -> Response:
    """Stop deliveries until enabled again."""
    reason = body.reason if body is not None else ""
    return json_response(webhooks(request).disable(caller(request), webhook_id, reason).as_dict())


@router.post("/{webhook_id}/enable", response_model=WebhookOut, openapi_extra=MANAGE)
def enable_webhook(webhook_id: WebhookId, request: Request) -> Response:
    """Deliver again; the URL is checked again against the outbound policy."""
    return json_response(webhooks(request).enable(caller(request), webhook_id).as_dict())


@router.post("/{webhook_id}/test", response_model=ProbeOut, openapi_extra=MANAGE)
def test_webhook(webhook_id: WebhookId, request: Request) -> Response:
    """Send a signed `webhook.test` message now: the answer's status and latency, never
    its body (it could be an internal page)."""
    return json_response(webhooks(request).send_test(caller(request), webhook_id).as_dict())


@router.get("/{webhook_id}/deliveries", response_model=DeliveryListOut, openapi_extra=MANAGE)
def list_deliveries(
    webhook_id: WebhookId,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = DEFAULT_PAGE_SIZE,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    first_seq: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    last_seq: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> Response:
    """The webhook's deliveries, newest first, each with its attempts: time, status,
    latency, error class; the first bytes of the answer for admins only."""
    found = webhooks(request).deliveries(
        caller(request),
        webhook_id,
        limit=limit,
        before=before,
        first_seq=first_seq,
        last_seq=last_seq,
    )
    older = found[-1].id if len(found) == limit else None
    items = [d.as_dict(with_response=True) for d in found]
    return json_response({"items": items, "next_before": older})


@router.post("/{webhook_id}/redeliver", response_model=RedeliveredOut, openapi_extra=MANAGE)
def redeliver(webhook_id: WebhookId, body: WebhookRedeliverIn, request: Request) -> Response:
    """Send events again (one, or `first_seq` to `last_seq`), those the webhook would
    receive, with their original `webhook-id`s, ahead of new events."""
    queued = webhooks(request).redeliver(caller(request), webhook_id, body.first_seq, body.last_seq)
    return json_response({"queued": queued})
