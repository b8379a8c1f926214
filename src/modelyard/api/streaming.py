"""Streaming blob bytes to clients with HTTP Range support, in 1 MiB chunks."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from starlette.responses import Response, StreamingResponse

from modelyard.api.problems import problem

_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


def stream_blob(
    digest: str,
    size: int,
    range_header: str | None,
    read: Callable[[int, int | None], Iterator[bytes]],
    *,
    instance: str,
    head: bool = False,
) -> Response:
    """A 200 with the whole blob, or a 206 for one satisfiable byte range (416 otherwise).

    Multi-range requests are answered with the whole blob, which RFC 9110 allows.
    """
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"sha256:{digest}"',
        "Docker-Content-Digest": f"sha256:{digest}",
        "Cache-Control": "public, max-age=31536000, immutable",
    }
    start, end, status = 0, size, 200
    match = _RANGE_RE.fullmatch(range_header.strip()) if range_header else None
    if match and (match.group(1) or match.group(2)):
        first, last = match.group(1), match.group(2)
        if first:
            start = int(first)
            end = min(int(last) + 1, size) if last else size
        else:  # suffix range: the last N bytes
            start = max(size - int(last), 0)
        if start >= size or start >= end:
            refusal = problem(
                416,
                "range_not_satisfiable",
                "Range not satisfiable",
                f"range {range_header!r} is outside the {size} bytes of the file",
                instance,
            )
            refusal.headers["Content-Range"] = f"bytes */{size}"
            return refusal
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    if head:
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    return StreamingResponse(
        read(start, end), status_code=status, headers=headers, media_type="application/octet-stream"
    )
