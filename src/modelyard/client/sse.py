"""Server-Sent Events read from a stream of byte chunks, per the WHATWG parsing rules
(lines end in LF, CRLF or CR; ``:`` starts a comment; a blank line ends a message)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Message:
    """One message: ``data`` is empty for one that only moves ``id`` (the stream's start)."""

    id: str | None
    event: str
    data: str


def messages(chunks: Iterable[bytes]) -> Iterator[Message]:
    """The messages as they complete; comments (heartbeats) and ``retry:`` are skipped."""
    pending = b""
    event_id: str | None = None
    event, data = "", list[str]()
    after_cr = False  # the last chunk ended in CR: an LF starting the next one belongs to it
    for chunk in chunks:
        if after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        after_cr = chunk.endswith(b"\r")
        pending += chunk
        lines = _LINE_END.split(pending)
        pending = lines.pop()  # the line still arriving
        for raw in lines:
            line = raw.decode("utf-8", errors="replace")
            if not line:
                if data or event_id is not None:
                    yield Message(event_id, event or "message", "\n".join(data))
                event_id, event, data = None, "", list[str]()
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name == "id" and "\0" not in value:
                event_id = value
