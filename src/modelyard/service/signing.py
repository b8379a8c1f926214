"""Signatures as use cases: the registry signs what enters a protected stage, publishes the
public keys, and lists a version's signatures for clients to verify.

The registry's key is an ECDSA P-256 key (``config.signing_key``: MODELYARD_SIGNING_KEY,
else the data directory's signing.key, made 0600 on first use), loaded the first time it
is needed. Each key it has signed with is kept in ``signing_keys``, so that signatures
made before a key change still verify; signatures are kept with their version and
journaled (``version.signed``) in the transaction that moves the version.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from modelyard.domain.access import Caller, Permission
from modelyard.domain.events import VersionSigned
from modelyard.domain.lifecycle import Policy
from modelyard.domain.models import Version, utc_from_us
from modelyard.domain.names import validate_model_name
from modelyard.domain.signing import (
    REGISTRY_SIGNER,
    PublishedKey,
    Signature,
    SigningKey,
    VersionSignatures,
    payload_digest,
)
from modelyard.service.access import AccessControl
from modelyard.service.checks import version_id_or_404
from modelyard.storage.db.store import Database, Reader, Writer


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

    def _protected(self, tx: Reader, version: Version) -> bool:
        policy = self._policy_in_force(tx, version.model)[0]
        return version.stage in policy.stage_names[:-1] and policy.stage(version.stage).protected
