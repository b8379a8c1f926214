"""Signatures of versions in the OpenSSF model-signing format, made and checked in one place.

A signature is a Sigstore bundle (JSON, media type v0.3) carrying a DSSE envelope whose
payload is an in-toto statement with model-signing's v1.0 predicate: every file's path and
sha256 (the manifest), and as subject a sha256 over those digests in order. The envelope is
signed with an ECDSA P-256 key; the bundle names the key by ``publicKey.hint``, the sha256
of its PEM (what the ``model-signing`` package writes and checks), and the DSSE signature
by ``keyid``, the sha256 of its DER public key (the id ``GET /api/v1/keys`` publishes).

The server signs with it on promotion into a protected stage, and checks a user's
signature before keeping it; the client checks a version's signatures against the
registry's published keys before it trusts a download. All of them call ``verify_version``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelyard.domain.errors import InvalidInput, SignatureInvalid
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import iso, parse_iso

PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "https://model_signing/signature/v1.0"
BUNDLE_MEDIA_TYPE: Final = "application/vnd.dev.sigstore.bundle.v0.3+json"
# Who signed, when it was the registry itself (promotion); a user's signature names them.
REGISTRY_SIGNER: Final = "registry"
# Another registry whose key an admin trusts (its bundles import, its signatures verify
# downloads) is published as "registry:NAME": principal names have no ':'.
_REGISTRY_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_PEM_BLOCK = re.compile(
    rb"-----BEGIN PUBLIC KEY-----\r?\n.+?\r?\n-----END PUBLIC KEY-----", re.DOTALL
)


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A P-256 public key, by the two names signatures give it."""

    pem: str
    key_id: str  # sha256 of the DER SubjectPublicKeyInfo, hex
    hint: str  # sha256 of the PEM, hex: model-signing's verificationMaterial.publicKey.hint

    @classmethod
    def from_pem(cls, pem: str | bytes) -> PublicKey:
        """Read a PEM public key; anything but an ECDSA P-256 key is refused."""
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm):
            raise InvalidInput(
                "not a PEM public key (-----BEGIN PUBLIC KEY-----)", code="invalid_key"
            ) from None
        return cls._of(key)

    @classmethod
    def _of(cls, key: object) -> PublicKey:
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise InvalidInput("signing keys are ECDSA P-256 (secp256r1) keys", code="invalid_key")
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(pem.decode(), hashlib.sha256(der).hexdigest(), hashlib.sha256(pem).hexdigest())

    def verifies(self, signature: bytes, data: bytes) -> bool:
        key = serialization.load_pem_public_key(self.pem.encode())
        assert isinstance(key, ec.EllipticCurvePublicKey)
        try:
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """A P-256 private key that signs versions; never printed, never sent anywhere."""

    __slots__ = ("_key", "public")

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        self.public = PublicKey._of(key.public_key())

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.public.key_id[:16]}…)"

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, data: bytes, where: str) -> SigningKey:
        """An unencrypted PEM private key (PKCS#8 or SEC1); ``where`` names it in errors."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise InvalidInput(
                f"{where}: not an unencrypted PEM private key ({exc})", code="invalid_key"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise InvalidInput(f"{where}: signing keys are ECDSA P-256 keys", code="invalid_key")
        return cls(key)

    def to_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sign(self, name: str, files: Sequence[FileEntry]) -> dict[str, Any]:
        """The Sigstore bundle that signs ``files`` (a version's manifest) as ``name``."""
        return self.sign_payload(canonical(statement(name, files)))

    def sign_payload(self, payload: bytes) -> dict[str, Any]:
        """The Sigstore bundle whose DSSE envelope signs ``payload``, an in-toto statement
        (a version's, or a bundle's manifest: their predicate types keep them apart)."""
        signature = self._key.sign(pae(payload), ec.ECDSA(hashes.SHA256()))
        return {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": self.public.hint}, "tlogEntries": []},
            "dsseEnvelope": {
                "payload": base64.b64encode(payload).decode(),
                "payloadType": PAYLOAD_TYPE,
                "signatures": [
                    {"sig": base64.b64encode(signature).decode(), "keyid": self.public.key_id}
                ],
            },
        }


def public_key_of(pem: bytes, where: str) -> PublicKey:
    """The public key a PEM file holds, or a private key's public part (what a user
    registers: the private key stays where it is)."""
    if b"PRIVATE KEY-----" in pem:
        return SigningKey.from_pem(pem, where).public
    try:
        return PublicKey.from_pem(pem)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc.message}", code=exc.code) from None


