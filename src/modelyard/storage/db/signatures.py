"""Queries over signing keys and versions' signatures, mixed into ``Reader`` and ``Writer``
(store.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import Connection, delete, insert, select

from modelyard.domain.models import utc_from_us
from modelyard.domain.signing import REGISTRY_SIGNER, PublishedKey, Signature, registry_owner
from modelyard.storage.db.tables import principals, signing_keys, version_signatures


class SignaturesReader:
    conn: Connection

    def signing_keys(self) -> list[PublishedKey]:
        """Every key whose signatures count: the registry's first, the other registries'
        an admin trusts (``registry:NAME``), then its users' by owner (a disabled user's
        keys no longer count, nor sign)."""
        stmt = (
            select(
                signing_keys.c.key_id,
                signing_keys.c.pem,
                principals.c.name,
                signing_keys.c.registry,
                signing_keys.c.created_at,
            )
            .outerjoin(principals, signing_keys.c.principal_id == principals.c.id)
            .where(principals.c.disabled_at.is_(None))
        )
        keys = [
            PublishedKey(
                key_id,
                pem,
                owner or (registry_owner(registry) if registry else REGISTRY_SIGNER),
                utc_from_us(created_at),
            )
            for key_id, pem, owner, registry, created_at in self.conn.execute(stmt)
        ]
        return sorted(
            keys,
            key=lambda k: (
                k.owner != REGISTRY_SIGNER,
                not k.speaks_for_a_registry,
                k.owner,
                k.key_id,
            ),
        )

    def trusted_registry_keys(self) -> dict[str, tuple[str, str]]:
        """key id -> (the name it is trusted under, PEM) of the other registries' keys."""
        stmt = select(signing_keys.c.key_id, signing_keys.c.registry, signing_keys.c.pem).where(
            signing_keys.c.registry.is_not(None)
        )
        return {key_id: (name, pem) for key_id, name, pem in self.conn.execute(stmt)}

    def signing_key_owner(self, key_id: str) -> tuple[bool, int | None]:
        """(whether the key is registered, its principal's id: None for the registry's)."""
        row = self.conn.execute(
            select(signing_keys.c.principal_id).where(signing_keys.c.key_id == key_id)
        ).first()
        return (False, None) if row is None else (True, row[0])

    def principal_keys(self, principal_id: int) -> list[str]:
        """The PEMs of the keys registered to a principal."""
        stmt = select(signing_keys.c.pem).where(signing_keys.c.principal_id == principal_id)
        return list(self.conn.execute(stmt).scalars())

    def user_keys(self, key_ids: Sequence[str]) -> dict[str, tuple[int, str, str]]:
        """key id -> (principal id, principal name, PEM) of those of ``key_ids`` registered
        to a principal that is not disabled."""
        stmt = (
            select(signing_keys.c.key_id, principals.c.id, principals.c.name, signing_keys.c.pem)
            .join(principals, signing_keys.c.principal_id == principals.c.id)
            .where(signing_keys.c.key_id.in_(list(key_ids)), principals.c.disabled_at.is_(None))
        )
        return {key_id: (pid, name, pem) for key_id, pid, name, pem in self.conn.execute(stmt)}

    def signatures(self, version_id: int) -> list[Signature]:
        stmt = (
            select(
                version_signatures.c.key_id,
                version_signatures.c.signer,
                version_signatures.c.bundle,
                version_signatures.c.created_at,
                version_signatures.c.origin,
            )
            .where(version_signatures.c.version_id == version_id)
            .order_by(version_signatures.c.created_at, version_signatures.c.key_id)
        )
        return [
            Signature(key_id, signer, json.loads(bundle), utc_from_us(created_at), origin)
            for key_id, signer, bundle, created_at, origin in self.conn.execute(stmt)
        ]


class SignaturesWriter:
    conn: Connection

    def insert_signing_key(
        self,
        key_id: str,
        pem: str,
        principal_id: int | None,
        now: int,
        registry: str | None = None,
    ) -> None:
        """``registry``: the name another registry's key is trusted under."""
        self.conn.execute(
            insert(signing_keys).values(
                key_id=key_id, pem=pem, principal_id=principal_id, created_at=now, registry=registry
            )
        )

    def delete_registry_key(self, key_id: str) -> None:
        self.conn.execute(
            delete(signing_keys).where(
                signing_keys.c.key_id == key_id, signing_keys.c.registry.is_not(None)
            )
        )

    def insert_signature(self, version_id: int, signature: Signature, now: int) -> None:
        self.conn.execute(
            insert(version_signatures).values(
                version_id=version_id,
                key_id=signature.key_id,
                signer=signature.signer,
                bundle=json.dumps(signature.bundle, separators=(",", ":")),
                created_at=now,
                origin=signature.origin,
            )
        )
