"""The edge of the server: headers on every response, downloads that no browser runs,
numbers and text bounded before they reach storage, /docs without internet."""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard.api import create_app
from modelyard.domain.access import Reach
from modelyard.service import RegistryService
from tests.test_api import post_raw, problem, register, sha

HTML = b"<html><script>alert(document.cookie)</script></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'


@pytest.fixture
def page(client: TestClient) -> str:
    """churn/1 holding an HTML page and an SVG: what an attacker would upload."""
    register(client, "churn", {"site/index.html": HTML, "logo.svg": SVG, "bin": bytes(100)})
    return "/api/v1/models/churn/versions/1/files"


# -- nosniff ------------------------------------------------------------------------------


def test_nosniff_on_every_kind_of_response(client: TestClient, page: str) -> None:
    answers = [
        client.get("/healthz"),
        client.get("/api/v1/resolve/churn"),  # the fast path
        client.get("/api/v1/resolve/nope"),  # the fast path's problem
        client.get("/api/v1/models/churn"),
        client.get(f"{page}/site/index.html"),
        client.get("/api/v1/no-such-route"),
        client.post("/api/v1/models", content=b"{", headers={"content-type": "application/json"}),
        client.get("/docs"),
        client.get("/openapi.json"),
    ]
    for response in answers:
        assert response.headers.get("x-content-type-options") == "nosniff", response.request.url


def test_nosniff_on_an_unexpected_500(service: RegistryService) -> None:
    app = create_app(service, reach=Reach.LOOPBACK, local_user="tester")

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    problem(response, 500, "internal_error")
    assert response.headers["x-content-type-options"] == "nosniff"


# -- downloads ----------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "data"), [("site/index.html", HTML), ("logo.svg", SVG)])
def test_a_download_is_an_attachment_no_browser_runs(
    client: TestClient, page: str, path: str, data: bytes
) -> None:
    """An uploaded page must not render (and run its script) in the registry's origin."""
    for url in (f"{page}/{path}", f"/api/v1/blobs/sha256:{sha(data)}"):
        for method in ("GET", "HEAD"):
            response = client.request(method, url)
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/octet-stream"
            assert response.headers["content-disposition"].startswith("attachment;")
            assert response.headers["x-content-type-options"] == "nosniff"
            # and were a browser to render it anyway, nothing in it may run
            assert response.headers["content-security-policy"] == "default-src 'none'; sandbox"
    name = path.rsplit("/", 1)[-1]
    disposition = client.get(f"{page}/{path}").headers["content-disposition"]
    assert f'filename="{name}"' in disposition


def test_a_download_names_an_unusual_file_safely(client: TestClient) -> None:
    register(client, "odd", {'dir/r\u00e9sum\u00e9 "x".txt': b"cv"})
    response = client.get("/api/v1/models/odd/versions/1/files/dir/r%C3%A9sum%C3%A9%20%22x%22.txt")
    assert response.status_code == 200
    disposition = response.headers["content-disposition"]
    assert 'filename="r_sum_ _x_.txt"' in disposition
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22x%22.txt" in disposition


def test_a_download_is_private_to_shared_caches(client: TestClient, page: str) -> None:
    """A shared proxy must not keep bytes that took a token and replay them to anyone."""
    for url in (f"{page}/bin", f"/api/v1/blobs/sha256:{sha(bytes(100))}"):
        cache = client.get(url).headers["cache-control"]
        assert "private" in cache.split(", ")
        assert "public" not in cache


@pytest.mark.parametrize(
    ("header", "status", "whole"),
    [
        ("bytes=" + "9" * 5000 + "-", 416, False),  # was a 500: int() of 5000 digits
        ("bytes=0-" + "9" * 5000, 206, True),
        ("bytes=-" + "9" * 5000, 206, True),
        ("bytes=" + "9" * 19 + "-", 416, False),  # past 2**63
        ("bytes=1" + "0" * 18 + "-", 416, False),
    ],
)
def test_a_huge_range_is_answered(
    client: TestClient, page: str, header: str, status: int, whole: bool
) -> None:
    response = client.get(f"{page}/bin", headers={"Range": header})
    if not whole:
        problem(response, status, "range_not_satisfiable")
        assert response.headers["content-range"] == "bytes */100"
    else:
        assert (response.status_code, response.content) == (status, bytes(100))


