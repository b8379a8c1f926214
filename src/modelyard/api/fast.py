"""The hottest routes after resolve, without FastAPI's router: registration, search, and
the MLflow API's reads that its client calls most.

FastAPI's routing, parameter solving and request telemetry cost about as much server CPU
as the service itself spends on a registration (~0.5 ms of ~1.5), and matching a path
against every route of the app costs more the later the route comes (MLflow's come
after the app's own: 0.66 ms a request more than a resolve). ``FastRoutes`` finds these
routes itself and calls their very endpoint functions, in a worker thread as FastAPI
would, with the parameters validated by the same declarations (the endpoint's
``Annotated`` query types, read from its signature; the route's pydantic body model). It
answers only requests the route would accept; anything else (a body that does not
validate, a missing, repeated or empty query parameter, another content type) goes on to
the framework untouched, which answers it, errors included, exactly as it always did: one
validation rule, and one way to fail it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin, get_type_hints
from urllib.parse import parse_qsl

from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from modelyard.api import mlflow_wire, problems
from modelyard.api.limits import replay_body
from modelyard.api.routes import mlflow
from modelyard.api.routes.models import register_version
from modelyard.api.routes.versions import search_versions
from modelyard.api.schemas import VersionIn
from modelyard.api.telemetry import ROUTE
from modelyard.domain.errors import ModelyardError

_MODELS = "/api/v1/models/"
_VERSIONS = "/versions"
_REGISTER = "/api/v1/models/{name}/versions"  # the template metrics and logs name


@dataclass(frozen=True, slots=True)
class _Parameter:
    """One query parameter of an endpoint, as its signature declares it."""

    adapter: TypeAdapter[Any]
    required: bool
    repeated: bool  # a list: every value given, in order


@dataclass(frozen=True, slots=True)
class _Get:
    """A GET route's endpoint (called with the request and its query parameters; in a
    worker thread unless it is a coroutine, as FastAPI calls it)."""

    endpoint: Callable[..., Any]
    parameters: dict[str, _Parameter]

    @classmethod
    def of(cls, endpoint: Callable[..., Any]) -> _Get:
        hints = get_type_hints(endpoint, include_extras=True)
        parameters = {}
        for name, declared in inspect.signature(endpoint).parameters.items():
            if name == "request":
                continue
            hint = hints[name]
            base = get_args(hint)[0] if get_origin(hint) is Annotated else hint
            repeated = list in (get_origin(base), *(get_origin(a) for a in get_args(base)))
            required = declared.default is inspect.Parameter.empty
            parameters[name] = _Parameter(TypeAdapter(hint), required, repeated)
        return cls(endpoint, parameters)

    def query(self, query_string: bytes) -> dict[str, Any] | None:
        """The endpoint's parameters, parsed as Starlette parses a query string; None
        unless each is given (when required), not empty, once (unless a list), and valid."""
        given: dict[str, list[str]] = {}
        for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
            if key in self.parameters:  # the route ignores parameters it does not declare
                given.setdefault(key, []).append(value)
        found: dict[str, Any] = {}
        for key, parameter in self.parameters.items():
            values = given.get(key)
            if values is None:
                if parameter.required:
                    return None
                continue
            if not all(values) or (len(values) > 1 and not parameter.repeated):
                return None
            try:
                found[key] = parameter.adapter.validate_python(
                    values if parameter.repeated else values[0]
                )
            except ValidationError:
                return None
        return found


# Path -> its GET route; the path is the template metrics and logs name.
_GETS = {
    "/api/v1/versions": _Get.of(search_versions),
    **{
        f"{prefix}/{path}": _Get.of(endpoint)
        for prefix in mlflow_wire.PREFIXES
        for path, endpoint in mlflow.FAST_GETS.items()
    },
}


class FastRoutes:
    """ASGI middleware answering ``POST /api/v1/models/{name}/versions`` and the GET
    routes of ``_GETS`` when the request is one their route takes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            method = scope["method"]
            get = _GETS.get(path) if method == "GET" else None
            if get is not None:
                await self._get(scope, receive, send, path, get)
                return
            if method == "POST" and path.startswith(_MODELS) and path.endswith(_VERSIONS):
                name = path[len(_MODELS) : -len(_VERSIONS)]
                if name and "/" not in name:
                    await self._register(scope, receive, send, name)
                    return
        await self.app(scope, receive, send)

    async def _get(self, scope: Scope, receive: Receive, send: Send, path: str, get: _Get) -> None:
        query = get.query(scope["query_string"])
        if query is None:
            await self.app(scope, receive, send)
            return
        scope[ROUTE] = path
        request = Request(scope)
        await _answer(request, send, get.endpoint, request, **query)

    async def _register(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        if _header(scope, b"content-type") != b"application/json":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away
        try:
            version = VersionIn.model_validate(json.loads(body))
        except (ValueError, ValidationError, RecursionError):
            await self.app(scope, replay_body(body, receive), send)
            return
        scope[ROUTE] = _REGISTER
        request = Request(scope)
        await _answer(request, send, register_version, name, version, request)


async def _answer(
    request: Request, send: Send, endpoint: Callable[..., Any], *args: Any, **kwargs: Any
) -> None:
    """Call an endpoint as FastAPI would (a coroutine on the event loop, else in a worker
    thread) and send its response; domain errors are problem+json, as the app's handler
    makes them. Anything else propagates to the app's error middleware, as from a route."""
    try:
        if inspect.iscoroutinefunction(endpoint):
            response = await endpoint(*args, **kwargs)
        else:
            response = await run_in_threadpool(endpoint, *args, **kwargs)
    except ModelyardError as exc:
        response = problems.from_error(exc, request.url.path)
    await response(request.scope, request.receive, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            found: bytes = value
            return found
    return None


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (BodyLimit, outside, has bounded it); None on a disconnect."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
