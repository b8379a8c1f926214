"""Known vulnerabilities in an environment's packages, matched against an OSV dump.

Air-gapped sites cannot ask OSV's API, so they load the per-ecosystem zip OSV publishes
(docs/security.md). Everything in it is untrusted input: caps refuse a zip bomb, a member
that is not an OSV record is skipped and counted, and member names are never paths.

The registry keeps a loaded dump as what matching needs (``AdvisoryDB.stored``: each PyPI
package's entries, read back by ``from_stored`` for the packages an environment has) and
records each version's verdict as the check ``advisories`` (``check_details``).
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
from datetime import datetime
from typing import IO, Any, Literal, TypeVar

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from modelyard.domain.errors import InvalidInput, TooLarge
from modelyard.domain.models import iso, parse_iso

# The PyPI dump holds tens of thousands of records of a few KiB each; these caps leave it
# room to grow tenfold and still refuse an archive built to exhaust memory.
MAX_MEMBERS = 500_000
MAX_TOTAL_BYTES = 4 * 1024**3
MAX_MEMBER_BYTES = 16 * 1024**2
# The zip a registry takes, as uploaded: OSV's PyPI dump is tens of MiB, all of OSV a few
# hundred; past this it is refused before it is read whole.
MAX_DUMP_BYTES = 1024**3
MAX_SUMMARY = 500  # characters of an advisory's summary kept: a line, in OSV's own words
MAX_PACKAGE_NAME = 256
MAX_MODIFIED = 64  # an RFC 3339 time takes 35 at most

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

    def as_stored(self) -> dict[str, Any]:
        return {
            "id": self.advisory.id,
            "aliases": list(self.advisory.aliases),
            "summary": self.advisory.summary,
            "severity": self.severity.name,
            "ranges": [[list(event) for event in events] for events in self.ranges],
            "versions": sorted(self.versions),
        }

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> _Affected:
        return cls(
            advisory=_Advisory(data["id"], tuple(data["aliases"]), data["summary"]),
            severity=Severity[data["severity"]],
            ranges=tuple(tuple((kind, v) for kind, v in events) for events in data["ranges"]),
            versions=frozenset(data["versions"]),
        )


class AdvisoryDB:
    """The PyPI advisories of an OSV dump, indexed by normalised package name."""

    def __init__(
        self,
        entries: Iterable[tuple[str, _Affected]],
        records: int,
        skipped: int,
        modified: str | None = None,
    ):
        self._index: dict[str, list[_Affected]] = {}
        for name, entry in entries:
            self._index.setdefault(name, []).append(entry)
        self.records = records  # valid OSV records read, withdrawn and other ecosystems too
        self.skipped = skipped  # members that were not OSV records
        self.modified = modified  # the newest record's ``modified``, as the dump writes it

    @property
    def packages(self) -> int:
        """How many PyPI packages some advisory names."""
        return len(self._index)

    @property
    def advisories(self) -> int:
        """How many advisories name a PyPI package."""
        return len({e.advisory.id for entries in self._index.values() for e in entries})

    def stored(self) -> dict[str, list[dict[str, Any]]]:
        """Each package's entries as the registry keeps them (JSON), by normalised name:
        what matching reads, not the records (details, references and the rest go)."""
        return {name: [e.as_stored() for e in entries] for name, entries in self._index.items()}

    @classmethod
    def from_stored(cls, rows: Iterable[tuple[str, Sequence[Mapping[str, Any]]]]) -> AdvisoryDB:
        """The entries ``stored`` gave, for the packages read back (the registry reads
        those of the environments it matches, never the whole dump)."""
        return cls(
            ((name, _Affected.from_stored(e)) for name, entries in rows for e in entries), 0, 0
        )

    @staticmethod
    def keys(packages: Iterable[str]) -> list[str]:
        """The names ``stored`` files packages under: PEP 503's normal form."""
        return sorted({canonicalize_name(p) for p in packages})

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
            raise InvalidInput(
                f"the OSV dump is not a readable zip: {exc}", code="not_a_zip"
            ) from None

    @classmethod
    def from_json(cls, documents: Iterable[str | bytes]) -> AdvisoryDB:
        """Each document one OSV record; those that are not are skipped and counted."""
        entries: list[tuple[str, _Affected]] = []
        records = skipped = 0
        modified: str | None = None
        for document in documents:
            try:
                record = json.loads(document)
                entries.extend(_entries(record))
            except (ValueError, RecursionError, _NotOsv):  # bad JSON, UTF-8, nesting, records
                skipped += 1
            else:
                records += 1
                modified = max(modified or "", record["modified"][:MAX_MODIFIED])
        return cls(entries, records, skipped, modified)

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
            " refused as a possible zip bomb",
            code="zip_bomb",
        )
    total = sum(info.file_size for info in members)
    largest = max((info.file_size for info in members), default=0)
    if total > max_total or largest > MAX_MEMBER_BYTES:
        raise InvalidInput(
            f"the OSV dump would unpack to {total} bytes (largest member {largest}), more"
            f" than the {max_total} ({MAX_MEMBER_BYTES} a member) allowed: refused as a"
            " possible zip bomb",
            code="zip_bomb",
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
        summary=_get(record, "summary", str, "")[:MAX_SUMMARY],
    )
    return [
        (package, _affected(advisory, entry, record))
        for package, entry in _pypi(_objects(record, "affected"))
    ]


