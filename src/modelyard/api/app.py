"""The FastAPI application factory."""

from __future__ import annotations

import getpass

from fastapi import FastAPI

from modelyard import __version__
from modelyard.api import problems
from modelyard.api.limits import BodyLimit
from modelyard.api.routes import blobs, events, health, models, resolve, versions
from modelyard.api.routes.resolve import ResolveFastPath
from modelyard.service import RegistryService


def create_app(service: RegistryService, *, actor: str | None = None) -> FastAPI:
    app = FastAPI(
        title="Modelyard",
        version=__version__,
        description="A self-hosted ML model registry. References: NAME, NAME/N, NAME@ALIAS,"
        " NAME@sha256:HEX. Errors are RFC 9457 problem+json with a stable `code`.",
    )
    app.state.service = service
    app.state.actor = actor or _local_user()
    app.state.resolve_bodies = {}
    problems.install(app)
    app.add_middleware(BodyLimit)
    app.add_middleware(ResolveFastPath)  # added last: runs first
    for module in (health, blobs, models, versions, resolve, events):
        app.include_router(module.router)
    return app


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"
