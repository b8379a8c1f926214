"""The registry's own check, ``scan``: every file and attachment read on the server.

A model file is code (a pickle runs what it imports), so the verdict cannot come from the
author's CI: the server scans the bytes it holds (domain/scanning.py) and records the
report as the ``scan`` check's details, which nobody else may report. Scanning reads blobs,
possibly large ones, so it runs before the transaction that records it: the registration
(the verdict in its ``version.registered`` event), attaching evidence, or a re-scan.

The verdict is kept with the fingerprint of the allowlist (and scanner) that reached it.
When the server starts under another one, ``rescan_stale`` scans those versions again,
and versions registered before the registry scanned get their first verdict. An admin
may accept findings with a reason; an acceptance outlives a re-scan that finds the same.
"""

from __future__ import annotations

import mmap
import tempfile
import threading
from collections.abc import Iterable, Mapping
from typing import Any, BinaryIO

from modelyard.domain.access import Caller, Permission
from modelyard.domain.checks import SCAN_CHECK, SERVER_REPORTER, CheckResult
from modelyard.domain.errors import Conflict, InvalidInput, NotFound
from modelyard.domain.events import CheckState, VersionCheckReported
from modelyard.domain.manifest import FileEntry
from modelyard.domain.names import validate_model_name
from modelyard.domain.references import Reference, RefKind
from modelyard.domain.scanning import (
    DEFAULT_ALLOWLIST,
    Allowlist,
    Entry,
    Finding,
    ScanReport,
    finding_key,
    keep_acceptances,
    open_findings,
    scan_head,
    scan_view,
    stored_verdict,
)
from modelyard.service.access import AccessControl
from modelyard.service.blobs import BlobService
from modelyard.service.checks import version_id_or_404
from modelyard.storage.blobs.local import LocalBlobStore
from modelyard.storage.db.store import Database, Writer, now_us

SCANNER = Caller(name="modelyard:scanner")  # the actor of the verdicts the server changes
ATTACHMENTS = "attachments/"  # how a report names an attachment: beside the files, apart
MAX_REASON = 1000
# What the scan fetches first of a blob in a bucket: most formats are judged by their
# first bytes (scan_head), so a gigabyte of raw weights costs the server one MiB's read.
HEAD_BYTES = 1 << 20


