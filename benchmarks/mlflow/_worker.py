"""MLflow-side workload, executed with the MLflow venv's python (mlflow is not in the main venv).

Usage: ``<mlflow-venv>/bin/python _worker.py <phase> <config.json> <result.json>``.
Each phase is a separate process so the orchestrator can sample server memory per phase and
so one failing phase cannot leave client state behind for the next. Every phase talks to the
server only through MLflow's own Python client (``MLFLOW_TRACKING_URI`` is set by the caller),
except ``seed``, which bulk-inserts rows into the SQLite file while no server is running.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

# Run as a script, so only this folder is on sys.path; _common is stdlib-only for this venv.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks._common import (
    MIB,
    SEARCH_PAGE,
    SEARCH_SEED,
    TEAMS,
    concurrent_gets,
    machine_references,
    ms,
    pct,
    sequential_figures,
    time_median,
    write_random,
)


def _quiet() -> None:
    """MLflow logs an INFO line per registration; keep that I/O out of the timings."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(MIB):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- register


def phase_register(cfg: dict[str, Any]) -> dict[str, Any]:
    """N x (run + params/metrics + 1 KiB artifact + model version with a tag), the MLflow way."""
    _quiet()
    n: int = cfg["n"]
    warmup: int = cfg["warmup"]
    scratch = Path(cfg["scratch"])
    client = MlflowClient()
    exp_id = client.create_experiment("bench-register")
    model = cfg["model_name"]
    client.create_registered_model(model)

    # Distinct random 1 KiB payloads, prepared up front so file creation is not timed.
    files: list[Path] = []
    for i in range(n + warmup):
        d = scratch / f"reg-{i}"
        d.mkdir(parents=True)
        p = d / "model.bin"
        p.write_bytes(os.urandom(1024))
        files.append(p)

    steps = dict.fromkeys(
        ("create_run", "log_batch", "log_artifact", "end_run", "create_model_version"), 0.0
    )

    def one(i: int, path: Path) -> None:
        t0 = time.perf_counter()
        run = mlflow.start_run(experiment_id=exp_id)
        t1 = time.perf_counter()
        try:
            now = int(time.time() * 1000)
            client.log_batch(
                run.info.run_id,
                metrics=[
                    Metric("accuracy", random.random(), now, 0),
                    Metric("loss", random.random(), now, 0),
                ],
                params=[
                    Param("lr", "0.001"),
                    Param("epochs", str(10 + i % 5)),
                    Param("batch_size", "64"),
                ],
            )
            t2 = time.perf_counter()
            mlflow.log_artifact(str(path), artifact_path="model")
            t3 = time.perf_counter()
        finally:
            mlflow.end_run()
        t4 = time.perf_counter()
        mv = client.create_model_version(
            model,
            source=f"{run.info.artifact_uri}/model",
            run_id=run.info.run_id,
            tags={"team": TEAMS[i % len(TEAMS)]},
        )
        t5 = time.perf_counter()
        if mv.status != "READY":
            raise RuntimeError(f"model version {mv.version} not READY: {mv.status}")
        if i >= warmup:
            steps["create_run"] += t1 - t0
            steps["log_batch"] += t2 - t1
            steps["log_artifact"] += t3 - t2
            steps["end_run"] += t4 - t3
            steps["create_model_version"] += t5 - t4

    for i in range(warmup):
        one(i, files[i])
    start = time.perf_counter()
    for i in range(warmup, warmup + n):
        one(i, files[i])
    elapsed = time.perf_counter() - start

    latest = client.search_model_versions(f"name = '{model}'", max_results=1)
    return {
        "register_n": n,
        "register_s": round(elapsed, 3),
        "register_per_s": round(n / elapsed, 3),
        "register_step_avg_ms": {k: ms(v / n) for k, v in steps.items()},
        "register_versions_total": int(latest[0].version) if latest else 0,
    }


# --------------------------------------------------------------------------- resolve


def phase_resolve(cfg: dict[str, Any]) -> dict[str, Any]:
    """Alias lookups: sequential with MLflow's client, then 16 client processes on its REST API
    (the same client code as the Modelyard side's)."""
    _quiet()
    client = MlflowClient()
    model = cfg["model_name"]
    client.set_registered_model_alias(model, "champion", "1")

    def call() -> float:
        t0 = time.perf_counter()
        mv = client.get_model_version_by_alias(model, "champion")
        dt = time.perf_counter() - t0
        if mv.version != "1":
            raise RuntimeError(f"alias resolved to {mv.version}")
        return dt

    for _ in range(cfg["warmup"]):
        call()
    seq = [call() for _ in range(cfg["seq_n"])]

    path = f"/api/2.0/mlflow/registered-models/alias?name={model}&alias=champion"
    figures = concurrent_gets(os.environ["MLFLOW_TRACKING_URI"], path, cfg["per_client"])
    return {**_raw_resolve(model, cfg["diag_n"]), **sequential_figures(seq), **figures}


