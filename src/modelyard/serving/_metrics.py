"""What the server measures: Prometheus metrics for scraping, and per-version windows for
the reports it sends the registry.

Each server (each worker process) has its own ``CollectorRegistry``: its figures are the
process's own, like its CPU and memory (``ProcessCollector``).
"""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Predictions of a small model take well under a millisecond: the buckets start there.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MAX_SAMPLES = 200_000  # latencies kept per version and window; past it, every other one


@dataclass(slots=True)
class VersionWindow:
    """One version's requests since the last report."""

    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    stride: int = 1  # keep one latency in ``stride`` once MAX_SAMPLES is reached


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, memory
        labels = ("model", "version")
        self.requests = Counter(
            "modelyard_serving_requests",
            "Prediction requests answered, by the version that answered",
            labels,
            registry=self.registry,
        )
        self.errors = Counter(
            "modelyard_serving_errors",
            "Prediction requests that failed (kind: client for a 4xx, server for a 5xx)",
            (*labels, "kind"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelyard_serving_request_seconds",
            "Time to answer a prediction request, body read to answer written",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.load_seconds = Gauge(
            "modelyard_serving_model_load_seconds",
            "Time to fetch, verify, load and warm a version",
            labels,
            registry=self.registry,
        )
        self.served = Gauge(
            "modelyard_serving_model_info",
            "1 for the version being served (its digest in a label)",
            (*labels, "digest"),
            registry=self.registry,
        )
        self.served_version = Gauge(
            "modelyard_serving_version",
            "The number of the version being served",
            ("model",),
            registry=self.registry,
        )
        self.reload_failures = Counter(
            "modelyard_serving_reload_failures",
            "Versions that could not be served (reason: verification, load, warm, fetch)",
            (*labels, "reason"),
            registry=self.registry,
        )
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, int], VersionWindow] = {}
        self._window_start = time.time()
        self._cpu_start = _cpu_seconds()

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def record(self, model: str, version: int, seconds: float, error: bool) -> None:
        """One prediction request, for the next report (the Prometheus side is counted by
        the caller's bound children, which are cheaper than a label lookup)."""
        with self._lock:
            window = self._windows.get((model, version))
            if window is None:
                window = self._windows[(model, version)] = VersionWindow()
            window.requests += 1
            window.errors += error
            if window.requests % window.stride == 0:
                window.latencies.append(seconds)
                if len(window.latencies) >= MAX_SAMPLES:
                    del window.latencies[::2]
                    window.stride *= 2

    def take_window(self) -> tuple[float, float, dict[tuple[str, int], dict[str, float]]]:
        """(start, end, figures per (model, version)) since the last call, and start anew.
        CPU and memory are the process's, reported with every version it served."""
        with self._lock:
            windows, self._windows = self._windows, {}
            start, end = self._window_start, time.time()
            cpu_start, cpu_end = self._cpu_start, _cpu_seconds()
            self._window_start, self._cpu_start = end, cpu_end
        cpu_percent = 100.0 * (cpu_end - cpu_start) / max(end - start, 1e-9)
        memory = _resident_bytes() / (1024 * 1024)
        figures: dict[tuple[str, int], dict[str, float]] = {}
        for key, window in windows.items():
            ordered = sorted(window.latencies)
            figures[key] = {
                "requests": float(window.requests),
                "error_rate": window.errors / window.requests,
                "latency_p50_ms": 1000 * _quantile(ordered, 0.50),
                "latency_p99_ms": 1000 * _quantile(ordered, 0.99),
                "cpu_percent": cpu_percent,
                "memory_mb": memory,
            }
        return start, end, figures


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _resident_bytes() -> int:
    """The resident set now (/proc), else the peak (getrusage: KiB on Linux)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
