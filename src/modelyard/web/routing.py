"""Routes of pages: errors become pages that say what happened in a plain sentence, and a
caller who must sign in is sent to do so."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from modelyard.domain.errors import ModelyardError, Unauthorized
from modelyard.web.render import page

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class PageRoute(APIRoute):
    """An APIRoute whose ModelyardError is an HTML page (or a redirect to sign in)."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Unauthorized:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)
            except ModelyardError as exc:
                return page(request, "error.html", status=exc.status, error=exc)

        return handle


def page_router() -> APIRouter:
    """A router for pages: kept out of the API's OpenAPI document."""
    return APIRouter(route_class=PageRoute, include_in_schema=False)
