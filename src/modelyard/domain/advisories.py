"""Known vulnerabilities in an environment's packages, matched against an OSV dump.

Air-gapped sites cannot ask OSV's API, so they load the per-ecosystem zip OSV publishes
(docs/security.md). Everything in it is untrusted input: caps refuse a zip bomb, a member
that is not an OSV record is skipped and counted, and member names are never paths.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal, TypeVar

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from modelyard.domain.errors import InvalidInput

# The PyPI dump holds tens of thousands of records of a few KiB each; these caps leave it
# room to grow tenfold and still refuse an archive built to exhaust memory.
MAX_MEMBERS = 500_000
MAX_TOTAL_BYTES = 4 * 1024**3
MAX_MEMBER_BYTES = 16 * 1024**2

ECOSYSTEM = "PyPI"
_COMPARABLE_RANGES = frozenset({"ECOSYSTEM", "SEMVER"})  # GIT ranges name commits
_EVENTS = frozenset({"introduced", "fixed", "last_affected", "limit"})

T = TypeVar("T")


class Severity(enum.IntEnum):
    """Ordered, so a threshold is a comparison; UNKNOWN is below LOW only for sorting."""

    UNKNOWN = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def of_score(cls, score: float) -> Severity:
        """CVSS's qualitative rating; 0.0 ("none") still names a matched advisory: LOW."""
        if score >= 9.0:
            return cls.CRITICAL
        if score >= 7.0:
            return cls.HIGH
        if score >= 4.0:
            return cls.MEDIUM
        return cls.LOW

    @classmethod
    def of_label(cls, label: str) -> Severity:
        """GitHub's labels (LOW, MODERATE, HIGH, CRITICAL) and CVSS's own names."""
        label = label.strip().upper()
        if label == "MODERATE":
            return cls.MEDIUM
        return cls.__members__.get(label, cls.UNKNOWN)

    def reaches(self, threshold: Severity) -> bool:
        """Whether a finding of this severity fails at ``threshold``. An UNKNOWN one does at
        every threshold: nothing shows it to be below."""
        return self is Severity.UNKNOWN or self >= threshold


# -- CVSS v3 -----------------------------------------------------------------------------------

# The base metrics' weights, from the CVSS v3.1 specification, section 7.4.
_CVSS3_WEIGHTS: dict[str, dict[str, float]] = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "UI": {"N": 0.85, "R": 0.62},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
    "I": {"H": 0.56, "L": 0.22, "N": 0.0},
    "A": {"H": 0.56, "L": 0.22, "N": 0.0},
}
_CVSS3_PRIVILEGES = {"U": {"N": 0.85, "L": 0.62, "H": 0.27}, "C": {"N": 0.85, "L": 0.68, "H": 0.5}}


def cvss3_base_score(vector: str) -> float:
    """The base score of a CVSS v3.0/v3.1 vector such as CVSS:3.1/AV:N/AC:L/...; an
    InvalidInput if it lacks a base metric or has a value the specification does not."""
    prefix, *parts = vector.strip().split("/")
    if prefix not in ("CVSS:3.0", "CVSS:3.1"):
        raise InvalidInput(f"{vector!r} is not a CVSS v3 vector")
    metrics = {name: value for name, _, value in (part.partition(":") for part in parts)}
    try:
        scope = metrics["S"]
        privileges = _CVSS3_PRIVILEGES[scope][metrics["PR"]]
        w = {name: values[metrics[name]] for name, values in _CVSS3_WEIGHTS.items()}
    except KeyError:
        raise InvalidInput(f"{vector!r}: a base metric is missing or invalid") from None
    iss = 1 - (1 - w["C"]) * (1 - w["I"]) * (1 - w["A"])
    changed = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15  # the scope changed
    impact = 6.42 * iss if scope == "U" else changed
    exploitability = 8.22 * w["AV"] * w["AC"] * privileges * w["UI"]
    if impact <= 0:
        return 0.0
    total = impact + exploitability if scope == "U" else 1.08 * (impact + exploitability)
    return _round_up(min(total, 10.0))


