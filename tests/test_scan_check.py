"""The registry's own check, ``scan``, on SQLite and PostgreSQL: every file and attachment
scanned at registration, the verdict recorded and journaled, a failing version kept in
development, nobody but the registry reporting it, admins accepting findings with a
reason, and re-scans when the allowlist changes (the attacker's tests are here too)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import modelyard
from modelyard.api import create_app
from modelyard.config import Settings, open_service
from modelyard.domain.access import Caller, Reach
from modelyard.domain.errors import Conflict, Forbidden, InvalidInput, PolicyFailed
from modelyard.domain.evidence import AttachmentIn
from modelyard.domain.manifest import FileEntry
from modelyard.domain.scanning import MAX_STORED_FINDINGS, Allowlist
from modelyard.domain.versions import NewVersion
from modelyard.service import RegistryService
from modelyard.service.scans import HEAD_BYTES
from modelyard.storage.blobs import MemoryBlobStore
from modelyard.storage.db.store import Database
from tests.conftest import LiveServer
from tests.test_checks import checker
from tests.test_cli import assert_user_error, dead_url, invoke, invoke_many
from tests.test_lifecycle import people
from tests.test_scanning import hidden_past_the_head

SYSTEM = b"cos\nsystem\n(S'echo owned'\ntR."  # protocol 0: os.system by GLOBAL
OWN_CLASS = b"\x80\x02cacme.model\nModel\n)\x81."  # a class of the team's own
SAFE = b'{"learner": {}}'
STAGING = "promotion:\n  staging:\n    approvals: {count: 0}\n"


def register(
    service: RegistryService,
    caller: Caller,
    files: dict[str, bytes],
    *,
    upload: bool = False,
    attachments: dict[str, bytes] | None = None,
) -> int:
    """Register ``files`` inline, or with ``upload`` as blobs uploaded first (the path of
    big files: the scan reads them from the blob store)."""
    entries, inline = [], {}
    for path, content in files.items():
        digest = hashlib.sha256(content).hexdigest()
        entries.append(FileEntry(path, len(content), digest))
        if upload:
            pending = service.begin_blob_upload(caller, digest)
            pending.write(content)
            service.finish_blob_upload(pending)
        else:
            inline[digest] = content
    evidence = [
        AttachmentIn(path, len(content), hashlib.sha256(content).hexdigest(), content)
        for path, content in (attachments or {}).items()
    ]
    spec = NewVersion(files=entries)
    return service.register_version(
        "churn", spec, caller=caller, inline=inline, attachments=evidence
    ).version


def scan_of(service: RegistryService, caller: Caller, number: int) -> tuple[str, dict]:  # type: ignore[type-arg]
    found = service.scans.report(caller, "churn", number)
    assert found is not None and found.details is not None and found.reporter == "modelyard"
    return found.status.value, found.details


@pytest.mark.parametrize("upload", [False, True], ids=["inline", "uploaded"])
def test_every_file_and_attachment_is_scanned_at_registration(
    service: RegistryService, upload: bool
) -> None:
    p = people(service)
    clean = register(service, p.ds, {"model.json": SAFE, "weights.bin": b"\x00\x01"}, upload=upload)
    status, details = scan_of(service, p.rita, clean)  # a viewer reads the report
    assert status == "pass"
    assert {f["path"]: f["format"] for f in details["files"]}["model.json"] == "xgboost json"
    assert details["allowlist"] == service.scans.allow.fingerprint
    event = service.events(caller=p.admin, subject=f"churn/{clean}")[0]
    assert (event.kind, event.payload["scan"]) == ("version.registered", "pass")

    bad = register(
        service, p.ds, {"model.json": SAFE}, upload=upload, attachments={"eval/x.pkl": SYSTEM}
    )
    status, details = scan_of(service, p.ds, bad)
    assert status == "fail"
    [finding] = details["findings"]
    assert finding["path"] == "attachments/eval/x.pkl"
    assert finding["import"] == "os.system" and "never allowed" in finding["message"]
    event = service.events(caller=p.admin, subject=f"churn/{bad}")[0]
    assert event.payload["scan"] == "fail"


def test_a_store_that_cannot_map_a_blob_is_scanned_from_a_copy(tmp_path: Path) -> None:
    """S3's blobs and the memory store's are read into a temporary file, then mapped."""
    settings = Settings(data_dir=tmp_path / "data")
    opened = open_service(settings)
    service = RegistryService(Database(opened.db.engine), MemoryBlobStore())
    try:
        me = Caller.local_user("me")
        number = register(service, me, {"model.pkl": SYSTEM}, upload=True)
        assert scan_of(service, me, number)[0] == "fail"
    finally:
        opened.close()


class ReadsNoted(MemoryBlobStore):
    """The memory store, noting the byte ranges the registry reads (a bucket's GETs)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[int, int | None]] = []

    def read(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        self.reads.append((start, end))
        return super().read(digest, start, end)


def test_a_blob_in_a_bucket_is_scanned_from_its_head_when_that_decides(tmp_path: Path) -> None:
    """Raw weights cost the scan one MiB's read, not the file's; a pickle that hides its
    import past that MiB is read whole, and fails."""
    settings = Settings(data_dir=tmp_path / "data")
    opened = open_service(settings)
    store = ReadsNoted()
    service = RegistryService(Database(opened.db.engine), store)
    try:
        me = Caller.local_user("me")
        number = register(service, me, {"weights.bin": os.urandom(3 * HEAD_BYTES)}, upload=True)
        assert scan_of(service, me, number)[0] == "pass"
        assert store.reads == [(0, HEAD_BYTES)]

        store.reads.clear()
        hidden = hidden_past_the_head()["string.pkl"]
        number = register(service, me, {"model.pkl": hidden}, upload=True)
        assert scan_of(service, me, number)[0] == "fail"
        assert store.reads == [(0, HEAD_BYTES), (0, None)]
    finally:
        opened.close()


def test_a_failing_scan_keeps_the_version_in_development(service: RegistryService) -> None:
    p = people(service)
    bad = register(service, p.ds, {"model.pkl": SYSTEM})
    service.lifecycle.apply_policy(p.admin, "churn", STAGING)  # a policy that asks nothing
    with pytest.raises(PolicyFailed) as refused:
        service.lifecycle.promote(p.ds, f"churn/{bad}", "staging")
    assert refused.value.details["failures"] == [
        {
            "rule": 'checks.scan = "pass"',
            "passed": False,
            "detail": 'checks.scan = "fail"; needs = "pass"',
        }
    ]
    good = register(service, p.ds, {"model.json": SAFE})
    assert service.lifecycle.promote(p.ds, f"churn/{good}", "staging").status == "executed"
    service.lifecycle.archive(p.mia, f"churn/{bad}")  # archiving it is always allowed


def test_nobody_reports_the_registrys_scan(service: RegistryService) -> None:
    """The attack: a checker (or the admin) reports scan=pass over a failing scan."""
    p = people(service)
    ci = checker(service, p)
    bad = register(service, p.ds, {"model.pkl": SYSTEM})
    for who in (ci, p.admin):
        with pytest.raises(Forbidden) as refused:
            service.checks.report(who, "churn", bad, "scan", status="pass")
        assert refused.value.code == "reserved_check"
    assert scan_of(service, p.ds, bad)[0] == "fail"
    tokens = {"ci": service.identity.create_token(p.admin, principal="ci").token}
    with TestClient(create_app(service, reach=Reach.NETWORK)) as client:
        put = client.put(
            f"/api/v1/models/churn/versions/{bad}/checks/scan",
            json={"status": "pass"},
            headers={"Authorization": f"Bearer {tokens['ci']}"},
        )
    assert (put.status_code, put.json()["code"]) == (403, "reserved_check")


def test_an_admin_accepts_findings_with_a_reason(service: RegistryService) -> None:
    p = people(service)
    bad = register(service, p.ds, {"model.pkl": OWN_CLASS})
    service.lifecycle.apply_policy(p.admin, "churn", STAGING)
    for who in (p.ds, p.mia):  # the author, and the model's maintainer, may not
        with pytest.raises(Forbidden):
            service.scans.accept(who, "churn", bad, "trust me")
    with pytest.raises(InvalidInput):
        service.scans.accept(p.admin, "churn", bad, "  ")
    accepted = service.scans.accept(p.admin, "churn", bad, "acme.model.Model is our own class")
    assert accepted.status.value == "pass"
    [acceptance] = accepted.details["accepted"] if accepted.details else []
    assert (acceptance["by"], acceptance["findings"]) == (
        "alice",
        ["model.pkl|import_not_allowed|acme.model.Model"],
    )
    event = service.events(caller=p.admin, subject=f"churn/{bad}")[-1]
    assert (event.kind, event.actor) == ("version.check_reported", "alice")
    assert event.payload["after"] == {
        "status": "pass",
        "url": None,
        "reason": "acme.model.Model is our own class",
    }
    with pytest.raises(Conflict):
        service.scans.accept(p.admin, "churn", bad, "again")
    assert service.lifecycle.promote(p.ds, f"churn/{bad}", "staging").status == "executed"


def test_evidence_attached_later_is_scanned_too(service: RegistryService) -> None:
    p = people(service)
    number = register(service, p.ds, {"model.json": SAFE})
    before = len(service.events(caller=p.admin, subject=f"churn/{number}"))
    plot = AttachmentIn("plot.png", 4, hashlib.sha256(b"\x89PNG").hexdigest(), b"\x89PNG")
    service.evidence.attach(p.ds, "churn", number, [plot])
    status, details = scan_of(service, p.ds, number)
    assert status == "pass" and details["files_total"] == 2
    kinds = [e.kind for e in service.events(caller=p.admin, subject=f"churn/{number}")[before:]]
    assert kinds == ["version.attached"]  # the verdict stayed: nothing more to journal
    evil = AttachmentIn("x.pkl", len(SYSTEM), hashlib.sha256(SYSTEM).hexdigest(), SYSTEM)
    service.evidence.attach(p.ds, "churn", number, [evil])
    assert scan_of(service, p.ds, number)[0] == "fail"
    last = service.events(caller=p.admin, subject=f"churn/{number}")[-1]
    assert (last.kind, last.actor, last.payload["after"]["status"]) == (
        "version.check_reported",
        "ds",
        "fail",
    )


def test_a_new_allowlist_rescans_and_acceptances_outlive_the_same_findings(
    service: RegistryService,
) -> None:
    p = people(service)
    own = register(service, p.ds, {"model.pkl": OWN_CLASS})
    evil = register(service, p.ds, {"model.pkl": SYSTEM})
    service.scans.accept(p.admin, "churn", evil, "a sandboxed fixture")
    assert service.scans.rescan_stale() == 0  # every verdict is the current allowlist's
    service.scans.allow = service.scans.allow.extended(Allowlist.from_text("acme.model:Model"))
    assert service.scans.rescan_stale() == 2
    assert scan_of(service, p.ds, own)[0] == "pass"
    status, details = scan_of(service, p.ds, evil)
    assert status == "pass" and details["accepted"][0]["reason"] == "a sandboxed fixture"
    last = service.events(caller=p.admin, subject=f"churn/{own}")[-1]
    assert (last.actor, last.payload["before"], last.payload["after"]) == (
        "modelyard:scanner",
        {"status": "fail", "url": None},
        {"status": "pass", "url": None},
    )
    assert service.scans.rescan_stale() == 0


def test_an_unreadable_allowlist_is_refused_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "allow.txt"
    bad.write_text("os:system\n")
    with pytest.raises(InvalidInput, match="can never be allowed"):
        open_service(Settings(data_dir=tmp_path / "data", scan_allow=bad))
    with pytest.raises(InvalidInput, match="cannot read"):
        open_service(Settings(data_dir=tmp_path / "data", scan_allow=tmp_path / "none"))


def test_the_server_rescans_at_start_under_a_new_allowlist(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", None)
    server.start()
    try:
        reg = modelyard.connect(server.url)
        tree = tmp_path / "tree"
        tree.mkdir()
        (tree / "model.pkl").write_bytes(OWN_CLASS)
        number = reg.register("churn", tree).version
        [scan] = [c for c in reg.checks(f"churn/{number}") if c.name == "scan"]
        assert scan.status == "fail"
    finally:
        server.stop()
    allow = tmp_path / "allow.txt"
    allow.write_text("# our own classes\nacme.model:Model\n")
    server.env = {"MODELYARD_SCAN_ALLOW": str(allow)}
    server.start()
    try:
        watched = httpx.get(
            f"{server.url}/api/v1/events/stream",
            params={"after": 0, "kinds": "version.check_reported", "limit": 1, "timeout": 30},
            timeout=40,
        )
        assert f"churn/{number}" in watched.text  # the re-scan's event: waited for, not slept
        reg = modelyard.connect(server.url)
        [scan] = [c for c in reg.checks(f"churn/{number}") if c.name == "scan"]
        assert scan.status == "pass" and scan.reporter == "modelyard"
    finally:
        server.stop()


def test_the_cli_lists_the_findings_and_an_admin_accepts_them(tmp_path: Path) -> None:
    """In-process (--url DIR, the local user: an admin), as a person at a terminal."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.pkl").write_bytes(OWN_CLASS)

    def cli(*args: str) -> list[str]:
        return [*args, "--url", "./registry"]

    invoke(*cli("register", "churn", "model", "--no-capture"), url=dead_url(), cwd=tmp_path).ok()
    table, reported, empty, accepted, listed = invoke_many(
        [
            cli("checks", "churn/1"),
            cli("check", "churn/1", "scan", "--status", "pass"),
            cli("accept-scan", "churn/1", "--reason", " "),
            cli("accept-scan", "churn/1", "--reason", "our own class", "--json"),
            cli("checks", "churn/1", "--json"),
        ],
        url=dead_url(),
        cwd=tmp_path,
    )
    shown = table.ok().stdout
    assert "0 open finding(s)" not in shown and "1 open finding(s)" in shown
    assert "model.pkl at byte 2: imports acme.model.Model, which is not on the allowlist" in shown
    assert_user_error(reported, contains="'scan' is the registry's own check")
    assert_user_error(empty, contains="say why the findings are accepted")
    assert json.loads(accepted.ok().stdout)["status"] == "pass"
    [scan] = json.loads(listed.ok().stdout)["items"]
    assert scan["details"]["accepted"][0]["reason"] == "our own class"


def test_findings_cut_from_a_report_still_fail_it_after_evidence_is_attached(
    service: RegistryService,
) -> None:
    """The attack: so many findings that the report is cut, then a clean attachment (the
    merged report fits its caps again), then an admin accepting every finding shown."""
    p = people(service)
    many = {f"m{i:03}.pkl": SYSTEM + bytes([i % 256]) for i in range(MAX_STORED_FINDINGS + 5)}
    number = register(service, p.ds, many)
    status, details = scan_of(service, p.ds, number)
    assert (status, details["findings_total"], len(details["findings"])) == (
        "fail",
        MAX_STORED_FINDINGS + 5,
        MAX_STORED_FINDINGS,
    )
    plot = AttachmentIn("plot.png", 4, hashlib.sha256(b"\x89PNG").hexdigest(), b"\x89PNG")
    service.evidence.attach(p.ds, "churn", number, [plot])
    accepted = service.scans.accept(p.admin, "churn", number, "every one I was shown")
    assert accepted.status.value == "fail"
    assert accepted.details is not None
    assert accepted.details["findings_total"] == MAX_STORED_FINDINGS + 5
