"""Search across every model's versions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from modelyard.api.deps import caller, needs, service
from modelyard.api.routes.models import Filter, Limit, OrderBy, PageToken, version_page_response
from modelyard.api.schemas import VersionPageOut

router = APIRouter(prefix="/api/v1", tags=["search"])


@router.get("/versions", response_model=VersionPageOut, openapi_extra=needs("model.view"))
def search_versions(
    request: Request,
    filter: Filter = None,
    order_by: OrderBy = None,
    page_token: PageToken = None,
    limit: Limit = None,
) -> Response:
    """Search the versions of every model the caller may see; newest first by default.

    Each distinct environment comes once, under ``environments``; an item's
    ``environment`` is its key there.
    """
    page = service(request).list_versions(
        None,
        caller=caller(request),
        filter=filter,
        order_by=order_by,
        page_token=page_token,
        limit=limit,
    )
    return version_page_response(page)
