"""Direct uploads: a file's parts PUT straight to the registry's object store.

The registry hands out presigned URLs, one per part, each bound to the part's SHA-256
(``x-amz-checksum-sha256``); the SDK hashes the file once (the whole and each part, on two
threads), asks for the parts the store still lacks, sends those in parallel and asks the
registry to verify and publish the blob. A run that died is continued by the next: the
registry answers only the parts that are missing.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from modelyard.client.connections import proxied
from modelyard.client.transport import Advance
from modelyard.domain.errors import Unavailable
from modelyard.transfer import Pipeline, part_ranges

PARALLEL_PARTS = 4  # parts in flight at once: each holds one part (8 MiB) in memory
HASH_CHUNK = 1024 * 1024  # parts are multiples of 8 MiB: chunks never straddle two
TIMEOUT = 300.0


@dataclass(frozen=True, slots=True)
class PartToSend:
    number: int
    offset: int
    size: int
    url: str
    headers: dict[str, str]


class _PartHashes:
    """A pipeline step: the sha256 of each part of ``part_ranges``, as bytes pass."""

    def __init__(self, size: int) -> None:
        self.ends = [offset + length for offset, length in part_ranges(size)]
        self.sums: list[str] = []
        self._part = hashlib.sha256()
        self._done = 0

    def update(self, view: memoryview) -> None:
        while view:
            room = self.ends[len(self.sums)] - self._done
            piece, view = view[:room], view[room:]
            self._part.update(piece)
            self._done += len(piece)
            if self._done == self.ends[len(self.sums)]:
                self.sums.append(self._part.hexdigest())
                self._part = hashlib.sha256()


def hash_parts(path: Path, size: int) -> tuple[str, list[str]]:
    """The file's sha256 and each part's (hex), in one read; the two hashes on threads."""
    whole = hashlib.sha256()
    parts = _PartHashes(size)
    pipeline = Pipeline([whole.update, parts.update])
    with path.open("rb", buffering=0) as handle:
        try:
            while chunk := handle.read(HASH_CHUNK):
                pipeline.write(chunk)
        except BaseException:
            pipeline.abort()
            raise
    pipeline.close()
    if not parts.sums:  # an empty file: one empty part
        parts.sums.append(hashlib.sha256().hexdigest())
    if len(parts.sums) != len(parts.ends):
        raise Unavailable(f"{path} changed while it was hashed", code="file_changed")
    return whole.hexdigest(), parts.sums


def send_parts(path: Path, parts: list[PartToSend], advance: Advance) -> None:
    """PUT each part to its URL, a few at once; raises the first failure."""
    lock = threading.Lock()

    def one(part: PartToSend) -> None:
        with path.open("rb", buffering=0) as handle:
            data = os.pread(handle.fileno(), part.size, part.offset)
        if len(data) != part.size:
            raise Unavailable(f"{path} changed while it was uploaded", code="file_changed")
        put_part(part.url, data, part.headers)
        with lock:
            advance(part.size)

    with ThreadPoolExecutor(PARALLEL_PARTS, thread_name_prefix="modelyard-part") as pool:
        for done in [pool.submit(one, part) for part in parts]:
            done.result()


def put_part(url: str, data: bytes, headers: dict[str, str]) -> None:
    """One PUT of ``data`` to a presigned URL (no token: the URL is the credential)."""
    sent = {**headers, "Content-Length": str(len(data))}
    if proxied(url):
        answer = httpx.put(url, content=data, headers=sent, timeout=TIMEOUT)
        status, text = answer.status_code, answer.text
    else:
        parts = urlsplit(url)
        kind: Callable[..., http.client.HTTPConnection] = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        conn = kind(parts.hostname or "", parts.port, timeout=TIMEOUT)
        try:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request("PUT", target, body=data, headers=sent)
            answer_ = conn.getresponse()
            status, text = answer_.status, answer_.read(4096).decode("utf-8", "replace")
        except OSError as exc:
            raise Unavailable(
                f"cannot reach the object store at {parts.scheme}://{parts.netloc}"
                f" ({exc.__class__.__name__})",
                code="store_unreachable",
            ) from None
        finally:
            conn.close()
    if not 200 <= status < 300:
        raise Unavailable(
            f"the object store refused a part ({status}): {' '.join(text.split())[:200]}",
            code="part_refused",
        )
