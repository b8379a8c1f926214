"""MLflow half of the side-by-side benchmark: the same workload as ours, run against MLflow.

Importable (``run_mlflow_benchmark``) and runnable::

    python -m benchmarks.mlflow.side --json out.json [--quick] [--big-mib N]
        [--search-sizes 20000,200000] [--workdir DIR]

MLflow is not a dependency of this project, so it lives in its own venv
(``benchmarks/.mlflow-venv``, created on demand) and the client workload runs there as
``_worker.py`` subprocesses. This module only uses the standard library: it starts and stops a
real ``mlflow server`` on 127.0.0.1, runs the worker phases against it and samples the server's
memory from ``/proc`` while large files move through its artifact proxy.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks._common import (
    HOST,
    REGISTER_WARMUP,
    RESOLVE_PER_CLIENT,
    RESOLVE_PER_CLIENT_QUICK,
    RESOLVE_WARMUP,
    SEARCH_MODELS,
    SEARCH_REPS,
    SEARCH_WARMUP,
    RssSampler,
    ServerProcess,
    free_port,
    rss_kib,
    sizes_arg,
    tail,
)

MLFLOW_VERSION = "3.17.2"
HERE = Path(__file__).resolve().parent
VENV_DIR = HERE.parent / ".mlflow-venv"
WORKER = HERE / "_worker.py"
# Loopback only: never route our own health/warm-up requests through an env-configured proxy.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SETTLE_TIMEOUT_S = 120.0
SETTLE_MAX_CORES = 0.05  # tree counts as idle below 5% of one core over a 1 s window


# --------------------------------------------------------------------------- venv


def _venv_python() -> Path:
    return VENV_DIR / "bin" / "python"


def _installed_mlflow(python: Path) -> str | None:
    """Ask the venv itself, since mlflow is not importable from the main venv."""
    if not python.exists():
        return None
    probe = "import importlib.metadata as m; print(m.version('mlflow'))"
    proc = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_mlflow_venv() -> Path:
    """Create the venv and pip-install the pinned MLflow only when it is not already there."""
    python = _venv_python()
    if _installed_mlflow(python) == MLFLOW_VERSION:
        return python
    if not python.exists():
        base = shutil.which("python3") or sys.executable
        subprocess.run([base, "-m", "venv", str(VENV_DIR)], check=True, timeout=600)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"mlflow=={MLFLOW_VERSION}"],
        check=True,
        timeout=3600,
    )
    found = _installed_mlflow(python)
    if found != MLFLOW_VERSION:
        raise RuntimeError(f"expected mlflow {MLFLOW_VERSION} in {VENV_DIR}, found {found}")
    return python


def _mlflow_env(tracking_uri: str | None, tmpdir: Path) -> dict[str, str]:
    """Clean env for MLflow processes: no leakage from our venv, telemetry off (no network).

    TMPDIR points into our scratch root because MLflow leaves ``db_init_lock-*`` files there.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"} and not k.startswith("MLFLOW_")
    }
    env["PATH"] = f"{VENV_DIR / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DO_NOT_TRACK"] = "true"
    env["NO_PROXY"] = env["no_proxy"] = f"{HOST},localhost"
    env["PYTHONUNBUFFERED"] = "1"
    tmpdir.mkdir(parents=True, exist_ok=True)
    env["TMPDIR"] = str(tmpdir)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


# --------------------------------------------------------------------------- /proc


def _parent_map() -> dict[int, int]:
    """pid -> ppid for every visible process (comm may contain spaces, hence rsplit)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1:
            parents[int(entry)] = int(fields[1])
    return parents


def process_tree(root: int) -> list[int]:
    """The root and all its descendants (the server forks uvicorn workers and a job runner)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parent_map().items():
        children.setdefault(ppid, []).append(pid)
    tree: list[int] = []
    stack = [root]
    while stack and len(tree) < 10_000:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def tree_rss_kib(root: int) -> int:
    return sum(rss_kib(pid) for pid in process_tree(root))


def tree_cpu_s(root: int) -> float:
    """Total user+system CPU seconds consumed so far by the live processes of a tree."""
    ticks = 0
    for pid in process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- server


