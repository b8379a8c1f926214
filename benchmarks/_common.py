"""What both halves of the benchmark share: the workload's sizes, statistics, servers, RSS.

Standard library only: ``mlflow/_worker.py`` imports this under the MLflow venv's python,
where neither modelyard nor httpx is installed. One copy means a figure on either side is
computed the same way, which the ratios depend on.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import hashlib
import json
import mmap
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

HOST = "127.0.0.1"
MIB = 1024 * 1024
RSS_INTERVAL_S = 0.05  # ~20 Hz

# The workload, identical on both sides so that the figures compare.
TEAMS = ("growth", "search", "ads", "infra")
REGISTER_WARMUP = 3
RESOLVE_WARMUP = 10
RESOLVE_CLIENTS = 16
RESOLVE_PER_CLIENT = 200  # quick: RESOLVE_PER_CLIENT_QUICK
RESOLVE_PER_CLIENT_QUICK = 50
SEARCH_MODELS = 100
SEARCH_SEED = 1234
SEARCH_REPS = 20
SEARCH_WARMUP = 2
SEARCH_PAGE = 100

# --------------------------------------------------------------------------- figures


def pct(samples: list[float], q: float) -> float:
    """Nearest-rank percentile, so p99 of 100 samples is a real observed sample."""
    ordered = sorted(samples)
    idx = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 100)) - 1))
    return ordered[idx]


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def time_median(fn: Callable[[], int], reps: int, warmup: int) -> tuple[float, float, int]:
    """Median and fastest of ``reps`` timed calls (ms) after ``warmup`` untimed ones, plus
    what the last call returned, for the caller to check."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    got = 0
    for _ in range(reps):
        t0 = time.perf_counter()
        got = fn()
        samples.append(time.perf_counter() - t0)
    return ms(statistics.median(samples)), ms(min(samples)), got


def sequential_figures(seq: list[float]) -> dict[str, Any]:
    """The one-client resolve keys of both sides, from ``seq`` (seconds per call)."""
    return {
        "resolve_n": len(seq),
        "resolve_p50_ms": ms(pct(seq, 50)),
        "resolve_p99_ms": ms(pct(seq, 99)),
        "resolve_mean_ms": ms(statistics.fmean(seq)),
    }