def statement(name: str, files: Sequence[FileEntry]) -> dict[str, Any]:
    """The in-toto statement over a manifest, as model-signing v1.0 serialises by files."""
    ordered = sorted(files, key=lambda f: f.path)
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": _root_digest(f.sha256 for f in ordered)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False},
            "resources": [
                {"name": f.path, "algorithm": "sha256", "digest": f.sha256} for f in ordered
            ],
        },
    }


def canonical(document: Mapping[str, Any]) -> bytes:
    """The bytes a statement is signed as: sorted keys, no spaces, UTF-8."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def pae(payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the signature covers."""
    kind = PAYLOAD_TYPE.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def payload_digest(bundle: Mapping[str, Any]) -> str:
    """The sha256 of a bundle's signed statement: what the journal records of a signature."""
    return hashlib.sha256(_decoded(_envelope(bundle)["payload"], "payload")).hexdigest()


def registry_owner(name: str) -> str:
    """How a trusted registry's key is published (``registry:NAME``), its name checked:
    lower-case letters, digits, '.', '_' and '-', at most 64."""
    if not isinstance(name, str) or _REGISTRY_NAME.fullmatch(name) is None:
        raise InvalidInput(
            f"registry name {str(name)[:80]!r} is not allowed: use lower-case letters, digits,"
            " '.', '_' and '-' (1..64, starting with a letter or digit)",
            code="invalid_name",
        )
    return f"{REGISTRY_SIGNER}:{name}"


def read_pem_keys(text: bytes, where: str) -> list[PublicKey]:
    """Every ``PUBLIC KEY`` block of a file (MODELYARD_TRUSTED_KEYS pins such a file)."""
    keys = [public_key_of(block, where) for block in _PEM_BLOCK.findall(text)]
    if not keys:
        raise InvalidInput(f"{where}: no -----BEGIN PUBLIC KEY----- block", code="invalid_key")
    return keys


# -- verification ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedManifest:
    """What a signature vouches for once its signature checks: by which key, which files
    (the subject's name, informative in model-signing, is not read)."""

    key_id: str
    digests: dict[str, str]  # path -> sha256


def open_bundle(bundle: Mapping[str, Any], keys: Iterable[PublicKey]) -> SignedManifest:
    """Check a bundle's signature by one of ``keys`` and read the manifest it signs.

    Refuses (``SignatureInvalid``) a bundle of another format, by a key not among ``keys``,
    whose signature does not verify, or whose statement is not model-signing's v1.0.
    """
    key, payload = open_envelope(bundle, keys)
    return _manifest_of(payload, key.key_id)


def open_envelope(bundle: Mapping[str, Any], keys: Iterable[PublicKey]) -> tuple[PublicKey, bytes]:
    """The key among ``keys`` whose signature of a Sigstore bundle's DSSE envelope
    verifies, and the payload it signs (not yet read: each kind of statement reads its
    own); else ``SignatureInvalid``."""
    if bundle.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise SignatureInvalid(f"not a Sigstore bundle of media type {BUNDLE_MEDIA_TYPE}")
    envelope = _envelope(bundle)
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise SignatureInvalid(f"the DSSE envelope's payload is not {PAYLOAD_TYPE}")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or len(signatures) != 1:
        raise SignatureInvalid("the DSSE envelope must carry exactly one signature")
    entry = signatures[0] if isinstance(signatures[0], dict) else {}
    key = _key_for(bundle, entry, list(keys))
    payload = _decoded(envelope.get("payload"), "payload")
    if not key.verifies(_decoded(entry.get("sig"), "signature"), pae(payload)):
        raise SignatureInvalid(f"the signature does not verify with key {key.key_id}")
    return key, payload