# -- the fast resolve path inside the middleware stack --------------------------------------


class Stamp:
    """A middleware added after the app is built, as sessions or metrics would be."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"x-stamp", b"yes")]
            await send(message)

        await self.app(scope, receive, stamped)


def test_middleware_added_later_covers_the_fast_resolve(service: RegistryService) -> None:
    app = create_app(service, reach=Reach.LOOPBACK, local_user="tester")
    app.add_middleware(Stamp)
    with TestClient(app) as client:
        register(client, "churn")
        fast = client.get("/api/v1/resolve/churn")
        missing = client.get("/api/v1/resolve/nope")
        routed = client.get("/api/v1/resolve/churn", params={"as_of": "2100-01-01T00:00:00Z"})
    assert fast.status_code == 200 and fast.json()["version"] == 1
    assert fast.headers["x-stamp"] == "yes"
    problem(missing, 404, "model_not_found")
    assert missing.headers["x-stamp"] == "yes"
    assert routed.status_code == 200 and routed.headers["x-stamp"] == "yes"


@pytest.mark.parametrize("extended", [False, True], ids=["in-front", "in-the-stack"])
def test_an_unexpected_error_in_the_fast_resolve_is_a_problem(
    service: RegistryService, extended: bool
) -> None:
    """Both places the fast path answers from turn a bug into the same problem+json 500."""
    app = create_app(service, reach=Reach.LOOPBACK, local_user="tester")
    if extended:
        app.add_middleware(Stamp)
    with TestClient(app, raise_server_exceptions=False) as client:
        register(client, "churn")
        app.state.resolve_bodies = None  # a broken cache: resolve_response fails
        response = client.get("/api/v1/resolve/churn")
    body = problem(response, 500, "internal_error")
    assert body["instance"] == "/api/v1/resolve/churn"
    assert response.headers["x-content-type-options"] == "nosniff"


# -- /docs offline -------------------------------------------------------------------------

_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


@pytest.mark.parametrize("page_path", ["/docs", "/docs/oauth2-redirect"])
def test_docs_pages_reference_nothing_outside(client: TestClient, page_path: str) -> None:
    response = client.get(page_path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert re.search(r"(?i)\b(?:https?:)?//[a-z0-9]", html.replace("window.location", "")) is None
    for reference in _REFERENCE.findall(html):
        assert reference.startswith("/"), reference
        asset = client.get(reference)
        assert asset.status_code == 200, reference
        assert len(asset.content) > 0


def test_docs_load_the_schema_of_this_server(client: TestClient) -> None:
    html = client.get("/docs").text
    assert "url: '/openapi.json'" in html
    assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text
    assert client.get("/redoc").status_code == 404  # ReDoc would load from a CDN


# -- numbers bounded at the edge ----------------------------------------------------------


@pytest.mark.parametrize("after", [str(2**63), "9" * 5000])
def test_events_after_past_64_bits_is_refused(client: TestClient, after: str) -> None:
    """Was a 500: the number reached the database, whose integers have 64 bits."""
    problem(client.get("/api/v1/events", params={"after": after}), 400, "invalid_input")


def test_events_after_the_largest_64_bit_number_is_empty(client: TestClient) -> None:
    register(client, "churn")
    response = client.get("/api/v1/events", params={"after": str(2**63 - 1)})
    assert response.status_code == 200 and response.json()["items"] == []


def _forged(token: str, offset: int) -> str:
    """The token with another offset; its signature kept, as a client cannot make a new one."""
    payload, _, mac = token.partition(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw = json.dumps({**data, "o": offset}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") + "." + mac


@pytest.mark.parametrize("offset", [2**63, 2**64 + 5, -1, 3])
@pytest.mark.parametrize("listing", ["/api/v1/versions", "/api/v1/models"])
def test_a_forged_page_token_is_refused(client: TestClient, listing: str, offset: int) -> None:
    """Was a 500: a token is base64 JSON, and its offset went to SQL as it was."""
    register(client, "churn")
    register(client, "churn-b")
    token = client.get(listing, params={"limit": 1}).json()["next_page_token"]
    assert client.get(listing, params={"limit": 1, "page_token": token}).status_code == 200
    response = client.get(listing, params={"limit": 1, "page_token": _forged(token, offset)})
    problem(response, 400, "invalid_page_token")


# -- text that is not Unicode -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "raw"),
    [  # in JSON, an escape that no text can hold
        ("/api/v1/models", '{"name": "churn", "description": "x\\ud800y"}'),
        ("/api/v1/models", '{"name": "churn", "tags": {"team": "\\ud800"}}'),
        ("/api/v1/models", '{"name": "churn", "tags": {"\\udc00": "x"}}'),
        ("/api/v1/models", '{"name": "churn", "description": "\\udc00\\ud800"}'),
        ("/api/v1/models/churn/versions", '{"files": [{"path": "\\ud800", "size": 0}]}'),
        ("/api/v1/users", '{"name": "bob", "description": "\\ud800"}'),
    ],
)
def test_a_lone_surrogate_is_refused(client: TestClient, path: str, raw: str) -> None:
    """Was a 500 in any text field: Python's parser accepts it, storing it failed."""
    body = problem(post_raw(client, path, raw), 400, "malformed_json")
    assert "surrogate" in body["detail"]
    problem(client.get("/api/v1/models/churn"), 404, "model_not_found")


