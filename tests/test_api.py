"""The REST contract (v1), through the ASGI app on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from modelyard.api import create_app
from modelyard.config import open_service
from modelyard.domain.access import Reach
from modelyard.domain.journal import GENESIS_HASH
from modelyard.domain.manifest import FileEntry, manifest_digest
from tests.conftest import CountQueries

PROBLEM = "application/problem+json"
PROBLEM_FIELDS = ("type", "title", "status", "detail", "code")


# -- helpers ----------------------------------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def problem(response: httpx.Response, status: int | tuple[int, ...], code: str | None) -> dict:
    """Assert an RFC 9457 problem with this status (one of these) and stable code."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM, response.headers
    body = response.json()
    for field in PROBLEM_FIELDS:
        assert field in body, f"problem lacks {field!r}: {body}"
    assert body["status"] == response.status_code
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["type"], str) and body["code"] in body["type"]
    if code is not None:
        assert body["code"] == code, body
    return body


def upload(client: TestClient, data: bytes) -> str:
    digest = sha(data)
    response = client.put(f"/api/v1/blobs/sha256:{digest}", content=data)
    assert response.status_code in (200, 201), response.text
    return digest


def files_of(client: TestClient, files: dict[str, bytes]) -> list[dict[str, Any]]:
    return [{"path": p, "size": len(d), "sha256": upload(client, d)} for p, d in files.items()]


