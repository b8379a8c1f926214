"""The server's secret key, and the keys derived from it for each purpose.

One secret per registry (``MODELYARD_SECRET_KEY``, else ``secret.key`` in the data
directory); each use (page tokens today) gets its own key derived by HMAC, so a key leaked
from one purpose forges nothing in another.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

from modelyard.domain.errors import InvalidInput

KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class ServerKey:
    secret: bytes = field(repr=False)  # never printed, never logged

    def __post_init__(self) -> None:
        if len(self.secret) < KEY_BYTES:
            raise InvalidInput(
                f"the server's secret key must have at least {KEY_BYTES} bytes"
                f" (it has {len(self.secret)})",
                code="invalid_secret_key",
            )

    @classmethod
    def random(cls) -> ServerKey:
        """A key for this process only: what it signs does not survive a restart."""
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_text(cls, text: str) -> ServerKey:
        """``MODELYARD_SECRET_KEY``: any string of at least 32 characters."""
        return cls(text.encode())

    def derive(self, purpose: str) -> bytes:
        return hmac.new(self.secret, purpose.encode(), hashlib.sha256).digest()

    def fingerprint(self) -> str:
        """What tells two keys apart without telling anything of either: a key derived for
        that purpose alone, in hex (the servers of one database record and compare it)."""
        return self.derive("fingerprint").hex()
