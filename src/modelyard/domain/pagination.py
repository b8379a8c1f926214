"""Opaque page tokens.

A token encodes the position and a fingerprint of the query it belongs to, so a token
reused with another filter or order is refused instead of silently returning nonsense.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from modelyard.domain.errors import InvalidInput

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Far past any registry, and offset + a page stays a 64-bit integer, as SQL's OFFSET needs.
MAX_OFFSET = 2**62


def _fingerprint(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:16]


def encode_token(offset: int, query: str) -> str:
    raw = json.dumps({"o": offset, "q": _fingerprint(query)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str | None, query: str) -> int:
    """The offset a token stands for (0 for no token)."""
    if not token:
        return 0
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded))
        offset = data["o"]
        fingerprint = data["q"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidInput(
            "page_token is not a token this server issued", code="invalid_page_token"
        ) from None
    if not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput(
            "page_token is not a token this server issued", code="invalid_page_token"
        )
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
