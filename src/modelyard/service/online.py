"""Online metrics as use cases: checkers report them, whoever sees the model reads them.

Reporting takes ``metrics.report`` (the checker role, or above: a serving or monitoring
service account), since policies may gate a promotion on them; reading takes
``model.view``. A model the caller may not see answers the 404 of a missing one.

Reports are written through ``Database.telemetry()``, outside the journal: they are
observations, many per hour per version, not decisions. Nothing here is cached, so a rule
or a page reads the newest values as soon as they are committed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from modelyard.domain.access import Caller, Permission
from modelyard.domain.errors import InvalidInput
from modelyard.domain.models import Page, to_us, utc_from_us
from modelyard.domain.names import validate_key, validate_model_name
from modelyard.domain.online import (
    MAX_SERIES_POINTS,
    OnlinePoint,
    OnlineReport,
    validate_online_metrics,
    validate_window,
)
from modelyard.domain.overview import MetricPoint
from modelyard.domain.pagination import PageTokens, validate_page_size
from modelyard.service.access import AccessControl
from modelyard.service.checks import version_id_or_404
from modelyard.storage.db.store import Database, now_us


class OnlineMetricsService:
    def __init__(self, db: Database, access: AccessControl, page_tokens: PageTokens) -> None:
        self.db = db
        self.access = access
        self.page_tokens = page_tokens

    def report(
        self,
        caller: Caller,
        model: str,
        number: int,
        metrics: Mapping[str, object],
        *,
        window: tuple[datetime, datetime] | None = None,
        at: datetime | None = None,
    ) -> OnlineReport:
        """Record values observed on a version over ``window`` (or at ``at``; else now)."""
        validate_model_name(model)
        values = validate_online_metrics(metrics)
        now = now_us()
        span = validate_window(window, at, utc_from_us(now))
        self.access.require(caller, Permission.REPORT_ONLINE_METRICS, model)
        with self.db.telemetry() as tx:
            version_id = version_id_or_404(tx, model, number)
            tx.record_online(
                version_id,
                values,
                start_us=to_us(span.start),
                end_us=to_us(span.end),
                reporter=caller.name,
                now=now,
            )
        return OnlineReport(model, number, values, span, caller.name, utc_from_us(now))

    def latest(self, caller: Caller, model: str, number: int) -> dict[str, float]:
        """The newest value of each online metric of a version: what rules read."""
        validate_model_name(model)
        self.access.require(caller, Permission.VIEW, model)
        with self.db.read() as tx:
            return tx.online_latest(version_id_or_404(tx, model, number))

    def points(
        self,
        caller: Caller,
        model: str,
        number: int,
        *,
        key: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_token: str | None = None,
        limit: int | None = None,
    ) -> Page[OnlinePoint]:
        """A version's series, oldest first by window end, a page at a time."""
        validate_model_name(model)
        if key is not None:
            validate_key(key, "metric name")
        limit = validate_page_size(limit)
        bounds = [_us(since, "since"), _us(until, "until")]
        query = f"online|{model}|{number}|{key}|{bounds}"
        offset = self.page_tokens.decode(page_token, query)
        self.access.require(caller, Permission.VIEW, model)
        with self.db.read() as tx:
            version_id = version_id_or_404(tx, model, number)
            items = tx.online_points(
                model,
                number,
                version_id,
                key=key,
                since_us=bounds[0],
                until_us=bounds[1],
                limit=limit + 1,
                offset=offset,
            )
        return self.page_tokens.page(items, limit, offset, query)

    def series(
        self, caller: Caller, model: str, key: str, number: int | None = None
    ) -> tuple[MetricPoint, ...]:
        """The newest values of ``key`` across every live version of a model (a chart of
        what served), or of version ``number``, oldest first."""
        validate_model_name(model)
        validate_key(key, "metric name")
        self.access.require(caller, Permission.VIEW, model)
        with self.db.read() as tx:
            model_id = tx.model_id(model)
            if model_id is None:
                return ()
            return tuple(tx.online_series(model_id, key, MAX_SERIES_POINTS, number))

    def keys(self, caller: Caller, model: str) -> list[str]:
        """The online metrics any live version of a model has."""
        validate_model_name(model)
        self.access.require(caller, Permission.VIEW, model)
        with self.db.read() as tx:
            model_id = tx.model_id(model)
            return tx.online_keys(model_id) if model_id else []


def _us(moment: datetime | None, what: str) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise InvalidInput(f"'{what}' needs a time zone, e.g. 2026-03-03T12:00Z")
    return to_us(moment)
