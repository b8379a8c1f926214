"""Blob I/O never blocks the server: with a blob store slowed on purpose, a real uvicorn
keeps answering /healthz promptly while an upload or a download crawls through it."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from modelyard.api import create_app
from modelyard.api.rawbody import RawBodyProtocol
from modelyard.config import Settings, open_service
from modelyard.domain.access import Reach
from tests.conftest import free_port

MIB = 1024 * 1024
STALL = 0.2  # seconds per MiB: a disk far slower than any real one
BLOB = random.Random(9).randbytes(10 * MIB + 17)  # ten stalls: two seconds of crawling
# What a crawl may add to the p99 of /healthz: a probe that waits for a stall takes STALL.
# It is added to the p99 of probes on the idle server, which is what the machine's load
# alone costs (the bound is about blocking, not about a busy machine's scheduling).
P99_BOUND = 0.050
BASELINE_PROBES = 200
PROBE_EVERY = 0.01
DIGEST = hashlib.sha256(BLOB).hexdigest()


@dataclass
class SlowUpload:
    inner: Any
    written: int = 0

    @property
    def digest(self) -> str:
        return str(self.inner.digest)

    def write(self, chunk: bytes) -> None:
        before = self.written // MIB
        self.written += len(chunk)
        for _ in range(self.written // MIB - before):
            time.sleep(STALL)  # a stalled disk: the writing thread waits
        self.inner.write(chunk)

    def commit(self) -> int:
        return int(self.inner.commit())

    def abort(self) -> None:
        self.inner.abort()


@dataclass
class SlowBlobStore:
    """The real store, with every MiB written or read stalled for STALL seconds."""

    inner: Any

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def begin_upload(self, digest: str | None) -> SlowUpload:
        return SlowUpload(self.inner.begin_upload(digest))

    def read(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        for chunk in self.inner.read(digest, start, end):
            for offset in range(0, len(chunk), MIB):
                time.sleep(STALL)
                yield bytes(chunk[offset : offset + MIB])


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[str]:
    """A real uvicorn on a loopback port serving a slowed store, in a process of its own (so
    that the probes measure the server, not this process's threads taking turns). On the
    embedded default only: what is slowed is the blob store, which no database touches."""
    port = free_port()
    command = [sys.executable, "-m", "tests.test_nonblocking", "serve", str(port)]
    command += [str(tmp_path / "data")]
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                stderr = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"the slowed server did not start: {stderr}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)  # polling for readiness, not standing in for it
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def serve_slowly(port: int, data_dir: Path) -> None:
    """The server of ``slow_server``: the real service, its blob store slowed."""
    service = open_service(Settings(data_dir=data_dir))
    service.blobs = SlowBlobStore(service.blobs)  # type: ignore[assignment]
    app = create_app(service, reach=Reach.LOOPBACK, local_user="tester")
    # As `modelyard serve` runs it: an upload's body is read from the socket itself.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", http=RawBodyProtocol)


def probe_while(busy: subprocess.Popen[bytes], url: str) -> list[float]:
    """Latencies of /healthz probes sent every PROBE_EVERY seconds (as a health checker
    does) for as long as ``busy`` runs. Paced, so the samples spread evenly over time: back
    to back, thousands of quick probes between a few stalls would hide them from a p99."""
    latencies = []
    with httpx.Client(base_url=url, timeout=10) as client:
        due = time.perf_counter()
        while busy.poll() is None:
            time.sleep(max(0.0, due - time.perf_counter()))  # pacing the probes
            start = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - start)
            due = max(due + PROBE_EVERY, time.perf_counter())  # no bursts to catch up
    return latencies


def idle_p99(url: str) -> float:
    with httpx.Client(base_url=url, timeout=10) as client:
        latencies = []
        for _ in range(BASELINE_PROBES):
            start = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - start)
    return p99(latencies)


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def crawl(method: str, url: str, body: Path | None = None) -> subprocess.Popen[bytes]:
    """The slow request, from a process of its own: in this one, its client would compete
    with the probes' for the interpreter and lengthen their latencies."""
    command = [sys.executable, "-m", "tests.test_nonblocking", "crawl", method, url]
    process = subprocess.Popen([*command, str(body or "")], stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == b"sending\n"  # started up: probe from here on
    return process


def send_and_digest(method: str, url: str, body: str) -> None:
    """What ``crawl`` runs: the request (a body streamed in 64 KiB pieces), then print the
    status and the sha256 of the answer."""
    data = Path(body).read_bytes() if body else b""
    content = in_pieces(data) if body else None
    # A declared length, as the SDK sends: the server then takes the socket over.
    headers = {"Content-Length": str(len(data))} if body else None
    with httpx.Client(timeout=120) as client:
        print("sending", flush=True)
        response = client.request(method, url, content=content, headers=headers)
    print(response.status_code, hashlib.sha256(response.content).hexdigest())


def in_pieces(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


def answer(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    out, _ = process.communicate(timeout=120)
    status, digest = out.decode().split()
    return int(status), digest


def test_health_answers_while_an_upload_crawls(slow_server: str, tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(BLOB)
    bound = P99_BOUND + idle_p99(slow_server)
    upload = crawl("PUT", f"{slow_server}/api/v1/blobs/sha256:{DIGEST}", tmp_path / "blob")
    latencies = probe_while(upload, slow_server)
    assert answer(upload)[0] == 201
    # The upload took its ten stalls at least; the probes ran all through it.
    assert len(latencies) >= 10
    assert p99(latencies) < bound, (bound, sorted(latencies)[-12:])


def test_health_answers_while_a_download_crawls(slow_server: str) -> None:
    with httpx.Client(base_url=slow_server, timeout=60) as client:
        put = client.put(f"/api/v1/blobs/sha256:{DIGEST}", content=BLOB)
        assert put.status_code == 201, put.text
        files = [{"path": "model.bin", "size": len(BLOB), "sha256": DIGEST}]
        registered = client.post("/api/v1/models/churn/versions", json={"files": files})
        assert registered.status_code == 201, registered.text
    bound = P99_BOUND + idle_p99(slow_server)
    download = crawl("GET", f"{slow_server}/api/v1/models/churn/versions/1/files/model.bin")
    latencies = probe_while(download, slow_server)
    assert answer(download) == (200, DIGEST)
    assert len(latencies) >= 10
    assert p99(latencies) < bound, (bound, sorted(latencies)[-12:])


if __name__ == "__main__":
    if sys.argv[1] == "crawl":
        send_and_digest(*sys.argv[2:5])
    else:
        serve_slowly(int(sys.argv[2]), Path(sys.argv[3]))
