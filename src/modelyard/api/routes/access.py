"""Identity and access: whoami, users, teams, service accounts, tokens, grants."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import JSONResponse, Response

from modelyard.api.deps import caller, json_response, needs, service
from modelyard.api.schemas import (
    GrantIn,
    GrantOut,
    IdentityOut,
    ModelOut,
    NewTokenOut,
    PasswordIn,
    PrincipalIn,
    PrincipalOut,
    ProtectedAliasesIn,
    TokenIn,
    TokenOut,
)
from modelyard.domain.access import PrincipalKind, Role
from modelyard.service.identity import IdentityService

router = APIRouter(prefix="/api/v1", tags=["access"])

Who = Annotated[str, Path(max_length=64, description="A user, team or service account")]
ModelName = Annotated[str, Path(description="Model name")]


def identity(request: Request) -> IdentityService:
    return service(request).identity


def _items(values: list[Any]) -> Response:
    return json_response({"items": [v.as_dict() for v in values]})


@router.get("/whoami", response_model=IdentityOut, openapi_extra=needs("authenticated"))
def whoami(request: Request) -> Response:
    """Who the token (or, in local mode, the server's user) acts as, and what it may do."""
    return json_response(identity(request).whoami(caller(request)).as_dict())


# -- users, service accounts, teams: the same four routes each -------------------------------


def _principal_routes(kind: PrincipalKind) -> None:
    what = kind.label

    def create(body: PrincipalIn, request: Request) -> Response:
        made = identity(request).create_principal(
            caller(request), body.name, kind, body.description
        )
        return json_response(made.as_dict(), status=201)

    def listing(request: Request) -> Response:
        return _items(identity(request).principals(caller(request), kind))

    def show(name: Who, request: Request) -> Response:
        return json_response(identity(request).get_principal(caller(request), name, kind).as_dict())

    def remove(name: Who, request: Request) -> Response:
        if kind is PrincipalKind.TEAM:
            identity(request).delete_team(caller(request), name)
        else:
            identity(request).disable_principal(caller(request), name, kind)
        return Response(status_code=204)

    admin = needs("registry.admin")
    path = f"/{kind.collection}"
    key = kind.value
    _add(path, create, "POST", f"create_{key}", f"Create a {what}.", admin, 201, PrincipalOut)
    _add(path, listing, "GET", f"list_{key}s", f"List {what}s.", admin, 200, None)
    _add(f"{path}/{{name}}", show, "GET", f"get_{key}", f"One {what}.", admin, 200, PrincipalOut)
    gone = (
        "Delete a team with its memberships and grants."
        if kind is PrincipalKind.TEAM
        else f"Disable a {what} and revoke its tokens; the name stays taken (history uses it)."
    )
    _add(f"{path}/{{name}}", remove, "DELETE", f"delete_{key}", gone, admin, 204, None)


def _add(
    path: str,
    endpoint: Callable[..., Response],
    method: str,
    operation_id: str,
    summary: str,
    extra: dict[str, Any],
    status: int,
    model: type | None,
) -> None:
    router.add_api_route(
        path,
        endpoint,
        methods=[method],
        operation_id=operation_id,
        description=summary,
        openapi_extra=extra,
        status_code=status,
        response_model=model,
        response_class=Response if status == 204 else JSONResponse,
    )


for _kind_of_principal in PrincipalKind:
    _principal_routes(_kind_of_principal)


def _membership(present: bool) -> Callable[..., Response]:
    def change(name: Who, member: Who, request: Request) -> Response:
        team = identity(request).set_membership(caller(request), name, member, present=present)
        return json_response(team.as_dict())

    return change


for _present, _method in ((True, "PUT"), (False, "DELETE")):
    _add(
        "/teams/{name}/members/{member}",
        _membership(_present),
        _method,
        "add_team_member" if _present else "remove_team_member",
        "Add a user or service account to a team." if _present else "Remove a team member.",
        needs("registry.admin"),
        200,
        PrincipalOut,
    )


@router.put(
    "/users/{name}/password",
    status_code=204,
    response_class=Response,
    openapi_extra=needs("authenticated"),
)
def set_password(name: Who, body: PasswordIn, request: Request) -> Response:
    """Set a user's password, for signing in to the web UI: your own, or (admins) anyone's.

    Ends the user's web sessions. A token limited to a model or to reading cannot.
    """
    identity(request).set_password(caller(request), name, body.password)
    return Response(status_code=204)


# -- tokens -----------------------------------------------------------------------------------


@router.post(
    "/tokens", status_code=201, response_model=NewTokenOut, openapi_extra=needs("authenticated")
)
def create_token(body: TokenIn, request: Request) -> Response:
    """Create a token, for yourself or (admins) for a user or service account.

    The answer carries the secret once; the registry keeps only a salted hash of it.
    """
    made = identity(request).create_token(
        caller(request),
        principal=body.principal,
        name=body.name,
        expires_at=body.expires_at,
        model=body.model,
        read_only=body.read_only,
    )
    return json_response(made.as_dict(), status=201)


@router.get("/tokens", openapi_extra=needs("authenticated"))
def list_tokens(
    request: Request,
    principal: Annotated[
        str | None, Query(max_length=64, description="Whose tokens (admins); '*' for all.")
    ] = None,
) -> Response:
    """Your tokens (never their secrets); admins may ask for anyone's."""
    return _items(identity(request).tokens(caller(request), principal))


@router.delete("/tokens/{token_id}", response_model=TokenOut, openapi_extra=needs("authenticated"))
def revoke_token(token_id: Annotated[str, Path(max_length=64)], request: Request) -> Response:
    """Revoke one of your tokens; admins may revoke anyone's. It stops working at once."""
    return json_response(identity(request).revoke_token(caller(request), token_id).as_dict())


# -- grants -----------------------------------------------------------------------------------


@router.get("/grants", openapi_extra=needs("registry.admin"))
def list_grants(request: Request) -> Response:
    """Every grant, on every model and registry-wide."""
    return _items(identity(request).grants(caller(request)))


@router.get("/models/{name}/grants", openapi_extra=needs("model.view"))
def model_grants(name: ModelName, request: Request) -> Response:
    """Who holds which role on this model, and the registry-wide roles that apply too."""
    return _items(identity(request).grants(caller(request), name))


KindQuery = Annotated[
    str | None, Query(description="user, team or service_account: checked when given")
]


def _set_grant(request: Request, principal: str, body: GrantIn, model: str | None) -> Response:
    grant = identity(request).set_grant(
        caller(request),
        principal,
        Role.parse(body.role),
        model=model,
        kind=PrincipalKind.parse(body.kind),
    )
    return json_response(grant.as_dict())


def _revoke_grant(request: Request, principal: str, kind: str | None, model: str | None) -> None:
    identity(request).revoke_grant(
        caller(request), principal, model=model, kind=PrincipalKind.parse(kind)
    )


@router.put("/grants/{principal}", response_model=GrantOut, openapi_extra=needs("registry.admin"))
def set_registry_grant(principal: Who, body: GrantIn, request: Request) -> Response:
    """Grant a role registry-wide: the default on every model (admin only here)."""
    return _set_grant(request, principal, body, None)


@router.delete(
    "/grants/{principal}",
    status_code=204,
    response_class=Response,
    openapi_extra=needs("registry.admin"),
)
def revoke_registry_grant(principal: Who, request: Request, kind: KindQuery = None) -> Response:
    _revoke_grant(request, principal, kind, None)
    return Response(status_code=204)


@router.put(
    "/models/{name}/grants/{principal}",
    response_model=GrantOut,
    openapi_extra=needs("model.manage"),
)
def set_model_grant(name: ModelName, principal: Who, body: GrantIn, request: Request) -> Response:
    """Grant a role on one model (maintainers of it; admins on any model, even before it
    exists, so that a pipeline can register its first version)."""
    return _set_grant(request, principal, body, name)


@router.delete(
    "/models/{name}/grants/{principal}",
    status_code=204,
    response_class=Response,
    openapi_extra=needs("model.manage"),
)
def revoke_model_grant(
    name: ModelName, principal: Who, request: Request, kind: KindQuery = None
) -> Response:
    _revoke_grant(request, principal, kind, name)
    return Response(status_code=204)


@router.put(
    "/models/{name}/protected-aliases",
    response_model=ModelOut,
    openapi_extra=needs("model.manage"),
)
def set_protected_aliases(name: ModelName, body: ProtectedAliasesIn, request: Request) -> Response:
    """Which aliases only maintainers may move (default: champion and production)."""
    model = identity(request).set_protected_aliases(caller(request), name, body.aliases)
    return json_response(model.as_dict())
