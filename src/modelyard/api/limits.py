"""Refuse oversized request bodies before they are read into memory, and bodies that are
not Unicode text.

Blob uploads, an OSV dump and bundles stream to disk and are exempt (their routes cap
them); every other body (JSON metadata) is capped.
"""

from __future__ import annotations

import re

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard.api.problems import problem

MAX_JSON_BODY = 8 * 1024 * 1024
_STREAMED = (
    "/api/v1/blobs/sha256:",
    "/api/v1/blobs/uploads",
    "/api/v1/advisories",
    "/api/v1/bundles",
)
# The UI's attachment form: a multipart file whose bytes go to the blob store as an upload's.
_STREAMED_FORM = re.compile(r"/models/[^/]+/versions/[0-9]+/attachments")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int = MAX_JSON_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or path.startswith(_STREAMED)
            or _STREAMED_FORM.fullmatch(path) is not None
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (RFC 9112 6.3): nothing to cap
            return
        # 18 digits at most go to int(): thousands of them raise, and cost, before refusing.
        if declared and declared.isdigit() and (len(declared) > 18 or int(declared) > self.limit):
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
        flaw = text_flaw(bytes(body))
        if flaw is not None:
            await problem(400, "malformed_json", "Invalid input", flaw, scope["path"])(
                scope, _no_receive, send
            )
            return
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


def text_flaw(body: bytes) -> str | None:
    """Why ``body`` cannot be JSON text (RFC 8259: UTF-8, valid Unicode), or None.

    Python's JSON parser accepts a lone surrogate (``"\\ud800"``, or its bytes), which no
    text can hold: every text field would carry it until storing or encoding it failed,
    as a 500. Checked once here for every field of every body, present and future. Only a
    body with a surrogate escape pays for a second parse (orjson refuses lone ones).
    """
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"request body is not UTF-8: byte {exc.start} cannot be decoded"
    if _SURROGATE_ESCAPE.search(body) is None:
        return None
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "surrogate" in str(exc):
            return (
                f"request body has a lone surrogate at position {exc.pos}: a string must"
                " be valid Unicode (a \\uD800-\\uDFFF escape only as half of a pair)"
            )
    return None  # valid, or malformed in a way the framework's parser reports


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
