"""Online metrics: what a version does in production, reported by whoever watches it.

``serve-model`` reports its figures per version every interval (``requests``,
``error_rate``, ``latency_p50_ms``, ``latency_p99_ms``, ``cpu_percent``, ``memory_bytes``)
and pipelines post business metrics (``auc`` once churn labels arrive). Each report is a
set of named values over a window (start and end) or at a point in time (start = end).

They are a time series, not decisions: they are kept apart from the journal
(``Database.telemetry()``), at a volume the journal is not built for. The newest value of
each key (by the end of its window) is what the rule language reads as
``online.metrics.K``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from modelyard.domain.errors import InvalidInput
from modelyard.domain.models import iso, parse_iso, to_us, utc_from_us
from modelyard.domain.versions import validate_metrics

ONLINE_NAMESPACE: Final = "online.metrics"  # the rule language's name of these values
MAX_ONLINE_METRICS: Final = 100  # per report: a server's figures and a pipeline's few
# A reporter's clock may run ahead of the server's; beyond this a time is a mistake.
MAX_CLOCK_SKEW: Final = timedelta(minutes=5)
MAX_SERIES_POINTS: Final = 2000  # the newest points a chart of a model reads


@dataclass(frozen=True, slots=True)
class OnlineWindow:
    """When the values were observed: ``start == end`` for a point in time."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class OnlinePoint:
    """One value of one key, observed on one version over a window."""

    model: str
    version: int
    key: str
    value: float
    start: datetime
    end: datetime
    reporter: str
    received_at: datetime

    @property
    def reference(self) -> str:
        return f"{self.model}/{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "key": self.key,
            "value": self.value,
            "start": iso(self.start),
            "end": iso(self.end),
            "reporter": self.reporter,
            "received_at": iso(self.received_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OnlinePoint:
        return cls(
            model=data["model"],
            version=int(data["version"]),
            key=data["key"],
            value=float(data["value"]),
            start=parse_iso(data["start"]),
            end=parse_iso(data["end"]),
            reporter=data["reporter"],
            received_at=parse_iso(data["received_at"]),
        )


@dataclass(frozen=True, slots=True)
class OnlineReport:
    """What one post recorded: its values, their window, who and when."""

    model: str
    version: int
    metrics: dict[str, float]
    window: OnlineWindow
    reporter: str
    received_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "metrics": dict(self.metrics),
            "window": {"start": iso(self.window.start), "end": iso(self.window.end)},
            "reporter": self.reporter,
            "received_at": iso(self.received_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OnlineReport:
        return cls(
            model=data["model"],
            version=int(data["version"]),
            metrics={k: float(v) for k, v in data["metrics"].items()},
            window=OnlineWindow(
                parse_iso(data["window"]["start"]), parse_iso(data["window"]["end"])
            ),
            reporter=data["reporter"],
            received_at=parse_iso(data["received_at"]),
        )


@dataclass(frozen=True, slots=True)
class OnlineSeries:
    """A page of a version's points, oldest first, and the newest value of each key."""

    items: list[OnlinePoint]
    latest: dict[str, float]
    next_page_token: str | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OnlineSeries:
        return cls(
            [OnlinePoint.from_dict(p) for p in data["items"]],
            {k: float(v) for k, v in data["latest"].items()},
            data["next_page_token"],
        )


def aware_iso(moment: datetime, what: str) -> str:
    """A time as the API takes it; a naive one is refused rather than guessed."""
    if moment.tzinfo is None:
        raise InvalidInput(f"the {what} needs a time zone, e.g. datetime.now(UTC)")
    return iso(moment)


def validate_online_metrics(metrics: Mapping[str, object]) -> dict[str, float]:
    """The keys and values of a report: metric names and finite numbers, as a
    registration's, at least one and at most ``MAX_ONLINE_METRICS``."""
    values = validate_metrics(metrics, MAX_ONLINE_METRICS, per="report")
    if not values:
        raise InvalidInput("a report of online metrics needs at least one metric, as auc=0.81")
    return values


def validate_window(
    window: tuple[datetime, datetime] | None, at: datetime | None, now: datetime
) -> OnlineWindow:
    """A window (start <= end) or a point in time, else now; never both, never in the
    future beyond ``MAX_CLOCK_SKEW``, never before the epoch."""
    if window is not None and at is not None:
        raise InvalidInput("give a window or a time 'at', not both")
    start, end = window if window is not None else (at or now, at or now)
    for what, moment in (("window start", start), ("window end", end)):
        if moment.tzinfo is None:
            raise InvalidInput(f"the {what} needs a time zone, e.g. 2026-03-03T12:00Z")
        # Shown as given: converting a time near year 1 or 9999 to UTC may overflow.
        if to_us(moment) < 0:
            raise InvalidInput(f"the {what} {moment.isoformat()} is before 1970")
        if moment > now + MAX_CLOCK_SKEW:
            raise InvalidInput(
                f"the {what} {moment.isoformat()} is in the future"
                f" (the registry's time is {iso(now)})"
            )
    if start > end:
        raise InvalidInput(f"the window starts ({iso(start)}) after it ends ({iso(end)})")
    # Microseconds, as stored: what a reader gets back equals what was sent.
    return OnlineWindow(utc_from_us(to_us(start)), utc_from_us(to_us(end)))


def online_field(spec: str) -> str | None:
    """The key K of ``online.metrics.K``, or None when ``spec`` names an offline metric."""
    prefix = ONLINE_NAMESPACE + "."
    return spec[len(prefix) :] if spec.startswith(prefix) else None