def _raw_resolve(model: str, n: int) -> dict[str, float]:
    """Diagnostic only: the same REST call without MLflow's client, keep-alive vs fresh conns.

    Separates MLflow client overhead from server time and exposes a connection-reuse stall.
    """
    import requests

    base = os.environ["MLFLOW_TRACKING_URI"]
    url = f"{base}/api/2.0/mlflow/registered-models/alias"
    params = {"name": model, "alias": "champion"}
    out: dict[str, float] = {}
    with requests.Session() as session:
        session.trust_env = False
        for label, headers in (("keepalive", {}), ("newconn", {"Connection": "close"})):
            samples: list[float] = []
            for _ in range(n):
                t0 = time.perf_counter()
                resp = session.get(url, params=params, headers=headers, timeout=30)
                resp.raise_for_status()
                resp.json()
                samples.append(time.perf_counter() - t0)
            out[f"diag_resolve_raw_{label}_p50_ms"] = ms(pct(samples, 50))
    return out


# --------------------------------------------------------------------------- big file


def _register_big(client: MlflowClient, exp_id: str, model: str, big: Path) -> tuple[str, float]:
    """One run that logs the big file, then a model version pointing at it."""
    t0 = time.perf_counter()
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.log_artifact(str(big), artifact_path="weights")
    client.create_model_version(
        model, source=f"{run.info.artifact_uri}/weights", run_id=run.info.run_id
    )
    return run.info.run_id, time.perf_counter() - t0


def phase_bigfile(cfg: dict[str, Any]) -> dict[str, Any]:
    """Upload/download one large file through the artifact proxy, plus a `cp` reference."""
    _quiet()
    scratch = Path(cfg["scratch"])
    size = cfg["big_mib"] * 1024 * 1024
    mib = size / (1024 * 1024)
    src_dir = scratch / "big-src"
    src_dir.mkdir(parents=True)
    big = src_dir / "payload.bin"
    write_random(big, size)
    src_sha = _sha256(big)  # also warms the page cache for every reader below alike

    client = MlflowClient()
    exp_id = client.create_experiment("bench-bigfile")
    model = "bench-big"
    client.create_registered_model(model)

    marks: dict[str, float] = {}
    run = mlflow.start_run(experiment_id=exp_id)
    try:
        marks["upload_start"] = time.time()
        t0 = time.perf_counter()
        mlflow.log_artifact(str(big), artifact_path="weights")
        upload_s = time.perf_counter() - t0
        marks["upload_end"] = time.time()
    finally:
        mlflow.end_run()
    run_id = run.info.run_id
    client.create_model_version(model, source=f"{run.info.artifact_uri}/weights", run_id=run_id)

    dst = scratch / "big-dl"
    dst.mkdir()
    marks["download_start"] = time.time()
    t0 = time.perf_counter()
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="weights/payload.bin", dst_path=str(dst)
    )
    download_s = time.perf_counter() - t0
    marks["download_end"] = time.time()
    if _sha256(Path(local)) != src_sha:
        raise RuntimeError("downloaded artifact differs from the uploaded file")
    shutil.rmtree(dst)

    references = machine_references(big, scratch)

    marks["reupload_start"] = time.time()
    _, reupload_s = _register_big(client, exp_id, model, big)
    marks["reupload_end"] = time.time()
    big.unlink()

    return {
        "big_mib": cfg["big_mib"],
        "upload_s": round(upload_s, 3),
        "upload_mb_s": round(mib / upload_s, 2),
        "download_s": round(download_s, 3),
        "download_mb_s": round(mib / download_s, 2),
        **references,
        "reupload_s": round(reupload_s, 3),
        "_marks": marks,
    }


# --------------------------------------------------------------------------- search seed


