"""One module per group of pages; each exposes ``router``, listed here once."""

from __future__ import annotations

from fastapi import APIRouter

from modelyard.web.pages import compare, models, versions

PAGE_ROUTERS: list[APIRouter] = [models.router, versions.router, compare.router]
