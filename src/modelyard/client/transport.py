"""What the SDK needs from a registry, whether it is a server over HTTP or a local directory.

Two implementations: ``HttpTransport`` (REST API) and ``LocalTransport`` (the service
in-process). Everything else the SDK does (hashing, capture, progress, atomic and
verified downloads) is written once, in ``Registry``, on top of this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, Protocol

from modelyard.domain.access import (
    Grant,
    Identity,
    NewToken,
    Principal,
    PrincipalKind,
    Role,
    Token,
)
from modelyard.domain.comparison import Comparison, GateResult
from modelyard.domain.lifecycle import Promotion, TransitionRequest
from modelyard.domain.models import Event, Model, Page, Version
from modelyard.domain.versions import NewVersion

Advance = Callable[[int], None]


class Transport(Protocol):
    def missing_blobs(self, digests: list[str]) -> list[str]: ...

    def upload_blob(self, digest: str | None, chunks: Iterable[bytes], size: int) -> str:
        """Upload ``size`` bytes; None for ``digest`` lets the registry name the blob.

        Returns the digest the registry stored the bytes under.
        """
        ...

    def read_file(self, version: Version, path: str, sha256: str) -> Iterator[bytes]: ...

    def register_version(self, name: str, spec: NewVersion, inline: dict[str, bytes]) -> Version:
        """Register; ``inline`` carries the bytes of small files by digest."""
        ...

    def resolve(self, reference: str, as_of: datetime | None = None) -> Version: ...

    def update_version(
        self,
        name: str,
        number: int,
        description: str | None,
        tags: dict[str, str | None] | None,
    ) -> Version: ...

    def list_versions(
        self,
        name: str | None,
        filter: str | None,
        order_by: str | None,
        page_token: str | None,
        limit: int | None,
    ) -> Page[Version]: ...

    def create_model(self, name: str, description: str, tags: dict[str, str]) -> Model: ...

    def get_model(self, name: str) -> Model: ...

    def update_model(
        self, name: str, description: str | None, tags: dict[str, str | None] | None
    ) -> Model: ...

    def delete_model(self, name: str) -> None: ...

    def list_models(
        self,
        filter: str | None,
        order_by: str | None,
        page_token: str | None,
        limit: int | None,
    ) -> Page[Model]: ...

    def set_alias(self, name: str, alias: str, number: int) -> Version: ...

    def delete_alias(self, name: str, alias: str) -> None: ...

    def events(self, after: int, limit: int) -> list[Event]: ...

    # -- identity and access ---------------------------------------------------------------

    def whoami(self) -> Identity: ...

    def create_principal(self, kind: PrincipalKind, name: str, description: str) -> Principal: ...

    def principals(self, kind: PrincipalKind) -> list[Principal]: ...

    def remove_principal(self, kind: PrincipalKind, name: str) -> None:
        """Disable a user or service account; delete a team."""
        ...

    def set_membership(self, team: str, member: str, present: bool) -> Principal: ...

    def create_token(
        self,
        principal: str | None,
        name: str,
        expires_at: datetime | None,
        model: str | None,
        read_only: bool,
    ) -> NewToken: ...

    def tokens(self, principal: str | None) -> list[Token]: ...

    def revoke_token(self, token_id: str) -> Token: ...

    def set_grant(
        self, principal: str, role: Role, model: str | None, kind: PrincipalKind | None
    ) -> Grant: ...

    def revoke_grant(
        self, principal: str, model: str | None, kind: PrincipalKind | None
    ) -> None: ...

    def grants(self, model: str | None) -> list[Grant]: ...

    def set_protected_aliases(self, model: str, aliases: list[str]) -> Model: ...

    # -- lifecycle ---------------------------------------------------------------------------

    def promote(
        self, name: str, number: int, to: str, comment: str, override: str | None
    ) -> Promotion: ...

    def requests(self, model: str | None, status: str) -> list[TransitionRequest]: ...

    def decide(self, request_id: int, decision: str, comment: str) -> TransitionRequest:
        """``decision``: approve, reject or cancel."""
        ...

    def rollback(self, name: str, stage: str, comment: str) -> Version: ...

    def archive(self, name: str, number: int, restore: bool) -> Version: ...

    def delete_version(self, name: str, number: int, hard: bool) -> None: ...

    def history(self, name: str) -> list[Event]: ...

    def policy(self, model: str | None) -> dict[str, Any]: ...

    def apply_policy(self, model: str | None, text: str) -> dict[str, Any]: ...

    def close(self) -> None: ...

    # -- champion vs challenger ------------------------------------------------------------

    def compare(self, a: str, b: str) -> Comparison: ...

    def gate(
        self,
        challenger: str,
        against: str,
        metrics: list[str],
        min_delta: float,
        lower_is_better: bool,
    ) -> GateResult: ...
