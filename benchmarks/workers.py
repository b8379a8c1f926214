"""``modelyard serve --workers``: resolve and registration with 1 and 2 workers, and what
the request telemetry (request ids, metrics) costs a resolve, in one run.

    python -m benchmarks.workers [--rounds 3] [--quick] [--json out.json]

Three servers, each a real ``modelyard serve`` on SQLite in a fresh directory, started in
turn for each round (so drift on a shared machine spreads over all three):

- ``before``: the code of ``--before`` (default: the ``main`` branch, exported with
  ``git archive``), which has no telemetry: the baseline of the middleware's cost;
- ``w1``: this code, one process (request ids and metrics on, as always);
- ``w2``: this code, ``--workers 2``.

Each is measured with the harness's clients: one keep-alive client's resolve (p50, and
the server's CPU per request for one-process servers), 16 client processes resolving at
once (p50, requests/s), and 16 client processes registering at once (a small inline file
each time; p50, versions/s). The table gives the median over rounds and the ratios.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import httpx

import modelyard
from benchmarks._common import (
    HOST,
    RESOLVE_PER_CLIENT,
    RESOLVE_PER_CLIENT_QUICK,
    CpuWindow,
    ServerProcess,
    concurrent_gets,
    free_port,
    ms,
    pct,
)
from benchmarks.modelyard_side import _resolve_raw

ROOT = Path(__file__).resolve().parent.parent
MODEL = "bench-workers"


class Server(ServerProcess):
    """``python -m modelyard serve`` from ``source`` (a ``src`` directory), with ``options``."""

    name = "modelyard serve"
    transient_errors = (httpx.TransportError,)

    def __init__(self, source: Path, data_dir: Path, log: Path, options: list[str]) -> None:
        super().__init__(log)
        self.source, self.data_dir, self.options = source, data_dir, options

    def start(self) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "modelyard", "serve", "--host", HOST]
        cmd += ["--port", str(self.port), "--data-dir", str(self.data_dir)]
        cmd += ["--log-level", "warning", *self.options]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
        env["PYTHONPATH"] = str(self.source)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        with httpx.Client(timeout=2.0) as client:
            self._launch(cmd, env, lambda: client.get(f"{self.url}/readyz").status_code == 200)


def export(revision: str, into: Path) -> Path:
    """The ``src`` directory of ``revision``, from git, without touching any work tree."""
    archive = into / "before.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", revision, "src"], cwd=ROOT, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "before", filter="data")
    return into / "before" / "src"


def measure(server: Server, root: Path, quick: bool, one_process: bool) -> dict[str, float]:
    content = b"weights"
    with modelyard.connect(server.url) as reg:
        file = root / "model.bin"
        file.write_bytes(content)
        reg.register(MODEL, file)
        reg.set_alias(MODEL, "champion", 1)
    path = f"/api/v1/resolve/{MODEL}@champion"
    with CpuWindow(server.pid) as cpu:
        raw = _resolve_raw(server.url, path, 500 if quick else 2000)
    per_client = RESOLVE_PER_CLIENT_QUICK if quick else RESOLVE_PER_CLIENT
    out: dict[str, float] = {"resolve_p50_ms": ms(pct(raw, 50))}
    if one_process:
        out["resolve_cpu_us"] = round(cpu.seconds / len(raw) * 1e6, 1)
    resolved = concurrent_gets(server.url, path, per_client, prefix="resolve16")
    out["resolve16_p50_ms"] = resolved["resolve16_p50_ms"]
    out["resolve16_rps"] = resolved["resolve16_rps"]
    body = root / "register.json"
    body.write_text(json.dumps(_inline_version(content)))
    registered = concurrent_gets(
        server.url,
        f"/api/v1/models/{MODEL}/versions",
        per_client // 4,
        prefix="register16",
        body_file=body,
    )
    out["register16_p50_ms"] = registered["register16_p50_ms"]
    out["register16_per_s"] = registered["register16_rps"]
    return out


def _inline_version(content: bytes) -> dict[str, Any]:
    return {
        "files": [
            {
                "path": "model.bin",
                "size": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
                "content": base64.b64encode(content).decode(),
            }
        ],
        "metrics": {"auc": 0.9},
        "tags": {"team": "growth"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--before", default="main", help="the git revision without telemetry")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    here = ROOT / "src"
    runs: dict[str, list[dict[str, float]]] = {"before": [], "w1": [], "w2": []}
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-workers-") as scratch:
        work = Path(scratch)
        before = export(args.before, work)
        setups = {
            "before": (before, []),
            "w1": (here, ["--workers", "1"]),
            "w2": (here, ["--workers", "2"]),
        }
        for round_ in range(args.rounds):
            for label, (source, options) in setups.items():
                root = work / f"{label}-{round_}"
                root.mkdir()
                with Server(source, root / "data", root / "server.log", options) as server:
                    figures = measure(server, root, args.quick, one_process=label != "w2")
                runs[label].append(figures)
                print(label, round_, figures, flush=True)
    medians = {
        label: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for label, rows in runs.items()
    }
    print(json.dumps(medians, indent=2))
    b, w1, w2 = medians["before"], medians["w1"], medians["w2"]
    print(
        f"telemetry: resolve p50 {w1['resolve_p50_ms'] / b['resolve_p50_ms']:.3f}x,"
        f" server CPU {w1['resolve_cpu_us'] / b['resolve_cpu_us']:.3f}x"
        f" ({w1['resolve_cpu_us'] - b['resolve_cpu_us']:+.1f} us)"
    )
    for key in ("resolve16_rps", "register16_per_s", "resolve16_p50_ms", "register16_p50_ms"):
        print(f"workers 2 / 1, {key}: {w2[key] / w1[key]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": medians}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