def concurrent_gets(
    url: str,
    path: str,
    per_client: int,
    prefix: str = "resolve16_proc",
    body_file: Path | None = None,
) -> dict[str, Any]:
    """``RESOLVE_CLIENTS`` client processes (``_client.py``), each timing ``per_client`` GETs
    of ``path`` (POSTs of ``body_file`` if given) on its own keep-alive connection, started
    together once all are connected. The figures' keys start with ``prefix``.

    Processes, not threads: 16 threads of one Python process share one GIL, and against a
    server answering in half a millisecond they measure their own queueing for it. Both
    sides run this same standard-library client, so the figures compare the servers.
    """
    parts = url.removeprefix("http://").split(":")
    cmd = [sys.executable, str(Path(__file__).with_name("_client.py")), parts[0], parts[1]]
    procs = [
        subprocess.Popen(
            [*cmd, path, str(per_client), *([str(body_file)] if body_file else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(RESOLVE_CLIENTS)
    ]
    try:
        for proc in procs:
            assert proc.stdin is not None and proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"resolve client failed to connect: {_stderr(proc)}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        runs = []
        for proc in procs:
            out, err = proc.communicate(timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"resolve client failed: {err.strip()[-500:]}")
            runs.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    samples = [x for run in runs for x in run["samples"]]
    wall = max(run["end"] for run in runs) - min(run["start"] for run in runs)
    return {
        f"{prefix}_n": len(samples),
        f"{prefix}_p50_ms": ms(pct(samples, 50)),
        f"{prefix}_p99_ms": ms(pct(samples, 99)),
        f"{prefix}_rps": round(len(samples) / wall, 2),
    }


def _stderr(proc: subprocess.Popen[str]) -> str:
    proc.kill()
    _, err = proc.communicate(timeout=30)
    return err.strip()[-500:] or f"exit status {proc.returncode}"


def write_random(path: Path, size: int) -> None:
    """Incompressible bytes (no layer can win by compression or dedup), written in 1 MiB
    chunks so the whole file is never in memory."""
    with path.open("wb") as handle:
        left = size
        while left > 0:
            n = min(MIB, left)
            handle.write(os.urandom(n))
            left -= n


def machine_references(big: Path, scratch: Path) -> dict[str, float]:
    """What this machine does with the big file and no registry at all, in the same run:
    ``cp`` of it on the same disk, and one sha256 pass over it with hashlib (OpenSSL), the
    pass that each end of a verified transfer has to make."""
    mib = big.stat().st_size / MIB
    copy = scratch / "cp.bin"
    t = time.perf_counter()
    subprocess.run(["cp", str(big), str(copy)], check=True, timeout=1800)
    cp_s = time.perf_counter() - t
    copy.unlink()
    t = time.perf_counter()
    digest = hashlib.sha256()
    with big.open("rb", buffering=0) as handle:
        while chunk := handle.read(4 * MIB):
            digest.update(chunk)
    sha256_s = time.perf_counter() - t
    return {
        "cp_s": round(cp_s, 3),
        "cp_mb_s": round(mib / cp_s, 1),
        "sha256_s": round(sha256_s, 3),
        "sha256_mb_s": round(mib / sha256_s, 1),
    }


def disk_bound(blob: Path, scratch: Path) -> dict[str, float]:
    """The download path's physical reference, in the same run: what the disk does with no
    registry and no hashing. A download reads the stored blob with O_DIRECT on the server
    while the client writes its copy with O_DIRECT on the same disk, so the bound is both
    at once (``disk_both``); each alone is reported beside it. Buffers as the pipeline's:
    4 MiB reads, 2 MiB writes, one at a time. Linux only (O_DIRECT); empty elsewhere."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        return {}
    size = blob.stat().st_size
    mib = size / MIB
    target = scratch / "disk-bound.bin"

    def read() -> float:
        fd = os.open(blob, os.O_RDONLY | direct)
        buffer = mmap.mmap(-1, 4 * MIB)
        t = time.perf_counter()
        try:
            position = 0
            while (n := os.preadv(fd, [buffer], position)) > 0:
                position += n
        finally:
            os.close(fd)
            buffer.close()
        return time.perf_counter() - t

    def write() -> float:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | direct, 0o600)
        buffer = mmap.mmap(-1, 2 * MIB)
        buffer.write(os.urandom(2 * MIB))
        t = time.perf_counter()
        try:
            done = 0
            while done < size:
                done += os.write(fd, buffer)
        finally:
            os.close(fd)
            buffer.close()
            target.unlink()
        return time.perf_counter() - t

    read_s = read()
    write_s = write()
    spent: dict[str, float] = {}
    writer = threading.Thread(target=lambda: spent.setdefault("w", write()))
    t = time.perf_counter()
    writer.start()
    read()
    writer.join()
    both_s = time.perf_counter() - t
    return {
        "disk_read_mb_s": round(mib / read_s, 1),
        "disk_write_mb_s": round(mib / write_s, 1),
        "disk_both_mb_s": round(mib / both_s, 1),
    }


def sizes_arg(minimum: int) -> Callable[[str], list[int]]:
    """An argparse ``type`` for ``--search-sizes 20000,200000``."""

    def parse(text: str) -> list[int]:
        sizes = [int(s) for s in text.split(",") if s.strip()]
        if not sizes or any(s < minimum for s in sizes):
            raise argparse.ArgumentTypeError(f"search sizes must be integers >= {minimum}")
        return sizes

    return parse


# --------------------------------------------------------------------------- CPU


def _thread_cpu_ns(pid: int) -> dict[int, int]:
    """Nanoseconds on CPU so far of each live thread of ``pid`` (its schedstat)."""
    found: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                found[int(task.name)] = int((task / "schedstat").read_text().split()[0])
    return found


def _process_cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks, dead threads included (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0


class CpuWindow:
    """The CPU time another process (every thread of it) spends inside a ``with`` block.

    Read from the process's own counters, which other work on a shared machine disturbs
    much less than wall time: per-thread schedstat in nanoseconds, or utime + stime in
    10 ms ticks when a thread ended during the window (its schedstat is gone with it) or
    when those count more (threads that came and went inside the window).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seconds = 0.0
        self._threads: dict[int, int] = {}
        self._ticks = 0

    def __enter__(self) -> Self:
        self._ticks = _process_cpu_ticks(self.pid)
        self._threads = _thread_cpu_ns(self.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        threads = _thread_cpu_ns(self.pid)
        ticks = (_process_cpu_ticks(self.pid) - self._ticks) / os.sysconf("SC_CLK_TCK")
        if self._threads.keys() <= threads.keys():
            # A thread born and ended inside the window (a transfer's hashing thread) is in
            # neither listing; the process's ticks count it, to within a tick.
            spent = sum(ns - self._threads.get(tid, 0) for tid, ns in threads.items())
            self.seconds = max(spent / 1e9, ticks)
        else:
            self.seconds = ticks


# --------------------------------------------------------------------------- memory


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
    """Samples ``read_kib()`` at ~20 Hz; ``peak_mib`` reads a time window of it.

    ``clock`` must be the one the window's marks were taken with (``time.time`` when another
    process took them).
    """

    def __init__(
        self, read_kib: Callable[[], int], clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.read_kib = read_kib
        self.clock = clock
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((self.clock(), self.read_kib()))
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


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    """A port the kernel just handed out; the tiny reuse race is fine on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


class ServerProcess(abc.ABC):
    """A server subprocess in its own process group, so that a crash or Ctrl-C in the
    benchmark can never leave one behind; use it as a context manager."""

    name = "server"
    start_timeout_s = 60.0
    stop_timeout_s = 15.0
    poll_s = 0.005
    # What ``ready`` may raise while the server is still coming up.
    transient_errors: tuple[type[Exception], ...] = (OSError,)

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} not started"
        return self.proc.pid

    @abc.abstractmethod
    def start(self) -> None:
        """Pick ``self.port``, build the command and ``_launch`` it."""

    def _launch(
        self,
        cmd: list[str],
        env: dict[str, str],
        ready: Callable[[], bool],
        cwd: Path | None = None,
    ) -> None:
        """Spawn ``cmd`` and poll ``ready`` until it holds, the process dies, or the deadline
        passes; ``startup_s`` is spawn -> first ready."""
        with self.log_path.open("ab") as log:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,  # own process group: stop() reaches everything
            )
        deadline = t0 + self.start_timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{tail(self.log_path)}")
            try:
                if ready():
                    self.startup_s = time.perf_counter() - t0
                    return
            except self.transient_errors:
                pass
            time.sleep(self.poll_s)
        raise TimeoutError(
            f"{self.name} not ready after {self.start_timeout_s}s:\n{tail(self.log_path)}"
        )

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=self.stop_timeout_s)

    def __enter__(self) -> Self:
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
