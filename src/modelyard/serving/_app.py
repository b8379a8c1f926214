"""The model server's HTTP side: a raw ASGI app (no framework: a prediction is a few
dozen microseconds of model, so routing and validation layers would be most of the cost).

``POST /predict`` takes ``{"records": [{...}, ...]}``, ``{"columns": {"name": [...]}}`` or
``{"instances": [[...], ...]}`` and answers ``{"predictions": [...], "model", "version"}``;
``GET /healthz``, ``/readyz``, ``/metadata`` and ``/metrics`` (Prometheus) say how it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from modelyard.domain.errors import ModelyardError
from modelyard.serving._batch import Batcher
from modelyard.serving._follower import Follower, Served
from modelyard.serving._metrics import ServingMetrics
from modelyard.serving._report import Reporter

log = logging.getLogger("modelyard.serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SHAPES = ("records", "columns", "instances")
JSON = [(b"content-type", b"application/json")]


class BadInput(Exception):
    """The request's fault: a 4xx naming the problem."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_input") -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


class ServingApp:
    def __init__(
        self,
        follower: Follower,
        metrics: ServingMetrics,
        *,
        reporter: Reporter | None = None,
        max_body: int = 16 * 1024 * 1024,
    ) -> None:
        self.follower = follower
        self.metrics = metrics
        self.reporter = reporter
        self.max_body = max_body
        self.batcher = Batcher()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/predict":
            if method != "POST":
                await _answer(send, 405, _error("method_not_allowed", "POST /predict"))
                return
            await self._predict(scope, receive, send)
            return
        route = _GETS.get(path)
        if route is None:
            await _answer(send, 404, _error("not_found", f"no route {path}; see /metadata"))
        elif method not in ("GET", "HEAD"):
            await _answer(send, 405, _error("method_not_allowed", f"GET {path}"))
        else:
            await route(self, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.follower.start()
                if self.reporter is not None:
                    self.reporter.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.reporter is not None:
                    self.reporter.stop()
                self.follower.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        served = self.follower.current  # read once: this request ends on this model
        if served is None:
            await _answer(send, 503, _error("not_ready", "no version loaded yet; see /readyz"))
            return
        try:
            body = await self._body(scope, receive)
            data = parse_input(body)
            if isinstance(data, list):  # records: batched with whatever else is waiting
                result = await self.batcher.predict(served, data)
            else:
                result = served.predictor.predict(data)
            answer = _encode_predictions(served, result)
        except BadInput as exc:
            await self._failed(send, served, started, exc.status, _error(exc.code, exc.message))
            return
        except ModelyardError as exc:  # the predictor's check of the data against the signature
            status = exc.status if 400 <= exc.status < 500 else 500
            await self._failed(send, served, started, status, _error(exc.code, exc.message))
            return
        except (ValueError, TypeError, KeyError) as exc:  # the model's own refusal of the data
            message = f"the model refused the input: {type(exc).__name__}: {exc}"
            await self._failed(send, served, started, 400, _error("invalid_input", message))
            return
        except Exception as exc:
            log.exception("predicting with %s", served.version.reference)
            message = f"the model failed: {type(exc).__name__}"
            await self._failed(send, served, started, 500, _error("model_failed", message))
            return
        await _answer(send, 200, answer)
        self._count(served, started, error=False)

    async def _failed(
        self, send: Send, served: Served, started: float, status: int, body: bytes
    ) -> None:
        await _answer(send, status, body)
        (served.client_errors if status < 500 else served.server_errors).inc()
        self._count(served, started, error=True)

    def _count(self, served: Served, started: float, *, error: bool) -> None:
        seconds = time.perf_counter() - started
        served.requests.inc()
        served.latency.observe(seconds)
        version = served.version
        self.metrics.record(version.model, version.version, seconds, error)

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        content_type = length = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
        if content_type is not None and not content_type.startswith(b"application/json"):
            raise BadInput(
                f"Content-Type {content_type.decode('latin-1')!r}: send application/json",
                415,
                "unsupported_media_type",
            )
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise BadInput(f"the body is over {self.max_body} bytes", 413, "too_large")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise BadInput(f"the body is over {self.max_body} bytes", 413, "too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _healthz(self, send: Send) -> None:
        await _answer(send, 200, b'{"status":"ok"}')

    async def _readyz(self, send: Send) -> None:
        served = self.follower.current
        if served is None:
            await _answer(send, 503, orjson.dumps({"ready": False, "reason": "no version loaded"}))
            return
        body = {"ready": True, "model": served.version.model, "version": served.version.version}
        await _answer(send, 200, orjson.dumps(body))

    async def _metadata(self, send: Send) -> None:
        served = self.follower.current
        if served is None:
            await _answer(send, 503, _error("not_ready", "no version loaded yet; see /readyz"))
            return
        version, predictor = served.version, served.predictor
        signature = predictor.signature
        body = {
            "reference": self.follower.reference,
            "pinned": self.follower.pin,
            "model": version.model,
            "version": version.version,
            "digest": version.manifest_digest,
            "flavor": predictor.flavor,
            "signature": signature.to_dict() if signature is not None else None,
            "loaded_at": served.loaded_at.isoformat(),
            "load_seconds": served.load_seconds,
            "following": "pinned" if self.follower.pin else _following(self.follower),
        }
        await _answer(send, 200, orjson.dumps(body))

    async def _metrics(self, send: Send) -> None:
        body, content_type = self.metrics.exposition()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


_GETS: dict[str, Callable[[ServingApp, Send], Awaitable[None]]] = {
    "/healthz": ServingApp._healthz,
    "/readyz": ServingApp._readyz,
    "/metadata": ServingApp._metadata,
    "/metrics": ServingApp._metrics,
}


def _following(follower: Follower) -> str:
    return "event stream" if follower.stream_up else "polling resolve"


def parse_input(body: bytes) -> Any:
    """The request's data in a form ``Predictor.predict`` takes: a list of records, a dict
    of columns, or an array of instances. Refuses, naming the problem, what is none."""
    if not body:
        raise BadInput(
            'an empty body: send {"records": [...]}, {"columns": {...}} or {"instances": [...]}'
        )
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadInput("the body must be a JSON object with one of: records, columns, instances")
    unknown = sorted(set(document) - set(SHAPES))
    if unknown:
        raise BadInput(f"unknown field(s) {unknown}: expected one of records, columns, instances")
    given = [shape for shape in SHAPES if shape in document]
    if len(given) != 1:
        raise BadInput(
            "expected exactly one of records, columns, instances"
            + (f"; got {given}" if given else "")
        )
    shape = given[0]
    value = document[shape]
    if shape == "records":
        return _records(value)
    if shape == "columns":
        return _columns(value)
    return _instances(value)


def _records(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise BadInput("records must be a non-empty list of objects")
    for index, record in enumerate(value):
        if not isinstance(record, dict):
            raise BadInput(f"records[{index}] is a {_kind(record)}, not an object")
    return value


def _columns(value: Any) -> dict[str, list[Any]]:
    if not isinstance(value, dict) or not value:
        raise BadInput("columns must be a non-empty object of name: [values]")
    lengths: dict[str, int] = {}
    for name, column in value.items():
        if not isinstance(column, list):
            raise BadInput(f"columns.{name} is a {_kind(column)}, not a list of values")
        lengths[name] = len(column)
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise BadInput(f"columns of different lengths: {described}")
    if not next(iter(lengths.values())):
        raise BadInput("columns hold no rows")
    return value


def _instances(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise BadInput("instances must be a non-empty list (rows, or tensors)")
    if all(isinstance(item, dict) for item in value):
        return value  # instances as objects: records
    import numpy  # the flavors' own dependency; not needed to parse the other shapes

    try:
        return numpy.asarray(value)
    except ValueError:
        lengths = sorted({len(row) for row in value if isinstance(row, list)})
        raise BadInput(f"instances must be rows of one length; got lengths {lengths}") from None


def _kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else "null"
    )


def _encode_predictions(served: Served, result: Any) -> bytes:
    if hasattr(result, "to_numpy"):  # pandas
        result = result.to_numpy()
    body = {"predictions": result, "model": served.version.model, "version": served.version.version}
    try:
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # an object array, or numbers numpy's fast path does not take
        body["predictions"] = result.tolist() if hasattr(result, "tolist") else list(result)
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _error(code: str, message: str) -> bytes:
    return orjson.dumps({"code": code, "message": message})


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": JSON})
    await send({"type": "http.response.body", "body": body})
