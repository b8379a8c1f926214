"""modelyard scan: model files checked for code they would run, without loading them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from modelyard.cli import output
from modelyard.cli.common import JsonOption, handles_errors
from modelyard.domain.scanning import DEFAULT_ALLOWLIST, Allowlist, ScanReport, scan_path

_VERDICT_STYLE = {"pass": "green", "safe": "green", "unknown": "yellow", "fail": "red"}


def install(app: typer.Typer) -> None:
    app.command("scan")(handles_errors(scan))


def scan(
    paths: Annotated[
        list[Path],
        typer.Argument(metavar="PATH...", help="Files or directories (scanned recursively)."),
    ],
    allow: Annotated[
        Path | None,
        typer.Option(
            "--allow",
            envvar="MODELYARD_SCAN_ALLOW",
            metavar="FILE",
            help="Extra allowlist entries, one a line: module.sub:Name, or module.sub:* for"
            " every public name of that module.",
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Scan model files for code they would run when loaded, without loading them.

    Every global a pickle imports must be on the allowlist (docs/security.md lists it).

    What the scan cannot follow fails too: a truncated stream, a bad CRC, deep nesting.

    Formats are told by their bytes, not their names: a renamed pickle is still a pickle.

    Exits 1 when any file fails.

    [bold]Examples[/bold]:
      modelyard scan ./model_dir
      modelyard scan model.joblib --allow trusted.txt --json
    """
    allowlist = DEFAULT_ALLOWLIST
    if allow is not None:
        allowlist = allowlist.extended(Allowlist.from_text(allow.read_text(), str(allow)))
    report = ScanReport((), ())
    for file in _files(paths):
        report = report.merged(scan_path(file, allowlist))
    if json_out:
        output.print_json(report.as_dict())
    else:
        output.console.print(_table(report))
        for finding in report.findings:
            at = f" at byte {finding.offset}" if finding.offset is not None else ""
            output.console.print(
                f"[red]{finding.reason}[/red] {output.escape(finding.path)}{at}:"
                f" {output.escape(finding.message)}",
                highlight=False,
            )
        output.console.print(f"verdict: {report.verdict}", highlight=False)
    if report.verdict == "fail":
        raise typer.Exit(1)


def _files(paths: list[Path]) -> Iterator[Path]:
    """The files named, and those under the directories named (in name order; links found
    in a directory are not followed, so a scan stays inside what was given)."""
    for root in paths:
        if not root.is_dir():
            yield root
            continue
        for file in sorted(root.rglob("*")):
            if file.is_file() and not file.is_symlink():
                yield file


def _table(report: ScanReport) -> Table:
    table = Table("file", "format", "verdict", "note")
    for entry in report.entries:
        style = _VERDICT_STYLE[entry.verdict]
        table.add_row(
            output.escape(entry.path),
            output.escape(entry.format),
            f"[{style}]{entry.verdict}[/{style}]",
            output.escape(entry.note),
        )
    return table
