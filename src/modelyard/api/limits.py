"""Refuse oversized request bodies before they are read into memory.

Blob uploads stream to disk and are exempt; every other body (JSON metadata) is capped.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard.api.problems import problem

MAX_JSON_BODY = 8 * 1024 * 1024
_STREAMED = ("/api/v1/blobs/sha256:", "/api/v1/blobs/uploads")


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int = MAX_JSON_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_STREAMED):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, send)
            return
        # Read the (bounded) body here, so an oversized chunked body is refused with 413
        # instead of surfacing as an error inside the framework's body parsing.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(scope, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, replay_body(bytes(body), receive), send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        response = problem(
            413,
            "too_large",
            "Too large",
            f"request body is larger than {self.limit} bytes",
            scope["path"],
        )
        await response(scope, _no_receive, send)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app a body already read, then what the client sends."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
