"""FastRoutes (api/fast.py): search, registration and MLflow's reads answered without
FastAPI's router give exactly the framework's answers, and hand it everything they do not
take."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from modelyard.api import create_app
from modelyard.api.fast import FastRoutes
from modelyard.domain.access import Reach
from modelyard.service import RegistryService

SEARCH = "/api/v1/versions"


def framework_only(service: RegistryService) -> FastAPI:
    """The same app with FastRoutes taken out: every request goes through the router."""
    app = create_app(service, reach=Reach.LOOPBACK)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not FastRoutes]
    return app


@pytest.fixture
def clients(service: RegistryService) -> Iterator[tuple[TestClient, TestClient]]:
    with (
        TestClient(create_app(service, reach=Reach.LOOPBACK)) as fast,
        TestClient(framework_only(service)) as slow,
    ):
        yield fast, slow


def body_of(name: bytes, **meta: Any) -> dict[str, Any]:
    content = base64.b64encode(name).decode()
    digest = hashlib.sha256(name).hexdigest()
    file = {"path": "model.bin", "size": len(name), "sha256": digest, "content": content}
    return {"files": [file], **meta}


def same(fast: Any, slow: Any) -> None:
    assert fast.status_code == slow.status_code, (fast.text, slow.text)
    assert fast.headers["content-type"] == slow.headers["content-type"]
    assert fast.content == slow.content


def test_search_answers_as_the_route_does(clients: tuple[TestClient, TestClient]) -> None:
    fast, slow = clients
    for i in range(5):
        body = body_of(f"v{i}".encode(), metrics={"auc": 0.5 + i / 10}, tags={"team": "a"})
        assert fast.post("/api/v1/models/churn/versions", json=body).status_code == 201
    queries = [
        {},
        {"filter": "metrics.auc >= 0.7"},
        {"filter": 'tags.team = "a"', "order_by": "metrics.auc desc", "limit": "2"},
        {"limit": "2", "unknown": "ignored"},
        {"limit": "0"},  # out of range: the framework's 400
        {"limit": "x"},
        {"limit": ""},
        {"filter": ""},
        {"filter": "x" * 5000},  # over max_length
        {"filter": "metrics.auc >= "},  # the service's invalid_filter
        {"page_token": "garbage"},
    ]
    for params in queries:
        same(fast.get(SEARCH, params=params), slow.get(SEARCH, params=params))
    repeated = SEARCH + "?limit=1&limit=2"
    same(fast.get(repeated), slow.get(repeated))
    first = fast.get(SEARCH, params={"limit": "2"}).json()
    token = {"limit": "2", "page_token": first["next_page_token"]}
    same(fast.get(SEARCH, params=token), slow.get(SEARCH, params=token))


def test_registration_answers_as_the_route_does(clients: tuple[TestClient, TestClient]) -> None:
    fast, slow = clients
    url = "/api/v1/models/churn/versions"
    one = fast.post(url, json=body_of(b"one", metrics={"auc": 0.9}, tags={"t": "x"}))
    two = slow.post(url, json=body_of(b"two", metrics={"auc": 0.9}, tags={"t": "x"}))
    assert (one.status_code, two.status_code) == (201, 201)
    assert one.headers["location"] == f"{url}/1" and two.headers["location"] == f"{url}/2"
    mine, theirs = one.json(), two.json()
    for changes in ("version", "reference", "created_at", "manifest_digest", "files"):
        mine.pop(changes), theirs.pop(changes)
    assert mine == theirs
    refused = [
        b"{not json",
        b"",
        json.dumps({"files": []}).encode(),  # min_length 1
        json.dumps({**body_of(b"x"), "surprise": 1}).encode(),  # unknown field
        json.dumps(body_of(b"x", metrics={"auc": "high"})).encode(),
        json.dumps([1, 2]).encode(),
        json.dumps({"files": [{"path": "m", "size": 3, "sha256": "0" * 64}]}).encode(),
    ]
    for content in refused:
        headers = {"content-type": "application/json"}
        same(
            fast.post(url, content=content, headers=headers),
            slow.post(url, content=content, headers=headers),
        )
    bad_name = "/api/v1/models/Bad%20Name!/versions"
    same(fast.post(bad_name, json=body_of(b"y")), slow.post(bad_name, json=body_of(b"y")))
    text = {"content-type": "text/plain"}
    content = json.dumps(body_of(b"z")).encode()
    same(
        fast.post(url, content=content, headers=text),
        slow.post(url, content=content, headers=text),
    )
    # Neither answer registered anything.
    assert fast.get(f"{url}/3").status_code == 404


def test_fast_routes_answer_what_the_routes_take(service: RegistryService) -> None:
    """In front of an app that answers 418 to everything, FastRoutes answers the requests
    its routes take and hands on (to the 418) all the others."""
    app = create_app(service, reach=Reach.LOOPBACK)

    async def teapot(scope: Scope, receive: Receive, send: Send) -> None:
        await Response(status_code=418)(scope, receive, send)

    fast = FastRoutes(teapot)

    async def entry(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = app  # as Starlette sets it before its middleware runs
        await fast(scope, receive, send)

    client = TestClient(entry)  # no lifespan: entry speaks HTTP only
    url = "/api/v1/models/churn/versions"
    assert client.post(url, json=body_of(b"fast")).status_code == 201
    json_type = {"content-type": "application/json"}
    assert client.post(url, content=b"{", headers=json_type).status_code == 418
    assert client.post(url, json={"files": []}).status_code == 418
    assert client.post("/api/v1/models/churn/versions/1", json={}).status_code == 418
    found = client.get(SEARCH, params={"filter": "version = 1"})
    assert found.status_code == 200 and found.json()["items"][0]["model"] == "churn"
    invalid = client.get(SEARCH, params={"filter": "version = "})
    assert invalid.status_code == 400 and invalid.json()["code"] == "invalid_filter"
    assert client.get(SEARCH, params={"limit": "0"}).status_code == 418
    assert client.get(SEARCH + "?limit=1&limit=2").status_code == 418
    assert client.get("/api/v1/versions/", params={"limit": "1"}).status_code == 418
    alias = "/ajax-api/2.0/mlflow/registered-models/alias"
    unknown = client.get(alias, params={"name": "churn", "alias": "x"})
    assert (unknown.status_code, unknown.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert client.get(alias, params={"name": "churn"}).status_code == 418
    versions = "/api/2.0/mlflow/model-versions/search"
    assert client.get(versions, params={"order_by": ["version_number DESC"]}).status_code == 200
    assert client.get(versions, params={"max_results": "1", "order_by": ""}).status_code == 418


def test_fast_routes_need_the_same_token(
    clients: tuple[TestClient, TestClient], service: RegistryService
) -> None:
    """Once a user exists, neither route answers without a valid token, as the framework's
    routes do not: the same 401s, and the admin's token works on both paths."""
    fast, slow = clients
    admin = service.identity.bootstrap_admin("root", operator="test").token
    url = "/api/v1/models/churn/versions"
    for headers in (
        {},
        {"authorization": "Bearer myd_0000000000000000_forged"},
        {"authorization": "Basic x"},
    ):
        same(fast.get(SEARCH, headers=headers), slow.get(SEARCH, headers=headers))
        same(
            fast.post(url, json=body_of(b"a"), headers=headers),
            slow.post(url, json=body_of(b"a"), headers=headers),
        )
        assert fast.get(SEARCH, headers=headers).status_code == 401
    auth = {"authorization": f"Bearer {admin}"}
    assert fast.post(url, json=body_of(b"a"), headers=auth).status_code == 201
    same(fast.get(SEARCH, headers=auth), slow.get(SEARCH, headers=auth))
    assert fast.get(SEARCH, headers=auth).json()["items"][0]["creator"] == "root"


