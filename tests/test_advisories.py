"""Known vulnerabilities: an OSV dump the tests write, matched against environments."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

import modelyard
from modelyard.cli.main import app
from modelyard.domain.advisories import (
    AdvisoryDB,
    Finding,
    Severity,
    Verdict,
    check_details,
    cvss3_base_score,
)
from modelyard.domain.errors import InvalidInput
from modelyard.domain.filters import SEVERITY_SCALE
from modelyard.domain.models import Environment

LOG4SHELL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"  # CVE-2021-44228: 10.0
READ_ONLY = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"  # 7.5


def osv(
    id: str,
    package: str,
    *events: dict[str, str],
    versions: tuple[str, ...] = (),
    ecosystem: str = "PyPI",
    range_type: str = "ECOSYSTEM",
    **fields: Any,
) -> dict[str, Any]:
    """An OSV record: one affected package, one range of ``events`` (if any)."""
    affected: dict[str, Any] = {"package": {"ecosystem": ecosystem, "name": package}}
    if events:
        affected["ranges"] = [{"type": range_type, "events": list(events)}]
    if versions:
        affected["versions"] = list(versions)
    return {"id": id, "modified": "2024-01-01T00:00:00Z", "affected": [affected], **fields}


def cvss(vector: str) -> list[dict[str, str]]:
    return [{"type": "CVSS_V3", "score": vector}]


RECORDS = [
    osv(
        "GHSA-0001",
        "requests",
        {"introduced": "2.0"},
        {"fixed": "2.31.0"},
        aliases=["CVE-2023-32681"],
        summary="Proxy-Authorization header leaked on redirect",
        severity=cvss(READ_ONLY),
    ),
    osv(
        "GHSA-0002",
        "urllib3",
        {"introduced": "1.0"},
        {"last_affected": "1.26.5"},
        database_specific={"severity": "MODERATE"},
    ),
    osv("GHSA-0003", "jinja2", {"introduced": "0"}, {"fixed": "3.1.3"}, severity=cvss(LOG4SHELL)),
    osv("PYSEC-0004", "evilpkg", versions=("1.0", "1.1")),
    osv("GHSA-0005", "requests", {"introduced": "0"}, withdrawn="2024-02-01T00:00:00Z"),
    osv("GHSA-0006", "requests", {"introduced": "0"}, ecosystem="npm"),
    osv("GHSA-0007", "Scikit_Learn", {"introduced": "1.0"}, {"fixed": "1.5.0"}),
    osv("GHSA-0008", "torch", {"introduced": "2.0.0rc1"}, {"fixed": "2.2.0"}),
    osv("GHSA-0009", "numpy", {"introduced": "0"}, {"fixed": "1.22.0.post1"}),
    osv("GHSA-0010", "oddball", {"introduced": "0"}, {"fixed": "2.0-final-really"}),
    osv("GHSA-0011", "gitonly", {"introduced": "0"}, range_type="GIT"),
]


def osv_zip(records: list[dict[str, Any]], extra: dict[str, bytes] | None = None) -> bytes:
    """A zip as OSV publishes it: one JSON file per advisory, plus ``extra`` members. The
    same records make the same bytes (a member's time is fixed, not the clock's), so a
    test can load one dump twice."""
    members = {f"{record['id']}.json": json.dumps(record) for record in records}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in {**members, **(extra or {})}.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            archive.writestr(info, content, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def write_dump(path: Path, records: list[dict[str, Any]], extra: dict[str, bytes]) -> Path:
    path.write_bytes(osv_zip(records, extra))
    return path


MALFORMED = {
    "broken.json": b'{"id": "GHSA-x", ',
    "not-osv.json": b'{"hello": "world"}',
    "bad-affected.json": json.dumps({"id": "X", "modified": "m", "affected": "requests"}).encode(),
    "bad-event.json": json.dumps(
        osv("X", "requests", {"introduced": "0", "fixed": "1.0"})  # two keys in one event
    ).encode(),
    "../../escape.json": b"[]",  # a name that would climb out, were names paths
}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> AdvisoryDB:
    dump = write_dump(tmp_path_factory.mktemp("osv") / "all.zip", RECORDS, MALFORMED)
    return AdvisoryDB.from_zip(dump)


def one(db: AdvisoryDB, package: str, version: str) -> Finding | None:
    found = db.match({package: version})
    assert len(found) <= 1, found
    return found[0] if found else None


def test_the_dump_is_read_and_what_is_not_osv_is_counted(db: AdvisoryDB) -> None:
    assert db.records == len(RECORDS) and db.skipped == len(MALFORMED)


@pytest.mark.parametrize(
    ("version", "affected"),
    [("1.9", False), ("2.0", True), ("2.0rc1", False), ("2.30.9", True), ("2.31.0", False)],
)
def test_introduced_then_fixed(db: AdvisoryDB, version: str, affected: bool) -> None:
    finding = one(db, "requests", version)
    assert (finding is not None) is affected
    if finding is not None:
        assert finding.advisory == "GHSA-0001" and finding.aliases == ("CVE-2023-32681",)
        assert finding.fixed == ("2.31.0",) and finding.severity is Severity.HIGH
        assert finding.summary.startswith("Proxy-Authorization")


@pytest.mark.parametrize(
    ("version", "affected"),
    [("1.26.5", True), ("1.26.5.post1", False), ("1.26.6rc1", False), ("0.9", False)],
)
def test_last_affected_is_included(db: AdvisoryDB, version: str, affected: bool) -> None:
    finding = one(db, "urllib3", version)
    assert (finding is not None) is affected
    if finding is not None:
        assert finding.fixed == () and finding.severity is Severity.MEDIUM  # GitHub's MODERATE


@pytest.mark.parametrize(
    ("version", "affected"),
    [("0.0.1.dev0", True), ("3.1.3rc1", True), ("3.1.3", False), ("3.1.3.post1", False)],
)
def test_introduced_zero_means_every_version(db: AdvisoryDB, version: str, affected: bool) -> None:
    finding = one(db, "jinja2", version)
    assert (finding is not None) is affected
    if finding is not None:
        assert finding.severity is Severity.CRITICAL


def test_pre_and_post_releases_at_range_edges(db: AdvisoryDB) -> None:
    assert one(db, "torch", "2.0.0rc1") is not None  # introduced at the pre-release
    assert one(db, "torch", "2.0.0b1") is None  # before it
    assert one(db, "torch", "2.2.0rc1") is not None  # a pre-release of the fix is not it
    assert one(db, "numpy", "1.22.0") is not None  # fixed only in the post-release
    assert one(db, "numpy", "1.22.0.post1") is None


def test_the_explicit_versions_list(db: AdvisoryDB) -> None:
    assert one(db, "evilpkg", "1.1") is not None
    assert one(db, "evilpkg", "1.1.0") is not None  # PEP 440 equal
    assert one(db, "evilpkg", "1.2") is None
    finding = one(db, "evilpkg", "1.0")
    assert finding is not None and finding.severity is Severity.UNKNOWN


def test_withdrawn_other_ecosystems_and_git_ranges_are_ignored(db: AdvisoryDB) -> None:
    assert [f.advisory for f in db.match({"requests": "2.5"})] == ["GHSA-0001"]
    assert db.match({"gitonly": "1.0"}) == []


def test_names_are_normalised_both_ways(db: AdvisoryDB) -> None:
    for name in ("scikit-learn", "Scikit_Learn", "scikit.learn"):
        finding = one(db, name, "1.4.2")
        assert finding is not None and finding.package == name  # as the environment says


def test_an_unparsable_version_is_unknown_not_passed(db: AdvisoryDB) -> None:
    finding = one(db, "requests", "not a version!")
    assert finding is not None and finding.match == "unknown"
    oddball = one(db, "oddball", "1.0")  # the fix's version is what PEP 440 cannot read
    assert oddball is not None and oddball.match == "unknown"
    assert one(db, "evilpkg", "not a version!") is None  # only a versions list: it is not
    weird = AdvisoryDB.from_json([json.dumps(osv("W", "weird", versions=("1.0-custom!",)))])
    assert weird.match({"weird": "1.0-custom!"})[0].match == "affected"  # by string


def test_ranges_and_entries_combine_with_or() -> None:
    record = osv("GHSA-OR", "lib", {"introduced": "1.0"}, {"fixed": "1.2"})
    record["affected"][0]["ranges"].append(
        {"type": "ECOSYSTEM", "events": [{"introduced": "2.0"}, {"fixed": "2.3"}]}
    )
    record["affected"].append(osv("", "LIB", {"introduced": "3.0"})["affected"][0])
    db = AdvisoryDB.from_json([json.dumps(record).encode()])
    assert [v for v in ("0.9", "1.1", "1.5", "2.2", "2.5", "3.1") if db.match({"lib": v})] == [
        "1.1",
        "2.2",
        "3.1",
    ]
    assert db.match({"lib": "2.2"})[0].fixed == ("2.3",)


def test_a_limit_bounds_the_range() -> None:
    record = osv("L", "lib", {"introduced": "0"}, {"limit": "2.0"})
    db = AdvisoryDB.from_json([json.dumps(record).encode()])
    assert db.match({"lib": "1.9"}) and not db.match({"lib": "2.0"})


def test_findings_sorted_by_severity_then_id(db: AdvisoryDB) -> None:
    env = {"evilpkg": "1.0", "urllib3": "1.20", "requests": "2.5", "jinja2": "3.0", "torch": "2.1"}
    found = [(f.severity.name, f.advisory) for f in db.match(env)]
    assert found == [
        ("CRITICAL", "GHSA-0003"),
        ("HIGH", "GHSA-0001"),
        ("MEDIUM", "GHSA-0002"),
        ("UNKNOWN", "GHSA-0008"),
        ("UNKNOWN", "PYSEC-0004"),
    ]


@pytest.mark.parametrize(
    ("vector", "score"),
    [
        (LOG4SHELL, 10.0),
        (READ_ONLY, 7.5),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
        ("CVSS:3.1/AV:N/AC:L/PR:L/UI:R/S:C/C:L/I:L/A:N", 5.4),
        ("CVSS:3.0/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N", 3.1),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
    ],
)
def test_cvss3_base_scores(vector: str, score: float) -> None:
    assert cvss3_base_score(vector) == score


def test_an_unreadable_vector_falls_back_to_the_label() -> None:
    with pytest.raises(InvalidInput):
        cvss3_base_score("CVSS:3.1/AV:N/AC:L")
    record = osv(
        "V",
        "lib",
        {"introduced": "0"},
        severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:X"}, {"type": "CVSS_V4", "score": "x"}],
        database_specific={"severity": "LOW"},
    )
    assert AdvisoryDB.from_json([json.dumps(record)]).match({"lib": "1"})[0].severity.name == "LOW"


def test_the_verdict_and_its_threshold(db: AdvisoryDB) -> None:
    high = db.match({"requests": "2.5"})
    assert Verdict.of([]).status == "pass"
    assert Verdict.of(high).status == "fail"
    assert Verdict.of(high, Severity.HIGH).status == "fail"
    assert Verdict.of(high, Severity.CRITICAL).status == "pass"
    assert Verdict.of(db.match({"evilpkg": "1.0"}), Severity.CRITICAL).status == "fail"  # UNKNOWN
    unknown = db.match({"requests": "weird!"})
    assert Verdict.of(unknown).status == "unknown"
    data = Verdict.of(high, Severity.CRITICAL).as_dict()
    assert data["max_severity"] == "HIGH" and data["fail_on"] == "CRITICAL"
    assert data["findings"][0]["fixed"] == ["2.31.0"]
    assert json.loads(json.dumps(data)) == data


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    many = write_dump(tmp_path / "many.zip", [], {f"{i}.json": b"{}" for i in range(11)})
    with pytest.raises(InvalidInput, match="11 members"):
        AdvisoryDB.from_zip(many, max_members=10)
    zeros = write_dump(tmp_path / "zeros.zip", [], {"big.json": bytes(5 * 1024 * 1024)})
    assert zeros.stat().st_size < 64 * 1024
    with pytest.raises(InvalidInput, match="zip bomb"):
        AdvisoryDB.from_zip(zeros, max_total_bytes=1024 * 1024)
    with pytest.raises(InvalidInput, match="not a readable zip"):
        AdvisoryDB.from_zip(io.BytesIO(b"PK not really"))


def test_a_lying_declared_size_inflates_no_further(tmp_path: Path) -> None:
    """The caps trust the declared sizes because zipfile stops inflating there: had it read
    on, the CRC of the whole member would hold; cut at the lie, it fails."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.json", json.dumps(RECORDS[0]) + " " * 100_000)
    raw = bytearray(buffer.getvalue())
    declared = len(json.dumps(RECORDS[0]))
    for header in (b"PK\x03\x04", b"PK\x01\x02"):  # the local and the central header
        at = raw.index(header)
        offset = at + (22 if header == b"PK\x03\x04" else 24)
        raw[offset : offset + 4] = declared.to_bytes(4, "little")
    with pytest.raises(InvalidInput, match="not a readable zip"):  # the CRC no longer holds
        AdvisoryDB.from_zip(io.BytesIO(bytes(raw)))


