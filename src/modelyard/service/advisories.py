"""The registry's own check ``advisories``: each version's captured packages matched against
the OSV dump an admin loaded (docs/security.md, In the registry).

An air-gapped site copies OSV's PyPI dump in and loads it (admins). The zip is read whole,
within the matcher's caps, before anything is written; then it replaces the dump in force
in one transaction (what matching needs of it, with its digest and counts), journaled as
``advisories.loaded``: a refused dump leaves everything as it was.

A registration is matched in its own transaction against the dump in force: the entries of
its packages are read in one query, a dictionary lookup each. Loading a dump evaluates
every live version again, ``BATCH`` at a time, each batch matched on a read and only what
changed written under the journal lock (milliseconds: registrations never wait behind a
pass); the dump's row says how far it has come, and an evaluation cut short (the server
stopped) is finished at the next start. A verdict is rewritten only when its
findings change, and each change is journaled; a version in an exclusive or protected
stage that advisories newly affect is a ``version.advisories_affected`` event.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import IO, Any

from modelyard.domain.access import Caller, Permission
from modelyard.domain.advisories import (
    AdvisoryDB,
    DumpLoaded,
    DumpSummary,
    Reevaluation,
    check_details,
    check_dump_size,
    check_status,
    newly_affecting,
    rule_severity,
    same_verdict,
)
from modelyard.domain.checks import ADVISORIES_CHECK, SERVER_REPORTER
from modelyard.domain.errors import InvalidInput
from modelyard.domain.events import (
    AdvisoriesLoaded,
    VersionAdvisoriesAffected,
    VersionCheckReported,
)
from modelyard.domain.models import Environment, utc_from_us
from modelyard.domain.references import Reference, RefKind
from modelyard.service.access import AccessControl
from modelyard.service.lifecycle import LifecycleService
from modelyard.storage.db.advisories import Candidate
from modelyard.storage.db.store import Database, Reader, Writer, now_us

ADVISOR = Caller(name="modelyard:advisories")  # the actor of the verdicts a load changes
BATCH = 200  # versions matched per read, their changed verdicts written per transaction
_CHUNK = 1024 * 1024


class AdvisoryService:
    def __init__(self, db: Database, access: AccessControl, lifecycle: LifecycleService) -> None:
        self.db = db
        self.access = access
        self.lifecycle = lifecycle  # which stages are watched: the model's policy says

    def authorize_load(self, caller: Caller) -> None:
        """Who may load a dump: admins (the REST route asks before it reads the body)."""
        self.access.require(caller, Permission.ADMIN)

    def load(self, caller: Caller, source: IO[bytes]) -> DumpLoaded:
        """Replace the dump in force with OSV's zip read from ``source`` (admins), then
        evaluate every live version against it. The dump in force already: nothing is
        written (an evaluation left unfinished is finished)."""
        self.authorize_load(caller)
        sha256, size = _digest(source)
        parsed = AdvisoryDB.from_zip(source)
        if not parsed.packages:
            raise InvalidInput(
                f"the OSV dump holds no PyPI advisory ({parsed.records} OSV record(s),"
                f" {parsed.skipped} member(s) that are not): load PyPI's all.zip",
                code="not_osv",
            )
        entries = parsed.stored()
        with self.db.write() as tx:
            found = tx.advisory_dump()
            before = found[0].sha256 if found is not None else None
            replaced = before != sha256
            if replaced:
                now = now_us()
                summary = DumpSummary(
                    sha256=sha256,
                    size=size,
                    records=parsed.records,
                    skipped=parsed.skipped,
                    packages=parsed.packages,
                    advisories=parsed.advisories,
                    modified=parsed.modified,
                    loaded_at=utc_from_us(now),
                    loaded_by=caller.name,
                    pending=True,
                )
                tx.replace_advisory_dump(summary, entries)
                loaded = AdvisoriesLoaded(
                    sha256=sha256,
                    size=size,
                    records=parsed.records,
                    skipped=parsed.skipped,
                    packages=parsed.packages,
                    advisories=parsed.advisories,
                    before=before,
                )
                tx.append_event(caller, loaded, now=now)
        evaluation = self.reevaluate()
        current = self.summary(caller)
        assert current is not None  # a dump is never unloaded
        return DumpLoaded(current, replaced, evaluation)

    def summary(self, caller: Caller) -> DumpSummary | None:
        """The dump in force (None: none is loaded), for any authenticated caller: it names
        no model."""
        with self.db.read() as tx:
            found = tx.advisory_dump()
        return found[0] if found is not None else None

    def check_new(
        self, tx: Writer, version_id: int, environment: Environment | None, now: int
    ) -> dict[str, Any] | None:
        """Match a version this transaction registers against the dump in force and write
        its check; its details, or None when no dump is loaded (then it has no check)."""
        if tx.advisory_dump_sha() is None:
            return None
        [details] = self._match(tx, [environment])
        self._record(tx, version_id, details, now, new=True)
        return details

    def announce(
        self,
        tx: Writer,
        model: str,
        number: int,
        stage: str,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        now: int,
    ) -> bool:
        """Journal ``version.advisories_affected`` if ``new`` lists advisories affecting the
        version that ``old`` did not, and its stage is exclusive or protected; whether it
        did."""
        findings = newly_affecting(old, new)
        if not findings:
            return False
        policy, _ = self.lifecycle.policy_in_force(tx, model)
        spec = next((s for s in policy.stages if s.name == stage), None)
        if spec is None or not (spec.exclusive or spec.protected):
            return False
        severity = rule_severity(f["severity"] for f in findings)
        dump = tx.advisory_dump_sha() or ""
        event = VersionAdvisoriesAffected(model, number, stage, severity, findings, dump)
        tx.append_event(ADVISOR, event, now=now)
        return True

    def reevaluate(self, stop: threading.Event | None = None) -> Reevaluation:
        """Evaluate the live versions the dump in force has not reached yet, ``BATCH`` at a
        time: each batch matched on a read, then written (what changed, and how far the
        evaluation has come) in a write transaction, which takes the journal lock only for
        that. A batch another process wrote first, or a newer dump, is read again. ``stop``
        ends it between two batches; what the server runs at start too, to finish an
        evaluation a stop cut short."""
        done = Reevaluation()
        while stop is None or not stop.is_set():
            with self.db.read() as tx:
                found = tx.advisory_dump()
                if found is None or found[1] is None:
                    break
                batch = tx.advisory_candidates(found[1], BATCH)
                details = self._match(tx, [c.environment for c in batch])
            revised = [
                (candidate, new)
                for candidate, new in zip(batch, details, strict=True)
                if not same_verdict(candidate.details, new)
            ]
            with self.db.write("advisories.progress") as tx:
                if tx.advisory_dump() != found:
                    continue  # moved on meanwhile: by another evaluation, or a newer dump
                now = now_us()
                for candidate, new in revised:
                    done += self._revise(tx, candidate, new, now)
                done += Reevaluation(versions=len(batch))
                more = len(batch) == BATCH
                tx.advisories_pending_from(batch[-1].version_id + 1 if more else None)
        return done

    def _revise(
        self, tx: Writer, candidate: Candidate, new: dict[str, Any], now: int
    ) -> Reevaluation:
        """A version whose verdict changed: its check rewritten and journaled, announced
        when advisories newly affect it where it stands now. One deleted since it was read
        is left alone."""
        ref = Reference(candidate.model, RefKind.NUMBER, candidate.number)
        if tx.resolve_id(ref) != candidate.version_id:
            return Reevaluation()
        status = self._record(tx, candidate.version_id, new, now)
        event = VersionCheckReported(
            model=candidate.model,
            version=candidate.number,
            check=ADVISORIES_CHECK,
            before=candidate.state,
            after={"status": status, "url": None},
        )
        tx.append_event(ADVISOR, event, now=now)
        stage = tx.version_stage(candidate.version_id)
        affected = self.announce(
            tx, candidate.model, candidate.number, stage, candidate.details, new, now
        )
        return Reevaluation(changed=1, affected=int(affected))

    def _match(
        self, tx: Reader, environments: Sequence[Environment | None]
    ) -> list[dict[str, Any]]:
        """The check's details for each environment, from one read of the dump's entries."""
        names = AdvisoryDB.keys(p for env in environments if env is not None for p in env.packages)
        db = AdvisoryDB.from_stored(tx.advisory_entries(names))
        return [check_details(db, None if env is None else env.packages) for env in environments]

    def _record(
        self, tx: Writer, version_id: int, details: dict[str, Any], now: int, *, new: bool = False
    ) -> str:
        """Write the ``advisories`` check (``new``: of a version this transaction created);
        return its status. The caller journals it."""
        status = check_status(details)
        values = {
            "status": status,
            "url": None,
            "reporter": SERVER_REPORTER,
            "reported_at": now,
            "details": details,
        }
        tx.put_check(version_id, ADVISORIES_CHECK, values, new=new)
        return status


def _digest(source: IO[bytes]) -> tuple[str, int]:
    """The sha256 and size of what ``source`` holds, refused past the size a registry
    takes; read from the start, and rewound for the zip's reader."""
    source.seek(0)
    hashed, size = hashlib.sha256(), 0
    while chunk := source.read(_CHUNK):
        hashed.update(chunk)
        size += len(chunk)
        check_dump_size(size)
    source.seek(0)
    return hashed.hexdigest(), size