def register(
    client: TestClient, name: str, files: dict[str, bytes] | None = None, **meta: Any
) -> dict[str, Any]:
    body = {"files": files_of(client, files or {"model.bin": name.encode()}), **meta}
    response = client.post(f"/api/v1/models/{name}/versions", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def all_events(client: TestClient) -> list[dict[str, Any]]:
    response = client.get("/api/v1/events", params={"limit": 1000})
    assert response.status_code == 200
    return response.json()["items"]


def seed_churn(client: TestClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """churn/1 (auc 0.80) and churn/2 (auc 0.91), champion -> 1."""
    v1 = register(
        client,
        "churn",
        {"model.pkl": b"v1 weights", "conf/params.json": b"{}"},
        metrics={"auc": 0.80},
        tags={"team": "growth"},
    )
    v2 = register(
        client,
        "churn",
        {"model.pkl": b"v2 weights", "conf/params.json": b"{}"},
        metrics={"auc": 0.91},
        tags={"team": "growth"},
    )
    response = client.put("/api/v1/models/churn/aliases/champion", json={"version": 1})
    assert response.status_code == 200, response.text
    return v1, v2


def post_raw(client: TestClient, path: str, raw: bytes | str) -> httpx.Response:
    return client.post(path, content=raw, headers={"content-type": "application/json"})


def with_metric(blob: dict[str, Any], literal: str) -> str:
    """A registration body with metrics.auc written as this raw JSON literal."""
    return '{"files": [' + json.dumps(blob) + '], "metrics": {"auc": ' + literal + "}}"


@pytest.fixture
def blob(client: TestClient) -> dict[str, Any]:
    """One uploaded blob and a manifest entry naming it."""
    data = b"the model bytes"
    return {"path": "model.bin", "size": len(data), "sha256": upload(client, data)}


# -- health and documentation ---------------------------------------------------------------


def test_health_readiness_and_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path in (
        "/api/v1/blobs/{digest}",
        "/api/v1/models/{name}/versions",
        "/api/v1/resolve/{reference}",
        "/api/v1/versions",
        "/api/v1/events",
    ):
        assert path in paths
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "openapi.json" in docs.text


def test_openapi_operation_ids_are_unique(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_unknown_route_and_method_are_problems(client: TestClient) -> None:
    problem(client.get("/api/v1/nothing-here"), 404, "not_found")
    problem(client.delete("/api/v1/versions"), 405, "method_not_allowed")


# -- blobs ------------------------------------------------------------------------------------


def test_blob_missing_upload_and_read(client: TestClient) -> None:
    data = b"weights " * 1000
    digest = sha(data)
    other = sha(b"never uploaded")
    asked = {"digests": [f"sha256:{digest}", f"sha256:{other}"]}
    missing = client.post("/api/v1/blobs/missing", json=asked)
    assert missing.status_code == 200
    assert missing.json() == {"missing": [f"sha256:{digest}", f"sha256:{other}"]}

    created = client.put(f"/api/v1/blobs/sha256:{digest}", content=data)
    assert created.status_code == 201
    assert created.json() == {"digest": f"sha256:{digest}", "size": len(data), "created": True}
    again = client.put(f"/api/v1/blobs/sha256:{digest}", content=data)
    assert again.status_code == 200
    assert again.json() == {"digest": f"sha256:{digest}", "size": len(data), "created": False}

    missing = client.post("/api/v1/blobs/missing", json=asked)
    assert missing.json() == {"missing": [f"sha256:{other}"]}

    got = client.get(f"/api/v1/blobs/sha256:{digest}")
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["etag"] == f'"sha256:{digest}"'
    head = client.head(f"/api/v1/blobs/sha256:{digest}")
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(data))
    assert head.content == b""
    part = client.get(f"/api/v1/blobs/sha256:{digest}", headers={"Range": "bytes=8-15"})
    assert part.status_code == 206
    assert part.content == data[8:16]
    problem(client.get(f"/api/v1/blobs/sha256:{other}"), 404, "blob_not_found")


def test_blob_digest_mismatch_is_refused_and_stays_missing(
    client: TestClient, service: Any
) -> None:
    claimed = sha(b"what I promised")
    response = client.put(f"/api/v1/blobs/sha256:{claimed}", content=b"what I sent")
    body = problem(response, 400, "digest_mismatch")
    assert body["expected"] == f"sha256:{claimed}"
    assert body["actual"] == f"sha256:{sha(b'what I sent')}"
    missing = client.post("/api/v1/blobs/missing", json={"digests": [f"sha256:{claimed}"]})
    assert missing.json() == {"missing": [f"sha256:{claimed}"]}
    problem(client.get(f"/api/v1/blobs/sha256:{claimed}"), 404, "blob_not_found")
    assert service.blobs.stat(claimed) is None
    # and the right bytes can still be uploaded afterwards
    ok = client.put(f"/api/v1/blobs/sha256:{claimed}", content=b"what I promised")
    assert ok.status_code == 201


def test_unnamed_upload_is_named_by_its_content(client: TestClient) -> None:
    data = b"hashed while it streams" * 1000
    response = client.post("/api/v1/blobs/uploads", content=data)
    assert response.status_code == 201, response.text
    assert response.json() == {"digest": f"sha256:{sha(data)}", "size": len(data), "created": True}
    asked = {"digests": [f"sha256:{sha(data)}"]}
    assert client.post("/api/v1/blobs/missing", json=asked).json() == {"missing": []}
    assert client.get(f"/api/v1/blobs/sha256:{sha(data)}").content == data
    # a version can reference it like any other blob
    entry = {"path": "m.bin", "size": len(data), "sha256": sha(data)}
    assert client.post("/api/v1/models/churn/versions", json={"files": [entry]}).status_code == 201


def test_unnamed_upload_streamed_and_empty(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"a" * 70_000
        yield b"b" * 3

    streamed = client.post("/api/v1/blobs/uploads", content=chunks())
    assert streamed.json()["digest"] == f"sha256:{sha(b'a' * 70_000 + b'b' * 3)}"
    empty = client.post("/api/v1/blobs/uploads", content=b"")
    assert empty.status_code == 201
    assert empty.json() == {"digest": f"sha256:{sha(b'')}", "size": 0, "created": True}


def test_unnamed_upload_of_a_stored_blob_says_not_created(client: TestClient) -> None:
    digest = upload(client, b"already here")
    again = client.post("/api/v1/blobs/uploads", content=b"already here")
    assert again.json() == {"digest": f"sha256:{digest}", "size": 12, "created": False}


def test_reupload_of_a_stored_digest_cannot_replace_its_bytes(client: TestClient) -> None:
    data = b"the real weights"
    digest = upload(client, data)
    forged = client.put(f"/api/v1/blobs/sha256:{digest}", content=b"forged weights!!")
    assert forged.status_code in (200, 400)
    assert client.get(f"/api/v1/blobs/sha256:{digest}").content == data


def test_blob_streamed_upload_without_content_length(client: TestClient) -> None:
    data = b"z" * (3 * 1024 * 1024 + 17)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 1024 * 1024):
            yield data[i : i + 1024 * 1024]

    response = client.put(f"/api/v1/blobs/sha256:{sha(data)}", content=chunks())
    assert response.status_code == 201, response.text
    assert response.json()["size"] == len(data)
    assert client.get(f"/api/v1/blobs/sha256:{sha(data)}").content == data


@pytest.mark.parametrize(
    "digest",
    ["sha256:" + "A" * 64, "sha256:abc", "md5:" + "a" * 32, "a" * 64, "sha256:" + "g" * 64],
)
def test_blob_invalid_digest_in_url(client: TestClient, digest: str) -> None:
    problem(client.put(f"/api/v1/blobs/{digest}", content=b"x"), (400, 404), None)
    problem(client.get(f"/api/v1/blobs/{digest}"), (400, 404), None)


@pytest.mark.parametrize("digests", [["nope"], ["sha256:zz"], ["sha256:" + "A" * 64], [1]])
def test_missing_refuses_bad_digests(client: TestClient, digests: list[Any]) -> None:
    problem(client.post("/api/v1/blobs/missing", json={"digests": digests}), 400, None)


# -- registering ------------------------------------------------------------------------------


def test_register_with_full_metadata(client: TestClient) -> None:
    files = {"model.pkl": b"pickled", "conf/params.json": b'{"depth": 5}', "README.md": b"# hi"}
    manifest = files_of(client, files)
    body = {
        "files": manifest,
        "params": {"max_depth": 5, "lr": 0.1, "kind": "gbm", "early": True},
        "metrics": {"auc": 0.87, "rows": 1000},
        "tags": {"team": "growth", "owner": "ana"},
        "description": "# Churn\n\nA gradient-boosted model.",
        "dataset": {"name": "customers", "version": "2024-w36", "digest": "sha256:ab"},
        "source": {"repo": "https://git.example/ml.git", "commit": "a" * 40, "branch": "main"},
        "environment": {"python": "3.11.9", "platform": "linux", "packages": {"numpy": "2.0"}},
        "run": "mlflow://runs/42",
        "framework": "sklearn",
        "format": "pickle",
    }
    response = client.post("/api/v1/models/churn/versions", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/api/v1/models/churn/versions/1"
    v = response.json()
    assert v["model"] == "churn"
    assert v["version"] == 1
    assert v["reference"] == "churn/1"
    expected_entries = [FileEntry(f["path"], f["size"], f["sha256"]) for f in manifest]
    assert v["manifest_digest"] == manifest_digest(expected_entries)
    assert [f["path"] for f in v["files"]] == sorted(files)
    assert {f["path"]: f["sha256"] for f in v["files"]} == {p: sha(d) for p, d in files.items()}
    assert v["size"] == sum(len(d) for d in files.values())
    assert v["params"] == {"max_depth": "5", "lr": "0.1", "kind": "gbm", "early": "true"}
    assert v["metrics"] == {"auc": 0.87, "rows": 1000.0}
    assert v["tags"] == {"team": "growth", "owner": "ana"}
    assert v["description"] == body["description"]
    assert v["dataset"] == {"name": "customers", "version": "2024-w36", "digest": "sha256:ab"}
    assert v["source"] == {
        "repo": "https://git.example/ml.git",
        "commit": "a" * 40,
        "branch": "main",
        "dirty": None,
    }
    assert v["environment"] == body["environment"]
    assert v["run"] == "mlflow://runs/42"
    assert (v["framework"], v["format"]) == ("sklearn", "pickle")
    assert v["creator"] == "tester"
    assert v["stage"] == "development"
    assert v["aliases"] == []
    assert v["created_at"].endswith("Z")

    # the model was created with it, the stored version reads back identically
    model = client.get("/api/v1/models/churn").json()
    assert model["latest_version"] == 1
    assert client.get("/api/v1/models/churn/versions/1").json() == v
    kinds = [(e["kind"], e["subject"]) for e in all_events(client)]
    assert kinds == [("model.created", "churn"), ("version.registered", "churn/1")]

    second = client.post("/api/v1/models/churn/versions", json={"files": manifest[:1]})
    assert second.status_code == 201
    assert second.json()["version"] == 2
    assert second.json()["params"] == {} and second.json()["dataset"] is None


def test_register_naming_unknown_blobs_creates_nothing(client: TestClient, blob: dict) -> None:
    before = all_events(client)
    ghost_a, ghost_b = sha(b"never uploaded a"), sha(b"never uploaded b")
    body = {
        "files": [
            blob,
            {"path": "a.bin", "size": 1, "sha256": ghost_a},
            {"path": "b.bin", "size": 1, "sha256": ghost_b},
        ],
        "metrics": {"auc": 0.9},
    }
    found = problem(client.post("/api/v1/models/ghost/versions", json=body), 409, "missing_blobs")
    assert sorted(found["missing"]) == sorted([f"sha256:{ghost_a}", f"sha256:{ghost_b}"])
    problem(client.get("/api/v1/models/ghost"), 404, "model_not_found")
    problem(client.get("/api/v1/resolve/ghost"), 404, "model_not_found")
    assert client.get("/api/v1/versions").json()["items"] == []
    assert all_events(client) == before

    # an existing model gains no version either
    register(client, "churn")
    before = all_events(client)
    problem(client.post("/api/v1/models/churn/versions", json=body), 409, "missing_blobs")
    assert client.get("/api/v1/models/churn").json()["latest_version"] == 1
    assert all_events(client) == before


def test_register_refuses_a_manifest_naming_a_blob_that_failed_its_digest(
    client: TestClient,
) -> None:
    claimed = sha(b"good")
    problem(client.put(f"/api/v1/blobs/sha256:{claimed}", content=b"evil"), 400, "digest_mismatch")
    body = {"files": [{"path": "m.bin", "size": 4, "sha256": claimed}]}
    problem(client.post("/api/v1/models/churn/versions", json=body), 409, "missing_blobs")


@pytest.mark.parametrize(
    "segment",
    [
        "",
        "%20",
        "-churn",
        ".hidden",
        "Churn",
        "CHURN",
        "caf%C3%A9",
        "a%2Fb",
        "a%09b",
        "a%0Ab",
        "a%7Fb",
        "a%00b",
        "a%20b",
        "a%40b",
        "a" * 129,
    ],
)
def test_invalid_model_names(client: TestClient, segment: str, blob: dict) -> None:
    body = {"files": [blob]}
    responses = [
        client.post(f"/api/v1/models/{segment}/versions", json=body),
        # ("" would be /api/v1/models/, which redirects to the listing: not a model at all)
        client.get(f"/api/v1/models/{segment or 'x%00'}"),
        client.get(f"/api/v1/models/{segment}/versions"),
        client.put(f"/api/v1/models/{segment}/aliases/champion", json={"version": 1}),
        client.post("/api/v1/models", json={"name": httpx.URL(f"/{segment}").path[1:]}),
    ]
    for response in responses:
        found = problem(response, (400, 404), None)
        if response.status_code == 400:
            assert found["code"] == "invalid_name", found
    assert all_events(client) == []
    assert client.get("/api/v1/models").json()["items"] == []


def test_longest_model_name_is_accepted(client: TestClient) -> None:
    name = "a" * 128
    assert register(client, name)["model"] == name
    assert client.get(f"/api/v1/models/{name}/versions/1").json()["reference"] == f"{name}/1"


@pytest.mark.parametrize(
    "paths",
    [
        ["../x"],
        ["/abs"],
        ["a/../b"],
        ["a/./b"],
        ["./a"],
        ["a\\b"],
        ["C:/x"],
        ["a//b"],
        ["a/"],
        [""],
        ["a\x00b"],
        ["a\nb"],
        ["dup", "dup"],
        ["a", "a/b"],
        ["x/y", "x/y/z"],
    ],
    ids=lambda p: repr(p),
)
def test_invalid_file_paths(client: TestClient, blob: dict, paths: list[str]) -> None:
    body = {"files": [{**blob, "path": p} for p in paths]}
    problem(client.post("/api/v1/models/churn/versions", json=body), 400, "invalid_path")
    problem(client.get("/api/v1/models/churn"), 404, "model_not_found")
    assert all_events(client) == []


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"files": [}', b"not json", b'{"files": [1,]}', b"\xff\xfe"],
)
def test_malformed_json(client: TestClient, raw: bytes) -> None:
    problem(post_raw(client, "/api/v1/models/churn/versions", raw), 400, "malformed_json")


@pytest.mark.parametrize(
    "extra",
    [
        {"bogus": 1},
        {"dataset": {"name": "d", "sha": "x"}},
        {"source": {"repo": "r", "sha": "x"}},
        {"environment": {"python": "3", "pip": []}},
    ],
)
def test_unknown_fields_are_refused(client: TestClient, blob: dict, extra: dict) -> None:
    body = {"files": [blob], **extra}
    found = problem(client.post("/api/v1/models/churn/versions", json=body), 400, "invalid_input")
    assert found["errors"]
    with_extra_file_field = {"files": [{**blob, "mode": 420}]}
    problem(
        client.post("/api/v1/models/churn/versions", json=with_extra_file_field),
        400,
        "invalid_input",
    )
    assert all_events(client) == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"files": []},
        {"files": "model.bin"},
        {"files": [{"path": "m", "size": "15", "sha256": "0" * 64}]},
        {"files": [{"path": "m", "size": -1, "sha256": "0" * 64}]},
        {"files": [{"path": "m", "size": 1, "sha256": "sha256:" + "0" * 64}]},
        [1, 2],
    ],
)
def test_wrong_shapes_are_refused(client: TestClient, body: Any) -> None:
    problem(client.post("/api/v1/models/churn/versions", json=body), 400, None)