def test_a_dump_the_size_of_pypis() -> None:
    records = [
        osv(f"GHSA-{i}", f"pkg{i}", {"introduced": "0"}, {"fixed": "2.0"}) for i in range(20_000)
    ]
    db = AdvisoryDB.from_json(json.dumps(r).encode() for r in records)
    env = {f"pkg{i}": "1.0" for i in range(0, 20_000, 100)} | {f"other{i}": "1" for i in range(100)}
    assert len(db.match(env)) == 200


def test_what_the_registry_keeps_matches_as_the_dump_does(db: AdvisoryDB) -> None:
    env = {"requests": "2.5", "urllib3": "1.20", "jinja2": "3.0", "evilpkg": "1.1", "x": "1"}
    env |= {"scikit-learn": "1.4", "torch": "2.1", "numpy": "1.22.0", "oddball": "1.0"}
    kept = json.loads(json.dumps(db.stored()))  # as a database row gives it back
    assert sorted(kept) == AdvisoryDB.keys(p for p in kept)  # filed by PEP 503 name
    assert (db.packages, db.advisories, db.modified) == (9, 9, "2024-01-01T00:00:00Z")
    wanted = [(name, kept[name]) for name in AdvisoryDB.keys(env) if name in kept]
    assert AdvisoryDB.from_stored(wanted).match(env) == db.match(env)


