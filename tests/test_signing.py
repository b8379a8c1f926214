"""Signing on promotion and verified downloads (docs/security.md, Signing), with a test
beside each rule: a tampered file byte, a tampered envelope, a key the registry does not
publish, a pinned key, who may read keys and signatures, an unsafe key file; and the
format read and written by OpenSSF's own ``model-signing`` where it is installed."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient
from sqlalchemy import text

import modelyard
from modelyard.api import create_app
from modelyard.client.registry import Registry
from modelyard.config import Settings, open_service, signing_key
from modelyard.domain.access import Reach, Role
from modelyard.domain.errors import DigestMismatch, Misconfigured, SignatureInvalid
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import Version
from modelyard.domain.signing import (
    PREDICATE_TYPE,
    PublicKey,
    SigningKey,
    check_manifest,
    open_bundle,
    statement,
    verify_version,
)
from modelyard.service import RegistryService
from modelyard.serving._cache import ModelCache
from tests.conftest import on, serving
from tests.test_cli import invoke

Tree = Callable[[dict[str, bytes]], Path]
BIG = 100 * 1024  # above the inline limit: the bytes live in the blob store, on disk


@pytest.fixture
def reg(service: RegistryService) -> Iterator[Registry]:
    """The SDK over HTTP to the test's registry, in single-user local mode."""
    with serving(create_app(service, reach=Reach.LOOPBACK)) as url, modelyard.connect(url) as r:
        yield r


def staged(reg: Registry, tree: Path, name: str = "churn") -> Version:
    """A version registered and promoted into staging (protected: a request, approved)."""
    version = reg.register(name, tree, metrics={"auc": 0.9})
    promotion = reg.promote(version.reference, "staging")
    assert promotion.request is not None
    reg.approve(promotion.request.id)
    return reg.resolve(version.reference)


def set_bundle(service: RegistryService, key_id: str, bundle: dict[str, Any]) -> None:
    """What an attacker with the database alone could do to a kept signature."""
    with service.db.engine.begin() as conn:
        conn.execute(
            text("UPDATE version_signatures SET bundle = :b, key_id = :new"),
            {"b": json.dumps(bundle), "new": key_id},
        )


def files_of(root: Path) -> list[FileEntry]:
    return [
        FileEntry(p.relative_to(root).as_posix(), p.stat().st_size, sha(p.read_bytes()))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the format, pure -----------------------------------------------------------------------


ENTRIES = [FileEntry("weights.bin", 3, sha(b"one")), FileEntry("conf/a.json", 2, sha(b"{}"))]


def test_a_bundle_is_model_signing_v1_and_verifies_only_with_its_key() -> None:
    key = SigningKey.generate()
    bundle = key.sign("churn/1", ENTRIES)
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert payload == statement("churn/1", ENTRIES)
    assert payload["predicateType"] == PREDICATE_TYPE == "https://model_signing/signature/v1.0"
    assert [r["name"] for r in payload["predicate"]["resources"]] == ["conf/a.json", "weights.bin"]
    der = key.public.pem.encode()
    loaded = serialization.load_pem_public_key(der)
    spki = loaded.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert bundle["dsseEnvelope"]["signatures"][0]["keyid"] == sha(spki) == key.public.key_id
    signed = open_bundle(bundle, [key.public])
    assert signed.digests == {e.path: e.sha256 for e in ENTRIES}
    check_manifest(signed, ENTRIES, "churn/1")
    with pytest.raises(SignatureInvalid, match="not trusted"):
        open_bundle(bundle, [SigningKey.generate().public])


def test_a_file_that_differs_from_the_signed_one_is_named() -> None:
    key = SigningKey.generate()
    signed = open_bundle(key.sign("churn/1", ENTRIES), [key.public])
    swapped = [ENTRIES[0], FileEntry("conf/a.json", 2, sha(b"[]"))]
    with pytest.raises(SignatureInvalid, match=r"churn/1: conf/a\.json has sha256:") as caught:
        check_manifest(signed, swapped, "churn/1")
    assert caught.value.details["path"] == "conf/a.json"
    with pytest.raises(SignatureInvalid, match=r"extra\.bin is not in the signed manifest"):
        check_manifest(signed, [*ENTRIES, FileEntry("extra.bin", 1, sha(b"x"))], "churn/1")
    with pytest.raises(SignatureInvalid, match=r"weights\.bin is signed but missing"):
        check_manifest(signed, ENTRIES[1:], "churn/1")


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda b: b["dsseEnvelope"].update(payload=_flip(b, 40)), id="payload"),
        pytest.param(lambda b: b["dsseEnvelope"]["signatures"][0].update(sig=_sig(b)), id="sig"),
        pytest.param(lambda b: b["dsseEnvelope"].update(payloadType="text/plain"), id="type"),
        pytest.param(lambda b: b.update(mediaType="application/json"), id="media"),
        pytest.param(lambda b: b["dsseEnvelope"]["signatures"].append({}), id="two"),
        pytest.param(lambda b: b["dsseEnvelope"].update(payload="!!"), id="base64"),
    ],
)
def test_a_tampered_envelope_is_refused(tamper: Callable[[dict[str, Any]], None]) -> None:
    key = SigningKey.generate()
    bundle = key.sign("churn/1", ENTRIES)
    tamper(bundle)
    with pytest.raises(SignatureInvalid):
        open_bundle(bundle, [key.public])


