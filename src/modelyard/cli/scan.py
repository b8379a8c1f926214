"""modelyard scan: model files checked for code they would run, without loading them."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from modelyard.cli import output
from modelyard.cli.common import JsonOption, RegistryOption, handles_errors, registry
from modelyard.client.registry import Registry
from modelyard.config import DEFAULT_URL
from modelyard.domain.errors import InvalidInput

if TYPE_CHECKING:
    from modelyard.domain.scanning import Allowlist, ScanReport

_VERDICT_STYLE = {"pass": "green", "safe": "green", "unknown": "yellow", "fail": "red"}


def install(app: typer.Typer) -> None:
    app.command("scan")(handles_errors(scan))


def scan(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(metavar="PATH...", help="Files or directories (scanned recursively)."),
    ] = None,
    versions: Annotated[
        list[str] | None,
        typer.Option(
            "--version",
            metavar="REF",
            help="A registered version (NAME/N, NAME@ALIAS...): its files and attachments,"
            " downloaded and verified first. Repeatable.",
        ),
    ] = None,
    registry_url: RegistryOption = DEFAULT_URL,
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

    A registered version is named NAME/N:PATH in the report, its attachments
    NAME/N:attachments/PATH.

    [bold]Examples[/bold]:
      modelyard scan ./model_dir
      modelyard scan model.joblib --allow trusted.txt --json
      modelyard scan --version churn@production
    """
    if not paths and not versions:
        raise InvalidInput("give files or directories to scan, or --version REF")
    # Imported when the command runs, not with every other command (14 ms of each start).
    from modelyard.domain.scanning import DEFAULT_ALLOWLIST, Allowlist, ScanReport, scan_path

    allowlist = DEFAULT_ALLOWLIST
    if allow is not None:
        allowlist = allowlist.extended(Allowlist.from_text(allow.read_text(), str(allow)))
    report = ScanReport((), ())
    for file in _files(paths or []):
        report = report.merged(scan_path(file, allowlist))
    if versions:
        with registry(registry_url) as reg:
            for reference in versions:
                report = report.merged(_scan_version(reg, reference, allowlist))
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


def _scan_version(reg: Registry, reference: str, allowlist: Allowlist) -> ScanReport:
    """A version's files and attachments, downloaded (verified) into a directory of its
    own that is removed after the scan."""
    from modelyard.domain.scanning import ScanReport, scan_path

    report = ScanReport((), ())
    with tempfile.TemporaryDirectory(prefix="modelyard-scan-") as tmp:
        root = Path(tmp)
        version = reg.download(reference, root / "files")
        label = f"{version.model}/{version.version}"
        for entry in version.files:
            report = report.merged(
                scan_path(root / "files" / entry.path, allowlist, name=f"{label}:{entry.path}")
            )
        (root / "attachments").mkdir()
        for attachment in reg.attachments(label):
            target = root / "attachments" / attachment.sha256
            reg.download_attachment(label, attachment.path, target)
            name = f"{label}:attachments/{attachment.path}"
            report = report.merged(scan_path(target, allowlist, name=name))
    return report


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
