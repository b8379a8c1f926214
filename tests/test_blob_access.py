"""A blob's digest is no read key: attacks through the REST API, on SQLite and PostgreSQL.

Alice's model A holds a secret file. Mallory contributes to model B and views A, so she sees
the secret's digest and size in A's metadata; Eve contributes to B and cannot see A at all.
Neither may name the secret in a registration, learn that the registry holds it, or read
it, until they upload those very bytes (which proves they had them all along).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from modelyard.api import create_app
from modelyard.domain.access import PrincipalKind, Reach, Role
from modelyard.service import RegistryService

SECRET = b"alice's proprietary weights " * 5000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Registry:
    client: TestClient
    tokens: dict[str, str]

    def call(self, who: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return self.client.request(method, url, headers=headers, **kwargs)

    def register(
        self, who: str, model: str, data: bytes, size: int | None = None
    ) -> httpx.Response:
        entry = {
            "path": "model.bin",
            "size": len(data) if size is None else size,
            "sha256": sha(data),
        }
        return self.call(who, "POST", f"/api/v1/models/{model}/versions", json={"files": [entry]})

    def missing(self, who: str, data: bytes) -> list[str]:
        body = {"digests": [f"sha256:{sha(data)}"]}
        response = self.call(who, "POST", "/api/v1/blobs/missing", json=body)
        assert response.status_code == 200, response.text
        missing: list[str] = response.json()["missing"]
        return missing


@pytest.fixture
def registry(service: RegistryService) -> Iterator[Registry]:
    identity = service.identity
    root = identity.bootstrap_admin("root", operator="test")
    admin = service.access.authenticate(root.token)
    grants = {
        "alice": [("a", Role.CONTRIBUTOR)],
        "mallory": [("b", Role.CONTRIBUTOR), ("a", Role.VIEWER)],
        "eve": [("b", Role.CONTRIBUTOR)],
        "bob": [("b", Role.CONTRIBUTOR), ("a", Role.READER)],
    }
    tokens = {"root": root.token}
    for name, held in grants.items():
        identity.create_principal(admin, name, PrincipalKind.USER)
        for model, role in held:
            identity.set_grant(admin, name, role, model=model)
        tokens[name] = identity.create_token(admin, principal=name).token
    with TestClient(create_app(service, reach=Reach.LOOPBACK, local_user="tester")) as client:
        built = Registry(client, tokens)
        put = built.call("alice", "PUT", f"/api/v1/blobs/sha256:{sha(SECRET)}", content=SECRET)
        assert put.status_code == 201, put.text
        assert built.register("alice", "a", SECRET).status_code == 201
        yield built


def test_a_digest_seen_in_metadata_does_not_register_or_read(registry: Registry) -> None:
    shown = registry.call("mallory", "GET", "/api/v1/models/a/versions/1").json()
    assert shown["files"][0]["sha256"] == sha(SECRET)  # a viewer sees the digest
    for attacker in ("mallory", "eve"):
        refused = registry.register(attacker, "b", SECRET)
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "missing_blobs"
        assert refused.json()["missing"] == [f"sha256:{sha(SECRET)}"]
        # Nothing was written: B has no version to download the secret through.
        files = registry.call(attacker, "GET", "/api/v1/models/b/versions/1/files/model.bin")
        assert files.status_code == 404
    # And the blob itself stays closed: 403 to a viewer of A, 404 to who cannot see A.
    blob = f"/api/v1/blobs/sha256:{sha(SECRET)}"
    assert registry.call("mallory", "GET", blob).status_code == 403
    assert registry.call("eve", "GET", blob).status_code == 404


def test_a_wrong_size_reveals_nothing_either(registry: Registry) -> None:
    """size_mismatch would confirm that the blob exists and tell its size."""
    refused = registry.register("eve", "b", SECRET, size=7)
    assert refused.json()["code"] == "missing_blobs"


def test_asking_and_uploading_reveal_neither_existence_nor_size(registry: Registry) -> None:
    assert registry.missing("mallory", SECRET) == [f"sha256:{sha(SECRET)}"]
    assert registry.missing("eve", SECRET) == [f"sha256:{sha(SECRET)}"]
    url = f"/api/v1/blobs/sha256:{sha(SECRET)}"
    # A PUT of a held digest is not short-circuited for them: forged bytes are refused...
    forged = registry.call("eve", "PUT", url, content=b"guess")
    assert forged.json()["code"] == "digest_mismatch"
    assert registry.missing("eve", SECRET) == [f"sha256:{sha(SECRET)}"]
    # ...and the true bytes answer exactly as a new blob would.
    proved = registry.call("eve", "PUT", url, content=SECRET)
    assert (proved.status_code, proved.json()["created"]) == (201, True)
    unnamed = registry.call("mallory", "POST", "/api/v1/blobs/uploads", content=SECRET)
    assert (unnamed.status_code, unnamed.json()) == (
        201,
        {"digest": f"sha256:{sha(SECRET)}", "size": len(SECRET), "created": True},
    )
    # Alice uploaded it herself: to her the registry may say it holds the bytes.
    again = registry.call("alice", "PUT", url, content=SECRET)
    assert (again.status_code, again.json()["created"]) == (200, False)


def test_uploading_the_bytes_proves_possession(
    registry: Registry, service: RegistryService
) -> None:
    url = f"/api/v1/blobs/sha256:{sha(SECRET)}"
    assert registry.call("eve", "PUT", url, content=SECRET).status_code == 201
    assert registry.missing("eve", SECRET) == []
    # Possession is per principal: Mallory still has not proved anything.
    assert registry.missing("mallory", SECRET) == [f"sha256:{sha(SECRET)}"]
    assert registry.register("eve", "b", SECRET).status_code == 201
    got = registry.call("eve", "GET", "/api/v1/models/b/versions/1/files/model.bin")
    assert got.content == SECRET  # her own bytes, which she had all along
    assert len(list(service.blobs.digests())) == 1, "the server keeps one copy"
    # Now B holds it too, and Mallory may read B: she may name it like any reader.
    assert registry.missing("mallory", SECRET) == []


def test_a_reader_of_a_holding_model_may_name_the_blob(registry: Registry) -> None:
    assert registry.missing("bob", SECRET) == []
    assert registry.register("bob", "b", SECRET).status_code == 201


def test_a_token_scoped_to_another_model_cannot_lean_on_its_holders_grants(
    registry: Registry, service: RegistryService
) -> None:
    admin = service.access.authenticate(registry.tokens["root"])
    scoped = service.identity.create_token(admin, principal="bob", model="b").token
    registry.tokens["bob@b"] = scoped
    assert registry.missing("bob@b", SECRET) == [f"sha256:{sha(SECRET)}"]
    assert registry.register("bob@b", "b", SECRET).json()["code"] == "missing_blobs"
