"""Issue 11, events out: from a commit to an event-stream client holding the event.

A real ``modelyard serve`` (SQLite, or PostgreSQL with ``--database-url``; local mode) and
``--clients`` event-stream clients (the SDK's ``stream_events`` over HTTP, one thread
each). The benchmark moves an alias ``--events`` times, through the REST API as a client
would, each move once every client holds the previous one. An event's latency at a client
is the time it holds it minus the event's own time, which the server stamps inside the
write transaction: the commit (its fsync), the bell, the read and the send are all in it.
Server and clients share one machine, and so one clock.

    python -m benchmarks.stream [--events 500] [--clients 1,10] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import modelyard
from benchmarks._common import pct
from benchmarks._harness import ModelyardServer

WARMUP = 20


def measure(url: str, clients: int, events: int) -> dict[str, Any]:
    """p50, p99 and the worst of every client's latency, in milliseconds."""
    latencies: list[float] = []
    arrived = threading.Semaphore(0)
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)

    with modelyard.connect(url) as reg:
        start = reg.events(after=0, limit=1000)[-1].seq  # a small journal: its last event

    def follow() -> None:
        with modelyard.connect(url) as reg:
            stream = reg.stream_events(after=start, model="churn")
            ready.wait()
            for _ in range(WARMUP + events):
                event = next(stream)
                held = datetime.now(UTC)
                with lock:
                    latencies.append((held - event.time).total_seconds() * 1000)
                arrived.release()
            stream.close()

    threads = [threading.Thread(target=follow, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    with modelyard.connect(url) as reg:
        for i in range(WARMUP + events):
            reg.set_alias("churn", "champion", 1 + i % 2)
            for _ in range(clients):
                arrived.acquire()
            if i + 1 == WARMUP:
                with lock:
                    latencies.clear()
    for thread in threads:
        thread.join()
    return {
        "clients": clients,
        "events": events,
        "p50_ms": round(pct(latencies, 50), 2),
        "p99_ms": round(pct(latencies, 99), 2),
        "max_ms": round(max(latencies), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--clients", default="1,10")
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        with ModelyardServer(root / "data", root / "server.log", args.database_url) as server:
            with modelyard.connect(server.url) as reg:
                for n in (1, 2):
                    (root / "model.bin").write_bytes(f"weights {n}".encode())
                    reg.register("churn", root / "model.bin", source=None, environment=None)
            results = [
                measure(server.url, int(clients), args.events)
                for clients in args.clients.split(",")
            ]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
