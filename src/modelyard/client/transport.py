"""The one seam between the SDK and a registry: ``Transport.send(request) -> response``.

``Registry`` builds every request and parses every response, once, for every transport;
a transport only carries bytes. Two exist: ``HttpTransport`` (a server, over HTTP) and
``AsgiTransport`` (the very app a server runs, driven in this process). So an operation
the REST API gains costs the SDK one ``Registry`` method and no transport edit.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

Advance = Callable[[int], None]

Chunks = Generator[bytes, None, None]


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, relative to the registry's root."""

    method: str
    path: str  # percent-encoded, e.g. /api/v1/resolve/churn@champion
    query: str = ""  # encoded, without '?'
    headers: Mapping[str, str] = field(default_factory=dict)
    # bytes, or an iterable that streams an upload (then headers carry Content-Length)
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

    def read(self) -> bytes:
        """The whole body, reading what is still streaming."""
        if self.chunks is not None:
            self.body, self.chunks = b"".join(self.chunks), None
        return self.body

    def close(self) -> None:
        """Stop reading a streamed body and let its connection go."""
        if self.chunks is not None:
            self.chunks.close()


class Transport(Protocol):
    def send(self, request: Request) -> Response:
        """Carry ``request`` to the registry and return its answer, whatever the status.

        Raises ``Unavailable`` (code ``unreachable``) only when no answer came at all.
        """
        ...

    def close(self) -> None: ...
