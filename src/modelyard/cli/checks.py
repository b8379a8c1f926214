"""Check results: `modelyard check` reports one (checkers, e.g. CI), `modelyard checks`
lists a version's."""

from __future__ import annotations

from typing import Annotated

import typer

from modelyard.cli import output
from modelyard.cli.common import JsonOption, UrlOption, handles_errors, registry
from modelyard.config import DEFAULT_URL

Reference = Annotated[str, typer.Argument(help="A version: NAME/N, NAME@ALIAS_OR_STAGE, ...")]


def install(app: typer.Typer) -> None:
    """Add the commands to the main app."""
    app.command()(handles_errors(check))
    app.command()(handles_errors(checks))


def check(
    reference: Reference,
    name: Annotated[str, typer.Argument(help="The check, e.g. scan or bias-audit.")],
    status: Annotated[str, typer.Option("--status", "-s", help="pass, fail or pending.")],
    details_url: Annotated[
        str | None,
        typer.Option("--details-url", "-d", help="Where its details are (an http(s) URL)."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Report the result of a check on a version. Takes the checker role (give it to the
    CI account that scans or tests): the author of a version cannot pass its checks, and
    no tag can. The latest report of a check counts; every one is journaled. A policy
    requires one with the rule checks.NAME = "pass".

    [bold]Example[/bold]: modelyard check churn/43 scan --status pass
    --details-url https://ci.example.com/runs/7
    """
    with registry(url) as reg:
        result = reg.report_check(reference, name, status, url=details_url)
    if json_out:
        output.print_json(result.as_dict())
        return
    output.console.print(
        f"{result.reference}: {result.name} = {result.status} (reported by {result.reporter})",
        highlight=False,
    )


def checks(
    reference: Reference, url: UrlOption = DEFAULT_URL, json_out: JsonOption = False
) -> None:
    """The latest result of every check reported on a version.

    [bold]Example[/bold]: modelyard checks churn/43
    """
    with registry(url) as reg:
        found = reg.checks(reference)
    if json_out:
        output.print_json({"items": [c.as_dict() for c in found]})
        return
    table = output.Table("check", "status", "reported by", "at", "details")
    for c in found:
        table.add_row(
            output.escape(c.name),
            c.status.value,
            output.escape(c.reporter),
            c.reported_at.strftime("%Y-%m-%d %H:%M:%S"),
            output.escape(c.url or "-"),
        )
    output.console.print(table)
