"""Charts drawn on the server as inline SVG geometry: numbers the templates place in SVG
presentation attributes (the page's CSP forbids inline script and style, not SVG).

Pure arithmetic over what the service returned; nothing here reads or decides anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from modelyard.domain.overview import MetricPoint, StagePeriod
from modelyard.web.render import metric, when

WIDTH = 760
HEIGHT = 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 12, 12, 28
# Dots (with a tooltip each) only while they stay readable and the page small.
MAX_DOTS = 120
# Bands and bars drawn per stage: the most recent ones (a page stays under its budget).
MAX_PERIODS = 60


@dataclass(frozen=True, slots=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True, slots=True)
class Dot:
    x: float
    y: float
    title: str
    top: bool  # the version was in the top stage (production) at some point


@dataclass(frozen=True, slots=True)
class Band:
    x: float
    width: float
    label: str


@dataclass(frozen=True, slots=True)
class MetricChart:
    metric: str
    caption: str  # what the chart shows, for its title and screen readers
    width: int
    height: int
    line: str  # the polyline's points
    dots: tuple[Dot, ...]
    bands: tuple[Band, ...]  # the top stage's periods
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    plot_left: int
    plot_right: int
    plot_top: int
    plot_bottom: int


class _Scale:
    """Maps a value range onto a pixel range (a flat range gets a margin)."""

    def __init__(self, low: float, high: float, start: float, end: float) -> None:
        if high <= low:
            low, high = low - 1, high + 1
        self.low, self.start = low, start
        self.factor = (end - start) / (high - low)

    def __call__(self, value: float) -> float:
        return round(self.start + (value - self.low) * self.factor, 1)


def _nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 5, 10):
        if raw <= multiple * step:
            step *= multiple
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(count + 2) if first + i * step <= high + step * 1e-9]


def metric_chart(
    name: str,
    points: Sequence[MetricPoint],
    periods: Sequence[StagePeriod],
    top_stage: str,
    caption: str | None = None,
) -> MetricChart | None:
    """The metric of each version over time, with the top stage's periods as bands. Also
    an online series: a point per report, at its window's end, labelled by version."""
    if not points:
        return None
    bottom, right = HEIGHT - _BOTTOM, WIDTH - _RIGHT
    times = [p.created_us / 1e6 for p in points]
    held = [p for p in periods if p.stage == top_stage][-MAX_PERIODS:]
    start = min([times[0], *(p.start.timestamp() for p in held)])
    end = max([times[-1], *((p.end or p.start).timestamp() for p in held)])
    x = _Scale(start, end, _LEFT, right)
    values = [p.value for p in points]
    y = _Scale(min(values), max(values), bottom, _TOP)
    # Thousands of points: the scales' arithmetic inlined.
    x0, xk = x.start - x.low * x.factor, x.factor
    y0, yk = y.start - y.low * y.factor, y.factor
    line = " ".join(
        f"{x0 + t * xk:.1f},{y0 + v * yk:.1f}" for t, v in zip(times, values, strict=True)
    )
    in_top = {p.version for p in held}
    dots = (
        tuple(
            Dot(x(t), y(p.value), f"v{p.version}: {metric(p.value)} ({when(p.created_us)})",
                p.version in in_top)
            for t, p in zip(times, points, strict=True)
        )
        if len(points) <= MAX_DOTS
        else ()
    )  # fmt: skip
    bands = tuple(
        Band(
            x(p.start.timestamp()),
            max(1.0, round(x(p.end.timestamp() if p.end else end) - x(p.start.timestamp()), 1)),
            f"v{p.version} in {top_stage} from {when(p.start)}"
            + (f" to {when(p.end)}" if p.end else ""),
        )
        for p in held
    )
    y_ticks = tuple(Tick(y(v), metric(v)) for v in _nice_ticks(min(values), max(values)))
    x_ticks = tuple(Tick(x(t), _moment(t, end - start)) for t in _nice_ticks(start, end, 3))
    return MetricChart(
        name,
        caption or f"{name} of each version over time",
        WIDTH,
        HEIGHT,
        line,
        dots,
        bands,
        y_ticks,
        x_ticks,
        _LEFT,
        right,
        _TOP,
        bottom,
    )


def _day(timestamp: float) -> str:
    return when(datetime.fromtimestamp(timestamp, tz=UTC))[:10]


def _moment(timestamp: float, span: float) -> str:
    """A tick's label: the day, or the time of day on a chart of two days or less."""
    return (
        _day(timestamp) if span > 2 * 86400 else when(datetime.fromtimestamp(timestamp, UTC))[5:16]
    )


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    label: str
    title: str
    current: bool


@dataclass(frozen=True, slots=True)
class Lane:
    stage: str
    y: float
    bars: tuple[Bar, ...]


@dataclass(frozen=True, slots=True)
class Timeline:
    width: int
    height: int
    lanes: tuple[Lane, ...]
    x_ticks: tuple[Tick, ...]
    plot_left: int
    plot_right: int


LANE = 28


def stage_timeline(
    stages: Sequence[str], periods: Sequence[StagePeriod], now: datetime
) -> Timeline | None:
    """One lane per stage, a bar per version that held it (the most recent ones)."""
    if not periods:
        return None
    shown = {s: [p for p in periods if p.stage == s][-MAX_PERIODS:] for s in stages}
    kept = [p for s in stages for p in shown[s]]
    if not kept:
        return None
    start = min(p.start.timestamp() for p in kept)
    end = max(now.timestamp(), *((p.end or now).timestamp() for p in kept))
    left, right = 96, WIDTH - _RIGHT
    x = _Scale(start, end, left, right)
    lanes = []
    for index, stage in enumerate(stages):
        bars = []
        for p in shown[stage]:
            x0, x1 = x(p.start.timestamp()), x((p.end or now).timestamp())
            until = f" to {when(p.end)}" if p.end else " (now)"
            title = f"v{p.version} in {stage} from {when(p.start)}{until}"
            bars.append(Bar(x0, max(1.0, round(x1 - x0, 1)), f"v{p.version}", title, p.end is None))
        lanes.append(Lane(stage, _TOP + index * LANE, tuple(bars)))
    height = _TOP + len(stages) * LANE + _BOTTOM
    ticks = tuple(Tick(x(t), _day(t)) for t in _nice_ticks(start, end, 3))
    return Timeline(WIDTH, height, tuple(lanes), ticks, left, right)


@dataclass(frozen=True, slots=True)
class MetricBar:
    name: str
    a: float | None
    b: float | None
    a_width: float
    b_width: float


def metric_bars(values: Sequence[tuple[str, object, object]]) -> list[MetricBar]:
    """Paired bars (a, b) per metric, each scaled to the larger magnitude of the pair;
    a side that is not a number gets no bar."""
    bars = []
    for name, raw_a, raw_b in values:
        a, b = _number(raw_a), _number(raw_b)
        largest = max(abs(a or 0.0), abs(b or 0.0)) or 1.0
        bars.append(
            MetricBar(
                name,
                a,
                b,
                round(abs(a or 0.0) / largest * 100, 1),
                round(abs(b or 0.0) / largest * 100, 1),
            )
        )
    return bars


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
