"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from modelyard import __version__
from modelyard.api import problems
from modelyard.api.fast import FastRoutes
from modelyard.api.limits import BodyLimit
from modelyard.api.routes import (
    access,
    blobs,
    checks,
    compare,
    events,
    gc,
    health,
    lifecycle,
    models,
    resolve,
    versions,
)
from modelyard.api.routes.resolve import fast_resolve, is_fast_resolve
from modelyard.config import os_user
from modelyard.domain.access import Reach
from modelyard.service import RegistryService


class ModelyardApp(FastAPI):
    """FastAPI, except for a plain resolve, answered before any of the framework runs
    (its middleware stack and router cost more than the resolve itself)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if is_fast_resolve(scope):
            scope["app"] = self
            await fast_resolve(self, scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(service: RegistryService, *, reach: Reach, local_user: str | None = None) -> FastAPI:
    """The app, for callers who reach it as ``reach`` says: in-process, over loopback, or
    from the network. Access control decides what that allows (single-user local mode as
    ``local_user``, the OS user by default) and refuses NETWORK while no admin exists."""
    service.access.require_servable(reach)
    app = ModelyardApp(
        title="Modelyard",
        version=__version__,
        description="A self-hosted ML model registry. References: NAME, NAME/N, NAME@ALIAS,"
        " NAME@sha256:HEX. Errors are RFC 9457 problem+json with a stable `code`.",
    )
    app.state.service = service
    app.state.reach = reach
    app.state.local_user = local_user or os_user()
    app.state.resolve_bodies = {}
    problems.install(app)
    app.add_middleware(FastRoutes)  # inside BodyLimit: bodies are bounded before it reads
    app.add_middleware(BodyLimit)
    for module in (
        health,
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
    ):
        app.include_router(module.router)
    return app
