"""The registry's public keys (anyone authenticated: they are not secret) and a version's
signatures (whoever sees the model), for clients to verify what they download; a user's
own keys and signatures (whoever may review the version signs it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from modelyard.api.deps import caller, json_response, needs, service
from modelyard.api.routes.models import Name, Number
from modelyard.api.schemas import (
    KeyIn,
    KeyListOut,
    PublishedKeyOut,
    SignatureIn,
    SignatureOut,
    SignaturesOut,
    TrustedKeyIn,
)

router = APIRouter(prefix="/api/v1", tags=["signatures"])
KeyId = Annotated[str, Path(pattern="^[0-9a-f]{64}$", description="sha256 of the DER key, hex")]


@router.get("/keys", response_model=KeyListOut, openapi_extra=needs("authenticated"))
def list_keys(request: Request) -> Response:
    """The public keys whose signatures the registry vouches for: its own (each it has
    signed with) and its users'. The key id is the sha256 of the DER public key."""
    keys = service(request).signing.keys(caller(request))
    return json_response({"items": [k.as_dict() for k in keys]})


@router.get(
    "/models/{name}/versions/{number}/signatures",
    response_model=SignaturesOut,
    openapi_extra=needs("model.view"),
)
def list_signatures(name: Name, number: Number, request: Request) -> Response:
    """The version's signatures (Sigstore bundles in the OpenSSF model-signing format) and
    whether its stage is protected."""
    found = service(request).signing.signatures(caller(request), name, number)
    return json_response(found.as_dict())


@router.post(
    "/keys",
    status_code=201,
    response_model=PublishedKeyOut,
    openapi_extra=needs("authenticated"),
)
def register_key(body: KeyIn, request: Request) -> Response:
    """Register a public key to yourself (a user or service account; not with a token
    limited to a model or to reading): the versions it signs count as signed by you."""
    key = service(request).signing.register_key(caller(request), body.pem)
    return json_response(key.as_dict(), status=201)


@router.post(
    "/keys/trusted",
    status_code=201,
    response_model=PublishedKeyOut,
    openapi_extra=needs("registry.admin"),
)
def trust_registry(body: TrustedKeyIn, request: Request) -> Response:
    """Trust another registry's public key under a name (admins): bundles it signs may be
    imported here, and its signatures verify downloads (published as ``registry:NAME``)."""
    key = service(request).signing.trust_registry(caller(request), body.name, body.pem)
    return json_response(key.as_dict(), status=201)


@router.delete(
    "/keys/trusted/{key_id}",
    status_code=204,
    response_class=Response,
    openapi_extra=needs("registry.admin"),
)
def distrust_registry(key_id: KeyId, request: Request) -> Response:
    """Stop trusting another registry's key (admins): its bundles are refused from now on
    and its signatures verify nothing here."""
    service(request).signing.distrust_registry(caller(request), key_id)
    return Response(status_code=204)


@router.post(
    "/models/{name}/versions/{number}/signatures",
    status_code=201,
    response_model=SignatureOut,
    openapi_extra=needs("model.approve"),
)
def add_signature(name: Name, number: Number, body: SignatureIn, request: Request) -> Response:
    """Add your signature of the version: checked against the keys registered to you and
    the version's files before it is kept (and journaled)."""
    kept = service(request).signing.add_signature(caller(request), name, number, body.bundle)
    return json_response(kept.as_dict(), status=201)


@router.post(
    "/models/{name}/versions/{number}/signatures/registry",
    response_model=SignatureOut,
    openapi_extra=needs("registry.admin"),
)
def sign_as_registry(name: Name, number: Number, request: Request) -> Response:
    """Have the registry sign a version already in a protected stage (promoted before it
    signed, or before its key changed); admins only. Idempotent for one key."""
    kept = service(request).signing.sign_as_registry(caller(request), name, number)
    return json_response(kept.as_dict())