def test_the_severity_a_check_keeps_is_on_the_rules_scale(db: AdvisoryDB) -> None:
    """What ``advisories.severity`` reads: the highest, an unrated advisory or no captured
    environment as ``unknown`` (above critical), ``none`` without a finding."""
    found = {
        package: check_details(db, {package: version})["severity"]
        for package, version in {"jinja2": "3.0", "requests": "2.5", "evilpkg": "1.0"}.items()
    }
    assert found == {"jinja2": "critical", "requests": "high", "evilpkg": "unknown"}
    assert check_details(db, {})["severity"] == "none"
    assert check_details(db, None)["severity"] == "unknown"
    assert {*found.values(), "none"} <= set(SEVERITY_SCALE)


def test_a_record_too_big_to_keep_is_cut_or_skipped() -> None:
    long_summary = osv("S", "lib", {"introduced": "0"}, summary="x" * 10_000)
    long_name = osv("N", "a" * 300, {"introduced": "0"})
    db = AdvisoryDB.from_json(json.dumps(r) for r in (long_summary, long_name))
    assert (db.records, db.skipped) == (1, 1)
    assert len(db.match({"lib": "1"})[0].summary) == 500


# -- the command -------------------------------------------------------------------------------

ENV = {"COLUMNS": "200", "TERM": "dumb", "MODELYARD_URL": None}


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dump(tmp_path_factory.mktemp("cli") / "all.zip", RECORDS, MALFORMED)