def test_surrogate_bytes_and_other_non_utf8_are_refused(client: TestClient) -> None:
    for raw in (
        '{"name": "churn", "description": "\ud800"}'.encode("utf-8", "surrogatepass"),
        b'{"name": "churn", "description": "caf\xe9"}',
    ):
        body = problem(post_raw(client, "/api/v1/models", raw), 400, "malformed_json")
        assert "UTF-8" in body["detail"]


def test_surrogate_pairs_and_escaped_backslashes_are_text(client: TestClient) -> None:
    raw = '{"name": "churn", "description": "\\ud83d\\ude00 and \\\\ud800"}'
    response = post_raw(client, "/api/v1/models", raw)
    assert response.status_code == 201, response.text
    assert response.json()["description"] == "\U0001f600 and \\ud800"


# -- paths that could be registered but not downloaded ------------------------------------


def _register_paths(client: TestClient, paths: list[str]) -> Any:
    files = [{"path": p, "size": 1, "sha256": sha(b"x"), "content": "eA=="} for p in paths]
    return client.post("/api/v1/models/churn/versions", json={"files": files})


@pytest.mark.parametrize(
    ("paths", "says"),
    [
        (["d/" + "a" * 256], "256 bytes"),
        (["\u00e9" * 128 + ".bin"], "260 bytes"),  # 132 characters, but 260 bytes
        (["/".join(["abcdefghi"] * 103)], "1029 bytes"),
        (["A.txt", "a.txt"], "differ only in case"),
        (["Dir/x.bin", "dir/x.bin"], "differ only in case"),
        (["caf\u00e9.txt", "cafe\u0301.txt"], "differ only in case"),  # NFC and NFD
        (["Data", "data/x.bin"], "both a file and a directory"),
        (["invoice\u202efdp.exe"], "bidirectional"),
        (["a\u2066b"], "bidirectional"),
        (["a\u0085b"], "control character"),
    ],
)
def test_paths_no_platform_can_download_are_refused(
    client: TestClient, paths: list[str], says: str
) -> None:
    body = problem(_register_paths(client, paths), 400, "invalid_path")
    assert says in body["detail"]
    problem(client.get("/api/v1/models/churn"), 404, "model_not_found")  # nothing written


def test_paths_at_the_limits_are_accepted_and_download(client: TestClient) -> None:
    longest = "/".join(["d" * 254] * 4) + "/" + "f" * 3  # 1023 bytes
    paths = [
        "a" * 255,
        "\u00e9" * 127,
        longest,
        "A.txt",
        "b.txt",
        "caf\u00e9/\u05e9\u05dc\u05d5\u05dd",
    ]
    response = _register_paths(client, paths)
    assert response.status_code == 201, response.text
    for path in paths:
        download = client.get(f"/api/v1/models/churn/versions/1/files/{quote(path)}")
        assert (download.status_code, download.content) == (200, b"x"), path


