"""MLflow's own client against two registries in one run (issue 14): MLflow's, and
Modelyard's MLflow API.

One real ``mlflow server`` (SQLite, serving artifacts, ``--workers 1``: its best here) is
the tracking server of both and the registry of one; one real ``modelyard serve`` (SQLite,
local mode, ``--mlflow-tracking-uri`` on that server) is the other. The same
``MlflowClient`` code, in this process (``mlflow`` is a dev dependency), makes each call,
with only ``registry_uri`` differing. Rounds alternate the two registries, so the
machine's drift falls on both alike; the figure of a row is the median over all rounds of
each call's latency.

- **register**: ``create_model_version`` from one run's 1 KiB artifact (``runs:/RUN/model``).
  MLflow records the URI; Modelyard copies the file through the tracking server (list,
  download, hash, store) and registers an immutable version: more work, measured as is.
- **get by alias**: ``get_model_version_by_alias`` of a model with ``SEEDED`` versions.
- **search versions**: ``search_model_versions("name = '...'", max_results=100)``, the
  first page of the same model's versions.
- **search models**: ``search_registered_models(max_results=100)`` among ``SEEDED`` models.

Usage: ``python -m benchmarks.mlflow_api [--quick] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

import httpx

from benchmarks._common import HOST, ServerProcess, free_port, ms
from benchmarks._harness import ModelyardServer

SEEDED = 200
TARGET_TIMES = 5.0  # the target: every row at least 5x MLflow's figure
MODEL = "bench-mlflow-api"
Log = Callable[[str], None]


class TrackingServer(ServerProcess):
    """``mlflow server`` from this venv: the tracking server, and MLflow's registry."""

    name = "mlflow server"
    start_timeout_s = 180.0
    transient_errors = (httpx.TransportError,)

    def __init__(self, root: Path) -> None:
        super().__init__(root / "mlflow.log")
        self.root = root

    def start(self) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(self.port)]
        cmd += ["--workers", "1", "--serve-artifacts"]
        cmd += ["--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}"]
        cmd += ["--artifacts-destination", str(self.root / "artifacts")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        self._launch(cmd, env, lambda: httpx.get(f"{self.url}/health").status_code == 200)


def mlflow_api_benchmark(root: Path, log: Log, quick: bool = False) -> dict[str, Any]:
    os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    root.mkdir(parents=True)
    rounds, per_round = (2, 10) if quick else (5, 40)
    with (
        TrackingServer(root) as tracking,
        ModelyardServer(
            root / "modelyard",
            root / "modelyard.log",
            options=("--mlflow-tracking-uri", tracking.url),
        ) as registry,
    ):
        return _measure(tracking.url, registry.url, root, log, rounds, per_round)


def _measure(
    tracking: str, modelyard: str, root: Path, log: Log, rounds: int, per_round: int
) -> dict[str, Any]:
    import mlflow
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # an INFO line per registration
    mlflow.set_tracking_uri(tracking)
    artifact = root / "model.bin"
    artifact.write_bytes(os.urandom(1024))
    with mlflow.start_run() as run:
        mlflow.log_param("lr", 0.01)
        mlflow.log_metric("auc", 0.9)
        mlflow.log_artifact(str(artifact), artifact_path="model")
    source = f"runs:/{run.info.run_id}/model"
    clients = {
        "mlflow": MlflowClient(tracking_uri=tracking, registry_uri=tracking),
        "modelyard": MlflowClient(tracking_uri=tracking, registry_uri=modelyard),
    }
    log(f"mlflow api: seeding {SEEDED} models and versions on each side")
    for client in clients.values():
        client.create_registered_model(MODEL)
        for i in range(SEEDED):
            client.create_model_version(MODEL, source, run_id=run.info.run_id)
            client.create_registered_model(f"{MODEL}-{i:03d}")
        client.set_registered_model_alias(MODEL, "champion", "1")

    def calls(client: Any) -> dict[str, Callable[[], object]]:
        return {
            "register": lambda: client.create_model_version(MODEL, source, run_id=run.info.run_id),
            "get_by_alias": lambda: client.get_model_version_by_alias(MODEL, "champion"),
            "search_versions": lambda: client.search_model_versions(
                f"name = '{MODEL}'", max_results=100
            ),
            "search_models": lambda: client.search_registered_models(max_results=100),
        }

    samples: dict[str, dict[str, list[float]]] = {side: {} for side in clients}
    for r in range(rounds):
        log(f"mlflow api: round {r + 1} of {rounds}")
        for side, client in clients.items() if r % 2 == 0 else reversed(clients.items()):
            for row, call in calls(client).items():
                call()  # warm
                taken = samples[side].setdefault(row, [])
                for _ in range(per_round):
                    start = time.perf_counter()
                    call()
                    taken.append(time.perf_counter() - start)
    out: dict[str, Any] = {"rounds": rounds, "per_round": per_round, "seeded": SEEDED}
    for row in samples["mlflow"]:
        theirs, ours = median(samples["mlflow"][row]), median(samples["modelyard"][row])
        out[f"{row}_p50_ms"] = ms(ours)
        out[f"mlflow_{row}_p50_ms"] = ms(theirs)
        out[f"{row}_times"] = round(theirs / ours, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-mlflow-api-") as tmp:
        out = mlflow_api_benchmark(
            Path(tmp) / "run", lambda m: print(m, file=sys.stderr), args.quick
        )
    text = json.dumps(out, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    misses = [k for k, v in out.items() if k.endswith("_times") and v < TARGET_TIMES]
    verdict = f"MISSED on {', '.join(misses)}" if misses else "met"
    print(f"target >= {TARGET_TIMES:g}x on every row: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
