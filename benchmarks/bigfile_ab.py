"""The big-file transfer, A/B: two versions of Modelyard's code in alternating rounds.

    python -m benchmarks.bigfile_ab --baseline DIR [--candidate DIR] [--rounds 6] [--mib 1024]

DIR is a ``src`` directory holding a ``modelyard`` package (``git archive main src | tar -x``
makes one); the candidate defaults to the code this interpreter imports. On a shared machine
one run of each, minutes apart, says little: each round here runs the baseline and the
candidate back to back (in alternating order), each with a fresh ``modelyard serve`` of its
own code and a client process of its own code, and the summary gives medians per side and
the median of the per-round ratios, with the load average.

A round registers one file of random bytes (new bytes at its start each round, so every
round uploads) with the public SDK, downloads it, and reports the wall time and the CPU
seconds of the client and of the server process for each transfer. Then, for the same
file: one hashlib sha256 pass, ``cp``, and the disk bound of the download (O_DIRECT read of
the stored blob and O_DIRECT write, alone and at once; ``_common.disk_bound``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import MIB, CpuWindow, disk_bound, machine_references, write_random

ROOT = Path(__file__).resolve().parent.parent
FIGURES = (
    "upload_mb_s",
    "download_mb_s",
    "upload_client_cpu",
    "upload_server_cpu",
    "download_client_cpu",
    "download_server_cpu",
)


def one_round(payload: Path, scratch: Path) -> dict[str, Any]:
    """One upload and download with the code on ``sys.path`` (run in its own process)."""
    import modelyard
    from benchmarks._harness import ModelyardServer

    size = payload.stat().st_size
    gib = size / 1024**3
    with payload.open("r+b") as handle:  # new bytes: the upload is a first upload
        handle.write(os.urandom(32))
    os.environ["MODELYARD_CACHE_DIR"] = str(scratch / "hash-cache")
    out: dict[str, Any] = {"modelyard_from": str(Path(modelyard.__file__).parent)}
    with (
        ModelyardServer(scratch / "data", scratch / "server.log") as server,
        modelyard.connect(server.url) as reg,
    ):
        # A first request costs both fresh processes imports and first-time set-up: warm up
        # with a small file through the same paths (above the inline limit: a blob).
        warm = scratch / "warm.bin"
        write_random(warm, 4 * MIB)
        reg.download(reg.register("warm", warm, source=None, environment=None), scratch / "w")
        with CpuWindow(os.getpid()) as client, CpuWindow(server.pid) as served:
            t = time.perf_counter()
            version = reg.register("ab", payload, source=None, environment=None)
            upload_s = time.perf_counter() - t
        out |= {
            "upload_mb_s": size / MIB / upload_s,
            "upload_client_cpu": client.seconds / gib,
            "upload_server_cpu": served.seconds / gib,
        }
        with CpuWindow(os.getpid()) as client, CpuWindow(server.pid) as served:
            t = time.perf_counter()
            reg.download(version, scratch / "down")
            download_s = time.perf_counter() - t
        out |= {
            "download_mb_s": size / MIB / download_s,
            "download_client_cpu": client.seconds / gib,
            "download_server_cpu": served.seconds / gib,
        }
        (scratch / "down" / payload.name).unlink()
        digest = version.files[0].sha256
        blob = scratch / "data" / "blobs" / "sha256" / digest[:2] / digest
        out["disk_both_mb_s"] = disk_bound(blob, scratch)["disk_both_mb_s"]
    return out


def _run_side(src: Path, payload: Path, work: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env["PYTHONPATH"] = os.pathsep.join([str(src), str(ROOT)])
    scratch = Path(tempfile.mkdtemp(prefix="round-", dir=work))
    command = [sys.executable, "-m", "benchmarks.bigfile_ab", "--round", str(payload)]
    done = subprocess.run(
        [*command, "--scratch", str(scratch)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    subprocess.run(["rm", "-rf", str(scratch)], check=False)
    if done.returncode != 0:
        raise RuntimeError(f"round with {src} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["modelyard_from"].startswith(str(src.resolve())):
        raise RuntimeError(f"the round imported {result['modelyard_from']}, not {src}")
    return result


def main(argv: list[str] | None = None) -> int:
    import modelyard

    parser = argparse.ArgumentParser(prog="python -m benchmarks.bigfile_ab", description=__doc__)
    parser.add_argument("--baseline", type=Path, help="src directory of the baseline")
    parser.add_argument("--candidate", type=Path, default=Path(modelyard.__file__).parent.parent)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--json", type=Path, help="also write every round here")
    parser.add_argument("--round", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.round is not None:
        print(json.dumps(one_round(args.round, args.scratch)))
        return 0
    if args.baseline is None:
        parser.error("--baseline is required")
    work = Path(tempfile.mkdtemp(prefix="bigfile-ab-", dir=args.workdir))
    payload = work / "payload.bin"
    write_random(payload, args.mib * MIB)
    sides = {"baseline": args.baseline, "candidate": args.candidate}
    rounds: list[dict[str, Any]] = []
    try:
        for i in range(args.rounds):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            entry: dict[str, Any] = {"load_1m": os.getloadavg()[0]}
            for side in order:
                entry[side] = _run_side(sides[side], payload, work)
            entry |= machine_references(payload, work)
            rounds.append(entry)
            print(_round_line(i, entry), flush=True)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    print(_summary(rounds))
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2) + "\n")
    return 0


def _round_line(i: int, entry: dict[str, Any]) -> str:
    a, b = entry["baseline"], entry["candidate"]
    return (
        f"round {i + 1}: load {entry['load_1m']:.1f}; up {a['upload_mb_s']:.0f} -> "
        f"{b['upload_mb_s']:.0f} MB/s, down {a['download_mb_s']:.0f} -> "
        f"{b['download_mb_s']:.0f} MB/s; CPU/GiB up {a['upload_client_cpu']:.2f}+"
        f"{a['upload_server_cpu']:.2f} -> {b['upload_client_cpu']:.2f}+"
        f"{b['upload_server_cpu']:.2f}, down {a['download_client_cpu']:.2f}+"
        f"{a['download_server_cpu']:.2f} -> {b['download_client_cpu']:.2f}+"
        f"{b['download_server_cpu']:.2f}; sha256 {entry['sha256_mb_s']:.0f}, cp "
        f"{entry['cp_mb_s']:.0f}, disk both {b['disk_both_mb_s']:.0f} MB/s"
    )


def _summary(rounds: list[dict[str, Any]]) -> str:
    def median(side: str, key: str) -> float:
        return statistics.median(r[side][key] for r in rounds)

    lines = ["", f"medians of {len(rounds)} rounds (baseline -> candidate, ratio of medians):"]
    for key in FIGURES:
        a, b = median("baseline", key), median("candidate", key)
        lines.append(f"  {key:22} {a:8.2f} -> {b:8.2f}   x{b / a:.2f}")
    ratios = [r["candidate"]["upload_mb_s"] / r["baseline"]["upload_mb_s"] for r in rounds]
    down = [r["candidate"]["download_mb_s"] / r["baseline"]["download_mb_s"] for r in rounds]
    lines.append(
        f"  per-round ratios, median: upload x{statistics.median(ratios):.2f},"
        f" download x{statistics.median(down):.2f}"
    )
    for key in ("sha256_mb_s", "cp_mb_s"):
        lines.append(f"  {key:22} {statistics.median(r[key] for r in rounds):8.0f}")
    disk = statistics.median(
        r[s]["disk_both_mb_s"] for r in rounds for s in ("baseline", "candidate")
    )
    lines.append(f"  {'disk_both_mb_s':22} {disk:8.0f}")
    loads = [r["load_1m"] for r in rounds]
    lines.append(f"  load average (1 min) {min(loads):.1f}-{max(loads):.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
