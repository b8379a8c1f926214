"""Modelyard half of the side-by-side benchmark: every figure from a real ``modelyard serve``.

Each phase gets its own server subprocess on a free loopback port and a fresh temporary data
directory (SQLite, the default), and is driven the way users drive it: the SDK for
registration and big files, plain keep-alive HTTP for resolve and search. The result dict uses
the same keys as ``benchmarks/mlflow/side.py`` wherever the two measure the same thing.
"""

from __future__ import annotations

import functools
import http.client
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

import modelyard
from benchmarks._common import (
    MIB,
    REGISTER_WARMUP,
    RESOLVE_PER_CLIENT,
    RESOLVE_PER_CLIENT_QUICK,
    RESOLVE_WARMUP,
    SEARCH_PAGE,
    SEARCH_REPS,
    SEARCH_WARMUP,
    TEAMS,
    CpuWindow,
    RssSampler,
    concurrent_gets,
    disk_bound,
    machine_references,
    ms,
    pct,
    rss_kib,
    sequential_figures,
    time_median,
    write_random,
)
from benchmarks._harness import Marks, ModelyardServer
from benchmarks._seed import seed_search_db
from benchmarks.mlflow_api import mlflow_api_benchmark
from benchmarks.serving import serving_benchmark
from benchmarks.ui import ui_benchmark
from benchmarks.webhooks import webhooks_benchmark

Log = Callable[[str], None]

# What `python -m benchmarks.run --only` can name; all of them by default.
PHASES = ("startup", "registry", "big_file", "search", "ui", "webhooks", "serving", "mlflow_api")

STARTS = 5
MODEL = "bench-register"
WRITER_MODEL = "bench-writer"  # registered while MODEL is resolved

# label -> (filter, order_by). "metric" is the headline query from the brief; "tag" exists to
# have one row that matches MLflow's search_model_versions exactly.
SEARCH_QUERIES: dict[str, tuple[str, str | None]] = {
    "metric": ("metrics.auc >= 0.85", None),
    "metric_tag": ('metrics.auc >= 0.85 and tags.team = "growth"', None),
    "metric_order": ("metrics.auc >= 0.85", "metrics.auc desc"),
    "tag": ('tags.team = "growth"', None),
}


def run_modelyard_benchmark(
    *,
    quick: bool,
    big_mib: int,
    search_sizes: list[int],
    workdir: Path,
    log: Log = print,
    phases: tuple[str, ...] = PHASES,
    ui_sizes: list[int] | None = None,
) -> dict[str, Any]:
    """Run the Modelyard measurements of ``phases``; returns a flat dict (plus ``search``
    and ``ui``: size -> figures). The UI is measured at ``ui_sizes``, else the search's."""
    workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="modelyard-bench-", dir=workdir))
    # The SDK's hash cache is per run: nothing carries over from earlier runs or the user's
    # own cache, but it does carry over from the first big registration to the re-registration.
    old_cache = os.environ.get("MODELYARD_CACHE_DIR")
    os.environ["MODELYARD_CACHE_DIR"] = str(root / "hash-cache")
    out: dict[str, Any] = {"modelyard_version": modelyard.__version__, "quick": quick}
    errors: dict[str, str] = {}
    out["errors"] = errors
    try:
        if "startup" in phases:
            log("serve start-up")
            out.update(_guard(errors, "startup", log, _startup, root / "startup") or {})
        if "registry" in phases:
            log("registration and resolve")
            _guard(
                errors,
                "registry",
                log,
                _register_and_resolve,
                root / "registry",
                out,
                errors,
                log,
                quick,
            )
        if "big_file" in phases:
            log(f"big file ({big_mib} MiB) and server RSS")
            out.update(_guard(errors, "big_file", log, _big_file, root / "big", big_mib) or {})
        if "search" in phases:
            out["search"] = {}
            for n in search_sizes:
                log(f"search over {n} versions")
                result = _guard(errors, f"search_{n}", log, _search, root / f"search-{n}", n)
                if result is not None:
                    out["search"][str(n)] = result
        if "ui" in phases:
            out["ui"] = {}
            for n in ui_sizes if ui_sizes is not None else search_sizes:
                log(f"the UI's pages over {n} versions")
                result = _guard(errors, f"ui_{n}", log, ui_benchmark, root / f"ui-{n}", n, log)
                if result is not None:
                    out["ui"][str(n)] = result
                    for key, figures in result.items():
                        if isinstance(figures, dict) and "error" in figures:
                            errors[f"ui_{n}.{key}"] = figures["error"]
        for phase, what, benchmark in (
            ("webhooks", "webhook delivery", webhooks_benchmark),
            ("serving", "serve-model, beside mlflow models serve", serving_benchmark),
            (
                "mlflow_api",
                "MLflow's client against MLflow's registry and Modelyard's MLflow API",
                mlflow_api_benchmark,
            ),
        ):
            if phase in phases:
                log(what)
                result = _guard(errors, phase, log, benchmark, root / phase, log, quick)
                if result is not None:
                    out[phase] = result
    finally:
        if old_cache is None:
            os.environ.pop("MODELYARD_CACHE_DIR", None)
        else:
            os.environ["MODELYARD_CACHE_DIR"] = old_cache
        shutil.rmtree(root, ignore_errors=True)
    return out


