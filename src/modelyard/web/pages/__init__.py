"""One module per group of pages; each exposes ``router``, listed here once."""

from __future__ import annotations

from fastapi import APIRouter

PAGE_ROUTERS: list[APIRouter] = []
