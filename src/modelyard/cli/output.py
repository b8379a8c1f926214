"""How the CLI shows things: Rich tables, progress bars, one-line errors, JSON.

On a terminal, tables fit its width and long cells are abbreviated (saying how much was
left out). When stdout is a pipe or a file, a script reads it: nothing is wrapped, cut
or abbreviated, and every command also prints JSON with --json.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, ConsoleDimensions, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from modelyard.client.transport import Advance
from modelyard.domain.events import describe
from modelyard.domain.models import Event, Model, Origin, Version

__all__ = ["Table", "escape"]  # re-exported for the commands

# Wide enough for any line a command prints; Rich pads nothing to it (tables do not expand).
UNBOUNDED = 1_000_000


class _Console(Console):
    """Rich's console, but unbounded in width when its file is not a terminal.

    Rich otherwise lays out for 80 columns (or the terminal on stdin or stderr) even
    when stdout is piped, so `modelyard resolve LONG@production | read REF DIGEST` got
    the digest on a second line. Decided at each print, from the file itself (FORCE_COLOR
    may make Rich treat a pipe as a terminal; a pipe still has no width).
    """

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if is_terminal(self) else ConsoleDimensions(UNBOUNDED, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


def is_terminal(target: Console) -> bool:
    """Whether a person reads this console (its file is a tty), rather than a script."""
    isatty = getattr(target.file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed file
        return False


console = _Console()
errors = Console(stderr=True, soft_wrap=True)  # an error stays one line in a log

# Below this a transfer is over before a bar would be worth drawing.
PROGRESS_THRESHOLD = 4 * 1024 * 1024


class RichProgress:
    """Progress bars on stderr for transfers larger than a few MB."""

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        if total < PROGRESS_THRESHOLD:
            yield lambda _: None
            return
        columns = (DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        with _bar(description, total, columns) as advance:
            yield advance


class CountProgress:
    """A progress bar on stderr counting things (versions imported), not bytes."""

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        with _bar(description, total, (MofNCompleteColumn(), TimeElapsedColumn())) as advance:
            yield advance


@contextmanager
def _bar(description: str, total: int, columns: tuple[ProgressColumn, ...]) -> Iterator[Advance]:
    """One bar, described and drawn, then ``columns`` (what counts, how fast)."""
    with Progress(
        TextColumn("{task.description:<12}"), BarColumn(), *columns, console=errors
    ) as progress:
        task_id = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task_id, n)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def print_json_line(data: Any) -> None:
    """One compact line of JSON, flushed: for commands that report as things happen."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def emit(json_out: bool, data: Any, shown: RenderableType) -> None:
    """What a command prints, in one place: ``data`` as JSON with --json, else ``shown``
    (a line or a table) for people."""
    if json_out:
        print_json(data)
    else:
        console.print(shown, highlight=False)


def whole() -> bool:
    """Whether stdout takes everything uncut: true when it is not a terminal."""
    return not is_terminal(console)


def abbreviate(text: str, keep: int) -> str:
    """The first ``keep`` characters and an ellipsis on a terminal; all of it in a pipe."""
    return text if whole() or len(text) <= keep else text[:keep] + "…"


# How many metrics, tags or params a table cell shows on a terminal before "+N more".
CELL_LIMIT = 4


def pairs(values: dict[str, Any], limit: int | None = CELL_LIMIT) -> str:
    """``k=v`` pairs sorted by key; past ``limit`` (on a terminal), how many were left out.

    ``limit=None`` shows every pair, as does a pipe.
    """
    items = sorted(values.items())
    shown = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in items]
    if limit is None or whole() or len(shown) <= limit:
        return " ".join(shown)
    return " ".join(shown[:limit]) + f" (+{len(shown) - limit} more)"


def when(moment: datetime) -> str:
    """A time to the second, in UTC, as the tables show it."""
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def span(start: datetime, end: datetime) -> str:
    """A window, or the point in time it is when it starts where it ends."""
    return when(end) if start == end else f"{when(start)} to {when(end)}"