def _guard(
    errors: dict[str, str], phase: str, log: Log, run: Callable[..., Any], *args: Any
) -> Any:
    """Run one phase; a failure is recorded and the remaining phases still run.

    The code under test changes while people work, so one broken endpoint must not cost
    every other figure of a long run.
    """
    try:
        return run(*args)
    except Exception as exc:
        lines = str(exc).strip().splitlines() or [""]
        message = f"{exc.__class__.__name__}: {lines[0][:200]}"
        errors[phase] = message
        log(f"{phase} FAILED: {message}")
        return None


# -- 1. start-up ----------------------------------------------------------------------------


def _startup(root: Path) -> dict[str, Any]:
    """Spawn -> first 200 on /readyz: on a fresh data dir (runs the migrations) and again on
    an existing one (what a restart or a new replica costs)."""
    root.mkdir(parents=True)
    fresh: list[float] = []
    warm: list[float] = []
    existing = root / "existing"
    for i in range(STARTS):
        with ModelyardServer(root / f"fresh-{i}", root / "server.log") as server:
            fresh.append(server.startup_s)
    shutil.copytree(root / f"fresh-{STARTS - 1}", existing)
    for _ in range(STARTS):
        with ModelyardServer(existing, root / "server.log") as server:
            warm.append(server.startup_s)
    return {
        "startup_s": round(statistics.median(fresh), 3),
        "startup_all_s": [round(s, 3) for s in fresh],
        "startup_existing_s": round(statistics.median(warm), 3),
        "startup_existing_all_s": [round(s, 3) for s in warm],
    }


# -- 2 and 3. registration and resolve ------------------------------------------------------


def _register_and_resolve(
    root: Path, out: dict[str, Any], errors: dict[str, str], log: Log, quick: bool
) -> None:
    """Registration first (its figure stands even if resolve then fails), then resolve."""
    n = 100 if quick else 500
    files_dir = root / "files"
    files_dir.mkdir(parents=True)
    files = []
    for i in range(REGISTER_WARMUP + n):
        path = files_dir / f"model-{i:04d}.bin"
        path.write_bytes(os.urandom(1024))  # distinct content: every version uploads a blob
        files.append(path)
    rng = random.Random(42)
    with (
        ModelyardServer(root / "data", root / "server.log") as server,
        modelyard.connect(server.url) as reg,
    ):

        def register(i: int) -> None:
            reg.register(
                MODEL,
                files[i],
                metrics={"auc": rng.uniform(0.5, 1.0), "loss": rng.uniform(0.1, 0.5)},
                params={"lr": 0.01, "depth": i % 12, "optimizer": "adam"},
                tags={"team": TEAMS[i % len(TEAMS)]},
            )

        for i in range(REGISTER_WARMUP):
            register(i)
        with CpuWindow(server.pid) as cpu:
            t0 = time.perf_counter()
            for i in range(REGISTER_WARMUP, REGISTER_WARMUP + n):
                register(i)
            elapsed = time.perf_counter() - t0
        out["register_n"] = n
        out["register_s"] = round(elapsed, 3)
        out["register_per_s"] = round(n / elapsed, 2)
        out["register_ms_mean"] = ms(elapsed / n)
        out["register_cpu_ms"] = ms(cpu.seconds / n)

        reg.set_alias(MODEL, "champion", 1)
        out.update(_guard(errors, "resolve_sdk", log, _resolve_sdk, reg, quick) or {})
        resolve_http = _guard(errors, "resolve_http", log, _resolve_http, server, quick)
        out.update(resolve_http or {})


