"""Issue 13, blobs in S3: a big file through the registry against boto3 straight to the store.

A moto S3 server (its own process) on loopback, and a real ``modelyard serve --blob-url
s3://...`` in three modes: direct transfers verified by the server reading the object
back (the default), direct transfers verified by the store's own SHA-256
(``--s3-store-hashes``), and ``--proxy-transfers``. For each, the SDK's ``register`` of one
file of random bytes (hashing included) and ``download`` (verified) against boto3's own
``upload_file`` and ``download_file`` of the same file to the same endpoint (its defaults:
8 MiB parts, 10 threads); and the server's CPU seconds per GiB, read from /proc. Beside
boto3's upload, the store's own SHA-256 of the object it uploaded (an in-place copy that
computes it): with it, the least that an upload checked whole before it counts can cost.

    python -m benchmarks.s3 [--mib 1024] [--reps 3] [--json FILE]

Ratios are boto3's time over the registry's (above 1: the registry is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import httpx

import modelyard
from benchmarks._common import HOST, MIB, CpuWindow, ServerProcess, free_port, write_random
from benchmarks._harness import ModelyardServer, machine_info

BUCKET = "modelyard-bench"
MODES = {
    "direct": (),
    "direct, store hashes": ("--s3-store-hashes",),
    "proxy": ("--proxy-transfers",),
}


class MotoServer(ServerProcess):
    """moto's S3 in its own process: its CPU is not the benchmark's nor the registry's."""

    name = "moto_server"
    transient_errors = (httpx.TransportError,)

    def start(self) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]
        self._launch(cmd, dict(os.environ), lambda: httpx.get(self.url).status_code < 500)


def boto3_client(endpoint: str) -> Any:
    """boto3 as a user would make it: its defaults, path-style for a bare IP endpoint."""
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}))


def boto3_round(client: Any, big: Path, scratch: Path) -> tuple[float, float, float]:
    """boto3's upload and download of the big file, and what the store's own SHA-256 of
    the uploaded object costs on top (an in-place copy that computes it): the least any
    upload whose whole digest is checked before it counts can cost on this store."""
    key = f"boto3/{secrets.token_hex(4)}"
    started = time.perf_counter()
    client.upload_file(str(big), BUCKET, key)
    up = time.perf_counter() - started
    started = time.perf_counter()
    client.copy_object(
        Bucket=BUCKET,
        Key=key,
        CopySource={"Bucket": BUCKET, "Key": key},
        ChecksumAlgorithm="SHA256",
        MetadataDirective="REPLACE",
    )
    hashed = time.perf_counter() - started
    target = scratch / "boto3.bin"
    started = time.perf_counter()
    client.download_file(BUCKET, key, str(target))
    down = time.perf_counter() - started
    target.unlink()
    client.delete_object(Bucket=BUCKET, Key=key)
    return up, down, hashed


