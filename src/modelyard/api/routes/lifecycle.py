"""Stages and promotion: promote, the request queue, approvals, rollback, archive, delete,
history and policies."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from modelyard.api.deps import caller, json_response, needs, service
from modelyard.api.routes.models import Name, Number
from modelyard.api.schemas import CommentIn, PolicyIn, PromoteIn, RollbackIn
from modelyard.service.lifecycle import LifecycleService

router = APIRouter(prefix="/api/v1", tags=["lifecycle"])
RequestId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def lifecycle(request: Request) -> LifecycleService:
    return service(request).lifecycle


def _comment(body: CommentIn | None) -> str:
    return body.comment if body is not None else ""


@router.post("/models/{name}/versions/{number}/promote", openapi_extra=needs("model.promote"))
def promote(name: Name, number: Number, body: PromoteIn, request: Request) -> Response:
    """Promote into a stage: done at once (200) when the stage is unprotected, else a
    request is opened (202) for reviewers. A failing policy answers 409 `policy_failed`
    with every failed rule. Admins may `override` with a reason."""
    result = lifecycle(request).promote(
        caller(request),
        f"{name}/{number}",
        body.to,
        comment=body.comment,
        override=body.override,
    )
    return json_response(result.as_dict(), status=200 if result.status == "executed" else 202)


@router.get("/requests", openapi_extra=needs("model.view"))
def list_requests(
    request: Request,
    model: Annotated[str | None, Query(max_length=128)] = None,
    status: Annotated[
        str, Query(pattern="^(open|executed|rejected|cancelled|invalidated|refused|all)$")
    ] = "open",
) -> Response:
    """The promotion queue of the models you may see (open requests unless `status`)."""
    found = lifecycle(request).requests(
        caller(request), model=model, status=None if status == "all" else status
    )
    return json_response({"items": [r.as_dict() for r in found]})


@router.get("/requests/{request_id}", openapi_extra=needs("model.view"))
def get_request(request_id: RequestId, request: Request) -> Response:
    return json_response(lifecycle(request).request(caller(request), request_id).as_dict())


@router.post("/requests/{request_id}/approve", openapi_extra=needs("model.approve"))
def approve(request_id: RequestId, request: Request, body: CommentIn | None = None) -> Response:
    """Approve: with the approvals the policy asks for, the promotion executes (the policy
    is evaluated again first). Whose approval counts is the stage policy's to say."""
    found = lifecycle(request).approve(caller(request), request_id, comment=_comment(body))
    return json_response(found.as_dict())


@router.post("/requests/{request_id}/reject", openapi_extra=needs("model.approve"))
def reject(request_id: RequestId, request: Request, body: CommentIn | None = None) -> Response:
    found = lifecycle(request).reject(caller(request), request_id, comment=_comment(body))
    return json_response(found.as_dict())


@router.post("/requests/{request_id}/cancel", openapi_extra=needs("model.manage"))
def cancel(request_id: RequestId, request: Request, body: CommentIn | None = None) -> Response:
    """Withdraw a request: its requester, or a maintainer of the model."""
    found = lifecycle(request).cancel(caller(request), request_id, comment=_comment(body))
    return json_response(found.as_dict())


@router.post("/models/{name}/rollback", openapi_extra=needs("model.rollback"))
def rollback(name: Name, body: RollbackIn, request: Request) -> Response:
    """Put back the version that held the stage before the current one (no approval)."""
    version = lifecycle(request).rollback(caller(request), name, body.stage, comment=body.comment)
    return json_response(version.as_dict())


@router.post("/models/{name}/versions/{number}/archive", openapi_extra=needs("model.archive"))
def archive(name: Name, number: Number, request: Request) -> Response:
    """Archive a version: it stays, but cannot be promoted until restored."""
    version = lifecycle(request).archive(caller(request), f"{name}/{number}")
    return json_response(version.as_dict())


@router.post("/models/{name}/versions/{number}/restore", openapi_extra=needs("model.archive"))
def restore(name: Name, number: Number, request: Request) -> Response:
    """Bring an archived version back to the first stage."""
    version = lifecycle(request).archive(caller(request), f"{name}/{number}", restore=True)
    return json_response(version.as_dict())


@router.delete(
    "/models/{name}/versions/{number}",
    status_code=204,
    response_class=Response,
    openapi_extra=needs("version.delete"),
)
def delete_version(
    name: Name,
    number: Number,
    request: Request,
    hard: Annotated[bool, Query(description="Erase it (admins; never once protected)")] = False,
) -> Response:
    """Delete a version: hidden but kept (maintainers), or erased with `hard` (admins)."""
    lifecycle(request).delete_version(caller(request), name, number, hard=hard)
    return Response(status_code=204)


@router.get("/models/{name}/history", openapi_extra=needs("model.view"))
def history(
    name: Name, request: Request, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000
) -> Response:
    """Every stage move, alias change, request, approval and policy of the model, and its
    evidence (attachments, card edits, comments)."""
    events = lifecycle(request).history(caller(request), name, limit=limit)
    return json_response({"items": [e.as_dict() for e in events]})


@router.get("/models/{name}/policy", openapi_extra=needs("model.view"))
def get_policy(name: Name, request: Request) -> Response:
    """The policy in force (the model's own, else the registry's) and the stages."""
    return json_response(lifecycle(request).get_policy(caller(request), name))


@router.put("/models/{name}/policy", openapi_extra=needs("model.manage"))
def put_policy(name: Name, body: PolicyIn, request: Request) -> Response:
    """Store a new version of the model's policy (YAML text)."""
    return json_response(lifecycle(request).apply_policy(caller(request), name, body.text))


@router.get("/policy", openapi_extra=needs("authenticated"))
def get_registry_policy(request: Request) -> Response:
    """The registry-wide policy: in force for every model without one of its own."""
    return json_response(lifecycle(request).get_policy(caller(request), None))


@router.put("/policy", openapi_extra=needs("registry.admin"))
def put_registry_policy(body: PolicyIn, request: Request) -> Response:
    return json_response(lifecycle(request).apply_policy(caller(request), None, body.text))