# -- the OpenAPI document and 405 ----------------------------------------------------------


def _operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    paths = client.get("/openapi.json").json()["paths"]
    return [(m.upper(), p, op) for p, item in paths.items() for m, op in item.items()]


def test_openapi_documents_the_problems_and_never_422(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for method, path, op in _operations(client):
        responses = op["responses"]
        assert "422" not in responses, (method, path)
        if op["x-permission"] != "public":
            assert "401" in responses, (method, path)
            assert "WWW-Authenticate" in responses["401"]["headers"]
        if op.get("parameters") or "requestBody" in op:
            assert "400" in responses, (method, path)
        # MLflow's API answers errors in MLflow's format (docs/mlflow.md).
        mlflow = "/2.0/mlflow" in path
        media_type = "application/json" if mlflow else "application/problem+json"
        schema = "MlflowError" if mlflow else "Problem"
        for status, response in responses.items():
            if int(status) >= 400:
                assert response["content"][media_type]["schema"] == {
                    "$ref": f"#/components/schemas/{schema}"
                }, (method, path)


def test_openapi_path_parameters_declare_their_patterns(client: TestClient) -> None:
    for method, path, op in _operations(client):
        for parameter in op.get("parameters", ()):
            if parameter["in"] == "path" and parameter["name"] != "path":
                schema = parameter["schema"]
                assert "pattern" in schema or schema.get("type") == "integer", (method, path)
    resolve = next(op for m, p, op in _operations(client) if p == "/api/v1/resolve/{reference}")
    pattern = re.compile(resolve["parameters"][0]["schema"]["pattern"])
    for good in ("churn", "churn/42", "churn@champion", "churn@sha256:" + "a" * 64):
        assert pattern.fullmatch(good), good
    for bad in ("Churn", "churn/", "churn@", "/churn"):
        assert not pattern.fullmatch(bad), bad


def test_openapi_names_the_statuses_particular_operations_add(client: TestClient) -> None:
    responses = {(m, p): set(op["responses"]) for m, p, op in _operations(client)}
    assert {"201", "409"} <= responses[("POST", "/api/v1/models")]
    assert {"206", "416"} <= responses[("GET", "/api/v1/blobs/{digest}")]
    assert "304" in responses[("GET", "/api/v1/resolve/{reference}")]
    assert "202" in responses[("POST", "/api/v1/models/{name}/versions/{number}/promote")]
    assert "403" not in responses[("GET", "/api/v1/models/{name}")]  # no role: 404
    assert "409" not in responses[("GET", "/api/v1/models/{name}")]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/healthz", "GET"),
        ("TRACE", "/api/v1/models/churn/aliases/champion", "GET, PUT, DELETE"),
        ("PATCH", f"/api/v1/blobs/sha256:{'a' * 64}", "GET, HEAD, PUT"),
        ("PUT", "/api/v1/blobs/uploads", "POST"),  # was a 400: taken for a digest
        ("POST", "/api/v1/resolve/churn", "GET"),
    ],
)
def test_a_method_a_path_does_not_serve_is_405_with_allow(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path)
    problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allow


def test_the_policy_of_an_invalid_model_name_is_refused(client: TestClient) -> None:
    """Was a 200 with the defaults: found by the fuzz test."""
    problem(client.get("/api/v1/models/%C2%84/policy"), 400, "invalid_name")


def test_the_policy_of_a_deleted_model_is_not_found(client: TestClient) -> None:
    """Was a 200 with the defaults after DELETE: found by the fuzz test's stateful phase."""
    assert client.post("/api/v1/models", json={"name": "gone"}).status_code == 201
    assert client.get("/api/v1/models/gone/policy").status_code == 200
    assert client.delete("/api/v1/models/gone").status_code == 204
    problem(client.get("/api/v1/models/gone/policy"), 404, "model_not_found")
    problem(client.get("/api/v1/models/never/policy"), 404, "model_not_found")