def registry_round(server: ModelyardServer, big: Path, scratch: Path) -> dict[str, float]:
    """One registration of the big file (a fresh hash cache: hashed and sent) and one
    download of it, with the server's CPU over each."""
    os.environ["MODELYARD_CACHE_DIR"] = tempfile.mkdtemp(dir=scratch)
    name = f"big-{secrets.token_hex(3)}"
    with modelyard.connect(server.url) as registry:
        with CpuWindow(server.pid) as up_cpu:
            started = time.perf_counter()
            version = registry.register(name, big)
            up = time.perf_counter() - started
        out = scratch / f"out-{name}"
        with CpuWindow(server.pid) as down_cpu:
            started = time.perf_counter()
            registry.download(version, out)
            down = time.perf_counter() - started
        registry.delete_version(f"{name}/{version.version}", hard=True)
        registry.collect_garbage()  # a hard delete released the blob: it goes at once
    for path in out.iterdir():
        path.unlink()
    out.rmdir()
    return {"up_s": up, "down_s": down, "up_cpu_s": up_cpu.seconds, "down_cpu_s": down_cpu.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="size of the file (default 1024)")
    parser.add_argument("--reps", type=int, default=3, help="rounds of each (default 3)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    # A SIGTERM (a `timeout`, say) unwinds like an exception: every server is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for variable, value in (
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench-secret"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(variable, value)
    size = args.mib * MIB
    gib = size / 1024**3
    with tempfile.TemporaryDirectory(prefix="modelyard-s3-bench-") as work:
        scratch = Path(work)
        big = scratch / "big.bin"
        write_random(big, size)
        info = machine_info(scratch)
        figures: dict[str, Any] = {"machine": info, "mib": args.mib, "reps": args.reps}
        with MotoServer(scratch / "moto.log") as moto:
            client = boto3_client(moto.url)
            client.create_bucket(Bucket=BUCKET)
            rounds: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
            boto: list[tuple[float, float, float]] = []
            servers = {}
            with contextlib.ExitStack() as stack:
                for mode, options in MODES.items():
                    prefix = f"s3://{BUCKET}/{mode.split(',')[0]}-{secrets.token_hex(3)}"
                    flags = ("--blob-url", prefix, "--s3-endpoint", moto.url, *options)
                    server = ModelyardServer(
                        scratch / f"data-{len(servers)}", scratch / "serve.log", options=flags
                    )
                    servers[mode] = stack.enter_context(server)
                for _ in range(args.reps):  # interleaved: a noisy minute hits every side
                    boto.append(boto3_round(client, big, scratch))
                    print(f"boto3: {boto[-1]}", file=sys.stderr, flush=True)
                    for mode, server in servers.items():
                        rounds[mode].append(registry_round(server, big, scratch))
                        print(f"{mode}: {rounds[mode][-1]}", file=sys.stderr, flush=True)
                figures["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
        boto_up = statistics.median(u for u, _, _ in boto)
        boto_down = statistics.median(d for _, d, _ in boto)
        verified = statistics.median(u + h for u, _, h in boto)
        figures["boto3"] = {
            "rounds": boto,
            "up_median_s": boto_up,
            "down_median_s": boto_down,
            "up_and_store_hash_median_s": verified,
        }
        table = []
        proxy_cpu = statistics.median(r["up_cpu_s"] + r["down_cpu_s"] for r in rounds["proxy"])
        for mode, runs in rounds.items():
            up = statistics.median(r["up_s"] for r in runs)
            down = statistics.median(r["down_s"] for r in runs)
            up_cpu = statistics.median(r["up_cpu_s"] for r in runs) / gib
            down_cpu = statistics.median(r["down_cpu_s"] for r in runs) / gib
            cpu = statistics.median(r["up_cpu_s"] + r["down_cpu_s"] for r in runs)
            figures[mode] = {"runs": runs}
            table.append(
                f"| {mode} | {size / MIB / up:.0f} MB/s, {boto_up / up:.2f}x"
                f" | {size / MIB / down:.0f} MB/s, {boto_down / down:.2f}x"
                f" | {up_cpu:.2f} | {down_cpu:.2f} | {cpu / proxy_cpu:.0%} |"
            )
        print(json.dumps(info))
        print(
            f"{args.mib} MiB, {args.reps} rounds, medians; boto3: upload"
            f" {size / MIB / boto_up:.0f} MB/s, download {size / MIB / boto_down:.0f} MB/s;"
            f" load {info['loadavg_1m_start']} -> {figures['loadavg_1m_end']}"
        )
        print(
            f"boto3's upload and the store's SHA-256 of it (a verified upload's floor):"
            f" {size / MIB / verified:.0f} MB/s, {boto_up / verified:.2f}x boto3's upload"
        )
        print(
            "| mode | upload vs boto3 | download vs boto3 | server CPU s/GiB up |"
            " down | CPU vs proxy |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        print("\n".join(table))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
