"""The registry's Prometheus metrics (``/metrics``; docs/deploy.md lists them).

Imported by the server only: the in-process SDK keeps no metrics and does not load
prometheus_client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event

if TYPE_CHECKING:
    from modelyard.storage.db.store import Database

# Seconds: from a cached resolve (~0.1 ms) to a big upload.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    120.0,
)


class Metrics:
    """The registry's Prometheus metrics (docs/deploy.md lists them).

    ``directory``: several worker processes share the metrics through files there
    (prometheus_client's multiprocess mode, which its PROMETHEUS_MULTIPROC_DIR variable
    must have switched on before the library was first imported); else they are the
    process's own.
    """

    def __init__(self, db: Database, directory: Path | None = None) -> None:
        shared = directory is not None
        if shared and values.ValueClass is values.MutexValue:
            raise RuntimeError("metrics in a directory need PROMETHEUS_MULTIPROC_DIR set first")
        self.directory = directory
        # Multiprocess mode: values live in the directory's files, which the collector
        # below reads at each scrape; the metric objects belong to no registry.
        own: CollectorRegistry | None = None if shared else CollectorRegistry(auto_describe=True)
        self._own = own
        self.requests: Counter = Counter(
            "modelyard_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=own,
        )
        self.latency: Histogram = Histogram(
            "modelyard_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.blob_in = Counter(
            "modelyard_blob_received_bytes",
            "Bytes of blobs received by uploads (the upload routes' request bodies).",
            registry=own,
        )
        self.blob_out = Counter(
            "modelyard_blob_sent_bytes",
            "Bytes of blobs sent by downloads (file and attachment downloads' bodies).",
            registry=own,
        )
        mode: dict[str, Any] = {"multiprocess_mode": "livesum"} if shared else {}
        self.pool_checked_out = Gauge(
            "modelyard_db_pool_checked_out",
            "Database connections in use, of the pools of every worker.",
            registry=own,
            **mode,
        )
        self.pool_size = Gauge(
            "modelyard_db_pool_size",
            "Connections the pools keep open (each may add as many again under load).",
            registry=own,
            **mode,
        )
        self._watch_pool(db.engine)
        # (method, route, status) -> the children: a labels() lookup costs a lock and a
        # tuple of strings; the set of keys is bounded by routes x methods x statuses.
        self._children: dict[tuple[str, str, int], tuple[MetricWrapperBase, Histogram]] = {}
        self.exposed = self._exposition(_JournalHead(db))

    def _exposition(self, head: _JournalHead) -> CollectorRegistry:
        exposed = self._own
        if exposed is None:
            exposed = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(exposed, path=str(self.directory))  # type: ignore[no-untyped-call]
        exposed.register(head)
        return exposed

    def _watch_pool(self, engine: Engine) -> None:
        size = getattr(engine.pool, "size", None)
        self.pool_size.set(size() if callable(size) else 0)
        gauge = self.pool_checked_out

        def checked_out(*_: object) -> None:
            gauge.inc()

        def checked_in(*_: object) -> None:
            gauge.dec()

        event.listen(engine, "checkout", checked_out)
        event.listen(engine, "checkin", checked_in)
        # A connection detached from the pool (the stamp reads' own) is checked in never.
        event.listen(engine, "detach", checked_in)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        count, latency = children
        count.inc()  # type: ignore[attr-defined]
        latency.observe(seconds)

    def blob_bytes(self, received: int, sent: int) -> None:
        if received:
            self.blob_in.inc(received)
        if sent:
            self.blob_out.inc(sent)

    def render(self) -> tuple[bytes, str]:
        """The exposition (body, content type) of every worker's values."""
        return generate_latest(self.exposed), CONTENT_TYPE_LATEST


class _JournalHead(Collector):
    """The journal's head, read from the database at each scrape: the same answer whichever
    worker is asked, and no value of a process that could go stale."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("modelyard_journal_head_seq", "The seq of the newest event.")
        family.add_metric([], float(self._db.head_seq()))
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())