def check_manifest(signed: SignedManifest, files: Sequence[FileEntry], what: str) -> None:
    """Refuse ``files`` unless they are exactly the signed ones, naming the first that is not."""
    mine = {f.path: f.sha256 for f in files}
    for path in sorted(mine.keys() | signed.digests.keys()):
        got, want = mine.get(path), signed.digests.get(path)
        if got == want:
            continue
        if want is None:
            reason = "is not in the signed manifest"
        elif got is None:
            reason = "is signed but missing from the version"
        else:
            reason = f"has sha256:{got}, but the signature says sha256:{want}"
        raise SignatureInvalid(
            f"{what}: {path} {reason} (key {signed.key_id}); refusing it",
            path=path,
            key_id=signed.key_id,
        )


@dataclass(frozen=True, slots=True)
class Verified:
    """A version whose files a trusted key signed: who signed, by which keys."""

    reference: str
    key_ids: tuple[str, ...]
    signers: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "key_ids": list(self.key_ids),
            "signers": list(self.signers),
        }


def verify_version(
    reference: str,
    files: Sequence[FileEntry],
    signatures: Sequence[Signature],
    trusted: Iterable[PublicKey],
) -> Verified:
    """Every signature of ``reference`` by a trusted key verifies and signs exactly ``files``,
    and there is at least one; else ``SignatureInvalid`` naming the key or the file.

    A signature by a key that is not trusted is left aside (it proves nothing either way),
    but a version signed by none but such keys is refused.
    """
    keys = {key.key_id: key for key in trusted}
    good: list[Signature] = []
    for signature in signatures:
        if signature.key_id not in keys:
            continue
        signed = open_bundle(signature.bundle, [keys[signature.key_id]])
        check_manifest(signed, files, reference)
        good.append(signature)
    if not good:
        untrusted = sorted({s.key_id for s in signatures})
        why = (
            f"signed only by keys that are not trusted here: {', '.join(untrusted)}"
            if untrusted
            else "not signed"
        )
        raise SignatureInvalid(f"{reference} is {why}; refusing it", reference=reference)
    return Verified(
        reference,
        tuple(s.key_id for s in good),
        tuple(dict.fromkeys(s.attribution for s in good)),
    )


# -- what the registry stores and publishes -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signature:
    """A signature of a version as kept: the bundle, by which key, who signed and when."""

    key_id: str
    signer: str  # REGISTRY_SIGNER, or the principal whose key it is
    bundle: dict[str, Any]
    created_at: datetime
    # The registry a bundle carried it from (the name its key is trusted under), None for
    # this registry's own: such a signature is shown as that registry's, and counts for
    # no policy's signed_by here.
    origin: str | None = None

    @property
    def attribution(self) -> str:
        """Who signed, as people read it: ``registry``, ``alice``, ``registry of east``."""
        return f"{self.signer} of {self.origin}" if self.origin else self.signer

    def as_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "signer": self.signer,
            "created_at": iso(self.created_at),
            "bundle": self.bundle,
            "origin": self.origin,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        return cls(
            data["key_id"],
            data["signer"],
            data["bundle"],
            parse_iso(data["created_at"]),
            data.get("origin"),
        )


