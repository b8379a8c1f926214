"""Queries over the OSV dump the registry matches against, mixed into ``Reader`` and
``Writer`` (store.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, select, update

from modelyard.domain.advisories import DumpSummary
from modelyard.domain.checks import ADVISORIES_CHECK
from modelyard.domain.events import CheckState
from modelyard.domain.models import Environment, to_us, utc_from_us
from modelyard.storage.db.prebuilt import Prebuilt
from modelyard.storage.db.tables import (
    advisory_dump,
    advisory_packages,
    models,
    version_checks,
    versions,
)

_DUMP_ID = 1  # the one row
# Every registration asks whether a dump is loaded: built once, run on the cursor.
_DUMP_SHA = Prebuilt(select(advisory_dump.c.sha256).where(advisory_dump.c.id == _DUMP_ID))
_INSERT_PACKAGES = Prebuilt(insert(advisory_packages))
_NAMES_A_QUERY = 500


@dataclass(frozen=True, slots=True)
class Candidate:
    """A live version as a re-evaluation reads it: what it runs, and its ``advisories``
    check now (status None: it has none; details None: not the registry's)."""

    version_id: int
    model: str
    number: int
    environment: Environment | None
    status: str | None
    url: str | None
    details: dict[str, Any] | None

    @property
    def state(self) -> CheckState | None:
        """Its check as an event's ``before`` names it."""
        return None if self.status is None else {"status": self.status, "url": self.url}


class AdvisoriesReader:
    conn: Connection

    def advisory_dump(self) -> tuple[DumpSummary, int | None] | None:
        """The dump in force and the next version its re-evaluation reaches (None: done);
        None when no dump is loaded."""
        row = self.conn.execute(select(advisory_dump).where(advisory_dump.c.id == _DUMP_ID)).first()
        if row is None:
            return None
        summary = DumpSummary(
            sha256=row.sha256,
            size=row.size,
            records=row.records,
            skipped=row.skipped,
            packages=row.packages,
            advisories=row.advisories,
            modified=row.modified,
            loaded_at=utc_from_us(row.loaded_at),
            loaded_by=row.loaded_by,
            pending=row.pending_from is not None,
        )
        return summary, row.pending_from

    def advisory_dump_sha(self) -> str | None:
        """The sha256 of the dump in force, None when none is loaded: one prebuilt read."""
        found: str | None = _DUMP_SHA.scalar(self.conn, {})
        return found

    def advisory_entries(self, packages: Sequence[str]) -> list[tuple[str, list[dict[str, Any]]]]:
        """The stored entries of those of ``packages`` (PEP 503 names) some advisory names,
        read ``_NAMES_A_QUERY`` names at a time: a batch of environments may name more
        packages than a statement binds (SQLite's variable limit)."""
        found = []
        for start in range(0, len(packages), _NAMES_A_QUERY):
            names = list(packages[start : start + _NAMES_A_QUERY])
            stmt = select(advisory_packages.c.package, advisory_packages.c.entries).where(
                advisory_packages.c.package.in_(names)
            )
            found += [
                (package, json.loads(entries)) for package, entries in self.conn.execute(stmt)
            ]
        return found

    def advisory_candidates(self, first_id: int, limit: int) -> list[Candidate]:
        """Up to ``limit`` live versions from id ``first_id`` on, by id."""
        check = and_(
            version_checks.c.version_id == versions.c.id,
            version_checks.c.name == ADVISORIES_CHECK,
        )
        stmt = (
            select(
                versions.c.id,
                models.c.name,
                versions.c.number,
                versions.c.environment,
                version_checks.c.status,
                version_checks.c.url,
                version_checks.c.details,
            )
            .join(models, versions.c.model_id == models.c.id)
            .outerjoin(version_checks, check)
            .where(versions.c.deleted_at.is_(None), versions.c.id >= first_id)
            .order_by(versions.c.id)
            .limit(limit)
        )
        return [
            Candidate(
                version_id=version_id,
                model=model,
                number=number,
                environment=None if env is None else Environment.from_dict(json.loads(env)),
                status=status,
                url=url,
                details=None if details is None else json.loads(details),
            )
            for version_id, model, number, env, status, url, details in self.conn.execute(stmt)
        ]


class AdvisoriesWriter(AdvisoriesReader):
    def replace_advisory_dump(
        self, summary: DumpSummary, entries: Mapping[str, list[dict[str, Any]]]
    ) -> None:
        """The dump in force, with every package's entries, in place of the one before; its
        evaluation of the live versions starts from the first."""
        self.conn.execute(delete(advisory_packages))
        self.conn.execute(delete(advisory_dump))
        self.conn.execute(
            insert(advisory_dump).values(
                id=_DUMP_ID,
                sha256=summary.sha256,
                size=summary.size,
                records=summary.records,
                skipped=summary.skipped,
                packages=summary.packages,
                advisories=summary.advisories,
                modified=summary.modified,
                loaded_at=to_us(summary.loaded_at),
                loaded_by=summary.loaded_by,
                pending_from=0,
            )
        )
        _INSERT_PACKAGES.insert_all(
            self.conn,
            [
                {"package": package, "entries": json.dumps(found, sort_keys=True)}
                for package, found in sorted(entries.items())
            ],
        )

    def advisories_pending_from(self, next_id: int | None) -> None:
        """Where the re-evaluation goes on from (None: every live version is evaluated)."""
        self.conn.execute(
            update(advisory_dump).where(advisory_dump.c.id == _DUMP_ID).values(pending_from=next_id)
        )
