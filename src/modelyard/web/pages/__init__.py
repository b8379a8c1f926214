"""One module per group of pages; each exposes ``router``, listed here once."""

from __future__ import annotations

from fastapi import APIRouter

from modelyard.web.pages import actions, admin, history, requests, signin

PAGE_ROUTERS: list[APIRouter] = [
    requests.router,
    history.router,
    actions.router,
    admin.router,
    signin.router,
]
