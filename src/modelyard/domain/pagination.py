"""Opaque page tokens, signed by the server.

A token encodes the position and a fingerprint of the query it belongs to, so a token
reused with another filter or order is refused instead of silently returning nonsense. It
carries an HMAC under a key only the server holds, so a client cannot forge a position:
every token the server reads is one it issued, and its numbers are bounded all the same.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import TypeVar

from modelyard.domain.errors import InvalidInput
from modelyard.domain.models import Page

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Far past any registry, and offset + a page stays a 64-bit integer, as SQL's OFFSET needs.
MAX_OFFSET = 2**62
_MAC_BYTES = 16  # 128 bits: forging one takes 2**128 guesses


def _fingerprint(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:16]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _not_ours() -> InvalidInput:
    return InvalidInput("page_token is not a token this server issued", code="invalid_page_token")


class PageTokens:
    """Issues and reads page tokens under one key (``ServerKey.derive("page-tokens")``)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return _b64(digest[:_MAC_BYTES])

    def encode(self, offset: int, query: str) -> str:
        payload = _b64(json.dumps({"o": offset, "q": _fingerprint(query)}).encode())
        return f"{payload}.{self._mac(payload)}"

    def page(self, items: Sequence[T], limit: int, offset: int, query: str) -> Page[T]:
        """The page of ``items`` read at ``offset`` (one more than a page when a next page
        exists), with the token of the next one."""
        if len(items) > limit:
            return Page(list(items[:limit]), self.encode(offset + limit, query))
        return Page(list(items), None)

    def decode(self, token: str | None, query: str) -> int:
        """The offset a token stands for (0 for no token)."""
        if not token:
            return 0
        payload, _, mac = token.partition(".")
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            raise _not_ours()
        try:
            data = json.loads(_unb64(payload))
            offset = data["o"]
            fingerprint = data["q"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise _not_ours() from None
        if not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
            raise _not_ours()
        if fingerprint != _fingerprint(query):
            raise InvalidInput(
                "page_token belongs to a different query; start again without it",
                code="invalid_page_token",
            )
        return offset


def validate_page_size(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_PAGE_SIZE
    if limit < 1 or limit > MAX_PAGE_SIZE:
        raise InvalidInput(f"page size must be between 1 and {MAX_PAGE_SIZE}")
    return limit
