"""Mounting the UI on the app: its static assets and the routers of its pages."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from modelyard.web.pages import PAGE_ROUTERS

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Add the UI's pages and ``/static`` (assets shipped in the package: no CDN)."""
    for router in PAGE_ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
