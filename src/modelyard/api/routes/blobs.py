"""Content-addressed blobs: ask what is missing, upload only that, read it back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from modelyard.api.deps import json_response, service
from modelyard.api.schemas import BlobOut, MissingBlobsIn, MissingBlobsOut
from modelyard.api.streaming import stream_blob
from modelyard.domain.errors import InvalidInput

router = APIRouter(prefix="/api/v1/blobs", tags=["blobs"])

DigestPath = Annotated[str, Path(pattern=r"^sha256:[0-9a-f]{64}$", description="sha256:<hex>")]
_WRITE_BATCH = 1024 * 1024


def _hex(digest: str) -> str:
    if not digest.startswith("sha256:"):
        raise InvalidInput(f"{digest!r} is not a digest; expected 'sha256:<64 hex digits>'")
    return digest.removeprefix("sha256:")


@router.post("/missing", response_model=MissingBlobsOut)
def missing(body: MissingBlobsIn, request: Request) -> Response:
    """Which of these digests the server lacks: upload only those."""
    lacking = service(request).missing_blobs([_hex(d) for d in body.digests])
    return json_response({"missing": [f"sha256:{d}" for d in lacking]})


@router.put("/{digest}", status_code=201, response_model=BlobOut)
async def upload(digest: DigestPath, request: Request) -> Response:
    """Stream the bytes of one blob. Verified against the digest before it becomes visible."""
    svc = service(request)
    hex_digest = _hex(digest)
    if await run_in_threadpool(svc.missing_blobs, [hex_digest]) == []:
        async for _ in request.stream():  # already stored: drain the body, keep the blob
            pass
        size = await run_in_threadpool(svc.blob_size, hex_digest)
        return json_response({"digest": digest, "size": size, "created": False}, status=200)
    upload = await run_in_threadpool(svc.begin_blob_upload, hex_digest)
    try:
        buffer = bytearray()
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) >= _WRITE_BATCH:
                await run_in_threadpool(upload.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await run_in_threadpool(upload.write, bytes(buffer))
    except BaseException:
        upload.abort()
        raise
    size = await run_in_threadpool(svc.finish_blob_upload, hex_digest, upload)
    return json_response({"digest": digest, "size": size, "created": True}, status=201)


@router.api_route("/{digest}", methods=["GET", "HEAD"], response_class=Response)
def download(
    digest: DigestPath, request: Request, range: Annotated[str | None, Header()] = None
) -> Response:
    """The blob's bytes; honours Range; the ETag is the digest."""
    svc = service(request)
    hex_digest = _hex(digest)
    size = svc.blob_size(hex_digest)
    return stream_blob(
        hex_digest,
        size,
        range,
        lambda start, end: svc.read_blob(hex_digest, start, end),
        head=request.method == "HEAD",
    )
