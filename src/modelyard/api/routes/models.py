"""Models, their versions, files and aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request
from starlette.responses import Response

from modelyard.api.deps import caller, json_response, needs, service
from modelyard.api.schemas import (
    AliasIn,
    ModelIn,
    ModelOut,
    ModelPageOut,
    PatchIn,
    VersionIn,
    VersionOut,
    VersionPageOut,
)
from modelyard.api.streaming import stream_version_file
from modelyard.domain.models import Model, Page, Version, version_page_as_dict
from modelyard.domain.references import MAX_VERSION_NUMBER

router = APIRouter(prefix="/api/v1/models", tags=["models"])

# Names are validated by the service (one rule, one error code), not by the route.
Name = Annotated[str, Path(description="Model name")]
Number = Annotated[int, Path(ge=1, le=MAX_VERSION_NUMBER, description="Version number")]
Filter = Annotated[
    str | None,
    Query(max_length=4096, description='Filter, e.g. metrics.auc >= 0.85 and tags.team = "growth"'),
]
OrderBy = Annotated[
    str | None, Query(max_length=512, description="e.g. 'metrics.auc desc, created'")
]
PageToken = Annotated[str | None, Query(max_length=512)]
Limit = Annotated[int | None, Query(ge=1, le=1000)]


def page_response(page: Page[Model]) -> Response:
    return json_response(
        {
            "items": [item.as_dict() for item in page.items],
            "next_page_token": page.next_page_token,
        }
    )


def version_page_response(page: Page[Version]) -> Response:
    return json_response(version_page_as_dict(page))


@router.get("", response_model=ModelPageOut, openapi_extra=needs("model.view"))
def list_models(
    request: Request,
    filter: Filter = None,
    order_by: OrderBy = None,
    page_token: PageToken = None,
    limit: Limit = None,
) -> Response:
    """List models, filtered by name, description, tags.K, created, updated, latest_version."""
    page = service(request).list_models(
        caller=caller(request),
        filter=filter,
        order_by=order_by,
        page_token=page_token,
        limit=limit,
    )
    return page_response(page)


@router.post("", status_code=201, response_model=ModelOut, openapi_extra=needs("model.register"))
def create_model(body: ModelIn, request: Request) -> Response:
    """Create an empty model (registering a version also creates it)."""
    model = service(request).create_model(
        body.name,
        caller=caller(request),
        description=body.description,
        tags=body.tags,
        origin=body.origin.to_domain() if body.origin else None,
    )
    return json_response(model.as_dict(), status=201)


@router.get("/{name}", response_model=ModelOut, openapi_extra=needs("model.view"))
def get_model(name: Name, request: Request) -> Response:
    return json_response(service(request).get_model(name, caller=caller(request)).as_dict())


@router.patch("/{name}", response_model=ModelOut, openapi_extra=needs("model.edit"))
def update_model(name: Name, body: PatchIn, request: Request) -> Response:
    """Edit the description and tags (a tag set to null is removed). Journaled."""
    model = service(request).update_model(
        name, caller=caller(request), description=body.description, tags=body.tags
    )
    return json_response(model.as_dict())


@router.delete(
    "/{name}", status_code=204, response_class=Response, openapi_extra=needs("model.delete")
)
def delete_model(name: Name, request: Request) -> Response:
    """Delete a model that has no versions (versions are immutable and never deleted here)."""
    service(request).delete_model(name, caller=caller(request))
    return Response(status_code=204)


@router.get("/{name}/versions", response_model=VersionPageOut, openapi_extra=needs("model.view"))
def list_versions(
    name: Name,
    request: Request,
    filter: Filter = None,
    order_by: OrderBy = None,
    page_token: PageToken = None,
    limit: Limit = None,
) -> Response:
    """The model's versions, newest first unless order_by says otherwise."""
    page = service(request).list_versions(
        name,
        caller=caller(request),
        filter=filter,
        order_by=order_by,
        page_token=page_token,
        limit=limit,
    )
    return version_page_response(page)


@router.post(
    "/{name}/versions",
    status_code=201,
    response_model=VersionOut,
    openapi_extra=needs("model.register"),
)
def register_version(name: Name, body: VersionIn, request: Request) -> Response:
    """Register the next version.

    Every blob of the manifest must already be uploaded, or (files up to 64 KiB) come
    inline as base64 ``content``; so must those of the attachments. The attachments and
    the card are written with the version, in one transaction.
    """
    version = service(request).register_version(
        name,
        body.to_domain(),
        caller=caller(request),
        inline=body.inline(),
        attachments=body.evidence(),
        card=body.card,
        card_from_previous=body.card_from_previous,
    )
    return json_response(
        version.as_dict(),
        status=201,
        headers={"Location": f"/api/v1/models/{name}/versions/{version.version}"},
    )


@router.get(
    "/{name}/versions/{number}", response_model=VersionOut, openapi_extra=needs("model.view")
)
def get_version(name: Name, number: Number, request: Request) -> Response:
    version = service(request).get_version(name, number, caller=caller(request))
    return json_response(version.as_dict())


@router.patch(
    "/{name}/versions/{number}", response_model=VersionOut, openapi_extra=needs("model.edit")
)
def update_version(name: Name, number: Number, body: PatchIn, request: Request) -> Response:
    """Edit a version's description and tags. Its files and metadata never change."""
    version = service(request).update_version(
        name, number, caller=caller(request), description=body.description, tags=body.tags
    )
    return json_response(version.as_dict())


_FILE_PATH = "/{name}/versions/{number}/files/{path:path}"


@router.get(
    _FILE_PATH,
    response_class=Response,
    operation_id="get_version_file",
    openapi_extra=needs("model.download"),
)
def download_file(
    name: Name,
    number: Number,
    path: str,
    request: Request,
    range: Annotated[str | None, Header()] = None,
) -> Response:
    """One file of a version; honours Range; the ETag is the file's sha256.

    A client that sends ``Modelyard-Redirect: allow`` may get a 307 to a presigned URL of
    the object store instead (the SDK does; it verifies every byte it receives).
    """
    return stream_version_file(
        service(request),
        caller(request),
        name,
        number,
        path,
        range,
        instance=request.url.path,
        head=request.method == "HEAD",
        request=request,
    )


router.add_api_route(
    _FILE_PATH,
    download_file,
    methods=["HEAD"],
    response_class=Response,
    operation_id="head_version_file",
    openapi_extra=needs("model.download"),
)


@router.put("/{name}/aliases/{alias}", response_model=VersionOut, openapi_extra=needs("alias.set"))
def set_alias(name: Name, alias: str, body: AliasIn, request: Request) -> Response:
    """Point an alias at a version (creates or moves it). Journaled with before/after.

    Contributors move aliases; a protected alias (champion and production unless the
    model says otherwise) takes a maintainer.
    """
    version = service(request).set_alias(name, alias, body.version, caller=caller(request))
    return json_response(version.as_dict())


@router.get("/{name}/aliases/{alias}", response_model=VersionOut, openapi_extra=needs("model.view"))
def get_alias(name: Name, alias: str, request: Request) -> Response:
    version = service(request).resolve(f"{name}@{alias}", caller=caller(request))
    return json_response(version.as_dict())


@router.delete(
    "/{name}/aliases/{alias}",
    status_code=204,
    response_class=Response,
    openapi_extra=needs("alias.set"),
)
def delete_alias(name: Name, alias: str, request: Request) -> Response:
    service(request).delete_alias(name, alias, caller=caller(request))
    return Response(status_code=204)
