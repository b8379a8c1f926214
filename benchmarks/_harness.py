"""The Modelyard side's plumbing: a real ``modelyard serve`` subprocess, and what the figures
were measured on. Kept apart from ``_common`` because it imports modelyard and httpx, which the
MLflow venv does not have.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

import modelyard
from benchmarks._common import HOST, MIB, ServerProcess, free_port


def _serve_command() -> list[str]:
    """The installed ``modelyard`` console script next to this interpreter, as users run it."""
    script = Path(sys.executable).parent / "modelyard"
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-m", "modelyard", "serve"]


class ModelyardServer(ServerProcess):
    """``modelyard serve`` on a free loopback port; ``startup_s`` is spawn -> first 200 /readyz."""

    name = "modelyard serve"
    transient_errors = (httpx.TransportError,)

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        database_url: str | None = None,
        options: tuple[str, ...] = (),
    ) -> None:
        """``options``: more ``modelyard serve`` flags (the environment's MODELYARD_*
        variables are not passed on: the figures must not depend on the caller's shell)."""
        super().__init__(log_path)
        self.data_dir = data_dir
        self.database_url = database_url
        self.options = options

    def start(self) -> None:
        self.port = free_port()
        cmd = [
            *_serve_command(),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--log-level",
            "warning",
        ]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        cmd += self.options
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
        with httpx.Client(timeout=2.0) as client:
            self._launch(cmd, env, lambda: client.get(f"{self.url}/readyz").status_code == 200)


@dataclass
class Marks:
    """Named monotonic time windows, so one RSS sampler can serve several phases."""

    spans: dict[str, tuple[float, float]] = field(default_factory=dict)

    @contextlib.contextmanager
    def span(self, name: str) -> Any:
        start = time.monotonic()
        try:
            yield
        finally:
            self.spans[name] = (start, time.monotonic())


def machine_info(workdir: Path) -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        nproc = os.cpu_count() or 0
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": nproc,
        "cpu": cpu,
        "memory_gib": round(mem_kib / MIB, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "disk_free_gib": round(shutil.disk_usage(workdir).free / 1024**3, 1),
        "workdir": str(workdir),
        "git": _git_state(),
        "modelyard_from": str(Path(modelyard.__file__).parent),
        "loadavg_1m_start": round(os.getloadavg()[0], 2),
    }


def _git_state() -> str | None:
    """The commit of the modelyard code under test ('+dirty' with local changes; None when
    it is imported from outside a git checkout, e.g. an exported snapshot on PYTHONPATH)."""
    root = Path(modelyard.__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if commit is None:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}+dirty" if dirty else commit