def test_mlflow_reads_answer_as_the_routes_do(
    clients: tuple[TestClient, TestClient], service: RegistryService
) -> None:
    """MLflow's client's most frequent reads (``mlflow.FAST_GETS``), under both prefixes:
    the same answers, errors in MLflow's format included, with or without FastRoutes."""
    fast, slow = clients
    for i in range(3):
        body = body_of(f"m{i}".encode(), metrics={"auc": 0.5 + i / 10})
        assert fast.post("/api/v1/models/churn/versions", json=body).status_code == 201
    fast.post(
        "/api/2.0/mlflow/registered-models/alias",
        json={"name": "churn", "alias": "champion", "version": "2"},
    ).raise_for_status()
    queries = {
        "registered-models/alias": [
            {"name": "churn", "alias": "champion"},
            {"name": "churn", "alias": "nobody"},
            {"name": "gone", "alias": "champion"},
            {"name": "churn"},  # alias missing: the framework's INVALID_PARAMETER_VALUE
            {"name": "", "alias": "champion"},
        ],
        "model-versions/get": [
            {"name": "churn", "version": "1"},
            {"name": "churn", "version": "9"},
            {"name": "churn", "version": "one"},
            {"version": "1"},
        ],
        "model-versions/search": [
            {},
            {"filter": "name = 'churn'", "max_results": "2"},
            {"order_by": ["version_number DESC", "creation_timestamp"]},
            {"max_results": "0"},
            {"max_results": "x"},
            {"filter": "tags.x ~ 1"},
            {"page_token": "garbage"},
        ],
        "registered-models/search": [{}, {"max_results": "1"}, {"filter": "name LIKE 'ch%'"}],
    }
    for prefix in ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow"):
        for path, cases in queries.items():
            for params in cases:
                url = f"{prefix}/{path}"
                same(fast.get(url, params=params), slow.get(url, params=params))
        repeated = f"{prefix}/registered-models/alias?name=churn&alias=champion&alias=x"
        same(fast.get(repeated), slow.get(repeated))
    found = fast.get("/api/2.0/mlflow/registered-models/alias?name=churn&alias=champion")
    assert found.json()["model_version"]["version"] == "2"
    missing = fast.get("/api/2.0/mlflow/model-versions/get?name=churn&version=9")
    assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    admin = service.identity.bootstrap_admin("root", operator="test").token
    url = "/api/2.0/mlflow/registered-models/alias?name=churn&alias=champion"
    for headers in ({}, {"authorization": "Bearer myd_0000000000000000_forged"}):
        same(fast.get(url, headers=headers), slow.get(url, headers=headers))
        assert fast.get(url, headers=headers).status_code == 401
    auth = {"authorization": f"Bearer {admin}"}
    same(fast.get(url, headers=auth), slow.get(url, headers=auth))
