"""Check results as use cases: checkers report them, whoever sees the model reads them.

Reporting takes ``version.check`` (the checker role, or above): a contributor registers a
version but cannot pass its checks. Every report is journaled with its before and after,
in the transaction that records it.
"""

from __future__ import annotations

from modelyard.domain.access import Caller, Permission
from modelyard.domain.checks import (
    CheckResult,
    CheckStatus,
    validate_check_url,
    validate_reported_check,
)
from modelyard.domain.errors import NotFound
from modelyard.domain.events import CheckState, VersionCheckReported
from modelyard.domain.names import validate_model_name
from modelyard.domain.references import Reference, RefKind
from modelyard.service.access import AccessControl
from modelyard.storage.db.store import Database, Reader, now_us


class ChecksService:
    def __init__(self, db: Database, access: AccessControl) -> None:
        self.db = db
        self.access = access

    def report(
        self,
        caller: Caller,
        model: str,
        number: int,
        check: str,
        *,
        status: str,
        url: str | None = None,
    ) -> CheckResult:
        """Record the result of ``check`` on a version: the latest one counts."""
        validate_model_name(model)
        validate_reported_check(check)
        verdict = CheckStatus.parse(status)
        url = validate_check_url(url)
        self.access.require(caller, Permission.REPORT_CHECK, model)
        with self.db.write() as tx:
            version_id = version_id_or_404(tx, model, number)
            before = tx.checks(version_id, check)
            now = now_us()
            tx.put_check(
                version_id,
                check,
                {"status": verdict.value, "url": url, "reporter": caller.name, "reported_at": now},
            )
            event = VersionCheckReported(
                model=model,
                version=number,
                check=check,
                before=_state(before[0]) if before else None,
                after={"status": verdict.value, "url": url},
            )
            tx.append_event(caller, event, now=now)
            return tx.checks(version_id, check)[0]

    def results(self, caller: Caller, model: str, number: int) -> list[CheckResult]:
        """The latest result of every check reported on a version, by name."""
        validate_model_name(model)
        self.access.require(caller, Permission.VIEW, model)
        with self.db.read() as tx:
            return tx.checks(version_id_or_404(tx, model, number))


def version_id_or_404(tx: Reader, model: str, number: int) -> int:
    """The id of a live version, else the 404 of its model or of the version."""
    ref = Reference(model, RefKind.NUMBER, number)
    version_id = tx.resolve_id(ref)
    if version_id is None:
        if tx.model_id(model) is None:
            raise NotFound(f"model {model!r} not found", code="model_not_found")
        raise NotFound(f"{ref} does not exist", code="version_not_found")
    return version_id


def _state(result: CheckResult) -> CheckState:
    return {"status": result.status.value, "url": result.url}
