"""Webhooks: the registry's (admins) and a model's (its maintainers), one webhook with its
settings and delivery log, and the forms that create, change, test, redeliver and delete
them. Every page and form calls ``service.webhooks``, which decides who may; a refusal is
the error page, status kept."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from modelyard.domain.delivery import ProbeResult
from modelyard.domain.events import CATALOGUE
from modelyard.service import RegistryService
from modelyard.service.webhooks import WebhookService
from modelyard.web.forms import (
    done,
    multiline,
    number,
    optional,
    posted,
    require_confirmation,
    text,
)
from modelyard.web.render import page
from modelyard.web.routing import page_router
from modelyard.web.session import web_caller

router = page_router()
DELIVERIES_PER_PAGE = 50


def _webhooks(request: Request) -> WebhookService:
    service: RegistryService = request.app.state.service
    return service.webhooks


async def _run(function: Any, *args: Any, **kwargs: Any) -> Any:
    """The service blocks (database, the receiver for a test): off the event loop."""
    return await run_in_threadpool(function, *args, **kwargs)


def webhook_page(webhook_id: int) -> str:
    return f"/webhooks/{webhook_id}"


def list_page(model: str | None) -> str:
    """Where a webhook is listed: its model's webhooks, or the registry's."""
    return f"/models/{quote(model, safe='')}/webhooks" if model else "/webhooks"


def events_of(form: FormData) -> list[str]:
    """The event filter as typed: kinds and family wildcards, by commas or lines (the
    service validates each against the catalogue)."""
    typed = multiline(form, "events").replace(",", "\n")
    return [kind.strip() for kind in typed.splitlines() if kind.strip()]


@router.get("/webhooks")
def registry_webhooks(request: Request) -> Response:
    """The webhooks the caller manages: every one for an admin, their models' for a
    maintainer, none for anyone else."""
    return _listing(request, None)


@router.get("/models/{name}/webhooks")
def model_webhooks(request: Request, name: str) -> Response:
    """A model's webhooks (for its maintainers; to others it has none)."""
    return _listing(request, name)


def _listing(request: Request, model: str | None) -> Response:
    caller, webhooks = web_caller(request), _webhooks(request)
    return page(
        request,
        "webhooks.html",
        model=model,
        webhooks=webhooks.list(caller, model=model),
        may_create=webhooks.may_manage(caller, model),
        kinds=sorted(CATALOGUE),
    )


@router.get("/webhooks/{webhook_id}")
def webhook(request: Request, webhook_id: int, before: int | None = None) -> Response:
    return _webhook(request, webhook_id, before=before)


def _webhook(
    request: Request,
    webhook_id: int,
    *,
    before: int | None = None,
    tested: ProbeResult | None = None,
) -> Response:
    """The page of one webhook: its settings, its forms and a page of its delivery log,
    newest first (and, answering the test form, the test's result)."""
    caller = web_caller(request)
    webhooks = _webhooks(request)
    subscription = webhooks.get(caller, webhook_id)
    log = webhooks.deliveries(caller, webhook_id, before=before, limit=DELIVERIES_PER_PAGE)
    return page(
        request,
        "webhook.html",
        hook=subscription,
        deliveries=log,
        older=log[-1].id if len(log) == DELIVERIES_PER_PAGE else None,
        paged=before is not None,
        listed_at=list_page(subscription.model),
        tested=tested,
    )


@router.post("/webhooks")
async def create(request: Request) -> Response:
    """The new signing secret is on this response only: it is stored encrypted and never
    shown again (the page, like every page, is ``Cache-Control: no-store``)."""
    form = await posted(request)
    subscription, secret = await _run(
        _webhooks(request).create,
        web_caller(request),
        url=text(form, "url", required=True),
        events=events_of(form),
        model=optional(form, "model"),
        description=text(form, "description"),
    )
    return page(
        request, "webhook_secret.html", status=201, hook=subscription, secret=secret, fresh=True
    )


@router.post("/webhooks/{webhook_id}/edit")
async def edit(request: Request, webhook_id: int) -> Response:
    form = await posted(request)
    await _run(
        _webhooks(request).update,
        web_caller(request),
        webhook_id,
        url=text(form, "url", required=True),
        events=events_of(form),
        description=text(form, "description"),
    )
    return done(webhook_page(webhook_id), "edited")


@router.post("/webhooks/{webhook_id}/disable")
async def disable(request: Request, webhook_id: int) -> Response:
    form = await posted(request)
    await _run(_webhooks(request).disable, web_caller(request), webhook_id, text(form, "reason"))
    return done(webhook_page(webhook_id), "webhook_disabled")


@router.post("/webhooks/{webhook_id}/enable")
async def enable(request: Request, webhook_id: int) -> Response:
    await posted(request)
    await _run(_webhooks(request).enable, web_caller(request), webhook_id)
    return done(webhook_page(webhook_id), "webhook_enabled")


@router.post("/webhooks/{webhook_id}/rotate")
async def rotate(request: Request, webhook_id: int) -> Response:
    """A new secret, shown on this response only; the old one stops signing at once."""
    form = await posted(request)
    require_confirmation(form, "replace the signing secret")
    subscription, secret = await _run(
        _webhooks(request).rotate_secret, web_caller(request), webhook_id
    )
    return page(
        request, "webhook_secret.html", status=200, hook=subscription, secret=secret, fresh=False
    )


@router.post("/webhooks/{webhook_id}/delete")
async def delete(request: Request, webhook_id: int) -> Response:
    form = await posted(request)
    require_confirmation(form, f"delete webhook {webhook_id}")
    webhooks, caller = _webhooks(request), web_caller(request)
    subscription = await _run(webhooks.get, caller, webhook_id)
    await _run(webhooks.delete, caller, webhook_id)
    return done(list_page(subscription.model), "webhook_deleted")


@router.post("/webhooks/{webhook_id}/test")
async def send_test(request: Request, webhook_id: int) -> Response:
    """Send a test event now and show its status and latency (never the receiver's body)."""
    await posted(request)
    result = await _run(_webhooks(request).send_test, web_caller(request), webhook_id)
    answer: Response = await _run(_webhook, request, webhook_id, tested=result)
    return answer


@router.post("/webhooks/{webhook_id}/redeliver")
async def redeliver(request: Request, webhook_id: int) -> Response:
    """Deliver the events from ``first`` to ``last`` (one when ``last`` is empty) again."""
    form = await posted(request)
    first = number(form, "first")
    last = number(form, "last") if optional(form, "last") else None
    queued = await _run(_webhooks(request).redeliver, web_caller(request), webhook_id, first, last)
    return done(webhook_page(webhook_id), "redelivered" if queued else "redelivered_none")
