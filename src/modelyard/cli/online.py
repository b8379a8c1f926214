"""Online metrics: `modelyard online-metrics log` reports what a version does in production
(a serving or monitoring service account, with the checker role), `show` lists them."""

from __future__ import annotations

from typing import Annotated

import typer

from modelyard.cli import output
from modelyard.cli.common import (
    JsonOption,
    UrlOption,
    handles_errors,
    parse_metrics,
    parse_moment,
    registry,
)
from modelyard.config import DEFAULT_URL

Reference = Annotated[str, typer.Argument(help="A version: NAME/N, NAME@ALIAS_OR_STAGE, ...")]
online_app = typer.Typer(
    help="Metrics observed in production, per version: reported by the serving or"
    " monitoring account, read by searches, policies and gates as online.metrics.K.\n\n"
    "[bold]Example[/bold]: modelyard online-metrics log churn/43 auc=0.81",
    no_args_is_help=True,
)


def install(app: typer.Typer) -> None:
    """Add the command group to the main app."""
    app.add_typer(online_app, name="online-metrics")
    online_app.command("log")(handles_errors(log))
    online_app.command("show")(handles_errors(show))


def log(
    reference: Reference,
    metrics: Annotated[
        list[str], typer.Argument(help="NAME=NUMBER pairs, e.g. auc=0.81 latency_p99_ms=17")
    ],
    window_start: Annotated[
        str | None, typer.Option(help="When the window began: an ISO time, 2026-03-03T11:00Z.")
    ] = None,
    window_end: Annotated[
        str | None, typer.Option(help="When it ended (with --window-start).")
    ] = None,
    at: Annotated[
        str | None, typer.Option(help="A point in time instead of a window; neither is now.")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Report metrics observed on a version in production, over a window or at a time.
    Takes the checker role: policies may gate production on these values (a rule such
    as online.metrics.auc >= metrics.auc - 0.02), so the author of a version cannot
    report them. They are a time series, kept apart from the journal; the newest value of
    each name (by window end) is the one rules read.

    [bold]Example[/bold]: modelyard online-metrics log churn@production auc=0.81
    --window-start 2026-03-02T00:00Z --window-end 2026-03-03T00:00Z
    """
    values = parse_metrics(metrics, "metric")
    if (window_start is None) != (window_end is None):
        raise typer.BadParameter("--window-start and --window-end go together")
    window = (
        (parse_moment(window_start), parse_moment(window_end))
        if window_start is not None and window_end is not None
        else None
    )
    with registry(url) as reg:
        report = reg.log_online_metrics(
            reference, values, window=window, at=parse_moment(at) if at else None
        )
    when = output.span(report.window.start, report.window.end)
    shown = f"{report.model}/{report.version}: {output.pairs(report.metrics, None)} ({when})"
    output.emit(json_out, report.as_dict(), output.escape(shown))


def show(
    reference: Reference,
    key: Annotated[str | None, typer.Option(help="One metric, e.g. auc.")] = None,
    since: Annotated[str | None, typer.Option(help="Windows ending at or after (ISO).")] = None,
    until: Annotated[str | None, typer.Option(help="Windows ending at or before (ISO).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Points at most.")] = 100,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """A version's online metrics: the newest value of each next to its offline metric,
    then the series, oldest first.

    [bold]Example[/bold]: modelyard online-metrics show churn@production --key auc
    """
    with registry(url) as reg:
        version = reg.resolve(reference)
        series = reg.online_metrics(
            version.reference,
            key,
            since=parse_moment(since) if since else None,
            until=parse_moment(until) if until else None,
            limit=limit,
        )
    if json_out:
        output.print_json(
            {
                "latest": series.latest,
                "offline": version.metrics,
                "items": [p.as_dict() for p in series.items],
                "next_page_token": series.next_page_token,
            }
        )
        return
    output.console.print(output.online_table(version.metrics, series.latest))
    table = output.Table("metric", "value", "window", "reported by")
    for p in series.items:
        table.add_row(
            output.escape(p.key),
            output.metric(p.value),
            output.span(p.start, p.end),
            output.escape(p.reporter),
        )
    output.console.print(table)
    if series.next_page_token:
        output.console.print(f"(the first {limit} points; narrow with --since/--key)")
