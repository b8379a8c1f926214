"""Champion vs challenger: `modelyard compare` for people, `modelyard gate` for CI/CD."""

from __future__ import annotations

from typing import Annotated

import typer

from modelyard.cli import output
from modelyard.cli.common import JsonOption, UrlOption, handles_errors, registry
from modelyard.config import DEFAULT_URL
from modelyard.domain.comparison import SAME, Comparison, Difference, Value
from modelyard.domain.manifest import FileEntry

Ref = Annotated[str, typer.Argument(help="NAME, NAME/N, NAME@ALIAS or NAME@sha256:…")]


def install(app: typer.Typer) -> None:
    """Add the commands to the main app."""
    app.command()(handles_errors(compare))
    # 1 means the challenger lost; 2 that it could not be checked, as for usage errors,
    # so that a pipeline can tell a losing model from a broken step.
    app.command()(handles_errors(gate, exit_code=2))


def compare(a: Ref, b: Ref, url: UrlOption = DEFAULT_URL, json_out: JsonOption = False) -> None:
    """Show two versions side by side: metrics with deltas (B - A), params, dataset and
    source lineage, environment and packages, files, size, creator.

    Any two references, even of different models.

    [bold]Example[/bold]: modelyard compare churn@production churn/43
    """
    with registry(url) as reg:
        result = reg.compare(a, b)
    if json_out:
        output.print_json(result.as_dict())
        return
    columns = ("", _label(a, result.a), _label(b, result.b), "change")
    for section in ("overview", "metrics", "lineage", "environment"):
        _print_section(section, getattr(result, section), columns)
    for section in ("params", "packages"):
        _print_section(section, getattr(result, section), columns, result.unchanged[section])
    _print_files(result, columns)


def gate(
    challenger: Annotated[str, typer.Argument(help="The version to judge, e.g. churn/43.")],
    against: Annotated[
        str,
        typer.Option(
            help="An alias or stage of the challenger's model (production), or any reference."
        ),
    ],
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            "-m",
            help="NAME (higher is better) or NAME:lower (for losses); online.metrics.NAME"
            " compares the newest values reported from production. Repeatable, all must pass.",
        ),
    ] = None,
    min_delta: Annotated[
        float, typer.Option(help="How much better the challenger must be (negative: may lose).")
    ] = 0.0,
    lower_is_better: Annotated[
        bool,
        typer.Option(
            "--lower-is-better",
            help="Deprecated: write --metric NAME:lower. Makes every --metric without a"
            " direction lower-is-better.",
        ),
    ] = False,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Exit 0 when the challenger beats --against on every --metric by at least
    --min-delta, 1 when it does not (a metric missing on either side fails), 2 when it
    cannot be checked (a bad reference, an unreachable registry).

    Higher is better unless the metric says NAME:lower, so one gate can hold AUC up and
    log-loss down.

    [bold]Example[/bold]: modelyard gate churn/43 --against production --metric auc --min-delta 0

    [bold]Example[/bold]: modelyard gate churn/43 --against production -m auc -m logloss:lower
    """
    if lower_is_better:
        output.errors.print(
            "warning: --lower-is-better is deprecated and applies to every --metric without"
            " a direction; write --metric NAME:lower instead",
            highlight=False,
        )
    with registry(url) as reg:
        result = reg.gate(
            challenger,
            against=against,
            metrics=metric or [],
            min_delta=min_delta,
            lower_is_better=lower_is_better,
        )
    if json_out:
        output.print_json(result.as_dict())
    else:
        for check in result.checks:
            output.console.print(output.escape(check.message), highlight=False)
        passed = sum(check.passed for check in result.checks)
        output.console.print(
            f"{'passed' if result.passed else 'failed'}: {result.challenger} against"
            f" {result.against}, {passed} of {len(result.checks)} checks passed",
            highlight=False,
        )
    if not result.passed:
        raise typer.Exit(1)


def _label(requested: str, resolved: str) -> str:
    return resolved if requested == resolved else f"{resolved} ({requested})"


def _print_section(
    title: str,
    diffs: dict[str, Difference],
    columns: tuple[str, ...],
    unchanged: int | None = None,
) -> None:
    """A table of one section; for the sections that list only differences, how many
    are the same."""
    same = "" if unchanged is None else f" ({unchanged} the same)"
    if not diffs:
        empty = "none on either side" if unchanged is None else "no differences"
        output.console.print(f"{title}: {empty}{same}")
        return
    table = output.Table(*columns, title=f"{title}{same}", title_justify="left")
    for key, diff in diffs.items():
        table.add_row(
            output.escape(key),
            output.escape(_cell(key, diff.a)),
            output.escape(_cell(key, diff.b)),
            _change(key, diff),
            style="dim" if diff.status == SAME else None,
        )
    output.console.print(table)


def _print_files(result: Comparison, columns: tuple[str, ...]) -> None:
    same = f" ({result.unchanged['files']} the same)"
    if not result.files:
        output.console.print(f"files: no differences{same}")
        return
    table = output.Table("path", *columns[1:], title=f"files{same}", title_justify="left")
    for path, diff in result.files.items():
        table.add_row(output.escape(path), _file(diff.a), _file(diff.b), diff.status)
    output.console.print(table)


def _file(entry: FileEntry | None) -> str:
    return "-" if entry is None else f"{output.human_size(entry.size)} {entry.sha256[:12]}…"


def _cell(key: str, value: Value) -> str:
    if value is None:
        return "-"
    if key == "size":
        return output.human_size(int(value))
    if key == "created":  # ISO with microseconds; the second is enough to read
        return str(value)[:19].replace("T", " ")
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _change(key: str, diff: Difference) -> str:
    """Signed delta for numbers (which direction is better depends on the metric), else
    added/removed/changed."""
    if diff.status == SAME:
        return ""
    delta = diff.delta
    if delta is None:
        return diff.status
    if key == "size":
        return ("+" if delta >= 0 else "-") + output.human_size(int(abs(delta)))
    return f"{delta:+g}"
