"""One module per group of pages; each exposes ``router``, listed here once."""

from __future__ import annotations

from fastapi import APIRouter

from modelyard.web.pages import (
    actions,
    admin,
    attachments,
    compare,
    history,
    models,
    requests,
    signin,
    versions,
    webhooks,
)

PAGE_ROUTERS: list[APIRouter] = [
    models.router,
    versions.router,
    attachments.router,
    compare.router,
    requests.router,
    history.router,
    actions.router,
    admin.router,
    webhooks.router,
    signin.router,
]
