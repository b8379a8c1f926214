"""The one seam between the SDK and a registry: ``Transport.send(request) -> response``.

``Registry`` builds every request and parses every response, once, for every transport;
a transport only carries bytes. Two exist: ``HttpTransport`` (a server, over HTTP) and
``AsgiTransport`` (the very app a server runs, driven in this process). So an operation
the REST API gains costs the SDK one ``Registry`` method and no transport edit.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

Advance = Callable[[int], None]

Chunks = Generator[bytes, None, None]

# Reads of a file body that is iterated (1 MiB: hashlib and the socket both take it whole).
FILE_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileBody:
    """A request body that is the whole of a file on disk.

    Iterated, it reads the file in chunks, as any streamed body; a transport that owns its
    socket hands it to the kernel instead (``sendfile``): no copy of the bytes through
    this process, which on a big upload saves a pass over them. ``advance`` hears of the
    bytes as they go, either way.
    """

    path: Path
    size: int
    advance: Advance

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb", buffering=0) as handle:
            while chunk := handle.read(FILE_CHUNK):
                self.advance(len(chunk))
                yield chunk


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, relative to the registry's root."""

    method: str
    path: str  # percent-encoded, e.g. /api/v1/resolve/churn@champion
    query: str = ""  # encoded, without '?'
    headers: Mapping[str, str] = field(default_factory=dict)
    # bytes, or an iterable that streams an upload (then headers carry Content-Length); a
    # FileBody is such an iterable, which a transport may send with sendfile instead
    body: bytes | Iterable[bytes] = b""
    # Whether the caller reads the answer as it arrives (downloads): ``Response.chunks``.
    stream: bool = False

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


@dataclass(slots=True)
class Response:
    """The answer: ``body``, or (a streamed request that succeeded) ``chunks`` to read."""

    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes = b""
    chunks: Chunks | None = None
    # Where the transport can, a streamed body read straight into the caller's buffer
    # (a socket's recv_into; 0 at the end) instead of ``chunks``: one copy fewer.
    readinto: Callable[[memoryview], int] | None = None
    on_close: Callable[[], None] | None = None

    def read(self) -> bytes:
        """The whole body, reading what is still streaming."""
        if self.chunks is not None:
            self.body, self.chunks = b"".join(self.chunks), None
        return self.body

    def close(self) -> None:
        """Stop reading a streamed body and let its connection go."""
        if self.chunks is not None:
            self.chunks.close()
        if self.on_close is not None:
            self.on_close()


class Transport(Protocol):
    def send(self, request: Request) -> Response:
        """Carry ``request`` to the registry and return its answer, whatever the status.

        Raises ``Unavailable`` (code ``unreachable``) only when no answer came at all.
        """
        ...

    def close(self) -> None: ...
