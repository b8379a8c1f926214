"""The registry's public keys (anyone authenticated: they are not secret) and a version's
signatures (whoever sees the model), for clients to verify what they download."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from modelyard.api.deps import caller, json_response, needs, service
from modelyard.api.routes.models import Name, Number
from modelyard.api.schemas import KeyListOut, SignaturesOut

router = APIRouter(prefix="/api/v1", tags=["signatures"])


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