def _flip(bundle: dict[str, Any], at: int) -> str:
    raw = bytearray(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    raw[at] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def _sig(bundle: dict[str, Any]) -> str:
    raw = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    raw[-1] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_a_key_that_is_not_p256_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(Exception, match="P-256"):
        PublicKey.from_pem(pem)
    private = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(Exception, match=r"key\.pem: signing keys are ECDSA P-256"):
        SigningKey.from_pem(private, "key.pem")


# -- promotion signs, downloads verify ------------------------------------------------------


def test_promotion_into_a_protected_stage_signs_once_and_journals_it(
    reg: Registry, make_tree: Tree
) -> None:
    version = staged(reg, make_tree({"weights.bin": b"w" * 10, "conf.json": b"{}"}))
    found = reg.signatures(version)
    assert (found.stage, found.protected) == ("staging", True)
    (signature,) = found.signatures
    (key,) = reg.public_keys()
    assert (signature.signer, signature.key_id, key.owner) == ("registry", key.key_id, "registry")
    assert key.created_at is not None
    signed = open_bundle(signature.bundle, [key.public_key()])
    assert signed.digests == {f.path: f.sha256 for f in version.files}
    events = [e for e in reg.history("churn") if e.kind == "version.signed"]
    assert [(e.subject, e.payload["stage"], e.payload["key_id"]) for e in events] == [
        ("churn/1", "staging", key.key_id)
    ]
    payload = base64.b64decode(signature.bundle["dsseEnvelope"]["payload"])
    assert events[0].payload["payload_sha256"] == sha(payload)
    # Into production with the same key: the manifest is unchanged, so no second signature.
    promotion = reg.promote(version.reference, "production")
    assert promotion.request is not None
    reg.approve(promotion.request.id)
    assert len(reg.signatures(version).signatures) == 1
    assert [e.kind for e in reg.history("churn")].count("version.signed") == 1
    assert reg.verify("churn@production").signers == ("registry",)


def test_an_unprotected_stage_is_not_signed_and_verify_says_so(
    reg: Registry, make_tree: Tree, tmp_path: Path
) -> None:
    version = reg.register("churn", make_tree({"w.bin": b"w"}))
    assert reg.signatures(version).signatures == ()
    with pytest.raises(SignatureInvalid, match="churn/1 is not signed; refusing it"):
        reg.download(version, tmp_path / "out", verify=True)
    assert not (tmp_path / "out").exists()
    reg.download(version, tmp_path / "out", verify=None)  # development: not required
    assert (tmp_path / "out" / "w.bin").read_bytes() == b"w"


def test_a_tampered_file_byte_is_refused_by_name(
    reg: Registry, make_tree: Tree, settings: Settings, tmp_path: Path
) -> None:
    data = os.urandom(BIG)
    version = staged(reg, make_tree({"weights.bin": data, "conf.json": b"{}"}))
    entry = next(f for f in version.files if f.path == "weights.bin")
    blob = settings.data_dir / "blobs" / "sha256" / entry.sha256[:2] / entry.sha256
    flipped = bytearray(data)
    flipped[1234] ^= 0x01
    blob.write_bytes(bytes(flipped))  # the store's bytes changed, the manifest not
    with pytest.raises(DigestMismatch, match=r"weights\.bin: downloaded bytes hash to"):
        reg.download(version, tmp_path / "out", verify=True)
    assert not (tmp_path / "out" / "weights.bin").exists()
    # A registry that also answers a manifest naming the changed bytes (its database
    # altered too) is caught by the signature, before anything is fetched.
    swapped = FileEntry("weights.bin", len(flipped), sha(bytes(flipped)))
    lying = dataclasses.replace(
        version, files=tuple(swapped if f.path == "weights.bin" else f for f in version.files)
    )
    with pytest.raises(SignatureInvalid, match=r"churn/1: weights\.bin has sha256:"):
        reg.download(lying, tmp_path / "lied", verify=True)
    assert not (tmp_path / "lied").exists()


def test_a_tampered_envelope_in_the_database_refuses_the_download(
    reg: Registry, service: RegistryService, make_tree: Tree, tmp_path: Path
) -> None:
    version = staged(reg, make_tree({"w.bin": b"weights"}))
    (signature,) = reg.signatures(version).signatures
    bundle = json.loads(json.dumps(signature.bundle))
    bundle["dsseEnvelope"]["payload"] = _flip(bundle, 60)
    set_bundle(service, signature.key_id, bundle)
    with pytest.raises(SignatureInvalid, match="does not verify"):
        reg.download(version, tmp_path / "out", verify=True)
    # The stage is protected: load_model and serve-model verify without being asked.
    with pytest.raises(SignatureInvalid):
        reg.download(version, tmp_path / "out", verify=None)
    cache = ModelCache(tmp_path / "serving")
    with pytest.raises(SignatureInvalid):
        cache.fetch(reg, version)
    assert list((tmp_path / "serving" / "versions").iterdir()) == []
    assert not (tmp_path / "out").exists()


def test_a_signature_by_a_key_the_registry_does_not_publish_is_refused(
    reg: Registry, service: RegistryService, make_tree: Tree, tmp_path: Path
) -> None:
    version = staged(reg, make_tree({"w.bin": b"weights"}))
    intruder = SigningKey.generate()
    set_bundle(service, intruder.public.key_id, intruder.sign(version.reference, version.files))
    with pytest.raises(SignatureInvalid, match="signed only by keys that are not trusted here"):
        reg.download(version, tmp_path / "out", verify=True)
    # Nor may the intruder pass its key off under the registry's id.
    set_bundle(
        service, reg.public_keys()[0].key_id, intruder.sign(version.reference, version.files)
    )
    with pytest.raises(SignatureInvalid):
        reg.verify(version)


def test_pinned_keys_are_trusted_instead_of_the_registrys(
    reg: Registry, make_tree: Tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = staged(reg, make_tree({"w.bin": b"weights"}))
    pinned = tmp_path / "trusted.pem"
    pinned.write_text(SigningKey.generate().public.pem)
    monkeypatch.setenv("MODELYARD_TRUSTED_KEYS", str(pinned))
    with pytest.raises(SignatureInvalid, match="not trusted here"):
        reg.verify(version)
    pinned.write_text(SigningKey.generate().public.pem + reg.public_keys()[0].pem)
    assert reg.verify(version).key_ids == (reg.public_keys()[0].key_id,)
    pinned.write_text("not a key")
    with pytest.raises(Exception, match=r"MODELYARD_TRUSTED_KEYS \(.*\): no -----BEGIN PUBLIC"):
        reg.verify(version)


def test_verify_version_needs_every_trusted_signature_to_hold() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    from datetime import UTC, datetime

    from modelyard.domain.signing import Signature

    now = datetime.now(UTC)
    good = Signature(key.public.key_id, "registry", key.sign("m/1", ENTRIES), now)
    stale = Signature(other.public.key_id, "ana", other.sign("m/1", ENTRIES[:1]), now)
    assert verify_version("m/1", ENTRIES, [good, stale], [key.public]).signers == ("registry",)
    with pytest.raises(SignatureInvalid, match=r"weights\.bin|conf/a\.json"):
        verify_version("m/1", ENTRIES, [good, stale], [key.public, other.public])


# -- who may read keys and signatures -------------------------------------------------------


def test_viewers_read_keys_and_signatures_strangers_and_anonymous_do_not(
    service: RegistryService, make_tree: Tree
) -> None:
    identity = service.identity
    admin = service.access.authenticate(identity.bootstrap_admin("root", operator="os").token)
    from modelyard.domain.access import PrincipalKind

    for name in ("vic", "stranger"):
        identity.create_principal(admin, name, PrincipalKind.USER)
    with serving(create_app(service, reach=Reach.LOOPBACK)) as url:
        token = identity.create_token(admin, principal="root").token
        with modelyard.connect(url, token=token) as reg:
            version = reg.register("churn", make_tree({"w.bin": b"w"}))
            reg.promote(version.reference, "staging", override="signing test")
    identity.set_grant(admin, "vic", Role.VIEWER, model="churn")
    app = create_app(service, reach=Reach.NETWORK)
    with TestClient(app) as client:
        path = "/api/v1/models/churn/versions/1/signatures"
        assert client.get("/api/v1/keys").status_code == 401
        assert client.get(path).status_code == 401
        for who, keys, signatures in (("vic", 200, 200), ("stranger", 200, 404)):
            bearer = identity.create_token(admin, principal=who).token
            headers = {"Authorization": f"Bearer {bearer}"}
            assert client.get("/api/v1/keys", headers=headers).status_code == keys
            assert client.get(path, headers=headers).status_code == signatures
        read_only = identity.create_token(admin, principal="vic", read_only=True).token
        answer = client.get(path, headers={"Authorization": f"Bearer {read_only}"})
        assert answer.status_code == 200
        assert answer.json()["signatures"][0]["signer"] == "registry"


# -- the registry's key -------------------------------------------------------------------


def test_the_key_file_is_made_0600_and_refused_when_others_could_read_or_replace_it(
    settings: Settings, tmp_path: Path
) -> None:
    data = tmp_path / "keys"
    data.mkdir()
    key = signing_key(data)
    path = data / "signing.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert signing_key(data).public == key.public  # made once, then read
    path.chmod(0o644)
    with pytest.raises(Misconfigured, match=r"mode 0644 lets other users.*chmod 600"):
        signing_key(data)
    path.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(path, 4242, 4242)
        with pytest.raises(Misconfigured, match="owned by uid 4242"):
            signing_key(data)
        os.chown(path, 0, 0)
    moved = tmp_path / "elsewhere.key"
    path.rename(moved)
    path.symlink_to(moved)
    with pytest.raises(Misconfigured, match="is a symbolic link"):
        signing_key(data)


def test_an_unsafe_key_file_refuses_the_promotion_and_nothing_moves(
    settings: Settings, service: RegistryService, make_tree: Tree
) -> None:
    path = settings.data_dir / "signing.key"
    path.write_bytes(SigningKey.generate().to_pem())
    path.chmod(0o640)
    with serving(create_app(service, reach=Reach.LOOPBACK)) as url, modelyard.connect(url) as reg:
        version = reg.register("churn", make_tree({"w.bin": b"w"}))
        with pytest.raises(Misconfigured, match=r"signing\.key: mode 0640"):
            reg.promote(version.reference, "staging", override="no key, no move")
        assert reg.resolve(version.reference).stage == "development"
        assert reg.signatures(version).signatures == ()


def test_a_configured_key_signs_and_is_published(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_tree: Tree
) -> None:
    key = SigningKey.generate()
    path = tmp_path / "provided.pem"
    path.write_bytes(key.to_pem())
    path.chmod(0o400)
    monkeypatch.setenv("MODELYARD_SIGNING_KEY", str(path))
    service = open_service(settings)
    try:
        with (
            serving(create_app(service, reach=Reach.LOOPBACK)) as url,
            modelyard.connect(url) as reg,
        ):
            assert [k.key_id for k in reg.public_keys()] == [key.public.key_id]
            assert reg.public_keys()[0].created_at is None  # published before it first signs
            version = staged(reg, make_tree({"w.bin": b"w"}))
            assert reg.verify(version).key_ids == (key.public.key_id,)
        assert not (settings.data_dir / "signing.key").exists()
    finally:
        service.close()


# -- the CLI --------------------------------------------------------------------------------


@on("sqlite")  # the CLI's local mode: a registry in a SQLite directory
def test_the_cli_downloads_verified_and_lists_keys_and_signatures(
    reg: Registry, make_tree: Tree, settings: Settings, tmp_path: Path
) -> None:
    staged(reg, make_tree({"w.bin": b"weights"}))
    url = str(settings.data_dir)
    done = invoke(
        "download", "churn@staging", "--verify", "-o", "out", "--json", url=url, cwd=tmp_path
    )
    assert done.returncode == 0, done.output
    shown = json.loads(done.stdout)
    assert shown["verified"]["signers"] == ["registry"]
    assert (tmp_path / "out" / "w.bin").read_bytes() == b"weights"
    human = invoke("download", "churn@staging", "--verify", "-o", "again", url=url, cwd=tmp_path)
    assert "signed by registry" in human.stdout, human.output
    keys = json.loads(invoke("keys", "list", "--json", url=url, cwd=tmp_path).stdout)
    pem = invoke("keys", "list", "--pem", url=url, cwd=tmp_path).stdout
    assert PublicKey.from_pem(pem).key_id == keys["items"][0]["key_id"]
    listed = invoke("signatures", "churn/1", url=url, cwd=tmp_path)
    assert listed.returncode == 0 and "verified: signed by registry" in listed.stdout
    reg.register("churn", make_tree({"w.bin": b"unsigned"}))
    unsigned = invoke("signatures", "churn/2", "--json", url=url, cwd=tmp_path)
    assert unsigned.returncode == 1
    assert json.loads(unsigned.stdout)["problem"] == "churn/2 is not signed; refusing it"
    refused = invoke("download", "churn/2", "--verify", "-o", "no", url=url, cwd=tmp_path)
    assert refused.returncode == 1 and "churn/2 is not signed" in refused.stderr
    assert not (tmp_path / "no").exists()
    neither = invoke("sign", "churn/1", url=url, cwd=tmp_path)
    assert neither.returncode == 1 and "give --key KEY.pem" in neither.stderr
    again = invoke("sign", "churn/1", "--registry", "--json", url=url, cwd=tmp_path)
    assert json.loads(again.stdout)["signer"] == "registry", again.output
    (tmp_path / "key.pem").write_bytes(SigningKey.generate().to_pem())
    local = invoke("keys", "add", "--key", "key.pem", url=url, cwd=tmp_path)
    assert local.returncode == 1 and "local mode has no users" in local.stderr


# -- interoperability with OpenSSF's model-signing ------------------------------------------


def _model_signing() -> Any:
    return pytest.importorskip(
        "model_signing",
        reason="model-signing is not installed (pip install model-signing, the dev extra)",
    )


def test_model_signing_verifies_a_modelyard_signature(
    reg: Registry, make_tree: Tree, tmp_path: Path
) -> None:
    ms = _model_signing()
    version = staged(reg, make_tree({"weights.bin": os.urandom(BIG), "conf/a.json": b"{}"}))
    model = tmp_path / "model"
    reg.download(version, model, verify=True)
    (signature,) = reg.signatures(version).signatures
    bundle, public = tmp_path / "model.sig", tmp_path / "registry.pub"
    bundle.write_text(json.dumps(signature.bundle))
    public.write_text(reg.public_keys()[0].pem)
    verifier = ms.verifying.Config().use_elliptic_key_verifier(public_key=public)
    verifier.verify(model, bundle)
    (model / "conf" / "a.json").write_bytes(b"[]")
    with pytest.raises(ValueError, match=r"conf/a\.json"):
        verifier.verify(model, bundle)


def test_modelyard_verifies_a_model_signing_signature(tmp_path: Path) -> None:
    ms = _model_signing()
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "weights.bin").write_bytes(os.urandom(4096))
    (model / "sub" / "tokenizer.json").write_bytes(b'{"vocab": []}')
    key = SigningKey.generate()
    private = tmp_path / "key.pem"
    private.write_bytes(key.to_pem())
    bundle_path = tmp_path / "model.sig"
    ms.signing.Config().use_elliptic_key_signer(private_key=private).sign(model, bundle_path)
    bundle = json.loads(bundle_path.read_text())
    signed = open_bundle(bundle, [key.public])  # found by model-signing's key hint
    check_manifest(signed, files_of(model), "model")
    with pytest.raises(SignatureInvalid, match=r"weights\.bin has sha256"):
        tampered = [
            f if f.path != "weights.bin" else FileEntry(f.path, 1, sha(b"x"))
            for f in files_of(model)
        ]
        check_manifest(signed, tampered, "model")
    with pytest.raises(SignatureInvalid, match="not trusted"):
        open_bundle(bundle, [SigningKey.generate().public])


# -- users sign too -------------------------------------------------------------------------

SIGNED_BY = "promotion:\n  staging:\n    approvals: {count: 0}\n    signed_by: [release-team]\n"


def test_a_policy_counts_the_signatures_of_a_teams_members(
    service: RegistryService, make_tree: Tree, tmp_path: Path
) -> None:
    from modelyard.domain.access import PrincipalKind
    from modelyard.domain.errors import Conflict, Forbidden, PolicyFailed

    identity = service.identity
    admin = service.access.authenticate(identity.bootstrap_admin("root", operator="os").token)
    identity.create_principal(admin, "release-team", PrincipalKind.TEAM)
    keys: dict[str, Path] = {}
    for name in ("ana", "bob"):
        identity.create_principal(admin, name, PrincipalKind.USER)
        identity.set_grant(admin, name, Role.MAINTAINER, model="churn")
        keys[name] = tmp_path / f"{name}.pem"
        keys[name].write_bytes(SigningKey.generate().to_pem())
    identity.set_membership(admin, "release-team", "ana", present=True)

    def token(name: str, **narrow: Any) -> str:
        return identity.create_token(admin, principal=name, **narrow).token

    with serving(create_app(service, reach=Reach.LOOPBACK)) as url:
        root, ana, bob = (modelyard.connect(url, token=token(n)) for n in ("root", "ana", "bob"))
        one = root.register("churn", make_tree({"w.bin": b"one"}))
        two = root.register("churn", make_tree({"w.bin": b"two"}))
        root.apply_policy("churn", SIGNED_BY)
        for who in (ana, bob):
            who.register_key(keys["ana" if who is ana else "bob"])  # the public part only
        with pytest.raises(Conflict, match="registered already"):
            ana.register_key(keys["ana"])
        with (
            modelyard.connect(url, token=token("bob", read_only=True)) as reading,
            pytest.raises(Forbidden, match="not to reading"),
        ):
            reading.register_key(tmp_path / "bob.pem")
        owners = {k.owner for k in root.public_keys()}
        assert owners == {"registry", "ana", "bob"}

        with pytest.raises(PolicyFailed, match="signed_by release-team"):
            root.promote(one.reference, "staging")
        bob.sign(one, keys["bob"])  # not a member: his signature does not count
        with pytest.raises(PolicyFailed, match="signed_by release-team"):
            root.promote(one.reference, "staging")
        with pytest.raises(SignatureInvalid, match="not trusted"):
            ana.sign(one, keys["bob"])  # bob's key is not ana's
        kept = ana.sign(one, keys["ana"])
        assert kept.signer == "ana"
        with pytest.raises(Conflict, match=r"signed by key \w+ already"):
            ana.sign(one, keys["ana"])
        assert root.promote(one.reference, "staging").status == "executed"
        # Downloads trust the registry's own keys; users' signatures attest for policies.
        assert root.verify(one.reference).signers == ("registry",)
        pinned = tmp_path / "pinned.pem"
        pinned.write_text("".join(k.pem for k in root.public_keys()))
        with pytest.MonkeyPatch.context() as env:
            env.setenv("MODELYARD_TRUSTED_KEYS", str(pinned))
            assert set(root.verify(one.reference).signers) == {"ana", "bob", "registry"}
        kinds = [(e.kind, e.payload.get("signer")) for e in root.history("churn")]
        assert [s for k, s in kinds if k == "version.signed"] == ["bob", "ana", "registry"]

        # A signature of other files is refused by name; a disabled signer counts no more.
        stolen = SigningKey.from_pem(keys["ana"].read_bytes(), "ana.pem").sign(
            two.reference, one.files
        )
        answer = httpx.post(
            f"{url}/api/v1/models/churn/versions/2/signatures",
            json={"bundle": stolen},
            headers={"Authorization": f"Bearer {token('ana')}"},
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["code"] == "signature_invalid"
        assert "churn/2: w.bin has sha256:" in answer.json()["detail"]
        ana.sign(two, keys["ana"])
        identity.disable_principal(admin, "ana", PrincipalKind.USER)
        with pytest.raises(PolicyFailed, match="signed_by release-team"):
            root.promote(two.reference, "staging")
        assert {k.owner for k in root.public_keys()} == {"registry", "bob"}
        for reg in (root, ana, bob):
            reg.close()


def test_local_mode_has_no_one_to_register_a_key_to(reg: Registry, tmp_path: Path) -> None:
    from modelyard.domain.errors import Forbidden

    key = tmp_path / "key.pem"
    key.write_bytes(SigningKey.generate().to_pem())
    with pytest.raises(Forbidden, match="local mode has no users"):
        reg.register_key(key)
    with pytest.raises(Exception, match=r"missing\.pem: No such file"):
        reg.register_key(tmp_path / "missing.pem")
    key.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(Exception, match=r"key\.pem: not a PEM public key"):
        reg.register_key(key)


def test_an_admin_has_a_version_promoted_before_signing_signed(
    reg: Registry, service: RegistryService, make_tree: Tree, tmp_path: Path
) -> None:
    from modelyard.domain.errors import Conflict

    version = staged(reg, make_tree({"w.bin": b"weights"}))
    with service.db.engine.begin() as conn:  # as a registry upgraded to signing finds it
        conn.execute(text("DELETE FROM version_signatures"))
    with pytest.raises(SignatureInvalid, match="not signed"):
        reg.download(version, tmp_path / "out", verify=None)
    kept = reg.sign_as_registry(version)
    assert kept == reg.sign_as_registry(version)  # once per key
    assert reg.verify(version).key_ids == (kept.key_id,)
    unprotected = reg.register("churn", make_tree({"w.bin": b"new"}))
    with pytest.raises(Conflict, match="development, which is not protected"):
        reg.sign_as_registry(unprotected)


def test_a_user_adds_a_signature_made_by_model_signing(
    service: RegistryService, make_tree: Tree, tmp_path: Path
) -> None:
    ms = _model_signing()
    from modelyard.domain.access import PrincipalKind

    identity = service.identity
    admin = service.access.authenticate(identity.bootstrap_admin("root", operator="os").token)
    identity.create_principal(admin, "ana", PrincipalKind.USER)
    identity.set_grant(admin, "ana", Role.CONTRIBUTOR, model="churn")
    key = tmp_path / "ana.pem"
    key.write_bytes(SigningKey.generate().to_pem())
    token = identity.create_token(admin, principal="ana").token
    with (
        serving(create_app(service, reach=Reach.LOOPBACK)) as url,
        modelyard.connect(url, token=token) as ana,
    ):
        version = ana.register("churn", make_tree({"w.bin": b"w", "sub/t.json": b"{}"}))
        ana.register_key(key)
        model = tmp_path / "model"
        ana.download(version, model)
        bundle = tmp_path / "model.sig"
        ms.signing.Config().use_elliptic_key_signer(private_key=key).sign(model, bundle)
        answer = httpx.post(
            f"{url}/api/v1/models/churn/versions/1/signatures",
            json={"bundle": json.loads(bundle.read_text())},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["signer"] == "ana"
        assert [s.signer for s in ana.signatures(version).signatures] == ["ana"]


def test_a_policys_signed_by_is_a_list_of_principals() -> None:
    from modelyard.domain.lifecycle import PolicyError, parse_policy

    policy = parse_policy({"promotion": {"production": {"signed_by": ["release-team", "ana"]}}})
    assert policy.for_stage("production").signed_by == ("release-team", "ana")
    for wrong in ("release-team", [1], [""]):
        with pytest.raises(Exception, match=r"signed_by|name"):
            parse_policy({"promotion": {"production": {"signed_by": wrong}}})
    with pytest.raises(PolicyError, match="'signed_by' \\(a list\\)"):
        parse_policy({"promotion": {"production": {"signers": ["ana"]}}})


def test_the_version_page_lists_the_signatures(
    reg: Registry, service: RegistryService, make_tree: Tree
) -> None:
    staged(reg, make_tree({"w.bin": b"weights"}))
    reg.register("churn", make_tree({"w.bin": b"unsigned"}))
    key_id = reg.public_keys()[0].key_id
    with TestClient(create_app(service, reach=Reach.LOOPBACK, local_user="tester")) as client:
        signed = client.get("/models/churn/versions/1").text
        assert 'data-test="signature"><td>registry</td>' in signed and key_id in signed
        assert "Not signed: the registry signs" in client.get("/models/churn/versions/2").text
