"""Content-addressed blobs: ask what is missing, upload only that, read it back."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.responses import Response

from modelyard.api.deps import caller, json_response, needs, service
from modelyard.api.rawbody import RECEIVED, ClientGone, RawBody, take_raw_body
from modelyard.api.schemas import (
    BlobOut,
    DirectCompleteIn,
    DirectUploadIn,
    DirectUploadOut,
    DirectUploadsOut,
    MissingBlobsIn,
    MissingBlobsOut,
)
from modelyard.api.streaming import redirect_or_stream
from modelyard.domain.access import Permission
from modelyard.domain.errors import InvalidInput
from modelyard.service.blobs import PendingBlob
from modelyard.transfer import BUFFER_SIZE, PART_SIZE

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


@router.get(
    "/direct-uploads", response_model=DirectUploadsOut, openapi_extra=needs("model.register")
)
def direct_uploads(request: Request) -> Response:
    """Whether this registry hands out presigned URLs of its object store, so that bytes
    go between client and store without passing through the server."""
    svc = service(request)
    svc.access.require_anywhere(caller(request), Permission.REGISTER)
    return json_response({"enabled": svc.direct_transfers(), "part_size": PART_SIZE})


@router.post(
    "/direct-uploads",
    status_code=201,
    response_model=DirectUploadOut,
    openapi_extra=needs("model.register"),
)
def begin_direct_upload(body: DirectUploadIn, request: Request) -> Response:
    """Start (or resume) sending a blob straight to the object store: presigned PUTs for
    the parts it lacks, each bound to its SHA-256, expiring in 15 minutes.

    Parts are cut by ``part_ranges`` (8 MiB, growing after a thousand parts); ``parts``
    lists each part's sha256. Send each part to its URL with its headers, in any order
    and in parallel, then POST /blobs/direct-uploads/complete. Asking again after a crash
    answers only the parts that are still missing.
    """
    plan = service(request).begin_direct_upload(
        caller(request), _hex(body.digest), body.size, body.parts
    )
    parts = [
        {"number": p.number, "offset": p.offset, "size": p.size, "url": p.url, "headers": p.headers}
        for p in plan.parts
    ]
    answer = {"digest": body.digest, "size": plan.size, "created": plan.created, "parts": parts}
    response = json_response(answer, status=201 if plan.created else 200)
    response.headers["Cache-Control"] = "no-store"  # the URLs are credentials for minutes
    return response


@router.post(
    "/direct-uploads/complete",
    status_code=201,
    response_model=BlobOut,
    openapi_extra=needs("model.register"),
)
def complete_direct_upload(body: DirectCompleteIn, request: Request) -> Response:
    """Verify the parts sent (the whole blob's sha256 and size) and publish the blob; one
    that fails verification is deleted (400 digest_mismatch)."""
    size, created = service(request).finish_direct_upload(
        caller(request), _hex(body.digest), body.size
    )
    body_out = {"digest": body.digest, "size": size, "created": created}
    return json_response(body_out, status=201 if created else 200)


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
    """Receive on the event loop, write on worker threads; or, where the server offers
    the socket (``api/rawbody.py``), receive on a worker thread too, into the upload's
    own buffers.

    A store's writes block whenever its disk is slow (or all of an upload's buffers are
    still busy): run on the loop, one slow upload would stall every request the server is
    answering. Chunks (tens of KiB each) are gathered into batches of one transfer buffer,
    so each hop to a thread carries ~2 MiB and costs nothing measurable per GiB.
    """
    svc = service(request)
    upload = await run_in_threadpool(_begin, request, hex_digest)
    raw = take_raw_body(request.scope)
    try:
        if raw is not None:  # the socket itself, read on a worker thread
            await run_in_threadpool(_receive_raw, upload, raw)
        else:
            batch: list[bytes] = []
            batched = 0
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
    finally:
        if raw is not None:
            request.scope[RECEIVED] = raw.received
            raw.close()
    size, created = await run_in_threadpool(svc.finish_blob_upload, upload)
    body = {"digest": f"sha256:{upload.digest}", "size": size, "created": created}
    return json_response(body, status=201 if created else 200)


def _begin(request: Request, hex_digest: str | None) -> PendingBlob:
    return service(request).begin_blob_upload(caller(request), hex_digest)


def _receive_raw(upload: PendingBlob, raw: RawBody) -> None:
    """The whole body from the socket into the upload (a worker thread: it waits)."""
    upload.write(raw.head)
    upload.receive(raw.read, raw.remaining)
    if raw.remaining:
        raise ClientGone(f"the body ended {raw.remaining} bytes early")


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
    """The blob's bytes; honours Range; the ETag is the digest.

    A client that sends ``Modelyard-Redirect: allow`` may get a 307 to a presigned URL of
    the object store instead (the SDK does; it verifies every byte it receives).
    """
    svc = service(request)
    hex_digest = _hex(digest)
    size = svc.blob_size(caller(request), hex_digest)
    return redirect_or_stream(
        request, svc, hex_digest, size, range, filename=f"sha256-{hex_digest}"
    )


router.add_api_route(
    "/{digest:digest}",
    download,
    methods=["HEAD"],
    response_class=Response,
    operation_id="head_blob",
    openapi_extra=needs("model.download"),
)
