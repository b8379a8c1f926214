"""Webhook delivery (issue 11): commit-to-receiver latency, a burst to ten subscribers,
and what ten subscriptions cost registration.

A real ``modelyard serve`` (SQLite, local mode, loopback receivers allowed by its flags)
delivers to a receiver process of its own (``_receiver.py``). Subscriptions are made, and
the burst written, by this process's own service on the server's database, as another
replica would: the server hears of those events through its bell's poll.

- **Latency**: one subscriber; versions registered through the SDK one at a time, paced so
  that none queues behind another; each request's latency is its arrival time minus the
  event's journal time (taken inside the transaction, so a little before the commit: the
  figure slightly overstates commit -> receiver).
- **Burst**: ten subscribers to ``model.updated``; 10,000 model updates written as fast as
  the database commits them; the time from the first write until all 100,000 deliveries
  have arrived, and how many arrived twice (none should, with one server).
- **Registration rate**: the registry benchmark's registration (an SDK client, one 1 KiB
  file, metrics, params, tags), in alternating blocks without subscriptions and with ten
  (to ``version.*``, every registration delivered ten times); each block begins with five
  untimed registrations (and their deliveries), so that the steady state is measured; a
  block's rate is its registrations over their own time, the next block starts once its
  deliveries have all arrived; medians of the blocks, and the CPU per registration
  (deliveries included) of the server, of its delivery process (its child) and of the
  receiver. Two more kinds of block tell what the ratio measures on a small machine:
  ten subscriptions whose receiver holds its answers while the block registers (each
  worker waits on its first request; the deliveries go once the block ends): what
  subscriptions cost the registry's own write path; and no subscriptions with a busy loop
  at the lowest CPU priority there is (SCHED_IDLE): what any work on the other cores
  costs, whatever its priority.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

import modelyard
from benchmarks._common import CpuWindow, ms, pct
from benchmarks._harness import ModelyardServer
from modelyard.config import Settings, open_service
from modelyard.domain.access import Caller
from modelyard.service import RegistryService

Log = Callable[[str], None]
OWNER = Caller.local_user("bench")
SUBSCRIBERS = 10
LATENCY_TARGET_MS = 50.0
RATE_TARGET_RATIO = 0.95  # with ten subscriptions, at least 95% of the rate without
SERVE_OPTIONS = ("--webhook-allow-http", "--webhook-allow-hosts", "127.0.0.1")


class ReceiverProcess:
    """``benchmarks/_receiver.py`` in a process of its own, asked over stdin/stdout."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._receiver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline().split()[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def ask(self, command: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def wait_for(self, counts: dict[str, int], timeout: float) -> float:
        """Poll until every path has its count of requests; when the last one arrived."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.ask("count")
            if all(seen.get("/" + path, 0) >= n for path, n in counts.items()):
                return max(max(a[3] for a in self.ask(f"dump /{path}")) for path in counts)
            if time.monotonic() > deadline:
                raise TimeoutError(f"deliveries still missing after {timeout}s: {seen}")
            time.sleep(0.05)  # polling another process's counter, not standing in for it

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(10)


def webhooks_benchmark(root: Path, log: Log, quick: bool = False) -> dict[str, Any]:
    root.mkdir(parents=True)
    data = root / "data"
    writer = open_service(
        Settings(data_dir=data, webhook_allow_http=True, webhook_allow_hosts="127.0.0.1")
    )
    receiver = ReceiverProcess()
    out: dict[str, Any] = {}
    try:
        writer.create_model("bench-burst", caller=OWNER)
        with (
            ModelyardServer(data, root / "server.log", options=SERVE_OPTIONS) as server,
            modelyard.connect(server.url) as reg,
        ):
            log("webhooks: commit -> receiver latency")
            out |= _latency(writer, receiver, reg, root, 100 if quick else 300)
            log("webhooks: registration rate with ten subscriptions and without")
            out |= _registration_rate(writer, receiver, reg, server.pid, root, quick)
            log(f"webhooks: a burst to {SUBSCRIBERS} subscribers")
            out |= _burst(writer, receiver, 1000 if quick else 10_000)
    finally:
        receiver.close()
        writer.close()
    return out


def _files(root: Path, n: int) -> list[Path]:
    folder = root / f"files-{len(list(root.glob('files-*')))}"
    folder.mkdir()
    paths = []
    for i in range(n):
        path = folder / f"model-{i:04d}.bin"
        path.write_bytes(os.urandom(1024))
        paths.append(path)
    return paths


def _register(reg: modelyard.Registry, model: str, file: Path, i: int) -> None:
    reg.register(
        model,
        file,
        metrics={"auc": 0.5 + (i % 50) / 100, "loss": 0.1 + (i % 40) / 100},
        params={"lr": 0.01, "depth": i % 12, "optimizer": "adam"},
        tags={"team": f"team-{i % 4}"},
    )


def _latency(
    writer: RegistryService, receiver: ReceiverProcess, reg: modelyard.Registry, root: Path, n: int
) -> dict[str, Any]:
    sub, _ = writer.webhooks.create(OWNER, url=receiver.url("latency"), events=["version.*"])
    files = _files(root, n + 1)
    # The first delivery waits for the server to notice the subscription: not measured.
    _register(reg, "bench-latency", files[0], 0)
    receiver.wait_for({"latency": 1}, timeout=60)
    for i, file in enumerate(files[1:], start=1):
        _register(reg, "bench-latency", file, i)
        time.sleep(0.02)  # pacing: each delivery measured alone, not queued behind another
    receiver.wait_for({"latency": len(files)}, timeout=60)
    writer.webhooks.delete(OWNER, sub.id)
    samples = [a[2] for a in receiver.ask("dump /latency")[1:]]
    return {
        "latency_n": len(samples),
        "latency_p50_ms": ms(pct(samples, 50)),
        "latency_p99_ms": ms(pct(samples, 99)),
    }


# The kinds of registration-rate block, in the order they take turns.
NONE, TEN, TEN_PAUSED, BUSY_LOOP = "none", "ten", "ten_paused", "busy_loop"
BLOCK_KINDS = (NONE, TEN, TEN_PAUSED, BUSY_LOOP)
_BUSY_LOOP = "import os; os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nwhile 1: pass"


def _registration_rate(
    writer: RegistryService,
    receiver: ReceiverProcess,
    reg: modelyard.Registry,
    server_pid: int,
    root: Path,
    quick: bool,
) -> dict[str, Any]:
    """Blocks of each kind in turn (``BLOCK_KINDS``), so that drift in the machine's speed
    falls on every kind alike. Each block starts with a few registrations it does not
    time (with subscriptions, until their deliveries arrived): what is measured is the
    steady state, not the server staffing new subscriptions or retiring old ones."""
    blocks, per_block = (8, 50) if quick else (24, 150)
    untimed = 5
    files = _files(root, blocks * (untimed + per_block) + 10)
    for i in range(10):
        _register(reg, "bench-rate", files[i], i)  # warm-up
    rates: dict[str, list[float]] = {kind: [] for kind in BLOCK_KINDS}
    cpu_ms: dict[str, list[float]] = {kind: [] for kind in BLOCK_KINDS}
    delivery_ms: list[float] = []
    receiver_ms: list[float] = []
    # The server's delivery process, its child (delivery runs beside the request handlers),
    # started by whichever of its threads saw the first subscription.
    children = [
        child
        for task in Path(f"/proc/{server_pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    delivery_pid = int(children[0])
    delivered = 0
    for block in range(blocks):
        kind = BLOCK_KINDS[block % len(BLOCK_KINDS)]
        subscribed = kind in (TEN, TEN_PAUSED)
        subs = []
        if subscribed:
            subs = [
                writer.webhooks.create(
                    OWNER, url=receiver.url(f"rate{block}-{s}"), events=["version.*"]
                )[0]
                for s in range(SUBSCRIBERS)
            ]
        start = 10 + block * (untimed + per_block)
        for i in range(start, start + untimed):
            _register(reg, "bench-rate", files[i], i)
        if subscribed:
            receiver.wait_for({f"rate{block}-{s}": untimed for s in range(SUBSCRIBERS)}, 60)
        start += untimed
        busy = subprocess.Popen([sys.executable, "-c", _BUSY_LOOP]) if kind == BUSY_LOOP else None
        if kind == TEN_PAUSED:
            receiver.ask("hold")
        try:
            with (
                CpuWindow(server_pid) as cpu,
                CpuWindow(delivery_pid) as delivery_cpu,
                CpuWindow(receiver.proc.pid) as receiver_cpu,
            ):
                t0 = time.perf_counter()
                for i in range(start, start + per_block):
                    _register(reg, "bench-rate", files[i], i)
                elapsed = time.perf_counter() - t0
                if kind == TEN_PAUSED:
                    receiver.ask("release")
                if subscribed:
                    # The deliveries count against this block: wait for the last of them.
                    counts = {f"rate{block}-{s}": untimed + per_block for s in range(SUBSCRIBERS)}
                    receiver.wait_for(counts, timeout=120)
                    delivered += (untimed + per_block) * SUBSCRIBERS
        finally:
            receiver.ask("release")
            if busy is not None:
                busy.kill()
                busy.wait()
        rates[kind].append(per_block / elapsed)
        cpu_ms[kind].append(cpu.seconds * 1000 / per_block)
        if kind == TEN:
            delivery_ms.append(delivery_cpu.seconds * 1000 / per_block)
            receiver_ms.append(receiver_cpu.seconds * 1000 / per_block)
        for sub in subs:
            writer.webhooks.delete(OWNER, sub.id)
    rate = {kind: median(found) for kind, found in rates.items()}
    return {
        "rate_blocks": blocks,
        "rate_per_block": per_block,
        "register_per_s_no_subscriptions": round(rate[NONE], 2),
        "register_per_s_ten_subscriptions": round(rate[TEN], 2),
        "register_rate_ratio": round(rate[TEN] / rate[NONE], 3),
        "register_rate_ratio_receiver_holding": round(rate[TEN_PAUSED] / rate[NONE], 3),
        "register_rate_ratio_busy_loop": round(rate[BUSY_LOOP] / rate[NONE], 3),
        "register_cpu_ms_no_subscriptions": round(median(cpu_ms[NONE]), 3),
        "register_cpu_ms_ten_subscriptions": round(median(cpu_ms[TEN]), 3),
        "delivery_cpu_ms_per_registration_ten": round(median(delivery_ms), 3),
        "delivery_cpu_ms_per_delivery": round(median(delivery_ms) / SUBSCRIBERS, 3),
        "receiver_cpu_ms_per_delivery": round(median(receiver_ms) / SUBSCRIBERS, 3),
        "rate_deliveries": delivered,
    }


def _burst(writer: RegistryService, receiver: ReceiverProcess, n: int) -> dict[str, Any]:
    subs = [
        writer.webhooks.create(OWNER, url=receiver.url(f"burst{s}"), events=["model.updated"])[0]
        for s in range(SUBSCRIBERS)
    ]
    t0 = time.time()
    for i in range(n):
        writer.update_model("bench-burst", description=f"step {i}", caller=OWNER)
    written = time.time() - t0
    last = receiver.wait_for({f"burst{s}": n for s in range(SUBSCRIBERS)}, timeout=900)
    duplicates = 0
    for s in range(SUBSCRIBERS):
        ids = [a[0] for a in receiver.ask(f"dump /burst{s}")]
        duplicates += len(ids) - len(set(ids))
    for sub in subs:
        writer.webhooks.delete(OWNER, sub.id)
    return {
        "burst_events": n,
        "burst_subscribers": SUBSCRIBERS,
        "burst_write_s": round(written, 2),
        "burst_all_delivered_s": round(last - t0, 2),
        "burst_deliveries_per_s": round(n * SUBSCRIBERS / (last - t0), 1),
        "burst_duplicates": duplicates,
    }
