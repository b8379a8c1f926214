"""Signatures as use cases: the registry signs what enters a protected stage, publishes the
public keys, and lists a version's signatures for clients to verify; users register keys
and add signatures of their own, which policies' ``signed_by`` count.

The registry's key is an ECDSA P-256 key (``config.signing_key``: MODELYARD_SIGNING_KEY,
else the data directory's signing.key, made 0600 on first use), loaded the first time it
is needed. Each key it has signed with is kept in ``signing_keys``, so that signatures
made before a key change still verify; signatures are kept with their version and
journaled (``version.signed``) in the transaction that moves the version.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from modelyard.domain.access import Caller, Permission
from modelyard.domain.errors import Conflict, Forbidden, NotFound, SignatureInvalid
from modelyard.domain.events import KeyDistrusted, KeyRegistered, KeyTrusted, VersionSigned
from modelyard.domain.lifecycle import Policy
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import Version, utc_from_us
from modelyard.domain.names import validate_model_name
from modelyard.domain.signing import (
    REGISTRY_SIGNER,
    PublicKey,
    PublishedKey,
    Signature,
    SigningKey,
    VersionSignatures,
    check_manifest,
    open_bundle,
    payload_digest,
    registry_owner,
)
from modelyard.service.access import AccessControl
from modelyard.service.checks import version_id_or_404
from modelyard.storage.db.store import Database, Reader, Writer, now_us


class SigningService:
    def __init__(
        self,
        db: Database,
        access: AccessControl,
        policy_in_force: Callable[[Reader, str], tuple[Policy, int | None]],
    ) -> None:
        self.db = db
        self.access = access
        self._policy_in_force = policy_in_force
        # Where the registry's key comes from; open_service names the data directory's.
        # Without it (a service built directly, in tests) a key for this process only.
        self.load_key: Callable[[], SigningKey] = SigningKey.generate
        self._key: SigningKey | None = None
        self._lock = threading.Lock()

    @property
    def key(self) -> SigningKey:
        """The registry's signing key, loaded (or made) on first use."""
        with self._lock:
            if self._key is None:
                self._key = self.load_key()
            return self._key

    def keys(self, caller: Caller) -> list[PublishedKey]:
        """Every key whose signatures the registry vouches for: its own (the current one
        listed even before it has signed anything) and its users'. Public keys are not
        secret: any authenticated caller may read them, as the API's edge requires."""
        with self.db.read() as tx:
            keys = tx.signing_keys()
        current = self.key.public
        if all(k.key_id != current.key_id for k in keys):
            keys.insert(0, PublishedKey(current.key_id, current.pem, REGISTRY_SIGNER, None))
        return keys

    def signatures(self, caller: Caller, model: str, number: int) -> VersionSignatures:
        """A version's signatures, and whether its stage is protected (whoever sees the
        model): what a client needs to verify a download."""
        validate_model_name(model)
        self.access.require(caller, Permission.VIEW, model)
        with self.db.read() as tx:
            version_id = version_id_or_404(tx, model, number)
            version = tx.load_versions([version_id])[0]
            return VersionSignatures(
                version.reference,
                version.stage,
                self._protected(tx, version),
                tuple(tx.signatures(version_id)),
            )

    def sign_on_entry(
        self, tx: Writer, caller: Caller, version_id: int, version: Version, stage: str, now: int
    ) -> None:
        """Sign a version entering a protected stage with the registry's key, unless that
        key signed it already (its manifest never changes); in the transaction that moves
        it, journaled as ``version.signed``."""
        key = self.key
        if any(s.key_id == key.public.key_id for s in tx.signatures(version_id)):
            return
        if not tx.signing_key_owner(key.public.key_id)[0]:
            tx.insert_signing_key(key.public.key_id, key.public.pem, None, now)
        bundle = key.sign(version.reference, version.files)
        signature = Signature(key.public.key_id, REGISTRY_SIGNER, bundle, utc_from_us(now))
        tx.insert_signature(version_id, signature, now)
        signed = VersionSigned(
            version.model,
            version.version,
            signer=REGISTRY_SIGNER,
            key_id=key.public.key_id,
            payload_sha256=payload_digest(bundle),
            stage=stage,
        )
        tx.append_event(caller, signed, now=now)

    def sign_as_registry(self, caller: Caller, model: str, number: int) -> Signature:
        """Sign a version that is in a protected stage already (one promoted before the
        registry signed, or before its key changed): admins only. A version the current
        key signed is left as it is."""
        validate_model_name(model)
        self.access.require(caller, Permission.VIEW, model)
        self.access.require(caller, Permission.ADMIN)
        with self.db.write() as tx:
            version_id = version_id_or_404(tx, model, number)
            version = tx.load_versions([version_id])[0]
            if not self._protected(tx, version):
                raise Conflict(
                    f"{version.reference} is in {version.stage}, which is not protected:"
                    " the registry signs a version when it enters a protected stage",
                    code="not_protected",
                )
            self.sign_on_entry(tx, caller, version_id, version, version.stage, now_us())
            key_id = self.key.public.key_id
            return next(s for s in tx.signatures(version_id) if s.key_id == key_id)

    def register_key(self, caller: Caller, pem: str) -> PublishedKey:
        """Register a public key to the caller (a user or service account, with a token
        that is not narrowed): what it signs counts as signed by them."""
        key = PublicKey.from_pem(pem)
        if caller.principal_id is None or caller.scope_model or caller.read_only:
            raise Forbidden(
                "a key is registered to a user or service account, with a token of theirs that"
                " is limited to no model and not to reading (local mode has no users:"
                " 'modelyard admin create' makes the first)",
                permission="authenticated",
            )
        with self.db.write() as tx:
            known, owner = tx.signing_key_owner(key.key_id)
            if known:
                whose = "yours" if owner == caller.principal_id else "another's"
                raise Conflict(f"key {key.key_id} is registered already ({whose})")
            now = now_us()
            tx.insert_signing_key(key.key_id, key.pem, caller.principal_id, now)
            tx.append_event(caller, KeyRegistered(caller.name, key.key_id), now=now)
        return PublishedKey(key.key_id, key.pem, caller.name, utc_from_us(now))

    def trust_registry(self, caller: Caller, name: str, pem: str) -> PublishedKey:
        """Trust another registry's public key under ``name`` (admins): bundles it signs
        may be imported here, and its signatures verify downloads, as this registry's own
        do. Journaled ``key.trusted``."""
        self.access.require(caller, Permission.ADMIN)
        owner = registry_owner(name)
        key = PublicKey.from_pem(pem)
        with self.db.write() as tx:
            known, principal_id = tx.signing_key_owner(key.key_id)
            if known:
                whose = "a user's" if principal_id is not None else "a registry's"
                raise Conflict(f"key {key.key_id} is known here already ({whose})")
            now = now_us()
            tx.insert_signing_key(key.key_id, key.pem, None, now, registry=name)
            tx.append_event(caller, KeyTrusted(name, key.key_id), now=now)
        return PublishedKey(key.key_id, key.pem, owner, utc_from_us(now))

    def distrust_registry(self, caller: Caller, key_id: str) -> None:
        """Stop trusting another registry's key (admins): its bundles are refused and its
        signatures verify nothing from now on. Journaled ``key.distrusted``."""
        self.access.require(caller, Permission.ADMIN)
        with self.db.write() as tx:
            found = tx.trusted_registry_keys().get(key_id)
            if found is None:
                raise NotFound(
                    f"no other registry's key {key_id[:80]!r} is trusted here",
                    code="key_not_found",
                )
            tx.delete_registry_key(key_id)
            tx.append_event(caller, KeyDistrusted(found[0], key_id), now=now_us())

    def trusted_registries(self, tx: Reader) -> dict[str, tuple[str, PublicKey]]:
        """key id -> (the name it is trusted under, the key) of the other registries whose
        bundles may be imported here."""
        return {
            key_id: (name, PublicKey.from_pem(pem))
            for key_id, (name, pem) in tx.trusted_registry_keys().items()
        }

    def add_signature(
        self, caller: Caller, model: str, number: int, bundle: Mapping[str, Any]
    ) -> Signature:
        """Keep a user's signature of a version, checked first: by a key registered to the
        caller, of exactly the version's files. Whoever may review the version may sign it
        (as for approvals, a policy says whose signatures count)."""
        validate_model_name(model)
        self.access.require(caller, Permission.APPROVE, model)
        with self.db.write() as tx:
            version_id = version_id_or_404(tx, model, number)
            version = tx.load_versions([version_id])[0]
            mine = tx.principal_keys(caller.principal_id) if caller.principal_id else []
            if not mine:
                raise SignatureInvalid(
                    f"{caller.name} has no registered key to sign with"
                    " (modelyard keys add KEY.pem registers one)"
                )
            signed = open_bundle(bundle, [PublicKey.from_pem(pem) for pem in mine])
            check_manifest(signed, version.files, version.reference)
            if any(s.key_id == signed.key_id for s in tx.signatures(version_id)):
                raise Conflict(f"{version.reference} is signed by key {signed.key_id} already")
            now = now_us()
            signature = Signature(signed.key_id, caller.name, dict(bundle), utc_from_us(now))
            tx.insert_signature(version_id, signature, now)
            event = VersionSigned(
                model, number, caller.name, signed.key_id, payload_digest(bundle), None
            )
            tx.append_event(caller, event, now=now)
            return signature

    def signers(self, tx: Reader, version_id: int, files: Sequence[FileEntry]) -> frozenset[str]:
        """Who vouched for a version by signature (for policies' ``signed_by``): each
        principal whose registered key signed exactly ``files``, checked again now, and
        the teams each belongs to. The registry's own signature is no one's."""
        signatures = tx.signatures(version_id)
        keys = tx.user_keys([s.key_id for s in signatures])
        names: set[str] = set()
        for signature in signatures:
            if signature.key_id not in keys or signature.origin is not None:
                continue  # not a user's here, or carried from another registry
            principal_id, name, pem = keys[signature.key_id]
            try:
                signed = open_bundle(signature.bundle, [PublicKey.from_pem(pem)])
                check_manifest(signed, files, name)
            except SignatureInvalid:
                continue  # altered since it was kept: it vouches for nothing
            names.add(name)
            names.update(team.name for team in tx.teams_of(principal_id))
        return frozenset(names)

    def _protected(self, tx: Reader, version: Version) -> bool:
        policy = self._policy_in_force(tx, version.model)[0]
        return version.stage in policy.stage_names[:-1] and policy.stage(version.stage).protected