def test_oversized_json_body_with_content_length(client: TestClient) -> None:
    raw = b'{"description": "' + b"x" * (8 * 1024 * 1024 + 1) + b'"}'
    problem(post_raw(client, "/api/v1/models/churn/versions", raw), 413, "too_large")
    problem(client.get("/api/v1/models/churn"), 404, "model_not_found")


def test_oversized_json_body_streamed_without_content_length(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"description": "'
        for _ in range(9):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    response = client.post(
        "/api/v1/models/churn/versions",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    problem(response, 413, "too_large")


@pytest.mark.parametrize(
    "field",
    [
        {"tags": {f"t{i}": "v" for i in range(101)}},
        {"params": {f"p{i}": i for i in range(1001)}},
        {"metrics": {f"m{i}": i for i in range(1001)}},
        {"environment": {"packages": {f"pkg{i}": "1" for i in range(5001)}}},
        {"description": "x" * (64 * 1024 + 1)},
    ],
    ids=["tags", "params", "metrics", "packages", "description"],
)
def test_too_many_or_too_long(client: TestClient, blob: dict, field: dict) -> None:
    response = client.post("/api/v1/models/churn/versions", json={"files": [blob], **field})
    found = problem(response, (400, 413), None)
    assert (response.status_code, found["code"]) in {(413, "too_large"), (400, "invalid_input")}
    problem(client.get("/api/v1/models/churn"), 404, "model_not_found")


@pytest.mark.parametrize(
    "literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", '"0.9"', "true", "null"]
)
def test_non_finite_or_non_numeric_metric(client: TestClient, blob: dict, literal: str) -> None:
    raw = with_metric(blob, literal)
    found = problem(post_raw(client, "/api/v1/models/churn/versions", raw), 400, None)
    assert found["code"] in ("invalid_input", "malformed_json")
    problem(client.get("/api/v1/models/churn"), 404, "model_not_found")


def test_huge_integer_metric_is_a_client_error(client: TestClient, blob: dict) -> None:
    raw = with_metric(blob, "1" + "0" * 400)
    problem(post_raw(client, "/api/v1/models/churn/versions", raw), 400, None)


@pytest.mark.parametrize("size", [999, 10**30])
def test_manifest_size_must_match_the_blob(client: TestClient, blob: dict, size: int) -> None:
    raw = json.dumps({"files": [{**blob, "size": size}]})
    found = problem(post_raw(client, "/api/v1/models/churn/versions", raw), 400, "size_mismatch")
    assert blob["sha256"] in found["detail"]
    problem(client.get("/api/v1/models/churn"), 404, "model_not_found")
    assert all_events(client) == []


# -- small files inline -----------------------------------------------------------------------


def inline_entry(path: str, data: bytes, **override: Any) -> dict[str, Any]:
    entry = {
        "path": path,
        "size": len(data),
        "sha256": sha(data),
        "content": base64.b64encode(data).decode(),
    }
    return {**entry, **override}


def test_register_with_inline_files(client: TestClient) -> None:
    small, other = b"tiny config", b"another small file"
    body = {"files": [inline_entry("config.json", small), inline_entry("b/other.txt", other)]}
    response = client.post("/api/v1/models/churn/versions", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["size"] == len(small) + len(other)
    # the inline bytes became ordinary blobs
    asked = {"digests": [f"sha256:{sha(small)}", f"sha256:{sha(other)}"]}
    assert client.post("/api/v1/blobs/missing", json=asked).json() == {"missing": []}
    got = client.get("/api/v1/models/churn/versions/1/files/config.json")
    assert got.content == small
    part = client.get(f"/api/v1/blobs/sha256:{sha(small)}", headers={"Range": "bytes=2-5"})
    assert (part.status_code, part.content) == (206, small[2:6])
    assert client.head(f"/api/v1/blobs/sha256:{sha(other)}").headers["Content-Length"] == str(
        len(other)
    )
    # inline content for a blob the server already holds is fine too
    again = client.post("/api/v1/models/churn/versions", json=body)
    assert again.status_code == 201
    assert again.json()["manifest_digest"] == response.json()["manifest_digest"]


@pytest.mark.parametrize(
    ("entry", "status", "code"),
    [
        (
            inline_entry("m.bin", b"promised", content=base64.b64encode(b"sent").decode()),
            400,
            "digest_mismatch",
        ),
        (inline_entry("m.bin", b"abc", size=5), 400, "size_mismatch"),
        (inline_entry("m.bin", b"abc", content="!!not base64!!"), 400, "invalid_input"),
        (inline_entry("m.bin", b"x" * (64 * 1024 + 1)), 413, "too_large"),
    ],
    ids=["digest-mismatch", "size-mismatch", "bad-base64", "too-big"],
)
def test_register_with_bad_inline_files_creates_nothing(
    client: TestClient, entry: dict[str, Any], status: int, code: str | None
) -> None:
    found = problem(
        client.post("/api/v1/models/churn/versions", json={"files": [entry]}), status, code
    )
    if code is None:
        assert found["code"] in ("digest_mismatch", "missing_blobs")
    problem(client.get("/api/v1/models/churn"), 404, "model_not_found")
    assert all_events(client) == []


def test_inline_digest_mismatch_stores_no_blob(client: TestClient) -> None:
    entry = inline_entry("m.bin", b"promised", content=base64.b64encode(b"sent").decode())
    problem(client.post("/api/v1/models/churn/versions", json={"files": [entry]}), 400, None)
    asked = {"digests": [f"sha256:{sha(b'promised')}", f"sha256:{sha(b'sent')}"]}
    assert len(client.post("/api/v1/blobs/missing", json=asked).json()["missing"]) == 2


# -- editing, journaled -----------------------------------------------------------------------


def test_patch_version_is_journaled_with_before_and_after(client: TestClient) -> None:
    register(client, "churn", description="first", tags={"team": "growth", "wip": "yes"})
    seq = all_events(client)[-1]["seq"]
    patch = {"description": "second", "tags": {"wip": None, "reviewed": "ana"}}
    response = client.patch("/api/v1/models/churn/versions/1", json=patch)
    assert response.status_code == 200, response.text
    assert response.json()["description"] == "second"
    assert response.json()["tags"] == {"team": "growth", "reviewed": "ana"}
    assert client.get("/api/v1/models/churn/versions/1").json()["tags"] == {
        "team": "growth",
        "reviewed": "ana",
    }
    new = client.get("/api/v1/events", params={"after": seq}).json()["items"]
    assert len(new) == 1
    assert (new[0]["kind"], new[0]["subject"], new[0]["actor"]) == (
        "version.updated",
        "churn/1",
        "tester",
    )
    assert new[0]["payload"] == {
        "before": {"description": "first", "tags": {"team": "growth", "wip": "yes"}},
        "after": {"description": "second", "tags": {"team": "growth", "reviewed": "ana"}},
    }
    # a patch that changes nothing writes nothing
    same = client.patch("/api/v1/models/churn/versions/1", json={"description": "second"})
    assert same.status_code == 200
    assert len(all_events(client)) == seq + 1
    # files are not editable
    problem(
        client.patch("/api/v1/models/churn/versions/1", json={"files": []}), 400, "invalid_input"
    )
    problem(client.patch("/api/v1/models/churn/versions/9", json={}), 404, "version_not_found")
    problem(client.patch("/api/v1/models/nope/versions/1", json={}), 404, "model_not_found")


def test_patch_model_is_journaled_with_before_and_after(client: TestClient) -> None:
    created = client.post("/api/v1/models", json={"name": "churn", "tags": {"a": "1"}})
    assert created.status_code == 201
    problem(client.post("/api/v1/models", json={"name": "churn"}), 409, "model_exists")
    response = client.patch(
        "/api/v1/models/churn", json={"description": "card", "tags": {"b": "2"}}
    )
    assert response.status_code == 200
    assert response.json()["tags"] == {"a": "1", "b": "2"}
    last = all_events(client)[-1]
    assert (last["kind"], last["subject"]) == ("model.updated", "churn")
    assert last["payload"] == {
        "before": {"description": "", "tags": {"a": "1"}},
        "after": {"description": "card", "tags": {"a": "1", "b": "2"}},
    }
    problem(client.patch("/api/v1/models/churn", json={"tags": {"bad key!": "x"}}), 400, None)


# -- aliases ----------------------------------------------------------------------------------


def test_alias_put_get_move_delete_journaled(client: TestClient) -> None:
    register(client, "churn", {"a": b"1"})
    register(client, "churn", {"a": b"2"})
    seq = all_events(client)[-1]["seq"]

    put = client.put("/api/v1/models/churn/aliases/champion", json={"version": 1})
    assert put.status_code == 200
    assert (put.json()["version"], put.json()["aliases"]) == (1, ["champion"])
    got = client.get("/api/v1/models/churn/aliases/champion")
    assert got.json()["reference"] == "churn/1"

    moved = client.put("/api/v1/models/churn/aliases/champion", json={"version": 2})
    assert moved.json()["reference"] == "churn/2"
    assert client.get("/api/v1/models/churn/versions/1").json()["aliases"] == []
    assert client.get("/api/v1/models/churn").json()["aliases"] == {"champion": 2}
    # setting it to where it already is changes nothing
    client.put("/api/v1/models/churn/aliases/champion", json={"version": 2})

    deleted = client.delete("/api/v1/models/churn/aliases/champion")
    assert deleted.status_code == 204
    problem(client.get("/api/v1/models/churn/aliases/champion"), 404, "alias_not_found")
    problem(client.delete("/api/v1/models/churn/aliases/champion"), 404, "alias_not_found")

    events = client.get("/api/v1/events", params={"after": seq}).json()["items"]
    assert [(e["kind"], e["subject"], e["payload"]) for e in events] == [
        ("alias.set", "churn@champion", {"before": None, "after": 1}),
        ("alias.set", "churn@champion", {"before": 1, "after": 2}),
        ("alias.deleted", "churn@champion", {"before": 2, "after": None}),
    ]


@pytest.mark.parametrize(
    ("alias", "body", "status", "code"),
    [
        ("latest", {"version": 1}, 400, "invalid_name"),
        ("42", {"version": 1}, 400, "invalid_name"),
        ("sha256x", {"version": 1}, 400, "invalid_name"),
        ("Champion", {"version": 1}, 400, "invalid_name"),
        ("champion", {"version": 7}, 404, "version_not_found"),
        ("champion", {"version": 0}, 400, "invalid_input"),
        ("champion", {"version": "1"}, 400, "invalid_input"),
        ("champion", {}, 400, "invalid_input"),
    ],
)
def test_alias_errors(client: TestClient, alias: str, body: dict, status: int, code: str) -> None:
    register(client, "churn")
    before = all_events(client)
    problem(client.put(f"/api/v1/models/churn/aliases/{alias}", json=body), status, code)
    assert all_events(client) == before


def test_alias_on_unknown_model(client: TestClient) -> None:
    response = client.put("/api/v1/models/nope/aliases/champion", json={"version": 1})
    problem(response, 404, "model_not_found")


# -- resolve ----------------------------------------------------------------------------------


def test_resolve_every_reference_form(client: TestClient) -> None:
    v1, v2 = seed_churn(client)
    cases = {
        "churn": "churn/2",
        "churn/1": "churn/1",
        "churn/2": "churn/2",
        "churn@champion": "churn/1",
        "churn@latest": "churn/2",
        f"churn@{v1['manifest_digest']}": "churn/1",
        f"churn@{v2['manifest_digest']}": "churn/2",
        # the same, percent-encoded as a cautious client would send it
        "churn%2F1": "churn/1",
        "churn%40champion": "churn/1",
        f"churn%40{v2['manifest_digest'].replace(':', '%3A')}": "churn/2",
    }
    for ref, expected in cases.items():
        response = client.get(f"/api/v1/resolve/{ref}")
        assert response.status_code == 200, (ref, response.text)
        assert response.json()["reference"] == expected, ref
    assert client.get("/api/v1/resolve/churn@champion").json() == v1 | {"aliases": ["champion"]}


def test_resolve_sees_every_change_at_once(client: TestClient) -> None:
    def ref(reference: str) -> str:
        response = client.get(f"/api/v1/resolve/{reference}")
        assert response.status_code == 200, response.text
        return str(response.json()["reference"])

    seed_churn(client)
    assert (ref("churn"), ref("churn@champion")) == ("churn/2", "churn/1")
    register(client, "churn", {"model.pkl": b"v3"})
    assert ref("churn") == "churn/3"
    client.put("/api/v1/models/churn/aliases/champion", json={"version": 3})
    assert ref("churn@champion") == "churn/3"
    client.patch("/api/v1/models/churn/versions/3", json={"tags": {"state": "live"}})
    assert client.get("/api/v1/resolve/churn@champion").json()["tags"] == {"state": "live"}
    client.delete("/api/v1/models/churn/aliases/champion")
    problem(client.get("/api/v1/resolve/churn@champion"), 404, "alias_not_found")


def test_resolve_on_one_replica_sees_changes_made_on_another(
    client: TestClient, settings: Any
) -> None:
    other_service = open_service(settings)  # a second server process on the same database
    try:
        with TestClient(
            create_app(other_service, reach=Reach.LOOPBACK, local_user="other")
        ) as other:
            seed_churn(client)
            assert other.get("/api/v1/resolve/churn@champion").json()["version"] == 1
            assert client.get("/api/v1/resolve/churn@champion").json()["version"] == 1
            moved = other.put("/api/v1/models/churn/aliases/champion", json={"version": 2})
            assert moved.status_code == 200
            assert client.get("/api/v1/resolve/churn@champion").json()["version"] == 2
            register(other, "churn", {"model.pkl": b"v3"})
            assert client.get("/api/v1/resolve/churn").json()["version"] == 3
    finally:
        other_service.close()


@pytest.mark.parametrize(
    ("ref", "code"),
    [
        ("nope", "model_not_found"),
        ("nope/1", "model_not_found"),
        ("nope@champion", "model_not_found"),
        ("churn/3", "version_not_found"),
        ("churn/2147483647", "version_not_found"),
        ("churn@sha256:" + "0" * 64, "version_not_found"),
        ("churn@challenger", "alias_not_found"),
    ],
)
def test_resolve_unknown(client: TestClient, ref: str, code: str) -> None:
    seed_churn(client)
    problem(client.get(f"/api/v1/resolve/{ref}"), 404, code)


def test_huge_version_number_is_not_a_server_error(client: TestClient) -> None:
    seed_churn(client)
    for number in (2**31, 10**20):
        problem(client.get(f"/api/v1/resolve/churn/{number}"), (400, 404), None)
        problem(client.get(f"/api/v1/models/churn/versions/{number}"), (400, 404), None)
        problem(
            client.put("/api/v1/models/churn/aliases/champion", json={"version": number}),
            (400, 404),
            None,
        )


def test_digest_reference_shared_by_two_versions_means_the_newest(client: TestClient) -> None:
    first = register(client, "churn", {"model.bin": b"same"})
    second = register(client, "churn", {"model.bin": b"same"})
    assert first["manifest_digest"] == second["manifest_digest"]
    got = client.get(f"/api/v1/resolve/churn@{first['manifest_digest']}")
    assert got.json()["reference"] == "churn/2"


def test_resolve_model_without_versions(client: TestClient) -> None:
    client.post("/api/v1/models", json={"name": "empty"})
    problem(client.get("/api/v1/resolve/empty"), 404, "version_not_found")


@pytest.mark.parametrize(
    "ref",
    [
        "Churn",
        "churn/",
        "churn/0",
        "churn/x",
        "churn/-1",
        "churn/1/2",
        "churn@",
        "churn@Champion",
        "churn@sha256:abc",
        "churn@sha256:" + "A" * 64,
        "churn@12",
        "@champion",
        "churn%00",
        "churn@champion@x",
        "%20",
    ],
)
def test_resolve_malformed_reference(client: TestClient, ref: str) -> None:
    seed_churn(client)
    problem(client.get(f"/api/v1/resolve/{ref}"), 400, "invalid_reference")


def test_resolve_etag_and_304(client: TestClient) -> None:
    seed_churn(client)
    first = client.get("/api/v1/resolve/churn@champion")
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert client.get("/api/v1/resolve/churn@champion").headers["etag"] == etag

    cached = client.get("/api/v1/resolve/churn@champion", headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag
    listed = client.get(
        "/api/v1/resolve/churn@champion", headers={"If-None-Match": f'"other", {etag}'}
    )
    assert listed.status_code == 304
    stale = client.get("/api/v1/resolve/churn@champion", headers={"If-None-Match": '"stale"'})
    assert stale.status_code == 200

    client.put("/api/v1/models/churn/aliases/champion", json={"version": 2})
    moved = client.get("/api/v1/resolve/churn@champion", headers={"If-None-Match": etag})
    assert moved.status_code == 200
    assert moved.json()["reference"] == "churn/2"
    assert moved.headers["etag"] != etag
    again = client.get(
        "/api/v1/resolve/churn@champion", headers={"If-None-Match": moved.headers["etag"]}
    )
    assert again.status_code == 304


# -- file downloads ---------------------------------------------------------------------------

DATA = bytes(range(100))


@pytest.fixture
def hundred(client: TestClient) -> str:
    register(client, "churn", {"weights/model.bin": DATA, "empty.txt": b""})
    return "/api/v1/models/churn/versions/1/files/weights/model.bin"


def test_file_download_whole_and_head(client: TestClient, hundred: str) -> None:
    whole = client.get(hundred)
    assert whole.status_code == 200
    assert whole.content == DATA
    assert whole.headers["etag"] == f'"sha256:{sha(DATA)}"'
    assert whole.headers["accept-ranges"] == "bytes"
    head = client.head(hundred)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == "100"
    assert head.headers["etag"] == whole.headers["etag"]
    empty = client.get("/api/v1/models/churn/versions/1/files/empty.txt")
    assert (empty.status_code, empty.content) == (200, b"")


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 10),
        ("bytes=10-10", 10, 11),
        ("bytes=90-", 90, 100),
        ("bytes=-5", 95, 100),
        ("bytes=-500", 0, 100),
        ("bytes=95-200", 95, 100),
        ("bytes=99-99", 99, 100),
    ],
)
def test_file_range(client: TestClient, hundred: str, header: str, start: int, end: int) -> None:
    response = client.get(hundred, headers={"Range": header})
    assert response.status_code == 206
    assert response.content == DATA[start:end]
    assert response.headers["content-range"] == f"bytes {start}-{end - 1}/100"
    assert response.headers["content-length"] == str(end - start)
    head = client.head(hundred, headers={"Range": header})
    assert head.status_code == 206
    assert head.headers["content-range"] == f"bytes {start}-{end - 1}/100"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-1", "bytes=abc"])
