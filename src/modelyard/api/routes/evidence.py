"""A version's evidence: attachments, its model card, comments (and a request's comments).

Viewers read all of it (reviewers must see what they sign off); the model's files stay
for readers. Attachment bytes are downloads like files: an attachment to save, typed only
when the type runs nothing in a browser (images, PDF, plain text, CSV), never sniffed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from modelyard.api.deps import caller, json_response, needs, service
from modelyard.api.routes.lifecycle import RequestId
from modelyard.api.routes.models import Name, Number
from modelyard.api.schemas import (
    AttachmentListOut,
    AttachmentsIn,
    CardIn,
    CardListOut,
    CardOut,
    CommentListOut,
    CommentOut,
    NewCommentIn,
    attachments_in,
)
from modelyard.api.streaming import stream_blob
from modelyard.domain.errors import NotFound
from modelyard.domain.evidence import INERT_TYPES, OCTET_STREAM, Comment
from modelyard.service.evidence import EvidenceService

router = APIRouter(prefix="/api/v1", tags=["evidence"])
_VERSION = "/models/{name}/versions/{number}"
_ATTACHMENT = _VERSION + "/attachments/{path:path}"
# Whatever an attachment holds, a browser that opens its URL runs nothing of it.


def evidence(request: Request) -> EvidenceService:
    return service(request).evidence


@router.get(
    _VERSION + "/attachments", response_model=AttachmentListOut, openapi_extra=needs("model.view")
)
def list_attachments(name: Name, number: Number, request: Request) -> Response:
    """The version's attachments (evaluation evidence), by path."""
    found = evidence(request).attachments(caller(request), name, number)
    return json_response({"items": [a.as_dict() for a in found]})


@router.post(
    _VERSION + "/attachments",
    status_code=201,
    response_model=AttachmentListOut,
    openapi_extra=needs("version.attach"),
)
def attach(name: Name, number: Number, body: AttachmentsIn, request: Request) -> Response:
    """Attach evidence after registration (an evaluation that finished later). Attachments
    are never replaced (409 ``attachment_exists``) and the manifest digest does not change.
    Blobs are sent as for a registration: inline up to 64 KiB, else uploaded first."""
    attached = evidence(request).attach(
        caller(request), name, number, attachments_in(body.attachments)
    )
    return json_response({"items": [a.as_dict() for a in attached]}, status=201)


@router.get(
    _ATTACHMENT,
    response_class=Response,
    operation_id="get_version_attachment",
    openapi_extra=needs("model.view"),
)
def download_attachment(
    name: Name,
    number: Number,
    path: str,
    request: Request,
    range: Annotated[str | None, Header()] = None,
) -> Response:
    """One attachment's bytes; honours Range; the ETag is its sha256. Viewers may read
    attachments (not the model's files)."""
    found, read = evidence(request).open_attachment(caller(request), name, number, path)
    kind = found.media_type if found.media_type in INERT_TYPES else OCTET_STREAM
    return stream_blob(
        found.sha256,
        found.size,
        range,
        read,
        instance=request.url.path,
        filename=found.path.rsplit("/", 1)[-1],
        head=request.method == "HEAD",
        media_type=f"{kind}; charset=utf-8" if kind.startswith("text/") else kind,
    )


router.add_api_route(
    _ATTACHMENT,
    download_attachment,
    methods=["HEAD"],
    response_class=Response,
    operation_id="head_version_attachment",
    openapi_extra=needs("model.view"),
)


@router.get(_VERSION + "/card", response_model=CardOut, openapi_extra=needs("model.view"))
def get_card(name: Name, number: Number, request: Request) -> Response:
    """The version's model card (Markdown), its newest revision; 404 ``card_not_found``
    when it has none."""
    card = evidence(request).card(caller(request), name, number)
    if card is None:
        raise NotFound(f"{name}/{number} has no model card", code="card_not_found")
    return json_response(card.as_dict())


@router.put(_VERSION + "/card", response_model=CardOut, openapi_extra=needs("model.edit"))
def set_card(name: Name, number: Number, body: CardIn, request: Request) -> Response:
    """Edit the model card: a new revision, journaled (the same text changes nothing)."""
    card = evidence(request).set_card(caller(request), name, number, body.text)
    return json_response(card.as_dict())


@router.get(
    _VERSION + "/card/history", response_model=CardListOut, openapi_extra=needs("model.view")
)
def card_history(name: Name, number: Number, request: Request) -> Response:
    """Every revision of the model card, oldest first."""
    found = evidence(request).card_history(caller(request), name, number)
    return json_response({"items": [c.as_dict() for c in found]})


def _comments(found: list[Comment]) -> Response:
    return json_response({"items": [c.as_dict() for c in found]})


@router.get(
    _VERSION + "/comments", response_model=CommentListOut, openapi_extra=needs("model.view")
)
def list_version_comments(name: Name, number: Number, request: Request) -> Response:
    """Comments on the version, its promotion requests' included, oldest first."""
    return _comments(evidence(request).comments(caller(request), model=name, version=number))


@router.post(
    _VERSION + "/comments",
    status_code=201,
    response_model=CommentOut,
    openapi_extra=needs("model.comment"),
)
def comment_on_version(
    name: Name, number: Number, body: NewCommentIn, request: Request
) -> Response:
    """Comment on the version (Markdown; journaled). Viewers may comment."""
    found = evidence(request).comment(caller(request), model=name, version=number, body=body.body)
    return json_response(found.as_dict(), status=201)


def _request_model(request: Request, request_id: int) -> str:
    """The model of a request the caller may see (else its 404)."""
    return service(request).lifecycle.request(caller(request), request_id).model


@router.get(
    "/requests/{request_id}/comments",
    response_model=CommentListOut,
    openapi_extra=needs("model.view"),
)
def list_request_comments(request_id: RequestId, request: Request) -> Response:
    """Comments on a promotion request, oldest first."""
    model = _request_model(request, request_id)
    found = evidence(request).comments(caller(request), model=model, request_id=request_id)
    return _comments(found)


@router.post(
    "/requests/{request_id}/comments",
    status_code=201,
    response_model=CommentOut,
    openapi_extra=needs("model.comment"),
)
def comment_on_request(request_id: RequestId, body: NewCommentIn, request: Request) -> Response:
    """Comment on a promotion request (Markdown; journaled). Reviewers with viewer may."""
    model = _request_model(request, request_id)
    found = evidence(request).comment(
        caller(request), model=model, request_id=request_id, body=body.body
    )
    return json_response(found.as_dict(), status=201)
