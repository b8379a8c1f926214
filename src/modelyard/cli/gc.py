"""modelyard gc: collect blobs no version references and uploads never committed."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from modelyard.cli import output
from modelyard.cli.access import parse_duration
from modelyard.cli.common import JsonOption, UrlOption, handles_errors, registry
from modelyard.config import DEFAULT_URL
from modelyard.domain.errors import InvalidInput
from modelyard.domain.gc import GcReport


def install(app: typer.Typer) -> None:
    app.command("gc")(handles_errors(gc))


def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would go; remove nothing.")
    ] = False,
    grace: Annotated[
        str,
        typer.Option(
            help="Spare blobs and uploads younger than this (an upload in flight, a blob"
            " uploaded and not yet registered): 1h, 30m, 2d, 0s."
        ),
    ] = "1h",
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Remove blobs no version references and uploads never committed (admins).

    Blobs a hard delete released go at once, others once older than --grace.

    Each run that removes something is journaled as registry.gc, with counts and bytes.

    [bold]Examples[/bold]:
      modelyard gc --dry-run
      modelyard gc --grace 2h --json
    """
    duration = parse_duration(grace)
    if duration is None:
        raise InvalidInput(f"--grace {grace!r}: give a duration such as 1h, 30m, 2d or 0s")
    with registry(url) as reg, output.errors.status("collecting garbage..."):
        report = reg.collect_garbage(dry_run=dry_run, grace=duration)
    if json_out:
        output.print_json(report.as_dict())
        return
    if dry_run and report.removed:
        output.console.print(_removals(report))
    verb = "would remove" if dry_run else "removed"
    output.console.print(
        f"{verb} {report.blobs} blob(s) no version references"
        f" ({output.human_size(report.blob_bytes)}) and {report.uploads} unfinished"
        f" upload(s) ({output.human_size(report.upload_bytes)})",
        highlight=False,
    )


def _removals(report: GcReport) -> Table:
    table = Table("kind", "name", "size", title="would go")
    for item in report.removed:
        table.add_row(item["kind"], item["name"], output.human_size(item["size"]))
    if report.unlisted:
        table.caption = f"and {report.unlisted} more"
    return table
