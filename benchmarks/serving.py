"""``modelyard serve-model`` (issue 12): added latency over an in-process predict,
throughput, and the time from a promotion to the new version serving; side by side with
``mlflow models serve`` when the MLflow venv is there.

A real ``modelyard serve`` registry holds two versions of a small scikit-learn model
(logistic regression and a depth-1 tree on iris, saved through skops); a real
``modelyard serve-model churn@production`` process serves them.

- **Added latency**: one client, one keep-alive connection, a one-record prediction at a
  time; against ``load_directory(...).predict`` of the same record in this process (what
  ``load_model`` returns). p50 and p99 of each and their difference.
- **Throughput**: ``RESOLVE_CLIENTS`` client processes (``_client.py``, standard library)
  POSTing one-record predictions on keep-alive connections; the same clients against
  ``mlflow models serve`` (``/invocations``, ``dataframe_records``) on the same model.
- **Promotion -> serving**: promote version 2, then roll back, alternately; each time from
  just before the SDK's call until ``/metadata`` names the new version (polled every ms).
- **load_model**: in a new process each time (what a service's start pays), the import and
  ``reg.load_model("churn@production")`` from the registry (the first with an empty cache,
  then warm: a stat per file), against ``mlflow.pyfunc.load_model`` of the same model saved
  by MLflow in a local directory (no registry to ask: MLflow's best case); and the load
  alone, repeated in one process (``load_directory`` against ``pyfunc.load_model``).

Usage: ``python -m benchmarks.serving [--quick] [--json FILE] [--skip-mlflow]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

import modelyard
from benchmarks._common import HOST, RESOLVE_CLIENTS, concurrent_gets, free_port, ms, pct
from benchmarks._harness import ModelyardServer
from modelyard.flavors import load_directory, save_model

Log = Callable[[str], None]
PROMOTION_TARGET_S = 2.0
THROUGHPUT_TARGET_RATIO = 3.0
MLFLOW_VENV = Path(__file__).resolve().parent / ".mlflow-venv"

# Run by the MLflow venv's python: the same model, trained the same way, saved by MLflow.
MLFLOW_SAVE = """
import sys
import mlflow.sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True, as_frame=True)
model = LogisticRegression(max_iter=300).fit(X, y)
mlflow.sklearn.save_model(model, sys.argv[1], input_example=X.iloc[:5])
"""

# Each run in a new process: the import, one load, then the load repeated (medians).
LOAD_REPEATS = 20
MODELYARD_LOAD = f"""
import json, statistics, sys, time
started = time.perf_counter()
import modelyard
from modelyard.flavors import load_directory
from modelyard.client.registry import model_cache
imported = time.perf_counter()
with modelyard.connect(sys.argv[1]) as reg:
    model = reg.load_model("churn@production")
loaded = time.perf_counter()
directory = model_cache(model.version)
repeats = []
for _ in range({LOAD_REPEATS}):
    t = time.perf_counter()
    load_directory(directory, model.version)
    repeats.append(time.perf_counter() - t)
print(json.dumps({{"import_s": imported - started, "load_s": loaded - imported,
                  "repeat_s": statistics.median(repeats)}}))
"""
MLFLOW_LOAD = f"""
import json, statistics, sys, time
started = time.perf_counter()
import mlflow.pyfunc
imported = time.perf_counter()
model = mlflow.pyfunc.load_model(sys.argv[1])
loaded = time.perf_counter()
repeats = []
for _ in range({LOAD_REPEATS}):
    t = time.perf_counter()
    mlflow.pyfunc.load_model(sys.argv[1])
    repeats.append(time.perf_counter() - t)
print(json.dumps({{"import_s": imported - started, "load_s": loaded - imported,
                  "repeat_s": statistics.median(repeats)}}))
