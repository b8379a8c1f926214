"""Online metrics' rows: every reported value, and the newest of each key per version.

Written by ``OnlineWriter``, in the transaction ``Database.telemetry()`` opens: it does not lock
the journal head and appends no event. Reports are observations of a version in
production, many per hour and per version; the journal keeps decisions, and nothing
cached is stamped by these rows (the service never caches them). ``OnlineReader`` is part
of every ``Reader``, so a policy evaluated in a write transaction reads the newest values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Insert, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from modelyard.domain.models import utc_from_us
from modelyard.domain.online import OnlinePoint
from modelyard.domain.overview import MetricPoint
from modelyard.storage.db.tables import online_metrics, online_metrics_latest, versions

_LATEST = select(online_metrics_latest.c.key, online_metrics_latest.c.value).where(
    online_metrics_latest.c.version_id == bindparam("version_id")
)
_POINT_COLUMNS = (
    online_metrics.c.key,
    online_metrics.c.value,
    online_metrics.c.start_at,
    online_metrics.c.end_at,
    online_metrics.c.reporter,
    online_metrics.c.received_at,
)


class OnlineReader:
    conn: Connection

    def online_latest(self, version_id: int) -> dict[str, float]:
        """key -> the newest value of each online metric of a version (by window end)."""
        rows = self.conn.execute(_LATEST, {"version_id": version_id})
        return {key: value for key, value in sorted(rows)}

    def online_points(
        self,
        model: str,
        number: int,
        version_id: int,
        *,
        key: str | None,
        since_us: int | None,
        until_us: int | None,
        limit: int,
        offset: int,
    ) -> list[OnlinePoint]:
        """A version's points, oldest first by window end; ``since``/``until`` bound the
        window end (inclusive), ``key`` picks one metric."""
        stmt = select(*_POINT_COLUMNS).where(online_metrics.c.version_id == version_id)
        if key is not None:
            stmt = stmt.where(online_metrics.c.key == key)
        if since_us is not None:
            stmt = stmt.where(online_metrics.c.end_at >= since_us)
        if until_us is not None:
            stmt = stmt.where(online_metrics.c.end_at <= until_us)
        stmt = stmt.order_by(online_metrics.c.end_at, online_metrics.c.id)
        return [
            OnlinePoint(
                model, number, k, v, utc_from_us(s), utc_from_us(e), who, utc_from_us(received)
            )
            for k, v, s, e, who, received in self.conn.execute(stmt.limit(limit).offset(offset))
        ]

    def online_series(
        self, model_id: int, key: str, limit: int, number: int | None = None
    ) -> list[MetricPoint]:
        """The newest ``limit`` values of ``key`` across a model's live versions (or of
        version ``number``), oldest first, each at its window's end: a chart of what
        served, version after version."""
        stmt = (
            select(versions.c.number, online_metrics.c.end_at, online_metrics.c.value)
            .join(versions, online_metrics.c.version_id == versions.c.id)
            .where(
                versions.c.model_id == model_id,
                versions.c.deleted_at.is_(None),
                online_metrics.c.key == key,
            )
            .order_by(online_metrics.c.end_at.desc(), online_metrics.c.id.desc())
            .limit(limit)
        )
        if number is not None:
            stmt = stmt.where(versions.c.number == number)
        newest_first = list(self.conn.execute(stmt))
        return [MetricPoint(n, end, value) for n, end, value in reversed(newest_first)]

    def online_keys(self, model_id: int) -> list[str]:
        """The online metrics any live version of a model has, by name."""
        stmt = (
            select(online_metrics_latest.c.key)
            .join(versions, online_metrics_latest.c.version_id == versions.c.id)
            .where(versions.c.model_id == model_id, versions.c.deleted_at.is_(None))
            .distinct()
            .order_by(online_metrics_latest.c.key)
        )
        return list(self.conn.scalars(stmt))


class OnlineWriter(OnlineReader):
    """Mixed into ``Telemetry`` (store.py), the transaction ``Database.telemetry()`` opens."""

    def record_online(
        self,
        version_id: int,
        metrics: Mapping[str, float],
        *,
        start_us: int,
        end_us: int,
        reporter: str,
        now: int,
    ) -> None:
        """Append a report's values and move each key's newest value, unless a report
        with a later window end got there first (reports may arrive out of order)."""
        self.conn.execute(
            online_metrics.insert(),
            [
                {
                    "version_id": version_id,
                    "key": key,
                    "value": value,
                    "start_at": start_us,
                    "end_at": end_us,
                    "reporter": reporter,
                    "received_at": now,
                }
                for key, value in metrics.items()
            ],
        )
        rows = [
            {"version_id": version_id, "key": key, "value": value, "end_at": end_us}
            for key, value in metrics.items()
        ]
        self.conn.execute(self._upsert_latest(), rows)

    def _upsert_latest(self) -> Insert:
        dialect: Any = postgresql if self.conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(online_metrics_latest)
        return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
            index_elements=[online_metrics_latest.c.version_id, online_metrics_latest.c.key],
            set_={"value": stmt.excluded.value, "end_at": stmt.excluded.end_at},
            where=online_metrics_latest.c.end_at <= stmt.excluded.end_at,
        )