def metric(value: float) -> str:
    return f"{value:g}"


def online_table(offline: dict[str, float], online: dict[str, float]) -> Table:
    """The newest online value of each metric next to the version's offline one."""
    table = Table("metric", "offline", "online (newest)", title="metrics")
    for key in sorted({*offline, *online}):
        table.add_row(
            escape(key),
            metric(offline[key]) if key in offline else "-",
            metric(online[key]) if key in online else "-",
        )
    return table


def versions_table(versions: Sequence[Version], title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False)
    for column in ("reference", "stage", "created", "creator", "metrics", "tags", "aliases"):
        table.add_column(column, overflow="fold")
    table.add_column("size", no_wrap=True)
    for v in versions:
        table.add_row(
            escape(v.reference),
            v.stage,
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            escape(v.creator),
            escape(pairs(v.metrics)),
            escape(pairs(v.tags)),
            escape(", ".join(v.aliases)),
            human_size(v.size),
        )
    return table


def models_table(models: Sequence[Model]) -> Table:
    table = Table()
    for column in ("name", "latest", "aliases", "tags", "updated", "description"):
        table.add_column(column, overflow="fold")
    for m in models:
        table.add_row(
            escape(m.name),
            str(m.latest_version or "-"),
            escape(" ".join(f"{a}→{n}" for a, n in m.aliases.items())),
            escape(pairs(m.tags)),
            m.updated_at.strftime("%Y-%m-%d %H:%M"),
            escape(abbreviate(m.description.splitlines()[0], 60) if m.description else ""),
        )
    return table


def events_table(events: Sequence[Event]) -> Table:
    table = Table()
    for column in ("seq", "time", "actor", "kind", "subject", "detail", "hash"):
        table.add_column(column)
    for e in events:
        table.add_row(
            str(e.seq),
            e.time.strftime("%Y-%m-%d %H:%M:%S"),
            escape(e.actor),
            e.kind,
            escape(e.subject),
            escape(describe(e)),
            abbreviate(e.hash, 12),
        )
    return table


def version_details(v: Version) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows: list[tuple[str, str]] = [
        ("reference", v.reference),
        ("digest", v.manifest_digest),
        ("created", f"{v.created_at:%Y-%m-%d %H:%M:%S} UTC by {v.creator}"),
        ("stage", v.stage),
        ("aliases", ", ".join(v.aliases) or "-"),
        ("framework", " / ".join(x for x in (v.framework, v.format) if x) or "-"),
        ("files", f"{len(v.files)} ({human_size(v.size)})"),
        ("metrics", pairs(v.metrics, None) or "-"),
        ("params", pairs(v.params, None) or "-"),
        ("tags", pairs(v.tags, None) or "-"),
    ]
    if v.dataset:
        ds = v.dataset
        rows.append(("dataset", ds.name + (f"@{ds.version}" if ds.version else "")))
    if v.source:
        dirty = " (dirty)" if v.source.dirty else ""
        rows.append(("source", f"{v.source.repo or '-'} {v.source.commit or ''}{dirty}"))
    if v.run:
        rows.append(("run", v.run))
    if v.origin:
        rows.append(("imported from", describe_origin(v.origin)))
    if v.description:
        rows.append(("description", v.description))
    for key, value in rows:
        table.add_row(key, escape(value))
    return table


def describe_origin(origin: Origin) -> str:
    """'mlflow http://mlflow:5000 churn v3, created 2024-05-01 09:30 UTC by alice'."""
    what = f"{origin.system} {origin.uri} {origin.name}"
    if origin.version:
        what += f" v{origin.version}"
    if origin.created_at:
        what += f", created {origin.created_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    if origin.created_by:
        what += f" by {origin.created_by}"
    if origin.stage:
        what += f"; {origin.stage} there"
    if origin.checks:
        what += "; checks there: " + ", ".join(f"{c.name} {c.status}" for c in origin.checks)
    if origin.bundle:
        what += f"; bundle sha256:{origin.bundle} (key {origin.key_id})"
    return what


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