"""


class ServeModelProcess:
    """``modelyard serve-model`` on a free port; ``startup_s`` is spawn -> first 200 /readyz."""

    def __init__(self, registry_url: str, reference: str, root: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        command = [sys.executable, "-m", "modelyard", "serve-model", reference]
        command += ["--port", str(self.port), "--registry", registry_url]
        command += ["--cache-dir", str(root / "cache"), "--report-every", "0", *args]
        started = time.perf_counter()
        with (root / "serve-model.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        _wait_ready(f"{self.url}/readyz", self.process)
        self.startup_s = time.perf_counter() - started

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.02)  # polling for readiness, not standing in for it
    raise RuntimeError(f"{url} not ready in {timeout} s")


def serving_benchmark(
    root: Path, log: Log, quick: bool = False, mlflow: bool = True
) -> dict[str, Any]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    root.mkdir(parents=True, exist_ok=True)
    features, target = load_iris(return_X_y=True, as_frame=True)
    example = features.iloc[:5]
    first = LogisticRegression(max_iter=300).fit(features, target)
    second = DecisionTreeClassifier(max_depth=1, random_state=0).fit(features, target)
    save_model(first, root / "first", input_example=example)
    save_model(second, root / "second", input_example=example)
    record = features.iloc[:1].to_dict(orient="records")
    body_file = root / "predict.json"
    body_file.write_text(json.dumps({"records": record}))
    out: dict[str, Any] = {}
    with (
        ModelyardServer(root / "data", root / "registry.log") as registry,
        modelyard.connect(registry.url) as reg,
    ):
        for directory in (root / "first", root / "second"):
            reg.register("churn", directory, environment=None, source=None)
        reg.promote("churn/1", "production", override="benchmark")
        server = ServeModelProcess(registry.url, "churn@production", root)
        try:
            out["serve_model_startup_s"] = round(server.startup_s, 2)
            log("serving: added latency over an in-process predict")
            predictor = load_directory(root / "first")
            out |= _added_latency(server.url, body_file.read_bytes(), predictor, record, quick)
            log(f"serving: throughput, {RESOLVE_CLIENTS} client processes")
            per_client = 100 if quick else 500
            out |= concurrent_gets(server.url, "/predict", per_client, "throughput", body_file)
            log("serving: promotion -> serving")
            out |= _promotion_to_serving(reg, server.url, 6 if quick else 30)
        finally:
            server.close()
        if reg.resolve("churn@production").version != 1:  # the moves end on a rollback
            raise RuntimeError("churn/1 (the model MLflow saves too) is not in production")
        log("serving: load_model in new processes")
        out |= _load_times(root, "modelyard", [sys.executable, "-c", MODELYARD_LOAD, registry.url])
    if mlflow:
        out |= _mlflow_throughput(root, log, record, 100 if quick else 500)
        if out.get("mlflow_throughput_rps"):
            out["throughput_ratio"] = round(out["throughput_rps"] / out["mlflow_throughput_rps"], 2)
        if (MLFLOW_VENV / "bin" / "python").exists():
            log("serving: mlflow.pyfunc.load_model in new processes")
            command = [str(MLFLOW_VENV / "bin" / "python"), "-c", MLFLOW_LOAD]
            out |= _load_times(
                root, "mlflow", [*command, str(root / "mlflow-model")], _mlflow_env()
            )
            for key in ("load_s", "repeat_s"):
                out[f"load_model_{key}_ratio"] = round(
                    out[f"mlflow_{key}_p50"] / out[f"modelyard_{key}_p50"], 2
                )
            # A service's start: the import and the first load together.
            total = {
                side: out[f"{side}_import_s_p50"] + out[f"{side}_load_s_p50"]
                for side in ("modelyard", "mlflow")
            }
            out["load_model_start_ratio"] = round(total["mlflow"] / total["modelyard"], 2)
    return out


def _load_times(
    root: Path, side: str, command: list[str], env: dict[str, str] | None = None, runs: int = 7
) -> dict[str, Any]:
    """p50 of import, first load and repeated load over ``runs`` new processes; Modelyard's
    first run starts from an empty content cache (``<side>_cold_load_s``)."""
    env = dict(env or os.environ)
    env["MODELYARD_CACHE_DIR"] = str(root / f"load-cache-{side}")
    samples: dict[str, list[float]] = {"import_s": [], "load_s": [], "repeat_s": []}
    cold = None
    for i in range(runs):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        if i == 0:
            cold = figures["load_s"]
            continue  # the cold run is its own figure
        for key, values in samples.items():
            values.append(figures[key])
    out: dict[str, Any] = {f"{side}_cold_load_s": round(cold or 0.0, 4)}
    for key, values in samples.items():
        out[f"{side}_{key}_p50"] = round(pct(values, 50), 4)
    return out


def _mlflow_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VIRTUAL_ENV"))}
    env |= {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    env["PATH"] = f"{MLFLOW_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _added_latency(
    url: str, payload: bytes, predictor: Any, record: list[dict[str, Any]], quick: bool
) -> dict[str, Any]:
    n = 300 if quick else 3000
    inproc: list[float] = []
    for _ in range(50):
        predictor.predict(record)
    for _ in range(n):
        t = time.perf_counter()
        predictor.predict(record)
        inproc.append(time.perf_counter() - t)
    conn = http.client.HTTPConnection(HOST, int(url.rsplit(":", 1)[1]), timeout=30)
    headers = {"Content-Type": "application/json"}
    over_http: list[float] = []
    for i in range(n + 50):
        t = time.perf_counter()
        conn.request("POST", "/predict", payload, headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"/predict answered {response.status}")
        if i >= 50:
            over_http.append(time.perf_counter() - t)
    conn.close()
    return {
        "inprocess_p50_ms": ms(pct(inproc, 50)),
        "inprocess_p99_ms": ms(pct(inproc, 99)),
        "http_p50_ms": ms(pct(over_http, 50)),
        "http_p99_ms": ms(pct(over_http, 99)),
        "added_p50_ms": ms(pct(over_http, 50) - pct(inproc, 50)),
        "added_p99_ms": ms(pct(over_http, 99) - pct(inproc, 99)),
    }


def _promotion_to_serving(reg: modelyard.Registry, url: str, moves: int) -> dict[str, Any]:
    samples: list[float] = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for i in range(moves):
            target = 2 if i % 2 == 0 else 1
            if target == 2 and i:
                reg.restore("churn/2")  # a rollback archived it; not part of the move
            t = time.perf_counter()
            if target == 2:
                reg.promote("churn/2", "production", override="benchmark")
            else:
                reg.rollback("churn", stage="production")
            deadline = t + 60
            while client.get("/metadata").json()["version"] != target:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"version {target} not served within 60 s")
                time.sleep(0.001)
            samples.append(time.perf_counter() - t)
    return {
        "promotion_n": len(samples),
        "promotion_p50_s": round(pct(samples, 50), 3),
        "promotion_p99_s": round(pct(samples, 99), 3),
    }


def _mlflow_throughput(
    root: Path, log: Log, record: list[dict[str, Any]], per_client: int
) -> dict[str, Any]:
    """The same clients against ``mlflow models serve`` (--env-manager local), if the
    MLflow venv exists (``python -m benchmarks.run`` creates it)."""
    python = MLFLOW_VENV / "bin" / "python"
    if not python.exists():
        log("serving: no MLflow venv; MLflow's side skipped")
        return {"mlflow_note": f"no {MLFLOW_VENV}"}
    env = _mlflow_env()
    model_dir = root / "mlflow-model"
    subprocess.run([str(python), "-c", MLFLOW_SAVE, str(model_dir)], env=env, check=True)
    port = free_port()
    command = [str(python), "-m", "mlflow", "models", "serve", "-m", str(model_dir)]
    command += ["--env-manager", "local", "--host", HOST, "--port", str(port)]
    with (root / "mlflow-serve.log").open("ab") as mlflow_log:
        process = subprocess.Popen(
            command, stdout=mlflow_log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_ready(f"http://{HOST}:{port}/ping", process)
        body_file = root / "invocations.json"
        body_file.write_text(json.dumps({"dataframe_records": record}))
        log(f"serving: mlflow models serve, {RESOLVE_CLIENTS} client processes")
        return concurrent_gets(
            f"http://{HOST}:{port}", "/invocations", per_client, "mlflow_throughput", body_file
        )
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests, a smoke run")
    parser.add_argument("--skip-mlflow", action="store_true", help="Modelyard figures only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-serving-") as scratch:
        figures = serving_benchmark(
            Path(scratch) / "serving",
            lambda line: print(line, file=sys.stderr, flush=True),
            quick=args.quick,
            mlflow=not args.skip_mlflow,
        )
    figures["loadavg_1m"] = round(os.getloadavg()[0], 2)
    figures["targets"] = {
        "promotion_p99_s": PROMOTION_TARGET_S,
        "throughput_ratio": THROUGHPUT_TARGET_RATIO,
    }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