def test_file_unusable_range_sends_whole_file(
    client: TestClient, hundred: str, header: str
) -> None:
    response = client.get(hundred, headers={"Range": header})
    assert response.status_code == 200
    assert response.content == DATA


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=150-160", "bytes=-0", "bytes=9-2"])
def test_file_unsatisfiable_range(client: TestClient, hundred: str, header: str) -> None:
    response = client.get(hundred, headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */100"


def test_file_unsatisfiable_range_is_a_problem(client: TestClient, hundred: str) -> None:
    problem(client.get(hundred, headers={"Range": "bytes=100-"}), 416, None)


def test_file_not_found(client: TestClient, hundred: str) -> None:
    base = "/api/v1/models/churn/versions"
    problem(client.get(f"{base}/1/files/weights/other.bin"), 404, "file_not_found")
    problem(client.get(f"{base}/2/files/weights/model.bin"), 404, "version_not_found")
    problem(client.get("/api/v1/models/nope/versions/1/files/x"), 404, "model_not_found")
    problem(client.get(f"{base}/1/files/weights%2F..%2F..%2Fx"), 400, "invalid_path")
    problem(client.get(f"{base}/0/files/x"), 400, "invalid_input")


# -- search -----------------------------------------------------------------------------------


def seed_search(client: TestClient) -> list[dict[str, Any]]:
    """Nine versions in three models; auc values repeat, so ordering needs a tie-breaker."""
    made = []
    plan = [
        ("churn", 0.80, "growth"),
        ("churn", 0.91, "growth"),
        ("churn", 0.86, "risk"),
        ("churn", 0.86, "growth"),
        ("fraud", 0.95, "risk"),
        ("fraud", 0.86, "growth"),
        ("fraud", 0.70, "growth"),
        ("upsell", 0.86, "growth"),
        ("upsell", 0.99, "growth"),
    ]
    for i, (name, auc, team) in enumerate(plan):
        made.append(
            register(
                client,
                name,
                {"model.bin": f"{name}-{i}".encode()},
                metrics={"auc": auc},
                params={"depth": i},
                tags={"team": team},
            )
        )
    return made


def page_through(client: TestClient, params: dict[str, Any]) -> list[str]:
    refs: list[str] = []
    token: str | None = None
    for _ in range(100):
        query = dict(params)
        if token:
            query["page_token"] = token
        response = client.get("/api/v1/versions", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= params.get("limit", 100)
        refs += [v["reference"] for v in page["items"]]
        token = page["next_page_token"]
        if token is None:
            return refs
    raise AssertionError("paging did not end")


def test_search_filters(client: TestClient) -> None:
    made = seed_search(client)

    def refs(filter: str, **extra: Any) -> set[str]:
        response = client.get("/api/v1/versions", params={"filter": filter, **extra})
        assert response.status_code == 200, response.text
        return {v["reference"] for v in response.json()["items"]}

    def expect(pred: Any) -> set[str]:
        return {v["reference"] for v in made if pred(v)}

    assert refs('metrics.auc >= 0.85 and tags.team = "growth"') == expect(
        lambda v: v["metrics"]["auc"] >= 0.85 and v["tags"]["team"] == "growth"
    )
    assert refs('name like "f%" or metrics.auc > 0.98') == {
        "fraud/1",
        "fraud/2",
        "fraud/3",
        "upsell/2",
    }
    assert refs('not tags.team = "growth"') == {"churn/3", "fraud/1"}
    assert refs('name in ("upsell", "fraud") and version = 2') == {"fraud/2", "upsell/2"}
    assert refs('params.depth = "4"') == {"fraud/1"}
    assert refs("metrics.missing > 0") == set()
    per_model = client.get("/api/v1/models/churn/versions", params={"filter": "metrics.auc > 0.85"})
    assert {v["reference"] for v in per_model.json()["items"]} == {"churn/2", "churn/3", "churn/4"}


@pytest.mark.parametrize(
    ("order_by", "limit"),
    [(None, 2), ("metrics.auc desc", 2), ("metrics.auc", 4), ("name, version desc", 1)],
)
def test_search_pages_through_everything_exactly_once(
    client: TestClient, order_by: str | None, limit: int
) -> None:
    made = seed_search(client)
    params: dict[str, Any] = {"limit": limit}
    if order_by:
        params["order_by"] = order_by
    paged = page_through(client, params)
    assert sorted(paged) == sorted(v["reference"] for v in made)
    assert len(paged) == len(set(paged))
    single = client.get("/api/v1/versions", params={**params, "limit": 1000}).json()
    assert single["next_page_token"] is None
    assert paged == [v["reference"] for v in single["items"]]

    by_ref = {v["reference"]: v for v in made}
    if order_by == "metrics.auc desc":
        aucs = [by_ref[r]["metrics"]["auc"] for r in paged]
        assert aucs == sorted(aucs, reverse=True)
    elif order_by == "metrics.auc":
        aucs = [by_ref[r]["metrics"]["auc"] for r in paged]
        assert aucs == sorted(aucs)
    elif order_by is None:  # newest first
        assert paged == [v["reference"] for v in reversed(made)]
    else:
        keys = [(by_ref[r]["model"], -by_ref[r]["version"]) for r in paged]
        assert keys == sorted(keys)


def test_a_version_page_lists_each_environment_once(client: TestClient) -> None:
    py311 = {"python": "3.11.7", "platform": "Linux", "packages": {"numpy": "2.1.0"}}
    py312 = {"python": "3.12.1", "platform": "Linux", "packages": {"numpy": "2.2.0"}}
    for i, env in enumerate([py311, py312, py311, None]):
        register(client, "m", {"w.bin": f"w{i}".encode()}, environment=env)
    for url in ("/api/v1/versions", "/api/v1/models/m/versions"):
        page = client.get(url).json()
        keys = [item["environment"] for item in page["items"]]  # newest first
        assert keys[0] is None and keys[1] == keys[3] != keys[2]
        assert page["environments"] == {keys[1]: py311, keys[2]: py312}
        canonical = json.dumps(py311, sort_keys=True, separators=(",", ":")).encode()
        assert keys[1] == hashlib.sha256(canonical).hexdigest()
        full = client.get("/api/v1/models/m/versions/1").json()
        assert full["environment"] == py311  # a single version carries its own


def test_search_filtered_paging(client: TestClient) -> None:
    seed_search(client)
    params = {"filter": 'tags.team = "growth"', "order_by": "metrics.auc desc", "limit": 2}
    paged = page_through(client, params)
    assert len(paged) == 7 == len(set(paged))


def test_search_order_puts_versions_without_the_field_last_on_every_backend(
    client: TestClient,
) -> None:
    register(client, "churn", {"a": b"1"}, metrics={"auc": 0.5})
    register(client, "churn", {"a": b"2"})
    register(client, "churn", {"a": b"3"}, metrics={"auc": 0.7})
    for order, expected in (("asc", ["churn/1", "churn/3"]), ("desc", ["churn/3", "churn/1"])):
        page = client.get("/api/v1/versions", params={"order_by": f"metrics.auc {order}"}).json()
        assert [v["reference"] for v in page["items"]] == [*expected, "churn/2"], order


@pytest.mark.parametrize(
    "filter", ["metrics.auc >>= 1", "metrics.auc >= ", '(name = "x"', "nosuch = 1", "and"]
)
def test_search_malformed_filter(client: TestClient, filter: str) -> None:
    found = problem(
        client.get("/api/v1/versions", params={"filter": filter}), 400, "invalid_filter"
    )
    assert isinstance(found["position"], int)
    assert 0 <= found["position"] <= len(filter)
    problem(client.get("/api/v1/models", params={"filter": filter}), 400, "invalid_filter")


def test_search_malformed_filter_position_is_exact(client: TestClient) -> None:
    found = problem(
        client.get("/api/v1/versions", params={"filter": "metrics.auc >>= 1"}), 400, None
    )
    assert found["position"] == 13


def test_search_bad_order_by(client: TestClient) -> None:
    problem(client.get("/api/v1/versions", params={"order_by": "metrics.auc sideways"}), 400, None)


def test_page_token_from_another_query_is_refused(client: TestClient) -> None:
    seed_search(client)
    first = client.get("/api/v1/versions", params={"limit": 2}).json()
    token = first["next_page_token"]
    assert token
    for other in (
        {"limit": 2, "page_token": token, "filter": "metrics.auc > 0"},
        {"limit": 2, "page_token": token, "order_by": "metrics.auc"},
    ):
        problem(client.get("/api/v1/versions", params=other), 400, "invalid_page_token")
    problem(
        client.get("/api/v1/models/churn/versions", params={"limit": 2, "page_token": token}),
        400,
        "invalid_page_token",
    )
    problem(
        client.get("/api/v1/versions", params={"page_token": "garbage!!"}),
        400,
        "invalid_page_token",
    )
    # and with the same query it carries on
    same = client.get("/api/v1/versions", params={"limit": 2, "page_token": token})
    assert same.status_code == 200
    assert len(same.json()["items"]) == 2


@pytest.mark.parametrize("limit", [0, 1001, -1, "x"])
def test_search_limit_bounds(client: TestClient, limit: Any) -> None:
    problem(client.get("/api/v1/versions", params={"limit": limit}), 400, "invalid_input")


def test_model_listing_pages(client: TestClient) -> None:
    for name in ("a1", "b2", "c3", "d4", "e5"):
        client.post("/api/v1/models", json={"name": name})
    names: list[str] = []
    token = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if token:
            params["page_token"] = token
        page = client.get("/api/v1/models", params=params).json()
        names += [m["name"] for m in page["items"]]
        token = page["next_page_token"]
        if not token:
            break
    assert names == ["a1", "b2", "c3", "d4", "e5"]


# -- the journal ------------------------------------------------------------------------------


def test_events_page_with_after(client: TestClient) -> None:
    seed_churn(client)
    register(client, "fraud")
    everything = all_events(client)
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
    assert len(everything) == 6  # model, v1, v2, alias, model, v1

    seen: list[dict[str, Any]] = []
    after = 0
    while True:
        page = client.get("/api/v1/events", params={"after": after, "limit": 4}).json()
        if not page["items"]:
            assert page["next_after"] is None
            break
        assert all(e["seq"] > after for e in page["items"])
        seen += page["items"]
        after = page["next_after"]
        assert after == page["items"][-1]["seq"]
    assert seen == everything
    assert everything[0]["prev_hash"] == GENESIS_HASH
    for prev, event in itertools.pairwise(everything):
        assert event["prev_hash"] == prev["hash"]
    only = client.get("/api/v1/events", params={"kind": "alias.set"}).json()["items"]
    assert [(e["kind"], e["subject"]) for e in only] == [("alias.set", "churn@champion")]
    problem(client.get("/api/v1/events", params={"after": -1}), 400, "invalid_input")
    problem(client.get("/api/v1/events", params={"limit": 0}), 400, "invalid_input")


# -- models -----------------------------------------------------------------------------------


def test_delete_model(client: TestClient) -> None:
    client.post("/api/v1/models", json={"name": "empty"})
    register(client, "churn")
    problem(client.delete("/api/v1/models/churn"), 409, "model_not_empty")
    assert client.delete("/api/v1/models/empty").status_code == 204
    problem(client.get("/api/v1/models/empty"), 404, "model_not_found")
    problem(client.delete("/api/v1/models/empty"), 404, "model_not_found")
    assert all_events(client)[-1]["kind"] == "model.deleted"


def test_a_page_of_versions_costs_the_same_statements_whatever_its_size(
    client: TestClient, count_queries: CountQueries
) -> None:
    """Six queries load a page of versions (architecture.md), never one per version; and
    the counter sees every statement, Prebuilt ones included."""
    for i in range(30):
        register(client, "m", {"w.bin": f"w{i}".encode()}, metrics={"auc": i / 30})
    counts = {}
    for limit in (2, 2, 30):  # the first request warms the caches
        with count_queries() as counted:
            assert len(client.get("/api/v1/versions", params={"limit": limit}).json()["items"])
        counts[limit] = counted.count
    assert counts[2] == counts[30] > 0, counts
    assert any("version_metrics" in sql for sql in counted.statements)
