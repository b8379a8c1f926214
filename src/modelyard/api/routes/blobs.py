"""Content-addressed blobs: ask what is missing, upload only that, read it back."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.responses import Response

from modelyard.api.deps import caller, json_response, needs, service
from modelyard.api.schemas import BlobOut, MissingBlobsIn, MissingBlobsOut
from modelyard.api.streaming import stream_blob
from modelyard.domain.errors import InvalidInput
from modelyard.service.blobs import PendingBlob
from modelyard.transfer import BUFFER_SIZE

router = APIRouter(prefix="/api/v1/blobs", tags=["blobs"])


class _DigestSegment(StringConvertor):
    """A path segment that names a digest: '/blobs/uploads' is then not a digest to PUT
    (and gets its 405), while 'sha256:<anything>' still gets the pattern's 400."""

    regex = "sha256:[^/]*"


register_url_convertor("digest", _DigestSegment())

DigestPath = Annotated[str, Path(pattern=r"^sha256:[0-9a-f]{64}$", description="sha256:<hex>")]


def _hex(digest: str) -> str:
    if not digest.startswith("sha256:"):
        raise InvalidInput(f"{digest!r} is not a digest; expected 'sha256:<64 hex digits>'")
    return digest.removeprefix("sha256:")


@router.post("/missing", response_model=MissingBlobsOut, openapi_extra=needs("model.register"))
def missing(body: MissingBlobsIn, request: Request) -> Response:
    """Which of these digests the server lacks: upload only those.

    Blobs belong to no model until a version names them: contributor on any model may
    upload (and ask), reading one takes reader on a model with a version that holds it.
    """
    lacking = service(request).missing_blobs(caller(request), [_hex(d) for d in body.digests])
    return json_response({"missing": [f"sha256:{d}" for d in lacking]})


@router.put(
    "/{digest:digest}",
    status_code=201,
    response_model=BlobOut,
    openapi_extra=needs("model.register"),
)
async def upload(digest: DigestPath, request: Request) -> Response:
    """Stream the bytes of one blob. Verified against the digest before it becomes visible."""
    svc = service(request)
    hex_digest = _hex(digest)
    who = await run_in_threadpool(caller, request)
    stored = await run_in_threadpool(svc.stored_blobs, who, [hex_digest])
    if hex_digest in stored:
        async for _ in request.stream():  # already stored: drain the body, keep the blob
            pass
        body = {"digest": digest, "size": stored[hex_digest], "created": False}
        return json_response(body, status=200)
    return await _receive(request, hex_digest)


@router.post(
    "/uploads", status_code=201, response_model=BlobOut, openapi_extra=needs("model.register")
)
async def upload_unnamed(request: Request) -> Response:
    """Stream a blob whose digest the client does not know yet; the answer names it.

    Lets a client hash and send in one pass. The client compares the returned digest
    with its own before it references the blob.
    """
    return await _receive(request, None)


async def _receive(request: Request, hex_digest: str | None) -> Response:
    """Receive on the event loop, write on worker threads.

    A store's writes block whenever its disk is slow (or all of an upload's buffers are
    still busy): run on the loop, one slow upload would stall every request the server is
    answering. Chunks (tens of KiB each) are gathered into batches of one transfer buffer,
    so each hop to a thread carries ~2 MiB and costs nothing measurable per GiB.
    """
    svc = service(request)
    upload = await run_in_threadpool(_begin, request, hex_digest)
    batch: list[bytes] = []
    batched = 0
    try:
        async for chunk in request.stream():
            batch.append(chunk)
            batched += len(chunk)
            if batched >= BUFFER_SIZE:
                await run_in_threadpool(_write, upload, batch)
                batch, batched = [], 0
        await run_in_threadpool(_write, upload, batch)
    except BaseException:
        with anyio.CancelScope(shield=True):  # a client that went away cancels the request
            await run_in_threadpool(upload.abort)
        raise
    size, created = await run_in_threadpool(svc.finish_blob_upload, upload)
    body = {"digest": f"sha256:{upload.digest}", "size": size, "created": created}
    return json_response(body, status=201 if created else 200)


def _begin(request: Request, hex_digest: str | None) -> PendingBlob:
    return service(request).begin_blob_upload(caller(request), hex_digest)


def _write(upload: PendingBlob, chunks: list[bytes]) -> None:
    for chunk in chunks:
        upload.write(chunk)


@router.get(
    "/{digest:digest}",
    response_class=Response,
    operation_id="get_blob",
    openapi_extra=needs("model.download"),
)
def download(
    digest: DigestPath, request: Request, range: Annotated[str | None, Header()] = None
) -> Response:
    """The blob's bytes; honours Range; the ETag is the digest."""
    svc = service(request)
    hex_digest = _hex(digest)
    size = svc.blob_size(caller(request), hex_digest)
    return stream_blob(
        hex_digest,
        size,
        range,
        lambda start, end: svc.read_blob(hex_digest, start, end),
        instance=request.url.path,
        filename=f"sha256-{hex_digest}",
        head=request.method == "HEAD",
    )


router.add_api_route(
    "/{digest:digest}",
    download,
    methods=["HEAD"],
    response_class=Response,
    operation_id="head_blob",
    openapi_extra=needs("model.download"),
)
