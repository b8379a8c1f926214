"""Blob I/O never blocks the server: with a blob store slowed on purpose, a real uvicorn
keeps answering /healthz promptly while an upload or a download crawls through it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from modelyard.api import create_app
from modelyard.config import Settings, open_service
from tests.conftest import free_port

MIB = 1024 * 1024
STALL = 0.2  # seconds per MiB: a disk far slower than any real one
BLOB = bytes(i % 251 for i in range(3 * MIB + 17))
P99_BOUND = 0.050  # a probe that waits for a stalled write takes at least STALL


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
    uploads: list[SlowUpload] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def begin_upload(self, digest: str | None) -> SlowUpload:
        upload = SlowUpload(self.inner.begin_upload(digest))
        self.uploads.append(upload)
        return upload

    def read(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        for chunk in self.inner.read(digest, start, end):
            for offset in range(0, len(chunk), MIB):
                time.sleep(STALL)
                yield bytes(chunk[offset : offset + MIB])


@pytest.fixture
def slow_server(tmp_path: Path, database_url: str | None) -> Iterator[str]:
    """A real uvicorn on a loopback port serving a slowed store, in a process of its own (so
    that the probes measure the server, not this process's threads taking turns)."""
    port = free_port()
    command = [sys.executable, "-m", "tests.test_nonblocking", str(port), str(tmp_path / "data")]
    process = subprocess.Popen([*command, database_url or ""], stderr=subprocess.PIPE)
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


def serve_slowly(port: int, data_dir: Path, database_url: str | None) -> None:
    """The server of ``slow_server``: the real service, its blob store slowed."""
    service = open_service(Settings(data_dir=data_dir, database_url=database_url))
    service.blobs = SlowBlobStore(service.blobs)  # type: ignore[assignment]
    app = create_app(service, local_user="tester")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def probe_while(busy: threading.Thread, url: str) -> list[float]:
    """Latencies of /healthz, one probe after another, for as long as ``busy`` runs."""
    latencies = []
    with httpx.Client(base_url=url, timeout=10) as client:
        while busy.is_alive():
            start = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - start)
    return latencies


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def crawl(url: str, method: str, path: str, **kwargs: Any) -> tuple[threading.Thread, list[Any]]:
    answers: list[Any] = []

    def run() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            answers.append(client.request(method, path, **kwargs))

    thread = threading.Thread(target=run, name=f"{method} {path}")
    thread.start()
    return thread, answers


def in_pieces(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


DIGEST = hashlib.sha256(BLOB).hexdigest()


def test_health_answers_while_an_upload_crawls(slow_server: str) -> None:
    upload, answers = crawl(
        slow_server, "PUT", f"/api/v1/blobs/sha256:{DIGEST}", content=in_pieces(BLOB)
    )
    latencies = probe_while(upload, slow_server)
    upload.join()
    assert answers[0].status_code == 201, answers[0].text
    # The upload took at least its three stalls; the probes ran all through it.
    assert len(latencies) >= 10
    assert p99(latencies) < P99_BOUND, sorted(latencies)[-5:]


def test_health_answers_while_a_download_crawls(slow_server: str) -> None:
    with httpx.Client(base_url=slow_server, timeout=60) as client:
        put = client.put(f"/api/v1/blobs/sha256:{DIGEST}", content=BLOB)
        assert put.status_code == 201, put.text
        files = [{"path": "model.bin", "size": len(BLOB), "sha256": DIGEST}]
        assert (
            client.post("/api/v1/models/churn/versions", json={"files": files}).status_code == 201
        )
    download, answers = crawl(slow_server, "GET", "/api/v1/models/churn/versions/1/files/model.bin")
    latencies = probe_while(download, slow_server)
    download.join()
    assert answers[0].status_code == 200 and answers[0].content == BLOB
    assert len(latencies) >= 10
    assert p99(latencies) < P99_BOUND, sorted(latencies)[-5:]


if __name__ == "__main__":
    serve_slowly(int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] or None)
