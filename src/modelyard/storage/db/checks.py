"""Queries over check results, mixed into ``Reader`` and ``Writer`` (store.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from modelyard.domain.checks import SCAN_CHECK, CheckResult, CheckStatus
from modelyard.domain.models import utc_from_us
from modelyard.storage.db.prebuilt import Prebuilt
from modelyard.storage.db.tables import models, version_checks, versions

_CHECKS = (
    select(version_checks, models.c.name.label("model"), versions.c.number)
    .join(versions, version_checks.c.version_id == versions.c.id)
    .join(models, versions.c.model_id == models.c.id)
)


# Every registration writes its scan check: built once, run on the cursor.
_INSERT_CHECK = Prebuilt(insert(version_checks))


class ChecksReader:
    conn: Connection

    def checks(self, version_id: int, name: str | None = None) -> list[CheckResult]:
        """The latest result of each check on a version (or of the one named), by name."""
        stmt = _CHECKS.where(version_checks.c.version_id == version_id)
        if name is not None:
            stmt = stmt.where(version_checks.c.name == name)
        return [
            CheckResult(
                model=r.model,
                version=r.number,
                name=r.name,
                status=CheckStatus(r.status),
                url=r.url,
                reporter=r.reporter,
                reported_at=utc_from_us(r.reported_at),
                details=None if r.details is None else json.loads(r.details),
            )
            for r in self.conn.execute(stmt.order_by(version_checks.c.name))
        ]

    def check_statuses(self, version_id: int) -> dict[str, str]:
        """name -> status of a version's checks: what a policy rule reads."""
        stmt = select(version_checks.c.name, version_checks.c.status).where(
            version_checks.c.version_id == version_id
        )
        return {name: status for name, status in self.conn.execute(stmt)}

    def scan_details(self) -> Iterator[tuple[int, str, int, dict[str, Any] | None]]:
        """Every live version (id, model, number) with the details of its ``scan`` check,
        None where it has none: what a re-scan reads to find the stale verdicts."""
        scan = version_checks.c.name == SCAN_CHECK
        stmt = (
            select(versions.c.id, models.c.name, versions.c.number, version_checks.c.details)
            .join(models, versions.c.model_id == models.c.id)
            .outerjoin(version_checks, and_(version_checks.c.version_id == versions.c.id, scan))
            .where(versions.c.deleted_at.is_(None))
            .order_by(versions.c.id)
        )
        for version_id, model, number, details in self.conn.execute(stmt):
            yield version_id, model, number, None if details is None else json.loads(details)


class ChecksWriter(ChecksReader):
    def put_check(
        self, version_id: int, name: str, values: dict[str, Any], *, new: bool = False
    ) -> None:
        """Record the latest result of a check (status, url, reporter, reported_at, and
        for the registry's own checks the details, JSON-encoded here). ``new``: the
        version was created by this transaction, so there is no row to update (one
        statement saved on the registration path)."""
        values = {**values, "details": _json(values.get("details"))}
        key = and_(version_checks.c.version_id == version_id, version_checks.c.name == name)
        if (
            new
            or self.conn.execute(update(version_checks).where(key).values(**values)).rowcount == 0
        ):
            _INSERT_CHECK.rows(self.conn, {"version_id": version_id, "name": name, **values})


def _json(details: dict[str, Any] | None) -> str | None:
    return None if details is None else json.dumps(details, sort_keys=True)