def _pypi(affected: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for entry in affected:
        package = _get(entry, "package", dict, {})
        if _get(package, "ecosystem", str, "") == ECOSYSTEM and _get(package, "name", str, ""):
            name = canonicalize_name(package["name"])
            if len(name) > MAX_PACKAGE_NAME:
                raise _NotOsv("package")  # no PyPI name is that long; the registry keys on it
            yield name, entry


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


# -- the registry's check ----------------------------------------------------------------------

MAX_STORED_FINDINGS = 500
NO_ENVIRONMENT = "no captured environment: which packages it runs is unknown"


def check_dump_size(size: int) -> None:
    """Refuse a dump larger than a registry takes (a declared length, or bytes received)."""
    if size > MAX_DUMP_BYTES:
        raise TooLarge(
            f"the OSV dump is larger than the {MAX_DUMP_BYTES} bytes a registry takes",
            limit=MAX_DUMP_BYTES,
        )


def check_details(db: AdvisoryDB, packages: Mapping[str, str] | None) -> dict[str, Any]:
    """A version's ``advisories`` check as the registry keeps it: the verdict, the value
    ``advisories.severity`` reads, and the findings (the first MAX_STORED_FINDINGS; the
    verdict and the severity count them all). Without a captured environment the verdict
    is unknown: nothing says which packages it runs, so nothing shows them safe."""
    if packages is None:
        return {
            "verdict": "unknown",
            "severity": "unknown",
            "packages": 0,
            "findings": [],
            "findings_total": 0,
            "note": NO_ENVIRONMENT,
        }
    verdict = Verdict.of(db.match(packages))
    return {
        "verdict": verdict.status,
        "severity": rule_severity(f.severity.name for f in verdict.findings),
        "packages": len(packages),
        "findings": [f.as_dict() for f in verdict.findings[:MAX_STORED_FINDINGS]],
        "findings_total": len(verdict.findings),
    }


def rule_severity(severities: Iterable[str]) -> str:
    """What ``advisories.severity`` reads (on filters.SEVERITY_SCALE) of findings by their
    severities' names: the highest, ``unknown`` if one has none (it counts above them all),
    ``none`` without any. Findings that only may affect the version (a version PEP 440
    cannot read) count: a limit must not pass what nobody could evaluate."""
    found = {Severity[name] for name in severities}
    if Severity.UNKNOWN in found:
        return "unknown"
    return max(found).name.lower() if found else "none"


def summary_of(details: Mapping[str, Any]) -> str:
    """The check's details in a line (the CLI's table, the version page)."""
    if "note" in details:
        return str(details["note"])
    return (
        f"{details['findings_total']} advisory finding(s) among {details['packages']}"
        f" package(s), severity {details['severity']}"
    )


def check_status(details: Mapping[str, Any]) -> Literal["pass", "fail"]:
    """The check passes on a verdict of pass only: an unknown one (a match nobody could
    evaluate, no environment) fails closed, as an affected one does."""
    return "pass" if details["verdict"] == "pass" else "fail"


def same_verdict(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether a re-evaluation says what the stored check says: the same verdict and the
    same findings by advisory, package, severity, match and fixed versions. A summary or
    an alias a newer dump reworded alone rewrites nothing (nor journals anything)."""
    return old is not None and _substance(old) == _substance(new)


def _substance(details: Mapping[str, Any]) -> tuple[Any, ...]:
    findings = tuple(
        (f["package"], f["installed"], f["advisory"], f["severity"], f["match"], tuple(f["fixed"]))
        for f in details["findings"]
    )
    return details["verdict"], details["severity"], details["findings_total"], findings


def newly_affecting(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The findings of ``new`` that affect the version (not merely may) and that ``old``
    did not list as affecting it, advisory and package alike."""
    before = {
        (f["advisory"], f["package"])
        for f in (old or {}).get("findings", ())
        if f["match"] == "affected"
    }
    return [
        f
        for f in new["findings"]
        if f["match"] == "affected" and (f["advisory"], f["package"]) not in before
    ]


# -- what the registry says of its dump -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DumpSummary:
    """The OSV dump the registry matches against: its digest, what it holds, who loaded
    it when, and whether every live version has been evaluated against it yet."""

    sha256: str
    size: int
    records: int  # OSV records read, withdrawn and other ecosystems too
    skipped: int  # members that were not OSV records
    packages: int  # PyPI packages some advisory names
    advisories: int  # advisories that name a PyPI package
    modified: str | None  # the newest record's modified time, as the dump writes it
    loaded_at: datetime
    loaded_by: str
    pending: bool  # live versions not yet evaluated against it

    def as_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "size": self.size,
            "records": self.records,
            "skipped": self.skipped,
            "packages": self.packages,
            "advisories": self.advisories,
            "modified": self.modified,
            "loaded_at": iso(self.loaded_at),
            "loaded_by": self.loaded_by,
            "pending": self.pending,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DumpSummary:
        return cls(
            sha256=data["sha256"],
            size=int(data["size"]),
            records=int(data["records"]),
            skipped=int(data["skipped"]),
            packages=int(data["packages"]),
            advisories=int(data["advisories"]),
            modified=data.get("modified"),
            loaded_at=parse_iso(data["loaded_at"]),
            loaded_by=data["loaded_by"],
            pending=bool(data["pending"]),
        )


@dataclass(frozen=True, slots=True)
class Reevaluation:
    """What evaluating the live versions against a dump did: how many were evaluated, how
    many verdicts changed (each journaled), how many versions in an exclusive or protected
    stage it found newly affected (each a ``version.advisories_affected`` event)."""

    versions: int = 0
    changed: int = 0
    affected: int = 0

    def __add__(self, other: Reevaluation) -> Reevaluation:
        return Reevaluation(
            self.versions + other.versions,
            self.changed + other.changed,
            self.affected + other.affected,
        )

    def as_dict(self) -> dict[str, int]:
        return {"versions": self.versions, "changed": self.changed, "affected": self.affected}


@dataclass(frozen=True, slots=True)
class DumpLoaded:
    """A load: the dump now in force; ``replaced`` false when it was that one already."""

    dump: DumpSummary
    replaced: bool
    evaluation: Reevaluation

    def as_dict(self) -> dict[str, Any]:
        return {
            "dump": self.dump.as_dict(),
            "replaced": self.replaced,
            "evaluation": self.evaluation.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DumpLoaded:
        return cls(
            DumpSummary.from_dict(data["dump"]),
            bool(data["replaced"]),
            Reevaluation(**data["evaluation"]),
        )
