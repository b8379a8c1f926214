"""How the CLI shows things: Rich tables, progress bars, one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from modelyard.client.transport import Advance
from modelyard.domain.events import describe
from modelyard.domain.models import Event, Model, Version

__all__ = ["Table", "escape"]  # re-exported for the commands

console = Console()
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
        columns = (
            TextColumn("{task.description:<12}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=errors, transient=False) as progress:
            task_id = progress.add_task(description, total=total)
            yield lambda n: progress.advance(task_id, n)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _metrics(values: dict[str, float], limit: int = 4) -> str:
    shown = [f"{k}={v:g}" for k, v in sorted(values.items())[:limit]]
    if len(values) > limit:
        shown.append("…")
    return " ".join(shown)


def _kv(values: dict[str, str], limit: int = 4) -> str:
    shown = [f"{k}={v}" for k, v in sorted(values.items())[:limit]]
    if len(values) > limit:
        shown.append("…")
    return " ".join(shown)


def versions_table(versions: Sequence[Version], title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False)
    for column in ("reference", "created", "creator", "metrics", "tags", "aliases", "size"):
        table.add_column(column, overflow="fold")
    for v in versions:
        table.add_row(
            escape(v.reference),
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            escape(v.creator),
            escape(_metrics(v.metrics)),
            escape(_kv(v.tags)),
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
            escape(_kv(m.tags)),
            m.updated_at.strftime("%Y-%m-%d %H:%M"),
            escape(m.description.splitlines()[0][:60] if m.description else ""),
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
            e.hash[:12],
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
        ("metrics", _metrics(v.metrics, 20) or "-"),
        ("params", _kv(v.params, 20) or "-"),
        ("tags", _kv(v.tags, 20) or "-"),
    ]
    if v.dataset:
        ds = v.dataset
        rows.append(("dataset", ds.name + (f"@{ds.version}" if ds.version else "")))
    if v.source:
        dirty = " (dirty)" if v.source.dirty else ""
        rows.append(("source", f"{v.source.repo or '-'} {v.source.commit or ''}{dirty}"))
    if v.run:
        rows.append(("run", v.run))
    if v.description:
        rows.append(("description", v.description))
    for key, value in rows:
        table.add_row(key, escape(value))
    return table


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
