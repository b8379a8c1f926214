"""Queries of the UI's overviews: each answers for a whole page of models, or for every
version of one model, in one statement (never one per row).

Mixed into ``Reader`` (store.py) like the identity and lifecycle queries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, or_, select

from modelyard.domain.overview import MetricPoint
from modelyard.storage.db.prebuilt import Prebuilt
from modelyard.storage.db.tables import events, models, policies, version_metrics, versions

# Thousands of rows for a chart: prebuilt, read off the DBAPI cursor (store.py explains).
_METRIC_SERIES = Prebuilt(
    select(versions.c.number, versions.c.created_at, version_metrics.c.value)
    .join(
        version_metrics,
        and_(
            version_metrics.c.version_id == versions.c.id,
            version_metrics.c.key == bindparam("metric"),
        ),
    )
    .where(versions.c.model_id == bindparam("model_id"), versions.c.deleted_at.is_(None))
    .order_by(versions.c.number)
)


class OverviewReader:
    conn: Connection

    def model_creators(self, names: Sequence[str]) -> dict[str, str]:
        """Who created each model: the actor of its first event (one index seek each,
        inside one statement)."""
        if not names:
            return {}
        first = (
            select(events.c.actor)
            .where(events.c.model == models.c.name)
            .order_by(events.c.seq)
            .limit(1)
            .scalar_subquery()
        )
        rows = self.conn.execute(select(models.c.name, first).where(models.c.name.in_(names)))
        return {name: actor for name, actor in rows if actor is not None}

    def latest_metrics(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        """The metrics of each model's latest version."""
        if not names:
            return {}
        stmt = (
            select(models.c.name, version_metrics.c.key, version_metrics.c.value)
            .join(
                versions,
                and_(
                    versions.c.model_id == models.c.id,
                    versions.c.number == models.c.latest_version,
                    versions.c.deleted_at.is_(None),
                ),
            )
            .join(version_metrics, version_metrics.c.version_id == versions.c.id)
            .where(models.c.name.in_(names))
        )
        found: dict[str, dict[str, float]] = defaultdict(dict)
        for name, key, value in self.conn.execute(stmt):
            found[name][key] = value
        return found

    def stage_members(
        self, names: Sequence[str], stages: Sequence[str]
    ) -> dict[str, dict[str, list[int]]]:
        """model -> stage -> the versions in it, most recently moved in first; only
        ``stages`` (those that hold few versions: the stage index finds them)."""
        if not names or not stages:
            return {}
        recency = func.coalesce(versions.c.stage_updated_at, versions.c.created_at)
        stmt = (
            select(models.c.name, versions.c.stage, versions.c.number)
            .join(models, versions.c.model_id == models.c.id)
            .where(
                versions.c.stage.in_(stages),
                models.c.name.in_(names),
                versions.c.deleted_at.is_(None),
            )
            .order_by(recency.desc(), versions.c.number.desc())
        )
        found: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for name, stage, number in self.conn.execute(stmt):
            found[name][stage].append(number)
        return found

    def policies_in_force(self, names: Sequence[str]) -> tuple[dict[str, Any], Any]:
        """(id, version, document) of each model's newest policy, and the registry's
        newest (None when there is none); models without their own are left out."""
        stmt = select(policies.c.id, policies.c.model, policies.c.version, policies.c.document)
        stmt = stmt.where(or_(policies.c.model.in_(list(names)), policies.c.model.is_(None)))
        newest: dict[str | None, Any] = {}
        for row in self.conn.execute(stmt):
            if row.model not in newest or row.version > newest[row.model].version:
                newest[row.model] = row
        registry = newest.pop(None, None)
        return {str(name): row for name, row in newest.items()}, registry

    def metric_series(self, model_id: int, metric: str) -> list[MetricPoint]:
        """``metric`` of every live version of a model that has it, oldest first."""
        rows = _METRIC_SERIES.rows(self.conn, {"model_id": model_id, "metric": metric})
        return [MetricPoint(number, created, value) for number, created, value in rows]