class MlflowServer(ServerProcess):
    """A real ``mlflow server`` (sqlite backend + artifact proxy) with its MLflow defaults."""

    name = "mlflow server"
    start_timeout_s = 240.0
    stop_timeout_s = 30.0
    poll_s = 0.2

    def __init__(self, root: Path, tmpdir: Path, workers: int | None = None) -> None:
        super().__init__(root / "server.log")
        self.root = root
        self.tmpdir = tmpdir
        self.workers = workers  # None = MLflow's default (4 uvicorn workers)
        self.db_path = root / "mlflow.db"
        self.artifacts = root / "artifacts"
        self.settle_s = 0.0

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.artifacts.mkdir(exist_ok=True)
        self.port = free_port()
        cmd = [
            str(VENV_DIR / "bin" / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.db_path}",
            "--artifacts-destination",
            str(self.artifacts),
            "--serve-artifacts",
            "--host",
            HOST,
            "--port",
            str(self.port),
        ]
        if self.workers is not None:
            cmd += ["--workers", str(self.workers)]
        self._launch(cmd, _mlflow_env(None, self.tmpdir), self._healthy, cwd=self.root)
        self._warm_workers()
        self.settle_s = self._wait_quiescent()

    def _warm_workers(self) -> None:
        """Touch the API over many fresh connections so every worker has initialised its store.

        MLflow workers import and connect lazily (seconds on the first request each); a
        long-running server would long have paid that, so it is kept out of the timings.
        """
        url = f"{self.url}/api/2.0/mlflow/experiments/get?experiment_id=0"

        def hit() -> None:
            with contextlib.suppress(urllib.error.URLError, OSError):
                _LOCAL.open(url, timeout=60).close()

        for _ in range(3):
            threads = [threading.Thread(target=hit, daemon=True) for _ in range(12)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=90)

    def _wait_quiescent(self) -> float:
        """Wait (bounded) until the server tree is idle: its job runner boots after /health."""
        start = time.monotonic()
        prev = tree_cpu_s(self.pid)
        while time.monotonic() - start < SETTLE_TIMEOUT_S:
            time.sleep(1.0)
            cur = tree_cpu_s(self.pid)
            if cur - prev < SETTLE_MAX_CORES:
                break
            prev = cur
        return round(time.monotonic() - start, 1)

    def _healthy(self) -> bool:
        with _LOCAL.open(f"{self.url}/health", timeout=2) as resp:
            return bool(resp.status == 200)

    def stop(self) -> None:
        """Stop the process group, then reap any descendant that left it."""
        tree = [] if self.proc is None else process_tree(self.proc.pid)
        super().stop()
        deadline = time.monotonic() + self.stop_timeout_s
        venv = str(VENV_DIR)
        for pid in tree[1:]:
            while time.monotonic() < deadline and _is_ours(pid, venv):
                time.sleep(0.1)
            if _is_ours(pid, venv):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _is_ours(pid: int, venv: str) -> bool:
    """Alive and still running our MLflow venv's python (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z" and venv.encode() in cmdline


# --------------------------------------------------------------------------- phases


def _run_phase(
    phase: str,
    cfg: dict[str, Any],
    *,
    python: Path,
    scratch: Path,
    tmpdir: Path,
    uri: str | None,
    timeout: float,
) -> dict[str, Any]:
    """Run one worker phase in the MLflow venv and return its JSON result."""
    scratch.mkdir(parents=True, exist_ok=True)
    cfg_path = scratch / f"{phase}.cfg.json"
    out_path = scratch / f"{phase}.out.json"
    log_path = scratch / f"{phase}.log"
    cfg_path.write_text(json.dumps(cfg))
    with log_path.open("wb") as log:
        try:
            proc = subprocess.run(
                [str(python), str(WORKER), phase, str(cfg_path), str(out_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_mlflow_env(uri, tmpdir),
                cwd=scratch,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise TimeoutError(f"phase {phase} exceeded {timeout}s:\n{tail(log_path)}") from err
    if proc.returncode != 0:
        raise RuntimeError(f"phase {phase} failed ({proc.returncode}):\n{tail(log_path)}")
    result: dict[str, Any] = json.loads(out_path.read_text())
    if result.pop("_mlflow_version", None) != MLFLOW_VERSION:
        raise RuntimeError(f"phase {phase} did not run on mlflow {MLFLOW_VERSION}")
    return result


def _search_at(python: Path, sdir: Path, tmp: Path, n: int) -> dict[str, Any]:
    """Seed n versions into a fresh DB, then time both searches on default and 1-worker servers."""
    seed = _run_phase(
        "seed",
        {"db_path": str(sdir / "mlflow.db"), "n": n, "n_models": SEARCH_MODELS},
        python=python,
        scratch=sdir / "seed",
        tmpdir=tmp,
        uri=None,
        timeout=600 + n / 50,
    )
    if seed["counts"]["model_versions"] != n:
        raise RuntimeError(f"seeding {n} versions produced {seed['counts']}")
    cfg = {"experiment_id": seed["experiment_id"], "reps": SEARCH_REPS, "warmup": SEARCH_WARMUP}
    res: dict[str, Any] = {}
    for workers, suffix in ((None, ""), (1, "_w1")):
        with MlflowServer(sdir, tmp, workers=workers) as srv:
            got = _run_phase(
                "search",
                cfg,
                python=python,
                scratch=sdir / f"run{suffix}",
                tmpdir=tmp,
                uri=srv.url,
                timeout=600 + n / 20,
            )
        res |= {f"{k}{suffix}": v for k, v in got.items() if k.endswith("_ms")}
    res |= {"reps": SEARCH_REPS, "page_size": 100, "seeded": seed["counts"]}
    shutil.rmtree(sdir, ignore_errors=True)
    return res


def _latency_phases(
    python: Path, root: Path, tmp: Path, uri: str, quick: bool, suffix: str
) -> dict[str, Any]:
    """Registration rate and alias-resolve latency against one running server."""
    n_register = 30 if quick else 200
    model = "bench-model"
    out = _run_phase(
        "register",
        {
            "n": n_register,
            "warmup": REGISTER_WARMUP,
            "model_name": model,
            "scratch": str(root / "reg"),
        },
        python=python,
        scratch=root / "reg",
        tmpdir=tmp,
        uri=uri,
        timeout=120 + 10 * n_register,
    )
    shutil.rmtree(root / "reg", ignore_errors=True)
    out |= _run_phase(
        "resolve",
        {
            "model_name": model,
            "warmup": RESOLVE_WARMUP,
            "seq_n": 100 if quick else 500,
            "per_client": RESOLVE_PER_CLIENT_QUICK if quick else RESOLVE_PER_CLIENT,
            "diag_n": 50 if quick else 100,
        },
        python=python,
        scratch=root / "resolve",
        tmpdir=tmp,
        uri=uri,
        timeout=900,
    )
    return {f"{k}{suffix}": v for k, v in out.items()}


def run_mlflow_benchmark(
    *, quick: bool, big_mib: int, search_sizes: list[int], workdir: Path, big_only: bool = False
) -> dict[str, Any]:
    """Run every MLflow measurement (``big_only``: the big file's alone, for a partial run
    that measures only that) and return the flat, stable-keyed result dict.

    Headline keys use ``mlflow server`` defaults (4 uvicorn workers). Latency-bound figures are
    repeated against ``--workers 1`` (keys suffixed ``_w1``) because uvicorn's multi-worker
    mode leaves Nagle on (uvicorn issue #3149): every keep-alive request then waits ~40 ms for
    a delayed ACK, which is not MLflow's own cost.
    """
    python = ensure_mlflow_venv()
    workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="mlflow-bench-", dir=workdir))
    tmp = root / "tmp"
    out: dict[str, Any] = {"mlflow_version": MLFLOW_VERSION, "quick": quick}
    try:
        with MlflowServer(root / "server", tmp) as srv:
            out["server_settle_s"] = srv.settle_s
            if not big_only:
                out |= _latency_phases(python, root / "server", tmp, srv.url, quick, "")
            out["server_idle_rss_mb"] = round(tree_rss_kib(srv.pid) / 1024, 1)
            out["server_processes"] = len(process_tree(srv.pid))
            # time.time: the worker process takes the marks of the windows below.
            sampler = RssSampler(functools.partial(tree_rss_kib, srv.pid), clock=time.time)
            sampler.start()
            try:
                big = _run_phase(
                    "bigfile",
                    {"big_mib": big_mib, "scratch": str(root / "big")},
                    python=python,
                    scratch=root / "big",
                    tmpdir=tmp,
                    uri=srv.url,
                    timeout=600 + 3 * big_mib,
                )
            finally:
                sampler.stop()
            shutil.rmtree(root / "big", ignore_errors=True)
            marks = big.pop("_marks")
            out |= big
            out["server_peak_rss_mb"] = sampler.peak_mib()
            out["server_peak_rss_upload_mb"] = sampler.peak_mib(
                marks["upload_start"], marks["upload_end"]
            )
            out["server_peak_rss_download_mb"] = sampler.peak_mib(
                marks["download_start"], marks["download_end"]
            )
            out["rss_samples"] = len(sampler.samples)
        shutil.rmtree(root / "server", ignore_errors=True)

        if not big_only:
            with MlflowServer(root / "server-w1", tmp, workers=1) as srv:
                out |= _latency_phases(python, root / "server-w1", tmp, srv.url, quick, "_w1")
            shutil.rmtree(root / "server-w1", ignore_errors=True)

            out["search"] = {}
            for n in search_sizes:
                out["search"][str(n)] = _search_at(python, root / f"search-{n}", tmp, n)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    out["measured"] = {
        "register": (
            "per version: mlflow.start_run + MlflowClient.log_batch (3 params, 2 metrics, one "
            "request) + mlflow.log_artifact (1 KiB via artifact proxy) + end_run + "
            "MlflowClient.create_model_version(source=run artifact uri, tags={'team':...})"
        ),
        "resolve": "MlflowClient.get_model_version_by_alias(name, 'champion')",
        "search.logged_models_metric_ms": (
            "MlflowClient.search_logged_models(experiment_ids=[seed], "
            "filter_string='metrics.auc >= 0.85', max_results=100): logged models, not "
            "registry versions; each seeded version is backed by one logged model"
        ),
        "search.model_versions_tag_ms": (
            "MlflowClient.search_model_versions(filter_string=\"tags.team = 'growth'\", "
            "max_results=100): registry versions, tag filter (MLflow cannot filter versions "
            "by metric)"
        ),
        "bigfile": (
            "mlflow.log_artifact / mlflow.artifacts.download_artifacts through the server's "
            "artifact proxy; cp of the same file on the same disk and its sha256 with hashlib; "
            "reupload_s = new run + "
            "log_artifact + create_model_version of the identical file"
        ),
    }
    out["notes"] = [
        "mlflow server with its defaults (uvicorn, 4 workers, job runner on), sqlite backend, "
        "local artifacts via --serve-artifacts, all on 127.0.0.1",
        "*_w1 keys: same phases against `mlflow server --workers 1`. With >1 worker uvicorn "
        "accepts sockets without TCP_NODELAY (uvicorn#3149), so each keep-alive request stalls "
        "~40 ms on delayed ACK; diag_resolve_raw_* shows raw REST keep-alive vs fresh conns",
        "MB = MiB (2**20 bytes); latencies are client-side wall time incl. MLflow client overhead",
        f"register: {REGISTER_WARMUP} untimed warm-up registrations; resolve: {RESOLVE_WARMUP} "
        f"warm-up calls; search: {SEARCH_WARMUP} warm-up + {SEARCH_REPS} timed, median reported",
        "resolve16_proc: 16 client processes (benchmarks/_client.py, http.client, one "
        "keep-alive connection each) GET the alias REST endpoint, as on the Modelyard side",
        f"search rows inserted directly into SQLite over {SEARCH_MODELS} registered models "
        "(schema created by MLflow's own store code), then served by a fresh mlflow server",
        "server_peak_rss_mb sums VmRSS over the server's whole process tree (CLI parent, "
        "uvicorn parent + workers, huey job runner) during the big-file phase",
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, help="write the result dict here")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--big-mib", type=int, default=None, help="big file size (MiB)")
    parser.add_argument("--search-sizes", type=sizes_arg(100), default=None)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)
    # Turn SIGTERM into SystemExit so the finally/with blocks still stop the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    big_mib: int = args.big_mib or (64 if args.quick else 1024)
    sizes: list[int] = args.search_sizes or ([2000] if args.quick else [20000])
    result = run_mlflow_benchmark(
        quick=args.quick, big_mib=big_mib, search_sizes=sizes, workdir=args.workdir
    )
    text = json.dumps(result, indent=2, sort_keys=True)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
