"""Administration (admins): users, teams and their members, service accounts, tokens and
grants, through IdentityService, which refuses anyone else (the page is then a 403)."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from modelyard.domain.access import PrincipalKind, Role
from modelyard.domain.errors import InvalidInput
from modelyard.service import RegistryService
from modelyard.web.forms import done, moment, optional, posted, require_confirmation, text
from modelyard.web.render import page
from modelyard.web.routing import page_router
from modelyard.web.session import web_caller

router = page_router()


def _service(request: Request) -> RegistryService:
    service: RegistryService = request.app.state.service
    return service


async def _run(function: Any, *args: Any, **kwargs: Any) -> Any:
    return await run_in_threadpool(function, *args, **kwargs)


def _kind(form: Any) -> PrincipalKind:
    kind = PrincipalKind.parse(text(form, "kind", required=True))
    assert kind is not None
    return kind


@router.get("/admin")
def admin(request: Request) -> Response:
    caller = web_caller(request)
    identity = _service(request).identity
    return page(
        request,
        "admin.html",
        users=identity.principals(caller, PrincipalKind.USER),
        teams=identity.principals(caller, PrincipalKind.TEAM),
        accounts=identity.principals(caller, PrincipalKind.SERVICE_ACCOUNT),
        tokens=identity.tokens(caller, "*"),
        grants=identity.grants(caller),
        roles=[role.label for role in Role],
    )


@router.post("/admin/principals")
async def create_principal(request: Request) -> Response:
    form = await posted(request)
    await _run(
        _service(request).identity.create_principal,
        web_caller(request),
        text(form, "name", required=True),
        _kind(form),
        text(form, "description"),
    )
    return done("/admin", "created")


@router.post("/admin/principals/{name}/disable")
async def disable(request: Request, name: str) -> Response:
    form = await posted(request)
    require_confirmation(form, f"disable {name}")
    await _run(_service(request).identity.disable_principal, web_caller(request), name, _kind(form))
    return done("/admin", "disabled")


@router.post("/admin/users/{name}/password")
async def set_password(request: Request, name: str) -> Response:
    """An admin sets a user's password (which ends that user's web sessions)."""
    form = await posted(request)
    password = form.get("password")
    if not isinstance(password, str) or password != form.get("repeat"):
        raise InvalidInput("the two passwords differ: type the same one twice")
    await _run(_service(request).identity.set_password, web_caller(request), name, password)
    return done("/admin", "password_set")


@router.post("/admin/teams/{name}/delete")
async def delete_team(request: Request, name: str) -> Response:
    form = await posted(request)
    require_confirmation(form, f"delete team {name}")
    await _run(_service(request).identity.delete_team, web_caller(request), name)
    return done("/admin", "team_deleted")


@router.post("/admin/teams/{name}/members")
async def membership(request: Request, name: str) -> Response:
    form = await posted(request)
    action = text(form, "action", required=True)
    if action not in ("add", "remove"):
        raise InvalidInput("a membership is added or removed")
    await _run(
        _service(request).identity.set_membership,
        web_caller(request),
        name,
        text(form, "member", required=True),
        present=action == "add",
    )
    return done("/admin", "member_added" if action == "add" else "member_removed")


@router.post("/admin/tokens")
async def create_token(request: Request) -> Response:
    """The new secret is on this response only: it is stored hashed, never shown again
    (and the page, like every page, is ``Cache-Control: no-store``)."""
    form = await posted(request)
    minted = await _run(
        _service(request).identity.create_token,
        web_caller(request),
        principal=text(form, "principal", required=True),
        name=text(form, "name"),
        expires_at=moment(optional(form, "expires"), "the expiry"),
        model=optional(form, "model"),
        read_only=form.get("read_only") == "yes",
    )
    return page(request, "admin_token.html", status=201, minted=minted)


@router.post("/admin/tokens/{token_id}/revoke")
async def revoke_token(request: Request, token_id: str) -> Response:
    form = await posted(request)
    require_confirmation(form, f"revoke token {token_id}")
    await _run(_service(request).identity.revoke_token, web_caller(request), token_id)
    return done("/admin", "token_revoked")


@router.post("/admin/grants")
async def set_grant(request: Request) -> Response:
    form = await posted(request)
    await _run(
        _service(request).identity.set_grant,
        web_caller(request),
        text(form, "principal", required=True),
        Role.parse(text(form, "role", required=True)),
        model=optional(form, "model"),
    )
    return done("/admin", "grant_set")


@router.post("/admin/grants/remove")
async def remove_grant(request: Request) -> Response:
    form = await posted(request)
    principal = text(form, "principal", required=True)
    require_confirmation(form, f"remove {principal}'s role")
    await _run(
        _service(request).identity.revoke_grant,
        web_caller(request),
        principal,
        model=optional(form, "model"),
    )
    return done("/admin", "grant_removed")
