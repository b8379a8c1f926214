"""What the UI's overviews show of a model: its row in the models list, its metric over
versions and which version held each stage when. Pure: the service reads the rows and the
journal in a fixed number of queries and hands them here.

Two choices the UI documents (docs/architecture.md, "The UI's reading pages"):

- a model's **owner** is its ``owner`` tag when set, else whoever created it (the actor of
  its first event);
- its **key metric** is its ``key_metric`` tag when set, else the first metric (by name)
  of its latest version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from modelyard.domain.events import JournalEvent, VersionDeleted, VersionStaged
from modelyard.domain.lifecycle import ARCHIVED, Policy
from modelyard.domain.models import Model

OWNER_TAG = "owner"
KEY_METRIC_TAG = "key_metric"


def key_metric(tags: Mapping[str, str], metrics: Iterable[str]) -> str | None:
    """The metric a model is judged by: its ``key_metric`` tag, else the first by name."""
    return tags.get(KEY_METRIC_TAG) or min(metrics, default=None)


def owner(tags: Mapping[str, str], creator: str | None) -> str | None:
    return tags.get(OWNER_TAG) or creator


def tracked_stages(policy: Policy) -> tuple[str, ...]:
    """The stages worth a line each: every stage but the first (where every version
    starts, so it holds most of them) and archived."""
    return tuple(s.name for s in policy.stages[1:])


def top_stage(policy: Policy) -> str:
    """The stage whose occupant is "in production": the last exclusive stage, else the
    last stage."""
    exclusive = [s.name for s in policy.stages if s.exclusive]
    return exclusive[-1] if exclusive else policy.stages[-1].name


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """One row of the models list. ``stages``: each tracked stage of the model's policy
    with the versions in it, most recently moved in first."""

    model: Model
    owner: str | None
    stages: tuple[tuple[str, tuple[int, ...]], ...]
    key_metric: str | None
    key_value: float | None


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """A version's value of a metric; ``created_us``: its registration, in microseconds
    since the epoch (a chart of thousands of points needs no datetime per point)."""

    version: int
    created_us: int
    value: float


@dataclass(frozen=True, slots=True)
class StagePeriod:
    """``version`` held ``stage`` from ``start`` until ``end`` (None: it still does)."""

    stage: str
    version: int
    start: datetime
    end: datetime | None


def stage_periods(
    moves: Iterable[tuple[datetime, JournalEvent]], stages: Iterable[str]
) -> list[StagePeriod]:
    """Which version held each of ``stages`` when, from a model's stage moves and
    deletions in journal order; ordered by start."""
    tracked = set(stages) - {ARCHIVED}
    started: dict[tuple[str, int], datetime] = {}
    periods: list[StagePeriod] = []

    def close(stage: str, number: int, at: datetime) -> None:
        start = started.pop((stage, number), None)
        if start is not None:
            periods.append(StagePeriod(stage, number, start, at))

    for at, event in moves:
        if isinstance(event, VersionStaged):
            close(event.before, event.version, at)
            if event.after in tracked:
                started[event.after, event.version] = at
        elif isinstance(event, VersionDeleted):
            for stage, number in [key for key in started if key[1] == event.version]:
                close(stage, number, at)
    periods += [StagePeriod(stage, n, start, None) for (stage, n), start in started.items()]
    return sorted(periods, key=lambda p: (p.start, p.stage, p.version))
