"""modelyard webhooks: subscribe receivers to the registry's events, and manage them."""

from __future__ import annotations

from typing import Annotated

import typer

from modelyard.cli import output
from modelyard.cli.common import JsonOption, RegistryOption, handles_errors, registry
from modelyard.config import DEFAULT_URL
from modelyard.domain.delivery import Delivery
from modelyard.domain.errors import InvalidInput
from modelyard.domain.models import iso
from modelyard.domain.webhooks import NewSubscription, Subscription

webhooks_app = typer.Typer(
    help="Send the registry's events to other systems (CI, deployment, chat), signed per"
    " Standard Webhooks. A model's maintainers manage its webhooks; admins the"
    " registry-wide ones. In these commands --url is the receiver's; the registry is"
    " --registry (or MODELYARD_URL).\n\n"
    "[bold]Example[/bold]: modelyard webhooks create --url https://ci.example/hook"
    " --events 'version.stage,version.registered' --model churn",
    no_args_is_help=True,
)

WebhookId = Annotated[int, typer.Argument(help="The webhook's id (see webhooks list).", min=1)]
EventsOption = Annotated[
    str,
    typer.Option(
        "--events",
        help="Comma-separated event kinds (version.stage), families (version.*) or '*'"
        " for every event; docs/events.md lists the kinds.",
    ),
]


def install(app: typer.Typer) -> None:
    app.add_typer(webhooks_app, name="webhooks")


def _kinds(text: str) -> list[str]:
    return [kind.strip() for kind in text.split(",") if kind.strip()]


