"""One module per group of pages; each exposes ``router``, listed here once."""

from __future__ import annotations

from fastapi import APIRouter

from modelyard.web.pages import signin

PAGE_ROUTERS: list[APIRouter] = [signin.router]