@dataclass(frozen=True, slots=True)
class VersionSignatures:
    """A version's signatures, and whether its stage is protected (downloads of such a
    version are always verified)."""

    reference: str
    stage: str
    protected: bool
    signatures: tuple[Signature, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "stage": self.stage,
            "protected": self.protected,
            "signatures": [s.as_dict() for s in self.signatures],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VersionSignatures:
        return cls(
            data["reference"],
            data["stage"],
            bool(data["protected"]),
            tuple(Signature.from_dict(s) for s in data["signatures"]),
        )


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """A key as ``GET /api/v1/keys`` lists it: the registry's own, or a user's."""

    key_id: str
    pem: str
    owner: str  # REGISTRY_SIGNER, or a principal's name
    created_at: datetime | None  # None: the registry's current key, before it signed

    def as_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "pem": self.pem,
            "owner": self.owner,
            "created_at": iso(self.created_at) if self.created_at else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PublishedKey:
        created = parse_iso(data["created_at"]) if data.get("created_at") else None
        return cls(data["key_id"], data["pem"], data["owner"], created)

    @property
    def speaks_for_a_registry(self) -> bool:
        """The registry's own key, or another registry's an admin trusts: what downloads
        are verified against (users' keys attest for policies, not for downloads)."""
        return self.owner == REGISTRY_SIGNER or self.owner.startswith(REGISTRY_SIGNER + ":")

    def public_key(self) -> PublicKey:
        """The key itself, refused if the id published beside it is not its own."""
        key = PublicKey.from_pem(self.pem)
        if key.key_id != self.key_id:
            raise SignatureInvalid(
                f"the registry publishes key {self.key_id} with a PEM whose id is {key.key_id}"
            )
        return key


# -- internals ----------------------------------------------------------------------------------


def _root_digest(digests: Iterable[str]) -> str:
    root = hashlib.sha256()
    for digest in digests:
        root.update(bytes.fromhex(digest))
    return root.hexdigest()


def _envelope(bundle: Mapping[str, Any]) -> Mapping[str, Any]:
    envelope = bundle.get("dsseEnvelope")
    if not isinstance(envelope, dict):
        raise SignatureInvalid("the bundle carries no DSSE envelope (dsseEnvelope)")
    return envelope


def _decoded(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureInvalid(f"the DSSE {what} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid(f"the DSSE {what} is not base64") from None


def _key_for(
    bundle: Mapping[str, Any], entry: Mapping[str, Any], keys: list[PublicKey]
) -> PublicKey:
    """The key a bundle names: by the DSSE keyid (ours), else by model-signing's hint."""
    key_id = entry.get("keyid") or ""
    material = bundle.get("verificationMaterial")
    public = material.get("publicKey") if isinstance(material, dict) else None
    hint = public.get("hint") if isinstance(public, dict) else None
    for key in keys:
        if key_id == key.key_id or (not key_id and hint == key.hint):
            return key
    raise SignatureInvalid(
        f"signed by a key that is not trusted here ({key_id or hint})",
        key_id=key_id or hint,
        untrusted=True,
    )


def _manifest_of(payload: bytes, key_id: str) -> SignedManifest:
    try:
        document = json.loads(payload)
        if document["_type"] != STATEMENT_TYPE or document["predicateType"] != PREDICATE_TYPE:
            raise SignatureInvalid(f"the statement is not model-signing's {PREDICATE_TYPE}")
        (subject,) = document["subject"]
        predicate = document["predicate"]
        if predicate["serialization"].get("method") != "files":
            raise SignatureInvalid("only model-signing's serialisation by files is read")
        resources = predicate["resources"]
        digests: dict[str, str] = {}
        for resource in resources:
            if resource["algorithm"] != "sha256" or resource["name"] in digests:
                raise SignatureInvalid(f"resource {resource['name']!r}: one sha256 per file")
            digests[str(resource["name"])] = str(resource["digest"])
        root = _root_digest(r["digest"] for r in resources)
        if subject["digest"]["sha256"] != root:
            raise SignatureInvalid("the statement's subject digest is not its files' digest")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SignatureInvalid("the signed statement is not a model-signing manifest") from None
    return SignedManifest(key_id, digests)