def advisories(*args: str) -> Result:
    result = CliRunner().invoke(app, ["advisories", "check", *args], env=ENV)
    assert "Traceback" not in result.output, result.output
    return result


def test_a_requirements_file_with_a_vulnerable_package_fails(dump: Path, tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# pinned\nrequests==2.30.0\nnumpy==1.22.0.post1\nflask\n")
    result = advisories("--osv", str(dump), "--requirements", str(requirements))
    assert result.exit_code == 1, result.output
    assert "GHSA-0001" in result.output and "2.31.0" in result.output
    assert "numpy" not in result.output  # fixed in its post-release
    assert "5 member(s) skipped" in result.output and "verdict: fail" in result.output


def test_fail_on_critical_passes_a_high_finding(dump: Path) -> None:
    pin = "requests==2.30.0"
    assert advisories("--osv", str(dump), "--package", pin, "--fail-on", "critical").exit_code == 0
    assert advisories("--osv", str(dump), "--package", pin, "--fail-on", "high").exit_code == 1
    clean = advisories("--osv", str(dump), "--package", "requests==2.31.0")
    assert clean.exit_code == 0 and "0 finding(s)" in clean.output


def test_json_output(dump: Path) -> None:
    args = ("--package", "jinja2==3.0.0", "--package", "requests==weird!", "--json")
    result = advisories("--osv", str(dump), *args)
    data = json.loads(result.stdout)
    assert result.exit_code == 1 and data["verdict"] == "fail"
    assert data["max_severity"] == "CRITICAL" and data["packages"] == 2
    assert [(f["advisory"], f["match"]) for f in data["findings"]] == [
        ("GHSA-0003", "affected"),
        ("GHSA-0001", "unknown"),
    ]
    assert data["osv"] == {"records": len(RECORDS), "skipped": len(MALFORMED)}


def test_one_source_of_packages_and_clear_errors(dump: Path, tmp_path: Path) -> None:
    for args, message in [
        ((), "give one of"),
        (("--package", "a==1", "churn/1"), "give one of"),
        (("--package", "requests"), "NAME==VERSION"),
    ]:
        result = advisories("--osv", str(dump), *args)
        assert result.exit_code == 1 and message in result.output, result.output
    bomb = write_dump(tmp_path / "bomb.zip", [], {"big.json": bytes(20 * 1024 * 1024)})
    refused = advisories("--osv", str(bomb), "--package", "a==1")
    assert refused.exit_code == 1 and "zip bomb" in refused.output


def test_a_registered_versions_environment(dump: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    environment = Environment("3.11.9", "linux", {"Jinja2": "3.1.2", "numpy": "2.0.0"})
    with modelyard.connect(tmp_path / "data") as reg:
        reg.register("churn", model, source=None, environment=environment)
        reg.register("churn", model, source=None, environment=None)
    registry = ("--registry", str(tmp_path / "data"))
    result = advisories("--osv", str(dump), "churn/1", *registry)
    assert result.exit_code == 1, result.output
    assert "churn/1" in result.output and "GHSA-0003" in result.output
    assert "3.1.3" in result.output and "CRITICAL" in result.output
    missing = advisories("--osv", str(dump), "churn/2", *registry)
    assert missing.exit_code == 1 and "no captured environment" in missing.output
