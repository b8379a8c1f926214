"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard import __version__
from modelyard.api import openapi, problems
from modelyard.api.fast import FastRoutes
from modelyard.api.limits import BodyLimit
from modelyard.api.problems import internal_error
from modelyard.api.routes import (
    access,
    advisories,
    blobs,
    bundles,
    checks,
    compare,
    events,
    evidence,
    gc,
    health,
    lifecycle,
    metrics,
    mlflow,
    models,
    online,
    resolve,
    signing,
    versions,
    webhooks,
)
from modelyard.api.routes.resolve import RESOLVE_ROUTE, FastResolve, fast_resolve, is_fast_resolve
from modelyard.api.telemetry import ROUTE, Telemetry
from modelyard.config import os_user
from modelyard.domain.access import Reach
from modelyard.service import RegistryService
from modelyard.service.delivery_process import DeliveryProcess

_NOSNIFF = (b"x-content-type-options", b"nosniff")
_DOCS_ASSETS = "/docs/assets"


def _swagger_ui_assets() -> Path:
    """Swagger UI 5 as the swagger-ui-py package ships it (4.x cannot read OpenAPI 3.1),
    found without importing the package, which would cost start-up 60 ms."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


class ModelyardApp(FastAPI):
    """FastAPI, with ``X-Content-Type-Options: nosniff`` and the request id (``Telemetry``)
    on every response, and the plain resolve answered in front of the framework while
    nothing but the app's own middleware is installed.

    nosniff is added here, outside the whole stack, so that it also covers the error pages
    the stack writes itself (the 500 of an unexpected exception).

    The resolve: ``FastResolve`` is the innermost middleware, so whatever middleware is
    added (sessions, metrics, rate limits) wraps it. Until some is, the layers in front of
    it (FastAPI's telemetry check, its error and body-limit middleware, ``BodyLimit``) do
    nothing for a bodiless GET but cost ~20 µs, as much as the resolve itself; so then the
    same function answers here, and an unexpected error gets the same problem+json 500.
    """

    _own_middleware: tuple[object, ...] = ()
    _resolve_in_front = False  # decided when the stack is built (at the first request)
    telemetry = Telemetry()  # request ids only; create_app sets the server's

    def own_middleware_installed(self) -> None:
        """Mark the middleware added so far as the app's own."""
        self._own_middleware = self._middleware_classes()

    def build_middleware_stack(self) -> ASGIApp:
        self._resolve_in_front = self._middleware_classes() == self._own_middleware
        return super().build_middleware_stack()

    def _middleware_classes(self) -> tuple[object, ...]:
        return tuple(m.cls for m in self.user_middleware)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), _NOSNIFF]
            await send(message)

        await self.telemetry.track(scope, receive, send_nosniff, self._answer)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._resolve_in_front and is_fast_resolve(scope):
            scope["app"] = self
            scope[ROUTE] = RESOLVE_ROUTE
            try:
                await fast_resolve(self, scope, receive, send)
            except Exception:
                await internal_error("GET", scope["path"])(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    service: RegistryService,
    *,
    reach: Reach,
    local_user: str | None = None,
    deliver: bool = False,
    ui: bool = True,
    telemetry: Telemetry | None = None,
) -> FastAPI:
    """The app, for callers who reach it as ``reach`` says: in-process, over loopback, or
    from the network. Access control decides what that allows (single-user local mode as
    ``local_user``, the OS user by default) and refuses NETWORK while no admin exists.

    ``deliver``: run webhook delivery and re-scans while the app runs (its lifespan): the
    server does; the in-process SDK does not, a short-lived process would only start and
    stop them.
    ``ui``: mount the web UI's pages. An in-process client speaks only the API, and
    importing the pages (their templates, forms and routes) is a third of its start.
    ``telemetry``: the server's metrics and request logs (else request ids only, and
    ``/metrics`` answers 404).
    """
    service.access.require_servable(reach)
    app = ModelyardApp(
        lifespan=_background(service) if deliver else None,
        title="Modelyard",
        version=__version__,
        description="A self-hosted ML model registry. References: NAME, NAME/N, NAME@ALIAS,"
        " NAME@sha256:HEX. Errors are RFC 9457 problem+json with a stable `code`.",
        docs_url=None,  # served below from the package's own copy of Swagger UI
        redoc_url=None,  # ReDoc would load its script from a CDN
    )
    if telemetry is not None:
        app.telemetry = telemetry
    app.state.service = service
    app.state.reach = reach
    app.state.local_user = local_user or os_user()
    app.state.resolve_bodies = {}
    problems.install(app)
    openapi.install(app)
    # First, so innermost: every middleware added after it (here or by whoever extends the
    # app: sessions, metrics, rate limits) wraps the fast resolve path too.
    app.add_middleware(FastResolve)
    app.add_middleware(FastRoutes)  # inside BodyLimit: bodies are bounded before it reads
    app.add_middleware(BodyLimit)
    app.own_middleware_installed()
    for module in (
        health,
        metrics,
        blobs,
        gc,
        models,
        versions,
        resolve,
        events,
        access,
        lifecycle,
        compare,
        checks,
        online,
        evidence,
        webhooks,
        signing,
        advisories,
        bundles,
        mlflow,
    ):
        app.include_router(module.router)
    _offline_docs(app)
    if ui:
        from modelyard import web

        web.install(app)
    return app


def _background(service: RegistryService) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The lifespan that runs the server's own work from start-up to shutdown: webhook
    delivery (in a process of its own), and ``catch_up`` on a thread (it ends when done,
    or at shutdown)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        deliverer = DeliveryProcess(service)
        deliverer.start()
        stop = threading.Event()
        rescan = threading.Thread(
            target=catch_up, args=(service, stop), name="modelyard-rescan", daemon=True
        )
        rescan.start()
        try:
            yield
        finally:
            stop.set()
            await asyncio.to_thread(rescan.join)
            await asyncio.to_thread(deliverer.stop)

    return lifespan


def catch_up(service: RegistryService, stop: threading.Event) -> None:
    """What a server does once it starts: scan again the versions whose scan verdict
    another allowlist reached, and finish evaluating the live versions against an OSV dump
    when a stop cut that short."""
    service.scans.rescan_stale(stop)
    service.advisories.reevaluate(stop)


def _offline_docs(app: FastAPI) -> None:
    """/docs with Swagger UI's assets from the installed package: it works without internet,
    and no page of the registry makes a browser fetch anything from elsewhere."""
    title = f"{app.title} API"
    redirect = "/docs/oauth2-redirect"

    async def docs(request: Request) -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=title,
            swagger_js_url=f"{_DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{_DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{_DOCS_ASSETS}/favicon-32x32.png",
            oauth2_redirect_url=redirect,
            # The default validator badge is an image from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    async def oauth2_redirect(request: Request) -> Response:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_route("/docs", docs, include_in_schema=False)
    app.add_route(redirect, oauth2_redirect, include_in_schema=False)
    app.mount(_DOCS_ASSETS, StaticFiles(directory=_swagger_ui_assets()), name="docs-assets")
