"""The registry in-process: the SDK over a local data directory, no server."""

from __future__ import annotations

import getpass
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from modelyard.config import Settings, open_service
from modelyard.domain.access import (
    Caller,
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


class LocalTransport:
    def __init__(self, data_dir: Path, database_url: str | None = None) -> None:
        self.service = open_service(Settings(data_dir=data_dir, database_url=database_url))
        self.identity = self.service.identity
        self.lifecycle = self.service.lifecycle
        # Whoever can open the data directory owns the registry: single-user local mode.
        try:
            self.caller = Caller.local_user(getpass.getuser())
        except (KeyError, OSError):
            self.caller = Caller.local_user("local")

    def missing_blobs(self, digests: list[str]) -> list[str]:
        return self.service.missing_blobs(self.caller, digests)

    def upload_blob(self, digest: str | None, chunks: Iterable[bytes], size: int) -> str:
        upload = self.service.begin_blob_upload(self.caller, digest)
        try:
            for chunk in chunks:
                upload.write(chunk)
        except BaseException:
            upload.abort()
            raise
        self.service.finish_blob_upload(upload)
        return upload.digest

    def read_file(self, version: Version, path: str, sha256: str) -> Iterator[bytes]:
        entry = self.service.file_entry(version.model, version.version, path, caller=self.caller)
        return self.service.read_blob(entry.sha256)

    def register_version(self, name: str, spec: NewVersion, inline: dict[str, bytes]) -> Version:
        return self.service.register_version(name, spec, caller=self.caller, inline=inline)

    def resolve(self, reference: str, as_of: datetime | None = None) -> Version:
        if as_of is not None:
            return self.lifecycle.resolve_as_of(self.caller, reference, as_of)
        return self.service.resolve(reference, caller=self.caller)

    def update_version(
        self,
        name: str,
        number: int,
        description: str | None,
        tags: dict[str, str | None] | None,
    ) -> Version:
        return self.service.update_version(
            name, number, caller=self.caller, description=description, tags=tags
        )

    def list_versions(
        self,
        name: str | None,
        filter: str | None,
        order_by: str | None,
        page_token: str | None,
        limit: int | None,
    ) -> Page[Version]:
        return self.service.list_versions(
            name,
            caller=self.caller,
            filter=filter,
            order_by=order_by,
            page_token=page_token,
            limit=limit,
        )

    def create_model(self, name: str, description: str, tags: dict[str, str]) -> Model:
        return self.service.create_model(
            name, caller=self.caller, description=description, tags=tags
        )

    def get_model(self, name: str) -> Model:
        return self.service.get_model(name, caller=self.caller)

    def update_model(
        self, name: str, description: str | None, tags: dict[str, str | None] | None
    ) -> Model:
        return self.service.update_model(
            name, caller=self.caller, description=description, tags=tags
        )

    def delete_model(self, name: str) -> None:
        self.service.delete_model(name, caller=self.caller)

    def list_models(
        self,
        filter: str | None,
        order_by: str | None,
        page_token: str | None,
        limit: int | None,
    ) -> Page[Model]:
        return self.service.list_models(
            caller=self.caller, filter=filter, order_by=order_by, page_token=page_token, limit=limit
        )

    def set_alias(self, name: str, alias: str, number: int) -> Version:
        return self.service.set_alias(name, alias, number, caller=self.caller)

    def delete_alias(self, name: str, alias: str) -> None:
        self.service.delete_alias(name, alias, caller=self.caller)

    def events(self, after: int, limit: int) -> list[Event]:
        return self.service.events(caller=self.caller, after=after, limit=limit)

    def whoami(self) -> Identity:
        return self.identity.whoami(self.caller)

    def create_principal(self, kind: PrincipalKind, name: str, description: str) -> Principal:
        return self.identity.create_principal(self.caller, name, kind, description)

    def principals(self, kind: PrincipalKind) -> list[Principal]:
        return self.identity.principals(self.caller, kind)

    def remove_principal(self, kind: PrincipalKind, name: str) -> None:
        if kind is PrincipalKind.TEAM:
            self.identity.delete_team(self.caller, name)
        else:
            self.identity.disable_principal(self.caller, name, kind)

    def set_membership(self, team: str, member: str, present: bool) -> Principal:
        return self.identity.set_membership(self.caller, team, member, present=present)

    def create_token(
        self,
        principal: str | None,
        name: str,
        expires_at: datetime | None,
        model: str | None,
        read_only: bool,
    ) -> NewToken:
        return self.identity.create_token(
            self.caller,
            principal=principal,
            name=name,
            expires_at=expires_at,
            model=model,
            read_only=read_only,
        )

    def tokens(self, principal: str | None) -> list[Token]:
        return self.identity.tokens(self.caller, principal)

    def revoke_token(self, token_id: str) -> Token:
        return self.identity.revoke_token(self.caller, token_id)

    def set_grant(
        self, principal: str, role: Role, model: str | None, kind: PrincipalKind | None
    ) -> Grant:
        return self.identity.set_grant(self.caller, principal, role, model=model, kind=kind)

    def revoke_grant(self, principal: str, model: str | None, kind: PrincipalKind | None) -> None:
        self.identity.revoke_grant(self.caller, principal, model=model, kind=kind)

    def grants(self, model: str | None) -> list[Grant]:
        return self.identity.grants(self.caller, model)

    def set_protected_aliases(self, model: str, aliases: list[str]) -> Model:
        return self.identity.set_protected_aliases(self.caller, model, aliases)

    # -- lifecycle ---------------------------------------------------------------------------

    def promote(
        self, name: str, number: int, to: str, comment: str, override: str | None
    ) -> Promotion:
        return self.lifecycle.promote(
            self.caller, f"{name}/{number}", to, comment=comment, override=override
        )

    def requests(self, model: str | None, status: str) -> list[TransitionRequest]:
        return self.lifecycle.requests(
            self.caller, model=model, status=None if status == "all" else status
        )

    def decide(self, request_id: int, decision: str, comment: str) -> TransitionRequest:
        decide = {
            "approve": self.lifecycle.approve,
            "reject": self.lifecycle.reject,
            "cancel": self.lifecycle.cancel,
        }[decision]
        return decide(self.caller, request_id, comment=comment)

    def rollback(self, name: str, stage: str, comment: str) -> Version:
        return self.lifecycle.rollback(self.caller, name, stage, comment=comment)

    def archive(self, name: str, number: int, restore: bool) -> Version:
        return self.lifecycle.archive(self.caller, f"{name}/{number}", restore=restore)

    def delete_version(self, name: str, number: int, hard: bool) -> None:
        self.lifecycle.delete_version(self.caller, name, number, hard=hard)

    def history(self, name: str) -> list[Event]:
        return self.lifecycle.history(self.caller, name)

    def policy(self, model: str | None) -> dict[str, Any]:
        return self.lifecycle.get_policy(self.caller, model)

    def apply_policy(self, model: str | None, text: str) -> dict[str, Any]:
        return self.lifecycle.apply_policy(self.caller, model, text)

    def close(self) -> None:
        self.service.close()

    # -- champion vs challenger ------------------------------------------------------------

    def compare(self, a: str, b: str) -> Comparison:
        return self.service.compare(a, b, caller=self.caller)

    def gate(
        self,
        challenger: str,
        against: str,
        metrics: list[str],
        min_delta: float,
        lower_is_better: bool,
    ) -> GateResult:
        return self.service.gate(
            challenger,
            against,
            caller=self.caller,
            metrics=metrics,
            min_delta=min_delta,
            lower_is_better=lower_is_better,
        )