def phase_seed(cfg: dict[str, Any]) -> dict[str, Any]:
    """Create the schema with MLflow's own store code, then bulk-insert N linked versions.

    Each model version has source ``models:/<model_id>`` and a ``team`` tag; each backing
    logged model has an ``auc`` metric, a ``team`` tag and the ``mlflow.modelVersions`` tag
    the server itself writes when a logged model is registered.
    """
    from mlflow.entities import LoggedModelStatus, RunStatus
    from mlflow.store.model_registry.sqlalchemy_store import (
        SqlAlchemyStore as RegistryStore,
    )
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    db = Path(cfg["db_path"])
    uri = f"sqlite:///{db}"
    n: int = cfg["n"]
    n_models: int = cfg["n_models"]
    tracking = TrackingStore(uri, "mlflow-artifacts:/")
    registry = RegistryStore(uri)
    exp_id = tracking.create_experiment("search-seed")
    now = int(time.time() * 1000)
    run = tracking.create_run(exp_id, "bench", now, [], "seed")
    run_id = run.info.run_id
    tracking.update_run_info(run_id, RunStatus.FINISHED, now, "seed")
    tracking.engine.dispose()
    registry.engine.dispose()

    rng = random.Random(SEARCH_SEED)
    ready = LoggedModelStatus.READY.to_int()
    conn = sqlite3.connect(db, timeout=60)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO registered_models (name, creation_time, last_updated_time,"
                " description, workspace) VALUES (?, ?, ?, '', 'default')",
                [(f"model-{m:03d}", now, now) for m in range(n_models)],
            )
            lms: list[tuple[Any, ...]] = []
            lm_metrics: list[tuple[Any, ...]] = []
            lm_tags: list[tuple[Any, ...]] = []
            mvs: list[tuple[Any, ...]] = []
            mv_tags: list[tuple[Any, ...]] = []
            per_model = [0] * n_models
            for i in range(n):
                m = i % n_models
                per_model[m] += 1
                name, version = f"model-{m:03d}", per_model[m]
                mid = f"m-{uuid.uuid4().hex}"
                ts = now + i
                loc = f"mlflow-artifacts:/{exp_id}/models/{mid}/artifacts"
                team = TEAMS[i % len(TEAMS)]
                lms.append((mid, int(exp_id), name, loc, ts, ts, ready, run_id))
                lm_metrics.append((mid, ts, rng.uniform(0.5, 1.0), int(exp_id), run_id))
                lm_tags.append((mid, int(exp_id), "team", team))
                link = json.dumps([{"name": name, "version": version}])
                lm_tags.append((mid, int(exp_id), "mlflow.modelVersions", link))
                mvs.append((name, version, ts, ts, f"models:/{mid}", run_id, loc))
                mv_tags.append(("team", team, name, version))
            conn.executemany(
                "INSERT INTO logged_models (model_id, experiment_id, name, artifact_location,"
                " creation_timestamp_ms, last_updated_timestamp_ms, status, lifecycle_stage,"
                " model_type, source_run_id, status_message)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'active', '', ?, '')",
                lms,
            )
            conn.executemany(
                "INSERT INTO logged_model_metrics (model_id, metric_name, metric_timestamp_ms,"
                " metric_step, metric_value, experiment_id, run_id)"
                " VALUES (?, 'auc', ?, 0, ?, ?, ?)",
                lm_metrics,
            )
            conn.executemany(
                "INSERT INTO logged_model_tags (model_id, experiment_id, tag_key, tag_value)"
                " VALUES (?, ?, ?, ?)",
                lm_tags,
            )
            conn.executemany(
                "INSERT INTO model_versions (name, version, creation_time, last_updated_time,"
                " description, user_id, current_stage, source, run_id, status, status_message,"
                " run_link, storage_location, workspace)"
                " VALUES (?, ?, ?, ?, '', '', 'None', ?, ?, 'READY', '', '', ?, 'default')",
                mvs,
            )
            conn.executemany(
                "INSERT INTO model_version_tags (key, value, name, version, workspace)"
                " VALUES (?, ?, ?, ?, 'default')",
                mv_tags,
            )
        counts = {
            t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("model_versions", "logged_models", "logged_model_metrics")
        }
    finally:
        conn.close()
    return {"experiment_id": str(exp_id), "counts": counts}


# --------------------------------------------------------------------------- search


def phase_search(cfg: dict[str, Any]) -> dict[str, Any]:
    """Median latency of one 100-item page, via both MLflow 3 search APIs."""
    _quiet()
    client = MlflowClient()
    exp_id: str = cfg["experiment_id"]
    reps: int = cfg["reps"]
    warmup: int = cfg["warmup"]

    def logged() -> int:
        page = client.search_logged_models(
            experiment_ids=[exp_id], filter_string="metrics.auc >= 0.85", max_results=SEARCH_PAGE
        )
        if any(m.metrics is None or m.metrics[0].value < 0.85 for m in page):
            raise RuntimeError("search_logged_models returned a non-matching model")
        return len(page)

    def versions() -> int:
        page = client.search_model_versions(
            filter_string="tags.team = 'growth'", max_results=SEARCH_PAGE
        )
        if any(mv.tags.get("team") != "growth" for mv in page):
            raise RuntimeError("search_model_versions returned a non-matching version")
        return len(page)

    lm_med, lm_min, lm_n = time_median(logged, reps, warmup)
    mv_med, mv_min, mv_n = time_median(versions, reps, warmup)
    if lm_n != SEARCH_PAGE or mv_n != SEARCH_PAGE:
        raise RuntimeError(f"expected full pages of {SEARCH_PAGE}, got {lm_n} and {mv_n}")
    return {
        "logged_models_metric_ms": lm_med,
        "logged_models_metric_min_ms": lm_min,
        "model_versions_tag_ms": mv_med,
        "model_versions_tag_min_ms": mv_min,
        "reps": reps,
        "page_size": SEARCH_PAGE,
    }


PHASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "register": phase_register,
    "resolve": phase_resolve,
    "bigfile": phase_bigfile,
    "seed": phase_seed,
    "search": phase_search,
}


def main(argv: list[str]) -> int:
    phase, cfg_path, out_path = argv
    cfg = json.loads(Path(cfg_path).read_text())
    result = PHASES[phase](cfg)
    result["_mlflow_version"] = mlflow.__version__
    Path(out_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
