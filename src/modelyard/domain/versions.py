"""What a caller submits to register a version, and the limits it must respect.

Validated here, once, whether it arrives over REST or from the in-process SDK, so the
two paths cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from modelyard.domain.checks import refuse_check_tags
from modelyard.domain.errors import Conflict, InvalidInput, TooLarge
from modelyard.domain.manifest import FileEntry, build_manifest
from modelyard.domain.models import DatasetRef, Environment, Origin, SourceRef
from modelyard.domain.names import validate_key, validate_tag_value, validate_text

MAX_TAGS = 100
MAX_PARAMS = 1000
MAX_METRICS = 1000
MAX_DESCRIPTION = 64 * 1024
MAX_PACKAGES = 5000
MAX_SHORT_TEXT = 1024
MAX_ORIGIN_CHECKS = 100


@dataclass(frozen=True, slots=True)
class NewVersion:
    files: list[FileEntry]
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""
    dataset: DatasetRef | None = None
    source: SourceRef | None = None
    environment: Environment | None = None
    run: str | None = None
    framework: str | None = None
    format: str | None = None
    origin: Origin | None = None
    # An import's own number for the version (with an origin only), above the model's latest.
    number: int | None = None


def validate_new_version(spec: NewVersion) -> NewVersion:
    """Check every field against its limit; return the spec with the manifest sorted."""
    files = build_manifest(spec.files)
    validate_tags(spec.tags)
    _check_count(spec.params, MAX_PARAMS, "params")
    for key, value in spec.params.items():
        validate_key(key, "param name")
        validate_tag_value(value, f"param {key!r}")
    validate_metrics(spec.metrics, MAX_METRICS)
    validate_description(spec.description)
    for what, text, limit in (
        ("run reference", spec.run, MAX_SHORT_TEXT),
        ("framework", spec.framework, 64),
        ("format", spec.format, 64),
    ):
        _check_text(what, text, limit)
    if spec.dataset is not None:
        if not spec.dataset.name:
            raise InvalidInput("dataset reference needs a name or URI")
        _check_text("dataset name", spec.dataset.name, MAX_SHORT_TEXT)
        _check_text("dataset version", spec.dataset.version, 256)
        _check_text("dataset digest", spec.dataset.digest, 256)
    if spec.source is not None:
        _check_text("source repo", spec.source.repo, MAX_SHORT_TEXT)
        _check_text("source commit", spec.source.commit, 64)
        _check_text("source branch", spec.source.branch, 256)
    if spec.environment is not None:
        _check_text("python version", spec.environment.python, 256)
        _check_text("platform", spec.environment.platform, 256)
        if len(spec.environment.packages) > MAX_PACKAGES:
            raise TooLarge(f"environment lists more than {MAX_PACKAGES} packages")
        for name, version in spec.environment.packages.items():
            _check_text("package name", name, 256)
            _check_text("package version", version, 256)
    if spec.origin is not None:
        validate_origin(spec.origin)
    elif spec.number is not None:
        raise InvalidInput(
            "a version chooses its number only when imported with an origin (numbers are"
            " otherwise the next in turn)"
        )
    return NewVersion(
        files=files,
        params={k: str(v) for k, v in spec.params.items()},
        metrics={k: float(v) for k, v in spec.metrics.items()},
        tags=dict(spec.tags),
        description=spec.description,
        dataset=spec.dataset,
        source=spec.source,
        environment=spec.environment,
        run=spec.run,
        framework=spec.framework,
        format=spec.format,
        origin=spec.origin,
        number=spec.number,
    )


def validate_origin(origin: Origin) -> Origin:
    """Short texts, an origin's every field: it is shown, searched by the importer, kept."""
    for what, text, limit in (
        ("origin system", origin.system, 64),
        ("origin uri", origin.uri, MAX_SHORT_TEXT),
        ("origin name", origin.name, MAX_SHORT_TEXT),
        ("origin version", origin.version, 64),
        ("origin creator", origin.created_by, 256),
        ("origin run link", origin.run_link, MAX_SHORT_TEXT),
        ("origin key id", origin.key_id, 64),
        ("origin bundle", origin.bundle, 64),
        ("origin stage", origin.stage, 64),
    ):
        _check_text(what, text, limit)
    if len(origin.checks) > MAX_ORIGIN_CHECKS:
        raise TooLarge(f"an origin keeps at most {MAX_ORIGIN_CHECKS} checks' results")
    for check in origin.checks:
        for what, text, limit in (
            ("origin check", check.name, 64),
            ("origin check status", check.status, 16),
            ("origin check reporter", check.reporter, 256),
            ("origin check url", check.url, 2048),
        ):
            _check_text(what, text, limit)
    if not origin.system or not origin.name:
        raise InvalidInput("an origin names its system and the model's name there")
    return origin


def validate_tags(tags: dict[str, str], kept: Mapping[str, str] | None = None) -> None:
    """``kept``: the tags before an edit, whose unchanged entries pass as they are (a
    ``check.`` tag from before they were refused may stay, but not be set)."""
    _check_count(tags, MAX_TAGS, "tags")
    kept = kept or {}
    refuse_check_tags(key for key, value in tags.items() if kept.get(key) != value)
    for key, value in tags.items():
        validate_key(key, "tag name")
        validate_tag_value(value, f"tag {key!r}")


def validate_metrics(
    metrics: Mapping[str, object], limit: int, per: str = "version"
) -> dict[str, float]:
    """Metric names that can be filter fields, finite numbers, at most ``limit`` of them:
    a registration's metrics and a report of online ones are held to the same rule."""
    _check_count(metrics, limit, "metrics", per)
    for key, metric in metrics.items():
        validate_key(key, "metric name")
        if isinstance(metric, bool) or not isinstance(metric, int | float):
            raise InvalidInput(f"metric {key!r} must be a number, got {str(metric)[:40]!r}")
        try:
            finite = math.isfinite(float(metric))
        except OverflowError:  # an int beyond any float
            finite = False
        if not finite:
            raise InvalidInput(f"metric {key!r} must be a finite number, got {str(metric)[:40]}")
    return {key: float(metric) for key, metric in metrics.items()}  # type: ignore[arg-type]


def validate_description(description: str) -> None:
    if not isinstance(description, str):
        raise InvalidInput("description must be a string")
    if len(description) > MAX_DESCRIPTION:
        raise TooLarge(f"description is longer than {MAX_DESCRIPTION} characters")
    if "\x00" in description:
        raise InvalidInput("description must not contain NUL")


def _check_count(values: Mapping[str, object], limit: int, what: str, per: str = "version") -> None:
    if not isinstance(values, dict):
        raise InvalidInput(f"{what} must be an object of names to values")
    if len(values) > limit:
        raise TooLarge(f"at most {limit} {what} per {per}; got {len(values)}")


def _check_text(what: str, text: str | None, limit: int) -> None:
    if text is not None:
        validate_text(text, what, limit)


def next_number(name: str, latest: int, wanted: int | None) -> int:
    """The next number in turn, or an import's own (which must lie above the latest: a
    number once given is never given again, so a reference keeps meaning one version)."""
    if wanted is None:
        return latest + 1
    if wanted <= latest:
        raise Conflict(
            f"{name} already has numbers up to {latest}: an imported version keeps its own"
            f" number ({wanted}) only above them",
            code="number_taken",
        )
    return wanted