class ScanService:
    def __init__(self, db: Database, access: AccessControl, blobs: BlobService) -> None:
        self.db = db
        self.access = access
        self.blobs = blobs
        self.allow: Allowlist = DEFAULT_ALLOWLIST  # open_service extends it from config

    def scan(
        self,
        files: Iterable[FileEntry],
        attachments: Iterable[FileEntry] = (),
        inline: Mapping[str, bytes] | None = None,
    ) -> ScanReport:
        """Scan the bytes of each file and attachment. A blob the registry does not hold is
        left out: the transaction that follows refuses it as missing."""
        labelled = [*((f.path, f.sha256) for f in files)]
        labelled += [(ATTACHMENTS + a.path, a.sha256) for a in attachments]
        report = ScanReport((), ())
        for label, digest in labelled:
            found = self._scan_one(label, digest, inline or {})
            if found is not None:
                report = report.merged(found)
        return report

    def details(self, report: ScanReport, old: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The report as the check keeps it, with ``old``'s acceptances that still apply."""
        return keep_acceptances(report.stored(self.allow), old)

    def record(
        self, tx: Writer, version_id: int, details: dict[str, Any], now: int, *, new: bool = False
    ) -> str:
        """Write the ``scan`` check (``new``: of a version this transaction created);
        return its status. The caller journals it."""
        status = stored_verdict(details)
        tx.put_check(
            version_id,
            SCAN_CHECK,
            {
                "status": status,
                "url": None,
                "reporter": SERVER_REPORTER,
                "reported_at": now,
                "details": details,
            },
            new=new,
        )
        return status

    def update(
        self,
        tx: Writer,
        caller: Caller,
        model: str,
        number: int,
        version_id: int,
        details: dict[str, Any],
        reason: str | None = None,
    ) -> None:
        """Replace a version's scan check, journaled when its status changes or nothing
        else in the transaction is: every change is on the record (and moves the stamp
        that every cache is keyed on), a verdict attaching evidence kept needs no event
        beside ``version.attached``."""
        before = tx.checks(version_id, SCAN_CHECK)
        now = now_us()
        status = self.record(tx, version_id, details, now)
        old = before[0].status.value if before else None
        if old == status and reason is None and tx.journaled:
            return
        after: CheckState = {"status": status, "url": None}
        if reason is not None:
            after["reason"] = reason
        event = VersionCheckReported(
            model=model,
            version=number,
            check=SCAN_CHECK,
            before=None if not before else {"status": old or "", "url": None},
            after=after,
        )
        tx.append_event(caller, event, now=now)

    def rescan_attached(
        self, tx: Writer, caller: Caller, model: str, number: int, version_id: int, new: ScanReport
    ) -> None:
        """Evidence attached to a version: its report grows by what the new files show.
        What the old report left out past its caps still counts (and fails it): nobody
        saw those findings, so nobody can have accepted them."""
        current = tx.checks(version_id, SCAN_CHECK)
        old = current[0].details if current else None
        merged = new if old is None else _report_of(old).merged(new)
        details = self.details(merged, old)
        if old is not None:
            details["files_total"] += old["files_total"] - len(old["files"])
            details["findings_total"] += old["findings_total"] - len(old["findings"])
        self.update(tx, caller, model, number, version_id, details)

    def rescan_stale(self, stop: threading.Event | None = None) -> int:
        """Scan every version whose verdict another allowlist or scanner reached, or which
        has none; return how many were scanned. ``stop`` ends it between two versions."""
        fingerprint = self.allow.fingerprint
        with self.db.read() as tx:
            stale = [
                (version_id, model, number, details)
                for version_id, model, number, details in tx.scan_details()
                if details is None or details.get("allowlist") != fingerprint
            ]
        done = 0
        for version_id, model, number, old in stale:
            if stop is not None and stop.is_set():
                break
            with self.db.read() as tx:
                files = tx.load_versions([version_id])
                attachments = [
                    FileEntry(a.path, a.size, a.sha256) for a in tx.attachments(version_id)
                ]
            if not files:
                continue  # deleted since
            report = self.scan(files[0].files, attachments)
            with self.db.write() as tx:
                if tx.resolve_id(Reference(model, RefKind.NUMBER, number)) != version_id:
                    continue  # deleted while it was scanned
                self.update(tx, SCANNER, model, number, version_id, self.details(report, old))
            done += 1
        return done

    def accept(self, caller: Caller, model: str, number: int, reason: str) -> CheckResult:
        """An admin accepts the open findings of a version's scan, saying why: the check
        passes, and the journal keeps who accepted what and the reason."""
        validate_model_name(model)
        reason = _reason(reason)
        self.access.require(caller, Permission.ADMIN)
        with self.db.write() as tx:
            version_id = version_id_or_404(tx, model, number)
            current = tx.checks(version_id, SCAN_CHECK)
            if not current or current[0].details is None:
                raise NotFound(f"{model}/{number} has not been scanned yet", code="not_scanned")
            details = current[0].details
            findings = open_findings(details)
            if not findings:
                raise Conflict(
                    f"{model}/{number}'s scan has no open finding to accept",
                    code="nothing_to_accept",
                )
            acceptance = {
                "by": caller.name,
                "reason": reason,
                "at": now_us(),
                "findings": [finding_key(f) for f in findings],
            }
            accepted = {**details, "accepted": [*details.get("accepted", ()), acceptance]}
            self.update(tx, caller, model, number, version_id, accepted, reason=reason)
            return tx.checks(version_id, SCAN_CHECK)[0]

    def report(self, caller: Caller, model: str, number: int) -> CheckResult | None:
        """The version's scan check (its report in ``details``), for whoever sees the model:
        the findings name files and imports, not their bytes."""
        validate_model_name(model)
        self.access.require(caller, Permission.VIEW, model)
        with self.db.read() as tx:
            found = tx.checks(version_id_or_404(tx, model, number), SCAN_CHECK)
        return found[0] if found else None

    def _scan_one(self, label: str, digest: str, inline: Mapping[str, bytes]) -> ScanReport | None:
        """A blob's report, None when the registry does not hold it. Bytes inline, kept in
        the database, or in a local blob (mapped in place) are scanned where they are; any
        other store's blob (a bucket's) from its head when that decides, else from a copy
        in a temporary file, mapped."""
        content = inline.get(digest)
        size: int | None = None
        if content is None:
            with self.db.read() as tx:
                content = tx.blob_content(digest)
                size = tx.blob_sizes([digest]).get(digest)  # as verified when recorded
        if content is not None:
            return scan_view(label, memoryview(content), self.allow)
        store = self.blobs.blobs
        if isinstance(store, LocalBlobStore):
            try:
                handle: BinaryIO = store.path_of(digest).open("rb")
            except FileNotFoundError:
                return None
            with handle:
                return self._scan_mapped(label, handle)
        if size is None:
            return None  # not recorded: the registration refuses it as missing
        try:
            head = b"".join(store.read(digest, 0, min(size, HEAD_BYTES)))
            decided = scan_head(label, memoryview(head), size, self.allow)
            if decided is not None:
                return decided
            with tempfile.TemporaryFile() as copy:
                for chunk in store.read(digest):
                    copy.write(chunk)
                copy.flush()
                return self._scan_mapped(label, copy)
        except NotFound:
            return None  # deleted since (gc): the registration refuses it as missing

    def _scan_mapped(self, label: str, handle: BinaryIO) -> ScanReport:
        if handle.seek(0, 2) == 0:
            return scan_view(label, memoryview(b""), self.allow)
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                return scan_view(label, view, self.allow)
            finally:
                view.release()


def _report_of(details: Mapping[str, Any]) -> ScanReport:
    """A stored report read back as one (to merge a later scan into)."""
    entries = tuple(
        Entry(e["path"], e["format"], e["verdict"], e.get("note", "")) for e in details["files"]
    )
    findings = tuple(
        Finding(f["path"], f["reason"], f["message"], f.get("offset"), f.get("import"))
        for f in details["findings"]
    )
    return ScanReport(entries, findings)


def _reason(reason: str) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput("say why the findings are accepted: --reason TEXT")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"a reason is at most {MAX_REASON} characters")
    return reason.strip()
