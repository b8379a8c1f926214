"""Plumbing shared by the Modelyard measurements: a real server subprocess, RSS sampling, stats.

Every server runs on a free loopback port in its own process group, so a crash or Ctrl-C in
the benchmark can never leave one behind (``ModelyardServer`` is a context manager).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

import modelyard

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
RSS_INTERVAL_S = 0.05  # ~20 Hz
MIB = 1024 * 1024


def free_port() -> int:
    """A port the kernel just handed out; the tiny reuse race is fine on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _serve_command() -> list[str]:
    """The installed ``modelyard`` console script next to this interpreter, as users run it."""
    script = Path(sys.executable).parent / "modelyard"
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-m", "modelyard", "serve"]


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


class ModelyardServer:
    """``modelyard serve`` on a free loopback port; ``startup_s`` is spawn -> first 200 /readyz."""

    def __init__(self, data_dir: Path, log_path: Path, database_url: str | None = None) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.database_url = database_url
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not started"
        return self.proc.pid

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
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
        with self.log_path.open("ab") as log:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # own process group: stop() reaches everything
            )
        self._wait_ready(t0)

    def _wait_ready(self, t0: float) -> None:
        """Poll /readyz every 5 ms until 200, the process dies, or the deadline passes."""
        assert self.proc is not None
        deadline = t0 + START_TIMEOUT_S
        with httpx.Client(timeout=2.0) as client:
            while time.perf_counter() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"modelyard serve exited early:\n{tail(self.log_path)}")
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        self.startup_s = time.perf_counter() - t0
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.005)
        raise TimeoutError(f"server not ready after {START_TIMEOUT_S}s:\n{tail(self.log_path)}")

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_S)

    def __enter__(self) -> ModelyardServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc is not None:  # the client's error rarely says why; the server's log does
            print(f"--- {self.log_path} (tail) ---\n{tail(self.log_path)}", file=sys.stderr)


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    """One field of /proc/<pid>/status in KiB (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class RssSampler(threading.Thread):
    """Samples a process's VmRSS at ~20 Hz; ``peak_mib`` reads a time window of it."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.monotonic(), rss_kib(self.pid)))
            self._stop_event.wait(RSS_INTERVAL_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def peak_mib(self, start: float | None = None, end: float | None = None) -> float:
        window = [
            kib
            for t, kib in self.samples
            if (start is None or t >= start) and (end is None or t <= end)
        ]
        return round(max(window, default=0) / 1024, 1)


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


def pct(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (the same definition as the MLflow side uses)."""
    ordered = sorted(samples)
    idx = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 100)) - 1))
    return ordered[idx]


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def write_random(path: Path, size: int) -> None:
    """Incompressible bytes, written in 1 MiB chunks (never the whole file in memory)."""
    with path.open("wb") as handle:
        left = size
        while left > 0:
            n = min(MIB, left)
            handle.write(os.urandom(n))
            left -= n


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