def _resolve_sdk(reg: modelyard.Registry, quick: bool) -> dict[str, Any]:
    """One client: the SDK's reg.resolve() on its keep-alive connection, including building
    the Version; MLflow's one-client figure is its SDK call too, so the two pair up."""
    samples: list[float] = []
    for i in range(RESOLVE_WARMUP + (300 if quick else 2000)):
        t = time.perf_counter()
        version = reg.resolve(f"{MODEL}@champion")
        dt = time.perf_counter() - t
        if version.version != 1:
            raise RuntimeError(f"{MODEL}@champion resolved to {version.version}")
        if i >= RESOLVE_WARMUP:
            samples.append(dt)
    return sequential_figures(samples)


def _resolve_http(server: ModelyardServer, quick: bool) -> dict[str, Any]:
    """GET /api/v1/resolve/NAME@champion over keep-alive with plain clients: one (with the
    server's CPU time per request), then 16 client processes at once."""
    path = f"/api/v1/resolve/{MODEL}@champion"
    with CpuWindow(server.pid) as cpu:
        raw = _resolve_raw(server.url, path, 300 if quick else 2000)
    figures = {
        "raw_resolve_p50_ms": ms(pct(raw, 50)),
        "raw_resolve_cpu_ms": ms(cpu.seconds / (len(raw) + RESOLVE_WARMUP)),
    }
    per_client = RESOLVE_PER_CLIENT_QUICK if quick else RESOLVE_PER_CLIENT
    figures |= concurrent_gets(server.url, path, per_client)
    figures |= resolve_while_registering(server.url, path, per_client)
    return figures


def resolve_while_registering(url: str, path: str, per_client: int) -> dict[str, Any]:
    """The 16 client processes again, resolving ``path`` while one SDK client registers
    versions of another model (1 KiB each) as fast as it can, from before the clients
    start until they are done.

    Resolve answers are cached per model: a registration of one model must not cost the
    readers of another their cached answers.
    """
    stop = threading.Event()
    registered: list[float] = []
    failures: list[BaseException] = []

    def write() -> None:
        try:
            with tempfile.TemporaryDirectory() as scratch, modelyard.connect(url) as reg:
                file = Path(scratch) / "model.bin"
                while not stop.is_set():
                    file.write_bytes(os.urandom(1024))
                    reg.register(WRITER_MODEL, file)
                    registered.append(time.perf_counter())
        except BaseException as exc:  # reported below, after the readers' figures
            failures.append(exc)

    writer = threading.Thread(target=write, name="writer")
    writer.start()
    t0 = time.perf_counter()
    try:
        figures = concurrent_gets(url, path, per_client, prefix="resolve16_write")
    finally:
        stop.set()
        writer.join()
    elapsed = time.perf_counter() - t0
    if failures:
        raise RuntimeError(f"the writer failed: {failures[0]!r}")
    during = sum(1 for t in registered if t >= t0)
    figures["resolve16_write_registrations"] = during
    figures["resolve16_write_registrations_per_s"] = round(during / elapsed, 2)
    return figures


