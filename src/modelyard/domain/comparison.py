"""Champion vs challenger: what differs between two versions, and whether one beats the other.

Pure: the service resolves both references (checking the caller may view each model) and
hands the versions here. Results are values with ``as_dict``/``from_dict``, so the SDK
returns the same objects in-process and over HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard, TypeVar

from modelyard.domain.errors import InvalidInput
from modelyard.domain.filters import Comparison as Rule
from modelyard.domain.filters import Field
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import Version, iso
from modelyard.domain.names import validate_key
from modelyard.domain.online import ONLINE_NAMESPACE, online_field
from modelyard.domain.rules import Subject, evaluate, relative, value_of

Value = str | int | float | bool | None

SAME = "same"
ADDED = "added"
REMOVED = "removed"
CHANGED = "changed"

MAX_GATE_METRICS = 100


def _status(a: object, b: object) -> str:
    if a == b:
        return SAME
    if a is None:
        return ADDED
    if b is None:
        return REMOVED
    return CHANGED


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Difference:
    """One field on both sides. ``delta`` is b - a when both are numbers: whether more is
    better depends on the field, so it is left signed, never judged."""

    a: Value
    b: Value

    @property
    def status(self) -> str:
        return _status(self.a, self.b)

    @property
    def delta(self) -> float | None:
        a, b = self.a, self.b
        return b - a if _is_number(a) and _is_number(b) else None

    def as_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "status": self.status, "delta": self.delta}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Difference:
        return cls(a=data.get("a"), b=data.get("b"))


@dataclass(frozen=True, slots=True)
class FileDifference:
    """A path on both sides; files are the same when their sha256 is."""

    a: FileEntry | None
    b: FileEntry | None

    @property
    def status(self) -> str:
        return _status(self.a and self.a.sha256, self.b and self.b.sha256)

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": self.a.as_dict() if self.a else None,
            "b": self.b.as_dict() if self.b else None,
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileDifference:
        return cls(a=_entry(data.get("a")), b=_entry(data.get("b")))


def _entry(data: Mapping[str, Any] | None) -> FileEntry | None:
    if data is None:
        return None
    return FileEntry(path=data["path"], size=int(data["size"]), sha256=data["sha256"])


_SECTIONS = ("overview", "metrics", "params", "lineage", "environment", "packages")


@dataclass(frozen=True, slots=True)
class Comparison:
    """Version ``a`` (say the champion) beside ``b`` (the challenger).

    ``overview``, ``metrics``, ``lineage`` and ``environment`` hold every field of either
    side, for reading side by side; ``params``, ``packages`` and ``files`` hold only what
    differs (they can be long), with the number left out in ``unchanged``.
    """

    a: str
    b: str
    overview: dict[str, Difference]
    metrics: dict[str, Difference]
    params: dict[str, Difference]
    lineage: dict[str, Difference]
    environment: dict[str, Difference]
    packages: dict[str, Difference]
    files: dict[str, FileDifference]
    unchanged: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"a": self.a, "b": self.b}
        for section in _SECTIONS:
            diffs: dict[str, Difference] = getattr(self, section)
            data[section] = {key: d.as_dict() for key, d in diffs.items()}
        data["files"] = {path: d.as_dict() for path, d in self.files.items()}
        data["unchanged"] = dict(self.unchanged)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        sections = {
            section: {key: Difference.from_dict(d) for key, d in data[section].items()}
            for section in _SECTIONS
        }
        return cls(
            a=data["a"],
            b=data["b"],
            files={path: FileDifference.from_dict(d) for path, d in data["files"].items()},
            unchanged={k: int(v) for k, v in data["unchanged"].items()},
            **sections,
        )


def compare_versions(a: Version, b: Version) -> Comparison:
    """Everything a reviewer weighs before promoting ``b`` over ``a``, side by side."""
    params, same_params = _split(_side_by_side(a.params, b.params))
    packages, same_packages = _split(_side_by_side(_packages(a), _packages(b)))
    files_a = {f.path: f for f in a.files}
    files_b = {f.path: f for f in b.files}
    files, same_files = _split(
        {
            path: FileDifference(files_a.get(path), files_b.get(path))
            for path in sorted(files_a.keys() | files_b.keys())
        }
    )
    return Comparison(
        a=a.reference,
        b=b.reference,
        overview=_side_by_side(_overview(a), _overview(b), sort=False),
        metrics=_side_by_side(a.metrics, b.metrics),
        params=params,
        lineage=_side_by_side(_lineage(a), _lineage(b), sort=False),
        environment=_side_by_side(_platform(a), _platform(b), sort=False),
        packages=packages,
        files=files,
        unchanged={"params": same_params, "packages": same_packages, "files": same_files},
    )


def _side_by_side(
    a: Mapping[str, Value], b: Mapping[str, Value], *, sort: bool = True
) -> dict[str, Difference]:
    """Every key of either side (a missing key reads as None): sorted, or for a fixed set
    of fields in the order the sides list them."""
    keys = list(dict.fromkeys([*a, *b]))
    return {key: Difference(a.get(key), b.get(key)) for key in (sorted(keys) if sort else keys)}


D = TypeVar("D", Difference, FileDifference)


def _split(diffs: dict[str, D]) -> tuple[dict[str, D], int]:
    """What differs, and how many are the same."""
    differing = {key: d for key, d in diffs.items() if d.status != SAME}
    return differing, len(diffs) - len(differing)


def _packages(v: Version) -> dict[str, str]:
    return v.environment.packages if v.environment else {}


def _overview(v: Version) -> dict[str, Value]:
    return {
        "digest": v.manifest_digest,
        "framework": v.framework,
        "format": v.format,
        "size": v.size,
        "files": len(v.files),
        "stage": v.stage,
        "aliases": ", ".join(v.aliases) or None,
        "creator": v.creator,
        "created": iso(v.created_at),
    }


def _lineage(v: Version) -> dict[str, Value]:
    fields: dict[str, Value] = {}
    for prefix, ref in (("dataset", v.dataset), ("source", v.source)):
        if ref is not None:
            fields.update({f"{prefix}.{key}": value for key, value in ref.as_dict().items()})
    return {**fields, "run": v.run}


def _platform(v: Version) -> dict[str, Value]:
    env = v.environment
    return {"python": env.python, "platform": env.platform} if env else {}


# -- the gate ---------------------------------------------------------------------------------


HIGHER = "higher"
LOWER = "lower"
DIRECTIONS = (HIGHER, LOWER)


@dataclass(frozen=True, slots=True)
class GateMetric:
    """A metric to gate on and which way is better: ``auc`` (higher), ``logloss:lower``."""

    name: str
    direction: str = HIGHER

    @classmethod
    def parse(cls, spec: str, *, lower_is_better: bool = False) -> GateMetric:
        """``NAME``, ``NAME:higher`` or ``NAME:lower``; without a suffix, higher is better
        unless ``lower_is_better`` (the old all-metrics switch) says otherwise.

        Metric names may hold ':' themselves, so only a last part that is a direction is
        one: ``val:loss`` is a metric, ``val:loss:lower`` that metric, lower is better.
        """
        name, sep, direction = spec.rpartition(":")
        if not (sep and direction in DIRECTIONS):
            name, direction = spec, LOWER if lower_is_better else HIGHER
        return cls(validate_key(name, "metric name"), direction)

    @property
    def lower_is_better(self) -> bool:
        return self.direction == LOWER

    @property
    def field(self) -> Field:
        """What the gate reads: ``online.metrics.auc`` the newest value reported from
        production, any other name the metric registered with the version."""
        online = online_field(self.name)
        return Field(ONLINE_NAMESPACE, online) if online else Field("metrics", self.name)

    def rule(self, min_delta: float) -> Rule:
        """The rule the challenger must pass, with the champion as ``current``: the one
        place that knows what "better" means. ``metrics.auc >= current.metrics.auc + d``,
        or ``<= ... - d`` when lower is better; like every computed comparison of the rule
        language it tolerates binary noise (0.3 - 0.1 >= 0.2 holds)."""
        if self.lower_is_better:
            return relative(self.field, "<=", -min_delta)
        return relative(self.field, ">=", min_delta)

    def __str__(self) -> str:
        return f"{self.name}:{self.direction}"


@dataclass(frozen=True, slots=True)
class GateCheck:
    """One metric of the gate: both values, and whether the challenger did well enough."""

    metric: str
    direction: str
    challenger: float | None
    against: float | None
    passed: bool
    message: str

    @property
    def delta(self) -> float | None:
        return Difference(self.against, self.challenger).delta

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "direction": self.direction,
            "challenger": self.challenger,
            "against": self.against,
            "delta": self.delta,
            "passed": self.passed,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateCheck:
        return cls(
            metric=data["metric"],
            direction=data.get("direction", HIGHER),
            challenger=data.get("challenger"),
            against=data.get("against"),
            passed=bool(data["passed"]),
            message=data["message"],
        )


@dataclass(frozen=True, slots=True)
class GateResult:
    """The verdict for CI/CD: ``passed`` only when every check passed. Each check says
    which way its metric is better."""

    challenger: str
    against: str
    min_delta: float
    checks: tuple[GateCheck, ...]

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "challenger": self.challenger,
            "against": self.against,
            "min_delta": self.min_delta,
            "checks": [check.as_dict() for check in self.checks],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateResult:
        return cls(
            challenger=data["challenger"],
            against=data["against"],
            min_delta=float(data["min_delta"]),
            checks=tuple(GateCheck.from_dict(c) for c in data["checks"]),
        )


def against_reference(challenger_model: str, against: str) -> str:
    """'production' means the challenger's model at that alias or stage; anything with a
    '/' or '@' is already a full reference (possibly of another model)."""
    if not against:
        raise InvalidInput("'against' must name an alias or stage (production) or a reference")
    if "@" in against or "/" in against:
        return against
    return f"{challenger_model}@{against}"


def validate_gate(
    metrics: Sequence[str], min_delta: float, *, lower_is_better: bool = False
) -> list[GateMetric]:
    """The metrics to check, each once in the order given; refuses a gate that checks
    nothing, or one metric asked for both ways."""
    if not metrics:
        raise InvalidInput("a gate needs at least one metric to compare (--metric auc)")
    if len(metrics) > MAX_GATE_METRICS:
        raise InvalidInput(f"a gate compares at most {MAX_GATE_METRICS} metrics")
    if not math.isfinite(min_delta):
        raise InvalidInput(f"min_delta must be a finite number, got {min_delta}")
    chosen: dict[str, GateMetric] = {}
    for spec in metrics:
        metric = GateMetric.parse(spec, lower_is_better=lower_is_better)
        seen = chosen.setdefault(metric.name, metric)
        if seen != metric:
            raise InvalidInput(
                f"metric {metric.name!r} is asked for as both {seen} and {metric}: pick one"
            )
    return list(chosen.values())


def evaluate_gate(
    challenger: Version | Subject,
    against: Version | Subject,
    metrics: Sequence[str],
    *,
    min_delta: float = 0.0,
    lower_is_better: bool = False,
) -> GateResult:
    """Does ``challenger`` beat ``against`` by at least ``min_delta`` on every metric?

    Each metric says its direction (``logloss:lower``); one without is higher-is-better,
    unless ``lower_is_better`` (then the challenger must be at least ``min_delta`` lower).
    ``online.metrics.K`` compares the newest online values, which a ``Subject`` carries.
    A metric missing on either side fails its check.
    """
    ours = challenger if isinstance(challenger, Subject) else Subject(challenger)
    theirs = against if isinstance(against, Subject) else Subject(against)
    checks = tuple(
        _check(metric, ours, theirs, min_delta)
        for metric in validate_gate(metrics, min_delta, lower_is_better=lower_is_better)
    )
    return GateResult(ours.version.reference, theirs.version.reference, min_delta, checks)


def _check(metric: GateMetric, ours: Subject, theirs: Subject, min_delta: float) -> GateCheck:
    name = metric.name
    challenger, against = ours.version, theirs.version
    c, a = _metric_value(ours, metric.field), _metric_value(theirs, metric.field)
    if c is None or a is None:
        sides = ((challenger, c, "challenger"), (against, a, "against"))
        where = " and ".join(f"{v.reference} ({role})" for v, value, role in sides if value is None)
        return GateCheck(name, metric.direction, c, a, False, f"{name}: missing on {where}: fail")
    passed, _ = evaluate(metric.rule(min_delta), ours, theirs)
    # 0.0 - x, not -x: a zero threshold reads "+0", never "-0".
    needs = f"<= {0.0 - min_delta:+g}" if metric.lower_is_better else f">= {min_delta:+g}"
    verdict = "pass" if passed else "fail"
    message = (
        f"{name}: {c:g} ({challenger.reference}) vs {a:g} ({against.reference}),"
        f" delta {c - a:+g} ({metric.direction} is better, needs {needs}): {verdict}"
    )
    return GateCheck(name, metric.direction, c, a, passed, message)


def _metric_value(subject: Subject, field: Field) -> float | None:
    value = value_of(subject, field)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
