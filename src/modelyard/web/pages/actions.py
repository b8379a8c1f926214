"""The forms of the model and version pages: promote, roll back, archive or restore,
delete, aliases, descriptions and tags. Each handler checks the form's CSRF token, then
calls the service, which decides who may (a refusal is the error page, status kept), and
sends the browser back with a notice."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from modelyard.domain.access import Permission
from modelyard.domain.errors import InvalidInput
from modelyard.domain.evidence import AttachmentIn
from modelyard.service import RegistryService
from modelyard.web.forms import (
    done,
    multiline,
    number,
    optional,
    posted,
    require_confirmation,
    text,
)
from modelyard.web.routing import page_router
from modelyard.web.session import web_caller

router = page_router()
MAX_TAG_LINES = 200
UPLOAD_CHUNK = 2 * 1024 * 1024  # the REST upload's buffer size


def _service(request: Request) -> RegistryService:
    service: RegistryService = request.app.state.service
    return service


def model_page(name: str) -> str:
    return f"/models/{quote(name, safe='')}"


def version_page(name: str, version: int) -> str:
    return f"{model_page(name)}/versions/{version}"


async def _run(function: Any, *args: Any, **kwargs: Any) -> Any:
    """The service blocks (database, blob store): off the event loop."""
    return await run_in_threadpool(function, *args, **kwargs)


@router.post("/models/{name}/versions/{version}/promote")
async def promote(request: Request, name: str, version: int) -> Response:
    form = await posted(request)
    promotion = await _run(
        _service(request).lifecycle.promote,
        web_caller(request),
        f"{name}/{version}",
        text(form, "stage", required=True),
        comment=text(form, "comment"),
    )
    if promotion.request is not None and promotion.status == "open":
        return done(f"/requests/{promotion.request.id}", "request_opened")
    return done(version_page(name, version), "promoted")


@router.post("/models/{name}/rollback")
async def rollback(request: Request, name: str) -> Response:
    form = await posted(request)
    stage = text(form, "stage", required=True)
    require_confirmation(form, f"roll {name}@{stage} back")
    await _run(
        _service(request).lifecycle.rollback,
        web_caller(request),
        name,
        stage,
        comment=text(form, "comment"),
    )
    return done(model_page(name), "rolled_back")


@router.post("/models/{name}/versions/{version}/archive")
async def archive(request: Request, name: str, version: int) -> Response:
    form = await posted(request)
    require_confirmation(form, f"archive {name}/{version}")
    await _run(_service(request).lifecycle.archive, web_caller(request), f"{name}/{version}")
    return done(version_page(name, version), "archived")


@router.post("/models/{name}/versions/{version}/restore")
async def restore(request: Request, name: str, version: int) -> Response:
    await posted(request)
    await _run(
        _service(request).lifecycle.archive,
        web_caller(request),
        f"{name}/{version}",
        restore=True,
    )
    return done(version_page(name, version), "restored")


@router.post("/models/{name}/versions/{version}/delete")
async def delete(request: Request, name: str, version: int) -> Response:
    """A soft delete: hidden everywhere, kept (a hard delete stays with the CLI and API)."""
    form = await posted(request)
    require_confirmation(form, f"delete {name}/{version}")
    await _run(
        _service(request).lifecycle.delete_version,
        web_caller(request),
        name,
        version,
        hard=False,
    )
    return done(model_page(name), "deleted")


@router.post("/models/{name}/aliases")
async def set_alias(request: Request, name: str) -> Response:
    """Set or move an alias; a protected one (champion, production...) asks to confirm."""
    form = await posted(request)
    service, caller = _service(request), web_caller(request)
    alias = text(form, "alias", required=True)
    target = number(form, "version")
    model = await _run(service.get_model, name, caller=caller)
    if alias in model.protected_aliases:
        require_confirmation(form, f"move the protected alias {name}@{alias}")
    await _run(service.set_alias, name, alias, target, caller=caller)
    return done(model_page(name), "alias_set")


@router.post("/models/{name}/aliases/{alias}/delete")
async def delete_alias(request: Request, name: str, alias: str) -> Response:
    form = await posted(request)
    require_confirmation(form, f"remove {name}@{alias}")
    await _run(_service(request).delete_alias, name, alias, caller=web_caller(request))
    return done(model_page(name), "alias_deleted")


@router.post("/models/{name}/versions/{version}/edit")
async def edit_version(request: Request, name: str, version: int) -> Response:
    """The description and the whole set of tags, as the form shows them."""
    form = await posted(request)
    service, caller = _service(request), web_caller(request)
    before = await _run(service.get_version, name, version, caller=caller)
    await _run(
        service.update_version,
        name,
        version,
        caller=caller,
        description=multiline(form, "description"),
        tags=tag_patch(before.tags, optional(form, "tags") or ""),
    )
    return done(version_page(name, version), "edited")


@router.post("/models/{name}/edit")
async def edit_model(request: Request, name: str) -> Response:
    form = await posted(request)
    service, caller = _service(request), web_caller(request)
    before = await _run(service.get_model, name, caller=caller)
    await _run(
        service.update_model,
        name,
        caller=caller,
        description=multiline(form, "description"),
        tags=tag_patch(before.tags, optional(form, "tags") or ""),
    )
    return done(model_page(name), "edited")


@router.post("/models/{name}/versions/{version}/card")
async def set_card(request: Request, name: str, version: int) -> Response:
    form = await posted(request)
    await _run(
        _service(request).evidence.set_card,
        web_caller(request),
        name,
        version,
        multiline(form, "card"),
    )
    return done(version_page(name, version), "card_saved")


@router.post("/models/{name}/versions/{version}/comments")
async def comment(request: Request, name: str, version: int) -> Response:
    form = await posted(request)
    await _run(
        _service(request).evidence.comment,
        web_caller(request),
        model=name,
        version=version,
        body=multiline(form, "body"),
    )
    return done(version_page(name, version), "commented")


@router.post("/models/{name}/versions/{version}/attachments")
async def attach(request: Request, name: str, version: int) -> Response:
    """Upload one file as evidence: its bytes stream into the blob store as a REST upload's
    do (which proves the caller holds them), then the service attaches that blob."""
    service = _service(request)
    caller = await _run(web_caller, request)
    # Before the body is read: who may not attach here sends no file to the server's disk.
    await _run(service.access.require, caller, Permission.ATTACH, name)
    form = await posted(request)
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise InvalidInput("choose a file to attach")
    path = text(form, "path") or upload.filename
    pending = await _run(service.begin_blob_upload, caller)
    try:
        while chunk := await upload.read(UPLOAD_CHUNK):
            await _run(pending.write, chunk)
    except BaseException:
        await _run(pending.abort)
        raise
    size, _ = await _run(service.finish_blob_upload, pending)
    await _run(
        service.evidence.attach,
        caller,
        name,
        version,
        [AttachmentIn(path, size, pending.digest)],
    )
    return done(version_page(name, version), "attached")


def tag_patch(current: dict[str, str], lines: str) -> dict[str, str | None]:
    """The patch that turns ``current`` into the tags written one ``key=value`` a line
    (a key left out is removed); the service validates keys and values."""
    wanted: dict[str, str] = {}
    for number_, line in enumerate(lines.splitlines()[: MAX_TAG_LINES + 1], start=1):
        if number_ > MAX_TAG_LINES:
            raise InvalidInput(f"at most {MAX_TAG_LINES} tags may be edited at once")
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"tag line {number_} must read key=value, not {line!r}")
        wanted[key.strip()] = value.strip()
    removed: dict[str, str | None] = {k: None for k in current if k not in wanted}
    return {**removed, **{k: v for k, v in wanted.items() if current.get(k) != v}}
