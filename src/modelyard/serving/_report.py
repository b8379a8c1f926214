"""Every interval, the figures of each version served, back to the registry
(``Registry.log_online_metrics``), where they sit next to the version's offline metrics."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from modelyard.client.registry import Registry
from modelyard.domain.errors import ModelyardError
from modelyard.serving._follower import Notify
from modelyard.serving._metrics import ServingMetrics


class Reporter:
    def __init__(
        self, registry: Registry, metrics: ServingMetrics, interval: float, notify: Notify
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.interval = interval
        self.notify = notify
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modelyard-serving-report")
        self._thread.daemon = True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop, sending the last window's figures first."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        send = getattr(self.registry, "log_online_metrics", None)
        if send is None:
            self.notify("reporting_unavailable", {"reason": "this SDK has no log_online_metrics"})
            return
        while True:
            stopping = self._stopped.wait(self.interval)
            start, end, figures = self.metrics.take_window()
            window = (datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC))
            for (model, number), values in figures.items():
                try:
                    send(f"{model}/{number}", values, window=window)
                except ModelyardError as exc:  # the registry down or refusing: next window
                    self.notify(
                        "report_failed", {"version": f"{model}/{number}", "error": exc.message}
                    )
            if stopping:
                return