def _round_up(value: float) -> float:
    """CVSS v3.1's Roundup (Appendix A): to one decimal, upwards, immune to float noise."""
    scaled = round(value * 100_000)
    if scaled % 10_000 == 0:
        return scaled / 100_000
    return (math.floor(scaled / 10_000) + 1) / 10


# -- what a match reports ----------------------------------------------------------------------

Match = Literal["affected", "unknown"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One advisory naming one installed package. ``match`` is "unknown" when a range could
    not be compared with the installed version (a version PEP 440 cannot read)."""

    package: str
    installed: str
    advisory: str
    aliases: tuple[str, ...]
    summary: str
    severity: Severity
    fixed: tuple[str, ...]
    match: Match

    def as_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "installed": self.installed,
            "advisory": self.advisory,
            "aliases": list(self.aliases),
            "summary": self.summary,
            "severity": self.severity.name,
            "fixed": list(self.fixed),
            "match": self.match,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """fail: an affected finding at or above ``fail_on``; unknown: none, but a range could
    not be evaluated; pass otherwise (findings below the threshold stay listed)."""

    status: Literal["pass", "fail", "unknown"]
    fail_on: Severity
    max_severity: Severity | None
    findings: tuple[Finding, ...]

    @classmethod
    def of(cls, findings: Sequence[Finding], fail_on: Severity = Severity.LOW) -> Verdict:
        affected = [f for f in findings if f.match == "affected"]
        status: Literal["pass", "fail", "unknown"] = "pass"
        if any(f.severity.reaches(fail_on) for f in affected):
            status = "fail"
        elif len(affected) < len(findings):
            status = "unknown"
        top = max((f.severity for f in findings), default=None)
        return cls(status, fail_on, top, tuple(findings))

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.status,
            "fail_on": self.fail_on.name,
            "max_severity": self.max_severity.name if self.max_severity is not None else None,
            "findings": [f.as_dict() for f in self.findings],
        }


# -- the database ------------------------------------------------------------------------------


class _NotOsv(Exception):
    """A member that parses as JSON but is not an OSV record."""


@dataclass(frozen=True, slots=True)
class _Advisory:
    id: str
    aliases: tuple[str, ...]
    summary: str


@dataclass(frozen=True, slots=True)
class _Affected:
    """One `affected` entry: its ranges as (event, version) pairs, its explicit versions."""

    advisory: _Advisory
    severity: Severity
    ranges: tuple[tuple[tuple[str, str], ...], ...]
    versions: frozenset[str]


class AdvisoryDB:
    """The PyPI advisories of an OSV dump, indexed by normalised package name."""

    def __init__(self, entries: Iterable[tuple[str, _Affected]], records: int, skipped: int):
        self._index: dict[str, list[_Affected]] = {}
        for name, entry in entries:
            self._index.setdefault(name, []).append(entry)
        self.records = records  # valid OSV records read, withdrawn and other ecosystems too
        self.skipped = skipped  # members that were not OSV records

    @classmethod
    def from_zip(
        cls,
        source: str | os.PathLike[str] | IO[bytes],
        *,
        max_members: int = MAX_MEMBERS,
        max_total_bytes: int = MAX_TOTAL_BYTES,
    ) -> AdvisoryDB:
        """Read OSV's ``all.zip``; the caps are checked on the declared sizes before anything
        is decompressed (zipfile never inflates a member past its declared size)."""
        try:
            with zipfile.ZipFile(source) as archive:
                members = [info for info in archive.infolist() if not info.is_dir()]
                _check_caps(members, max_members, max_total_bytes)
                return cls.from_json(archive.read(info) for info in members)
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as exc:
            # a corrupt, encrypted or oddly compressed archive: refused whole, not half read
            raise InvalidInput(f"the OSV dump is not a readable zip: {exc}") from None

    @classmethod
    def from_json(cls, documents: Iterable[str | bytes]) -> AdvisoryDB:
        """Each document one OSV record; those that are not are skipped and counted."""
        entries: list[tuple[str, _Affected]] = []
        records = skipped = 0
        for document in documents:
            try:
                entries.extend(_entries(json.loads(document)))
            except (ValueError, RecursionError, _NotOsv):  # bad JSON, UTF-8, nesting, records
                skipped += 1
            else:
                records += 1
        return cls(entries, records, skipped)

    def match(self, environment_packages: Mapping[str, str]) -> list[Finding]:
        """Every advisory naming an installed package at its version, most severe first."""
        findings = [
            finding
            for package, installed in environment_packages.items()
            for finding in _findings(
                package, installed, self._index.get(canonicalize_name(package), ())
            )
        ]
        return sorted(findings, key=lambda f: (-f.severity, f.advisory, f.package))


def _check_caps(members: list[zipfile.ZipInfo], max_members: int, max_total: int) -> None:
    if len(members) > max_members:
        raise InvalidInput(
            f"the OSV dump has {len(members)} members, more than the {max_members} allowed:"
            " refused as a possible zip bomb"
        )
    total = sum(info.file_size for info in members)
    largest = max((info.file_size for info in members), default=0)
    if total > max_total or largest > MAX_MEMBER_BYTES:
        raise InvalidInput(
            f"the OSV dump would unpack to {total} bytes (largest member {largest}), more"
            f" than the {max_total} ({MAX_MEMBER_BYTES} a member) allowed: refused as a"
            " possible zip bomb"
        )


# -- reading one record, validating every field it uses -----------------------------------------


def _get(obj: Mapping[str, Any], key: str, kind: type[T], default: T) -> T:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise _NotOsv(key)
    return value


def _objects(obj: Mapping[str, Any], key: str) -> Iterator[dict[str, Any]]:
    for item in _get(obj, key, list, []):
        if not isinstance(item, dict):
            raise _NotOsv(key)
        yield item


def _strings(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    items = tuple(_get(obj, key, list, []))
    if not all(isinstance(item, str) for item in items):
        raise _NotOsv(key)
    return items


def _entries(record: object) -> list[tuple[str, _Affected]]:
    """The (normalised name, entry) pairs a record gives: none when withdrawn or about
    other ecosystems; _NotOsv when it is not an OSV record."""
    if not isinstance(record, dict) or not _get(record, "id", str, ""):
        raise _NotOsv("id")
    if not _get(record, "modified", str, ""):
        raise _NotOsv("modified")
    if _get(record, "withdrawn", str, ""):
        return []
    advisory = _Advisory(
        id=record["id"],
        aliases=_strings(record, "aliases"),
        summary=_get(record, "summary", str, ""),
    )
    return [
        (package, _affected(advisory, entry, record))
        for package, entry in _pypi(_objects(record, "affected"))
    ]


def _pypi(affected: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for entry in affected:
        package = _get(entry, "package", dict, {})
        if _get(package, "ecosystem", str, "") == ECOSYSTEM and _get(package, "name", str, ""):
            yield canonicalize_name(package["name"]), entry


def _affected(advisory: _Advisory, entry: dict[str, Any], record: dict[str, Any]) -> _Affected:
    ranges = []
    for found in _objects(entry, "ranges"):
        events = tuple(_event(event) for event in _objects(found, "events"))
        if _get(found, "type", str, "") in _COMPARABLE_RANGES:
            ranges.append(events)
    return _Affected(
        advisory=advisory,
        severity=_severity((entry, record)),
        ranges=tuple(ranges),
        versions=frozenset(_strings(entry, "versions")),
    )


def _event(event: dict[str, Any]) -> tuple[str, str]:
    """An event has exactly one of introduced, fixed, last_affected and limit."""
    if len(event) != 1:
        raise _NotOsv("events")
    ((kind, version),) = event.items()
    if kind not in _EVENTS or not isinstance(version, str):
        raise _NotOsv("events")
    return kind, version


def _severity(sources: tuple[dict[str, Any], ...]) -> Severity:
    """The highest CVSS v3 score given (the affected entry's, else the record's), else a
    database_specific label (GitHub's), else UNKNOWN. CVSS v4 is not computed here."""
    for source in sources:
        scores = []
        for item in _objects(source, "severity"):
            if _get(item, "type", str, "") == "CVSS_V3":
                try:
                    scores.append(cvss3_base_score(_get(item, "score", str, "")))
                except InvalidInput:
                    continue  # a vector we cannot read: the label may still tell
        if scores:
            return Severity.of_score(max(scores))
    labels = (_get(_get(s, "database_specific", dict, {}), "severity", str, "") for s in sources)
    rated = (Severity.of_label(label) for label in labels)
    return next((r for r in rated if r is not Severity.UNKNOWN), Severity.UNKNOWN)


# -- matching ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=65_536)
def _version(text: str) -> Version | None:
    """PEP 440, parsed only for the packages an environment has (the dump is never
    parsed whole); None for what PEP 440 cannot read."""
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _in_range(installed: Version, events: tuple[tuple[str, str], ...]) -> bool | None:
    """OSV's evaluation: walk the events in version order, introduced turning the range on
    and fixed/last_affected off; a limit bounds it from above. None: an event's version
    cannot be compared."""
    parsed: list[tuple[Version | None, str]] = []
    for kind, text in events:
        if kind == "introduced" and text == "0":
            parsed.append((None, kind))  # every version: sorts first
        elif (version := _version(text)) is None and not (kind == "limit" and text == "*"):
            return None
        else:
            parsed.append((version, kind))
    limits = [v for v, kind in parsed if kind == "limit"]
    if limits and all(v is not None and installed >= v for v in limits):
        return False
    affected = False
    for version, kind in sorted((p for p in parsed if p[1] != "limit"), key=_event_order):
        if version is None:  # introduced "0"
            affected = True
        elif kind == "introduced":
            affected = affected or installed >= version
        elif installed > version or (kind == "fixed" and installed == version):
            affected = False
    return affected


def _event_order(event: tuple[Version | None, str]) -> tuple[bool, Version]:
    """Version order, introduced "0" (None) first; the sort is stable for equal versions."""
    return (event[0] is not None, event[0] or _ZERO)


_ZERO = Version("0")


def _evaluate(entry: _Affected, installed: str) -> tuple[Match, tuple[str, ...]] | None:
    """Whether one affected entry covers the installed version, and the fixed versions
    of the ranges that do; None when it does not."""
    version = _version(installed)
    if installed in entry.versions or (
        version is not None and version in {_version(v) for v in entry.versions}
    ):
        return "affected", ()
    if version is None:
        return ("unknown", ()) if entry.ranges else None
    results = [(events, _in_range(version, events)) for events in entry.ranges]
    hits = [events for events, hit in results if hit]
    if hits:
        return "affected", tuple(v for events in hits for kind, v in events if kind == "fixed")
    if any(hit is None for _, hit in results):
        return "unknown", ()
    return None


def _findings(package: str, installed: str, entries: Iterable[_Affected]) -> Iterator[Finding]:
    """One finding per advisory: its affected entries and ranges combine with OR."""
    by_advisory: dict[str, list[tuple[_Affected, Match, tuple[str, ...]]]] = {}
    for entry in entries:
        result = _evaluate(entry, installed)
        if result is not None:
            by_advisory.setdefault(entry.advisory.id, []).append((entry, *result))
    for matched in by_advisory.values():
        advisory = matched[0][0].advisory
        yield Finding(
            package=package,
            installed=installed,
            advisory=advisory.id,
            aliases=advisory.aliases,
            summary=advisory.summary,
            severity=max(entry.severity for entry, _, _ in matched),
            fixed=tuple(sorted({v for _, _, fixed in matched for v in fixed}, key=_fixed_order)),
            match="affected" if any(m == "affected" for _, m, _ in matched) else "unknown",
        )


def _fixed_order(text: str) -> tuple[bool, Version | int, str]:
    version = _version(text)
    return (version is None, version if version is not None else 0, text)
