"""Streaming blob bytes to clients with HTTP Range support, and request bodies to a file.

The store's iterator is read on worker threads (Starlette iterates a plain iterator in its
thread pool), and a body is written from them, so a slow disk never holds up the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import IO
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from modelyard.api.problems import problem
from modelyard.domain.access import Caller
from modelyard.service import RegistryService
from modelyard.transfer import BUFFER_SIZE

# Were a browser ever to render bytes it was given to save, nothing in them may run.
DOWNLOAD_POLICY = "default-src 'none'; sandbox"

# A position of more than 18 digits lies past the end of any blob (10**18 bytes is an
# exabyte), so it reads as 10**18: int() of thousands of digits raises, and costs.
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")
_MAX_DIGITS = 18
_BEYOND_ANY_BLOB = 10**_MAX_DIGITS


def stream_blob(
    digest: str,
    size: int,
    range_header: str | None,
    read: Callable[[int, int | None], Iterator[bytes]],
    *,
    instance: str,
    filename: str,
    head: bool = False,
    media_type: str = "application/octet-stream",
) -> Response:
    """A 200 with the whole blob, or a 206 for one satisfiable byte range (416 otherwise).

    Multi-range requests are answered with the whole blob, which RFC 9110 allows. Every
    download is an attachment, of a type no browser renders unless the caller names an
    inert one (an attachment's PNG), so an uploaded .html or .svg never runs in the
    registry's origin (and, were a browser to render it anyway, under a policy that lets
    nothing in it run); and ``private``, because every download but
    local mode's takes a token, and a shared cache must not replay it to anyone else.
    """
    headers = {
        "Content-Security-Policy": DOWNLOAD_POLICY,
        "Accept-Ranges": "bytes",
        "ETag": f'"sha256:{digest}"',
        "Docker-Content-Digest": f"sha256:{digest}",
        "Cache-Control": "private, max-age=31536000, immutable",
        "Content-Disposition": attachment(filename),
    }
    start, end, status = 0, size, 200
    match = _RANGE_RE.fullmatch(range_header.strip()) if range_header else None
    if match and (match.group(1) or match.group(2)):
        first, last = _position(match.group(1)), _position(match.group(2))
        if first is not None:
            start = first
            end = min(last + 1, size) if last is not None else size
        else:  # suffix range: the last N bytes
            start = max(size - (last or 0), 0)
        if start >= size or start >= end:
            refusal = problem(
                416,
                "range_not_satisfiable",
                "Range not satisfiable",
                f"range {_shown(range_header)} is outside the {size} bytes of the file",
                instance,
            )
            refusal.headers["Content-Range"] = f"bytes */{size}"
            return refusal
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    if head:
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(
        read(start, end), status_code=status, headers=headers, media_type=media_type
    )


# The request header by which a client says it follows a redirect to the object store (and
# verifies what it gets). Browsers never send it: the UI's downloads come through the server.
REDIRECT_HEADER = "Modelyard-Redirect"


def redirect_or_stream(
    request: Request,
    svc: RegistryService,
    digest: str,
    size: int,
    range_header: str | None,
    *,
    filename: str,
) -> Response:
    """For a caller already allowed to read the blob: a 307 to a presigned GET of it when
    the client accepts one and the store can sign, else the bytes through the server."""
    head = request.method == "HEAD"
    if not head and request.headers.get(REDIRECT_HEADER, "").lower() == "allow":
        url = svc.direct_download_url(digest, attachment(filename))
        if url is not None:
            return Response(
                status_code=307,
                headers={
                    "Location": url,
                    "Cache-Control": "no-store",  # the URL expires: never replay it
                    "Docker-Content-Digest": f"sha256:{digest}",
                },
            )
    return stream_blob(
        digest,
        size,
        range_header,
        lambda start, end: svc.read_blob(digest, start, end),
        instance=request.url.path,
        filename=filename,
        head=head,
    )


def stream_version_file(
    svc: RegistryService,
    caller: Caller,
    name: str,
    number: int,
    path: str,
    range_header: str | None,
    *,
    instance: str,
    head: bool = False,
    request: Request | None = None,
) -> Response:
    """One file of a version for a caller who may download it: the REST route's answer
    and the UI's (with the browser's session) are this one. Given the ``request``, a
    client that accepts it may be redirected to the store (the REST route only)."""
    entry = svc.file_entry(name, number, path, caller=caller)
    if request is not None:
        filename = entry.path.rsplit("/", 1)[-1]
        return redirect_or_stream(
            request, svc, entry.sha256, entry.size, range_header, filename=filename
        )
    return stream_blob(
        entry.sha256,
        entry.size,
        range_header,
        lambda start, end: svc.read_blob(entry.sha256, start, end),
        instance=instance,
        filename=entry.path.rsplit("/", 1)[-1],
        head=head,
    )


def attachment(filename: str) -> str:
    """Content-Disposition for a download saved as ``filename`` (RFC 6266, RFC 8187)."""
    ascii_name = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _position(digits: str) -> int | None:
    if not digits:
        return None
    return int(digits) if len(digits) <= _MAX_DIGITS else _BEYOND_ANY_BLOB


def _shown(header: str | None) -> str:
    text = repr(header)
    return text if len(text) <= 80 else text[:77] + "..."


async def spool_body(
    request: Request, spool: IO[bytes], check_size: Callable[[int], None] | None = None
) -> None:
    """The request's body into ``spool`` (an OSV dump, a bundle), one transfer buffer a hop
    to a worker thread; ``check_size`` sees the running total and refuses by raising."""
    batch: list[bytes] = []
    batched = received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if check_size is not None:
            check_size(received)
        batch.append(chunk)
        batched += len(chunk)
        if batched >= BUFFER_SIZE:
            await run_in_threadpool(spool.writelines, batch)
            batch, batched = [], 0
    await run_in_threadpool(spool.writelines, batch)