def _resolve_raw(url: str, path: str, n: int) -> list[float]:
    """The same GET with the standard library's http.client: the server's latency with the
    least client overhead, paired with MLflow's raw REST figure (a requests.Session)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    samples: list[float] = []
    try:
        for i in range(RESOLVE_WARMUP + n):
            t = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            dt = time.perf_counter() - t
            if response.status != 200:
                raise RuntimeError(f"resolve answered {response.status}")
            if i >= RESOLVE_WARMUP:
                samples.append(dt)
    finally:
        conn.close()
    return samples


# -- 5 and 6. big files and server memory ---------------------------------------------------


def _big_file(root: Path, big_mib: int) -> dict[str, Any]:
    """Register and download a quarter-size file, then the full one, sampling server RSS.

    The quarter runs first so that its peak cannot be masked by the full file's: if memory
    is flat in file size, both peaks are about the same.
    """
    src = root / "src"
    src.mkdir(parents=True)
    sizes = {"quarter": max(1, big_mib // 4) * MIB, "full": big_mib * MIB}
    payloads = {label: src / f"payload-{label}.bin" for label in sizes}
    for label, size in sizes.items():
        write_random(payloads[label], size)
    out: dict[str, Any] = {"big_mib": big_mib}
    marks = Marks()
    with ModelyardServer(root / "data", root / "server.log") as server:
        time.sleep(0.5)  # let start-up allocations settle before the idle reading
        out["server_idle_rss_mb"] = round(rss_kib(server.pid) / 1024, 1)
        sampler = RssSampler(functools.partial(rss_kib, server.pid))
        sampler.start()
        try:
            with modelyard.connect(server.url) as reg:
                timings: dict[str, float] = {}
                for label, path in payloads.items():
                    mib = sizes[label] / MIB
                    gib = sizes[label] / 1024**3
                    prefix = "" if label == "full" else "quarter_"
                    with (
                        marks.span(f"{label}_upload"),
                        CpuWindow(os.getpid()) as client_cpu,
                        CpuWindow(server.pid) as server_cpu,
                    ):
                        t = time.perf_counter()
                        version = reg.register(f"bench-big-{label}", path)
                        timings[f"{label}_upload_s"] = time.perf_counter() - t
                    out[f"{prefix}upload_client_cpu_s_per_gib"] = round(client_cpu.seconds / gib, 3)
                    out[f"{prefix}upload_server_cpu_s_per_gib"] = round(server_cpu.seconds / gib, 3)
                    dest = root / f"download-{label}"
                    with (
                        marks.span(f"{label}_download"),
                        CpuWindow(os.getpid()) as client_cpu,
                        CpuWindow(server.pid) as server_cpu,
                    ):
                        t = time.perf_counter()
                        reg.download(version, dest)
                        timings[f"{label}_download_s"] = time.perf_counter() - t
                    out[f"{prefix}download_client_cpu_s_per_gib"] = round(
                        client_cpu.seconds / gib, 3
                    )
                    out[f"{prefix}download_server_cpu_s_per_gib"] = round(
                        server_cpu.seconds / gib, 3
                    )
                    stored = version.files[0].sha256
                    if (dest / path.name).stat().st_size != sizes[label]:
                        raise RuntimeError("downloaded file has the wrong size")
                    shutil.rmtree(dest)
                    out[f"{prefix}upload_s"] = round(timings[f"{label}_upload_s"], 3)
                    out[f"{prefix}upload_mb_s"] = round(mib / timings[f"{label}_upload_s"], 1)
                    out[f"{prefix}download_s"] = round(timings[f"{label}_download_s"], 3)
                    out[f"{prefix}download_mb_s"] = round(mib / timings[f"{label}_download_s"], 1)
                    if label == "quarter":
                        payloads[label].unlink()

                big = payloads["full"]
                out |= machine_references(big, root)
                blob = root / "data" / "blobs" / "sha256" / stored[:2] / stored
                out |= disk_bound(blob, root)
                out |= _shares(out)

                with marks.span("reupload"):
                    t = time.perf_counter()
                    again = reg.register("bench-big-full", big)
                    reupload_s = time.perf_counter() - t
                if again.version != 2:
                    raise RuntimeError(f"re-registration made version {again.version}, not 2")
                out["reupload_s"] = round(reupload_s, 4)
                out["reupload_pct"] = round(100 * reupload_s / timings["full_upload_s"], 3)
        finally:
            sampler.stop()
        out["server_hwm_mb"] = round(rss_kib(server.pid, "VmHWM") / 1024, 1)
    spans = marks.spans
    out["server_peak_rss_mb"] = sampler.peak_mib()
    for label in sizes:
        prefix = "" if label == "full" else "quarter_"
        for step in ("upload", "download"):
            out[f"server_peak_rss_{prefix}{step}_mb"] = sampler.peak_mib(*spans[f"{label}_{step}"])
    out["rss_samples"] = len(sampler.samples)
    return out


def _shares(out: dict[str, Any]) -> dict[str, float]:
    """The big file's rates as shares (%) of the machine's references in the same run."""
    floor = min(out["sha256_mb_s"], out["cp_mb_s"])
    shares = {
        "hash_cp_mb_s": floor,
        "upload_pct_hash_cp": round(100 * out["upload_mb_s"] / floor, 1),
        "download_pct_hash_cp": round(100 * out["download_mb_s"] / floor, 1),
    }
    if "disk_both_mb_s" in out:
        shares["download_pct_disk"] = round(100 * out["download_mb_s"] / out["disk_both_mb_s"], 1)
    return shares


# -- 4. search ------------------------------------------------------------------------------


def _search(root: Path, n: int) -> dict[str, Any]:
    """Median time of one 100-item page per query, on a database seeded with ``n`` versions,
    and the server's CPU time per page."""
    seed = seed_search_db(root / "data", n)
    result: dict[str, Any] = {"seed_s": seed["seed_s"], "reps": SEARCH_REPS}
    with (
        ModelyardServer(root / "data", root / "server.log") as server,
        httpx.Client(base_url=server.url, timeout=120.0) as client,
    ):
        for label, (flt, order_by) in SEARCH_QUERIES.items():
            params = {"filter": flt, "limit": str(SEARCH_PAGE)}
            if order_by:
                params["order_by"] = order_by

            def page(params: dict[str, str] = params, label: str = label) -> int:
                response = client.get("/api/v1/versions", params=params)
                if response.status_code != 200:
                    raise RuntimeError(f"search {label}: {response.status_code} {response.text}")
                items = response.json()["items"]
                _check_page(label, items)
                return len(response.content)

            for _ in range(SEARCH_WARMUP):
                page()
            with CpuWindow(server.pid) as cpu:
                median, fastest, size = time_median(page, SEARCH_REPS, 0)
            result[f"{label}_ms"] = median
            result[f"{label}_min_ms"] = fastest
            result[f"{label}_bytes"] = size
            result[f"{label}_cpu_ms"] = ms(cpu.seconds / SEARCH_REPS)
        result["cpu_ms_worst"] = max(result[f"{label}_cpu_ms"] for label in SEARCH_QUERIES)
    shutil.rmtree(root, ignore_errors=True)
    return result


def _check_page(label: str, items: list[dict[str, Any]]) -> None:
    """A fast wrong answer is not a result: every page must be full and match its filter."""
    if len(items) != SEARCH_PAGE:
        raise RuntimeError(f"search {label}: expected {SEARCH_PAGE} items, got {len(items)}")
    for item in items:
        auc = item["metrics"].get("auc")
        team = item["tags"].get("team")
        if label.startswith("metric") and (auc is None or auc < 0.85):
            raise RuntimeError(f"search {label}: returned auc={auc}")
        if label in ("metric_tag", "tag") and team != "growth":
            raise RuntimeError(f"search {label}: returned team={team}")
    if label == "metric_order":
        aucs = [item["metrics"]["auc"] for item in items]
        if aucs != sorted(aucs, reverse=True):
            raise RuntimeError("search metric_order: not sorted by auc desc")