@webhooks_app.command("create")
@handles_errors
def create(
    webhook_url: Annotated[
        str, typer.Option("--url", help="Where to POST the events (https, a public address).")
    ],
    events: EventsOption,
    model: Annotated[
        str | None,
        typer.Option(help="The model whose events to send; every model's (admins) without it."),
    ] = None,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    registry_url: RegistryOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Subscribe a receiver to events; prints its signing secret once.

    The secret goes to stdout, alone: store it where the receiver reads it, it is not shown
    again (--json: the secret and the webhook's details).

    [bold]Example[/bold]: modelyard webhooks create --url https://ci.example/hook
    --events 'version.stage,version.registered' --model churn
    """
    with registry(registry_url) as reg:
        made = reg.create_webhook(webhook_url, _kinds(events), model=model, description=description)
    sub = made.subscription
    output.errors.print(
        f"webhook {sub.id} sends {', '.join(sub.events)} of {_scope(sub)} to"
        f" {output.escape(sub.url)}. Store its signing secret now: it is not shown again.",
        highlight=False,
    )
    _print_secret(made, json_out)


@webhooks_app.command("list")
@handles_errors
def list_(
    model: Annotated[str | None, typer.Option(help="Only this model's webhooks.")] = None,
    registry_url: RegistryOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """List the webhooks you may manage (never their secrets).

    [bold]Example[/bold]: modelyard webhooks list --model churn
    """
    with registry(registry_url) as reg:
        found = reg.webhooks(model)
    output.emit(json_out, {"items": [s.as_dict() for s in found]}, _table(found))


@webhooks_app.command("show")
@handles_errors
def show(
    webhook_id: WebhookId, registry_url: RegistryOption = DEFAULT_URL, json_out: JsonOption = False
) -> None:
    """Show one webhook.

    [bold]Example[/bold]: modelyard webhooks show 3
    """
    with registry(registry_url) as reg:
        sub = reg.webhook(webhook_id)
    output.emit(json_out, sub.as_dict(), _details(sub))


@webhooks_app.command("update")
@handles_errors
def update(
    webhook_id: WebhookId,
    webhook_url: Annotated[
        str | None, typer.Option("--url", help="A new receiver URL (checked again).")
    ] = None,
    events: Annotated[
        str | None, typer.Option("--events", help="A new comma-separated event filter.")
    ] = None,
    description: Annotated[str | None, typer.Option(help="A new description.")] = None,
    registry_url: RegistryOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Change a webhook's receiver URL, events or description (those given).

    [bold]Example[/bold]: modelyard webhooks update 3 --events 'version.*,request.*'
    """
    with registry(registry_url) as reg:
        sub = reg.update_webhook(
            webhook_id,
            url=webhook_url,
            events=_kinds(events) if events is not None else None,
            description=description,
        )
    output.emit(json_out, sub.as_dict(), f"updated webhook {sub.id}")


@webhooks_app.command("disable")
@handles_errors
def disable(
    webhook_id: WebhookId,
    reason: Annotated[str, typer.Option(help="Why, for the journal and the listing.")] = "",
    registry_url: RegistryOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Stop a webhook's deliveries until it is enabled again.

    [bold]Example[/bold]: modelyard webhooks disable 3 --reason 'receiver maintenance'
    """
    with registry(registry_url) as reg:
        sub = reg.disable_webhook(webhook_id, reason)
    output.emit(json_out, sub.as_dict(), f"disabled webhook {sub.id}")


@webhooks_app.command("enable")
@handles_errors
def enable(
    webhook_id: WebhookId, registry_url: RegistryOption = DEFAULT_URL, json_out: JsonOption = False
) -> None:
    """Deliver again (the URL is checked again against the registry's outbound policy).

    [bold]Example[/bold]: modelyard webhooks enable 3
    """
    with registry(registry_url) as reg:
        sub = reg.enable_webhook(webhook_id)
    output.emit(json_out, sub.as_dict(), f"enabled webhook {sub.id}")


@webhooks_app.command("rotate-secret")
@handles_errors
def rotate_secret(
    webhook_id: WebhookId, registry_url: RegistryOption = DEFAULT_URL, json_out: JsonOption = False
) -> None:
    """Make a new signing secret; prints it once.

    The old one signs nothing from now on, so give the receiver the new one.

    [bold]Example[/bold]: modelyard webhooks rotate-secret 3
    """
    with registry(registry_url) as reg:
        made = reg.rotate_webhook_secret(webhook_id)
    output.errors.print(
        f"webhook {made.subscription.id} has a new signing secret. Store it now: it is not"
        " shown again.",
        highlight=False,
    )
    _print_secret(made, json_out)


@webhooks_app.command("delete")
@handles_errors
def delete(
    webhook_id: WebhookId, registry_url: RegistryOption = DEFAULT_URL, json_out: JsonOption = False
) -> None:
    """Unsubscribe: the webhook goes, with its delivery log.

    [bold]Example[/bold]: modelyard webhooks delete 3
    """
    with registry(registry_url) as reg:
        reg.delete_webhook(webhook_id)
    output.emit(json_out, {"id": webhook_id, "deleted": True}, f"deleted webhook {webhook_id}")


@webhooks_app.command("test")
@handles_errors
def test(
    webhook_id: WebhookId, registry_url: RegistryOption = DEFAULT_URL, json_out: JsonOption = False
) -> None:
    """Send a signed webhook.test message now and report the answer's status and latency
    (never its body). Exits 1 unless the receiver answered 2xx.

    [bold]Example[/bold]: modelyard webhooks test 3
    """
    with registry(registry_url) as reg:
        probe = reg.test_webhook(webhook_id)
    answered = f"answered {probe.status}" if probe.status is not None else "no answer"
    error = f" ({probe.error_class})" if probe.error_class else ""
    output.emit(
        json_out,
        probe.as_dict(),
        f"webhook {webhook_id}: {answered}{error} in {probe.latency_us / 1000:.1f} ms",
    )
    if probe.error_class is not None:
        raise typer.Exit(1)


@webhooks_app.command("deliveries")
@handles_errors
def deliveries(
    webhook_id: WebhookId,
    limit: Annotated[int, typer.Option(help="How many, newest first.", min=1, max=1000)] = 50,
    before: Annotated[
        int | None, typer.Option(help="Older than this delivery id (the next page).")
    ] = None,
    registry_url: RegistryOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """A webhook's delivery log: each event's delivery, its status and its attempts (time,
    status code, latency, error class; admins also see the answer's first bytes).

    [bold]Example[/bold]: modelyard webhooks deliveries 3 --limit 20
    """
    with registry(registry_url) as reg:
        found = reg.webhook_deliveries(webhook_id, limit=limit, before=before)
    data = {"items": [d.as_dict(with_response=True) for d in found]}
    output.emit(json_out, data, _deliveries_table(found))


@webhooks_app.command("redeliver")
@handles_errors
def redeliver(
    webhook_id: WebhookId,
    seq: Annotated[int | None, typer.Option("--seq", help="One event's seq.", min=1)] = None,
    first: Annotated[
        int | None, typer.Option("--from", help="The first event's seq.", min=1)
    ] = None,
    last: Annotated[int | None, typer.Option("--to", help="The last event's seq.", min=1)] = None,
    registry_url: RegistryOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Send events again, with their original webhook-ids (receivers drop what they had):
    one (--seq N) or a range (--from A --to B). Only those the webhook would receive go.

    [bold]Examples[/bold]:
      modelyard webhooks redeliver 3 --seq 812
      modelyard webhooks redeliver 3 --from 800 --to 850
    """
    if seq is not None and first is None and last is None:
        start = end = seq
    elif seq is None and first is not None and last is not None:
        start, end = first, last
    else:
        raise InvalidInput("give --seq N, or --from A --to B")
    with registry(registry_url) as reg:
        queued = reg.redeliver_webhook(webhook_id, start, end)
    output.emit(json_out, {"queued": queued}, f"queued {queued} event(s) for webhook {webhook_id}")


# -- printing ----------------------------------------------------------------------------------


def _print_secret(made: NewSubscription, json_out: bool) -> None:
    """The secret on stdout, alone on its line, or with the webhook's details as JSON."""
    if json_out:
        output.print_json(made.as_dict())
    else:
        print(made.secret)


def _scope(sub: Subscription) -> str:
    return f"model {sub.model}" if sub.model is not None else "every model"


def _status(sub: Subscription) -> str:
    if sub.enabled:
        return "enabled"
    return f"disabled: {sub.disabled_reason}" if sub.disabled_reason else "disabled"


def _table(found: list[Subscription]) -> output.Table:
    table = output.Table("id", "model", "url", "events", "status", "description")
    for sub in found:
        table.add_row(
            str(sub.id),
            output.escape(sub.model or "(every model)"),
            output.escape(sub.url),
            output.escape(", ".join(sub.events)),
            output.escape(_status(sub)),
            output.escape(sub.description[:60]),
        )
    return table


def _details(sub: Subscription) -> output.Table:
    table = output.Table("field", "value", show_header=False)
    for field, value in (
        ("id", str(sub.id)),
        ("scope", _scope(sub)),
        ("url", sub.url),
        ("events", ", ".join(sub.events)),
        ("status", _status(sub)),
        ("description", sub.description),
        ("creator", sub.creator),
        ("created", iso(sub.created)),
        ("updated", iso(sub.updated)),
    ):
        table.add_row(field, output.escape(value))
    return table


def _deliveries_table(found: list[Delivery]) -> output.Table:
    table = output.Table("id", "seq", "status", "attempts", "last attempt", "message id")
    for d in found:
        last = d.attempts[-1] if d.attempts else None
        said = "-"
        if last is not None:
            answer = str(last.status) if last.status is not None else "no answer"
            error = f" {last.error_class}" if last.error_class else ""
            said = f"{iso(last.at)} {answer}{error} {last.latency_us / 1000:.0f} ms"
        status = d.status + (" (redelivery)" if d.redelivery else "")
        table.add_row(str(d.id), str(d.seq), status, str(len(d.attempts)), said, d.message_id)
    return table
