"""The REST API as a Transport, over one keep-alive httpx connection pool."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx

from modelyard.client.connections import DirectConnections, proxied
from modelyard.domain.access import (
    Grant,
    Identity,
    NewToken,
    Principal,
    PrincipalKind,
    Role,
    Token,
)
from modelyard.domain.comparison import Comparison, GateResult
from modelyard.domain.errors import ModelyardError, Unavailable, error_from_problem
from modelyard.domain.lifecycle import Promotion, TransitionRequest
from modelyard.domain.models import Event, Model, Page, Version, version_page_from_dict
from modelyard.domain.versions import NewVersion

USER_AGENT = "modelyard-client"
DOWNLOAD_CHUNK = 4 * 1024 * 1024


class HttpTransport:
    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 300.0,
        client: httpx.Client | None = None,
    ) -> None:
        """``client`` lets a caller supply the httpx client (an in-process app, a proxy);
        the token travels with each request, never set on a client that may be shared."""
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._direct_downloads = client is None
        self._headers = {"User-Agent": USER_AGENT}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._client = client
        self._direct = (
            DirectConnections(self.url, timeout) if client is None and not proxied(url) else None
        )

    # -- plumbing -------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        """The httpx client: the caller's, else made on first use. Making one costs ~40 ms
        (its TLS context), which a CLI command that never streams an upload need not pay."""
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.url, timeout=httpx.Timeout(self.timeout, connect=10.0)
            )
        return self._client

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content: Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """Send a request with a JSON ``body`` or streamed ``content``; the answer's body.

        Raises the problem the server answered for a status of 400 or more.
        """
        target = f"{path}?{_encode_query(params)}" if params else path
        sent = {**self._headers, **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        try:
            if self._direct is not None and content is None:
                status, answer = self._direct.send(method, target, data, sent)
            else:
                response = self.client.request(
                    method, target, content=content if content is not None else data, headers=sent
                )
                status, answer = response.status_code, response.content
        except (httpx.TransportError, OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        if status >= 400:
            raise _error_from(status, answer)
        return answer

    def _unreachable(self, exc: Exception) -> ModelyardError:
        return Unavailable(
            f"cannot reach Modelyard at {self.url} ({exc.__class__.__name__}): is"
            " 'modelyard serve' running there? Set MODELYARD_URL or --url to point elsewhere.",
            code="unreachable",
        )

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return json.loads(self._request(method, path, **kwargs))

    # -- transport ------------------------------------------------------------------------

    def missing_blobs(self, digests: list[str]) -> list[str]:
        body = {"digests": [f"sha256:{d}" for d in digests]}
        data = self._json("POST", "/api/v1/blobs/missing", body=body)
        return [d.removeprefix("sha256:") for d in data["missing"]]

    def upload_blob(self, digest: str | None, chunks: Iterable[bytes], size: int) -> str:
        method, url = (
            ("POST", "/api/v1/blobs/uploads")
            if digest is None
            else ("PUT", f"/api/v1/blobs/sha256:{digest}")
        )
        answer = self._json(
            method,
            url,
            content=chunks,
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )
        return str(answer["digest"]).removeprefix("sha256:")

    def read_file(self, version: Version, path: str, sha256: str) -> Iterator[bytes]:
        if self._direct_downloads:
            return self._read_direct(sha256)
        return self._read_via_client(sha256)

    def _read_via_client(self, sha256: str) -> Iterator[bytes]:
        try:
            url = f"/api/v1/blobs/sha256:{sha256}"
            with self.client.stream("GET", url, headers=self._headers) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                yield from response.iter_raw()
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def _read_direct(self, sha256: str) -> Iterator[bytes]:
        # Bulk bytes go through http.client rather than httpx when we own the connection:
        # its buffered reads keep up with the disk (~1 GB/s here) where httpx's 64 KiB
        # reads through h11 reach ~400 MB/s.
        url = urlsplit(f"{self.url}/api/v1/blobs/sha256:{sha256}")
        connection_class = (
            http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        )
        conn = connection_class(url.hostname or "", url.port, timeout=self.timeout)
        try:
            try:
                conn.request("GET", url.path, headers=self._headers)
                response = conn.getresponse()
            except OSError as exc:
                raise self._unreachable(exc) from None
            if response.status >= 400:
                raise _error_from(response.status, response.read())
            while chunk := response.read(DOWNLOAD_CHUNK):
                yield chunk
        finally:
            conn.close()

    def register_version(self, name: str, spec: NewVersion, inline: dict[str, bytes]) -> Version:
        files = []
        for entry in spec.files:
            item: dict[str, object] = entry.as_dict()
            if entry.sha256 in inline:
                item["content"] = base64.b64encode(inline[entry.sha256]).decode("ascii")
            files.append(item)
        body = {
            "files": files,
            "params": spec.params,
            "metrics": spec.metrics,
            "tags": spec.tags,
            "description": spec.description,
            "dataset": spec.dataset.as_dict() if spec.dataset else None,
            "source": spec.source.as_dict() if spec.source else None,
            "environment": spec.environment.as_dict() if spec.environment else None,
            "run": spec.run,
            "framework": spec.framework,
            "format": spec.format,
        }
        data = self._json("POST", f"/api/v1/models/{_seg(name)}/versions", body=body)
        return Version.from_dict(data)

    def resolve(self, reference: str, as_of: datetime | None = None) -> Version:
        params = {"as_of": as_of.isoformat()} if as_of is not None else {}
        path = f"/api/v1/resolve/{_seg(reference, '/@:')}"
        return Version.from_dict(self._json("GET", path, params=params))

    def update_version(
        self,
        name: str,
        number: int,
        description: str | None,
        tags: dict[str, str | None] | None,
    ) -> Version:
        body = _patch_body(description, tags)
        path = f"/api/v1/models/{_seg(name)}/versions/{number}"
        return Version.from_dict(self._json("PATCH", path, body=body))

    def list_versions(
        self,
        name: str | None,
        filter: str | None,
        order_by: str | None,
        page_token: str | None,
        limit: int | None,
    ) -> Page[Version]:
        path = f"/api/v1/models/{_seg(name)}/versions" if name else "/api/v1/versions"
        data = self._json("GET", path, params=_query(filter, order_by, page_token, limit))
        return version_page_from_dict(data)

    def create_model(self, name: str, description: str, tags: dict[str, str]) -> Model:
        body = {"name": name, "description": description, "tags": tags}
        return Model.from_dict(self._json("POST", "/api/v1/models", body=body))

    def get_model(self, name: str) -> Model:
        return Model.from_dict(self._json("GET", f"/api/v1/models/{_seg(name)}"))

    def update_model(
        self, name: str, description: str | None, tags: dict[str, str | None] | None
    ) -> Model:
        body = _patch_body(description, tags)
        return Model.from_dict(self._json("PATCH", f"/api/v1/models/{_seg(name)}", body=body))

    def delete_model(self, name: str) -> None:
        self._request("DELETE", f"/api/v1/models/{_seg(name)}")

    def list_models(
        self,
        filter: str | None,
        order_by: str | None,
        page_token: str | None,
        limit: int | None,
    ) -> Page[Model]:
        params = _query(filter, order_by, page_token, limit)
        data = self._json("GET", "/api/v1/models", params=params)
        return Page([Model.from_dict(m) for m in data["items"]], data["next_page_token"])

    def set_alias(self, name: str, alias: str, number: int) -> Version:
        path = f"/api/v1/models/{_seg(name)}/aliases/{_seg(alias)}"
        return Version.from_dict(self._json("PUT", path, body={"version": number}))

    def delete_alias(self, name: str, alias: str) -> None:
        self._request("DELETE", f"/api/v1/models/{_seg(name)}/aliases/{_seg(alias)}")

    def events(self, after: int, limit: int) -> list[Event]:
        data = self._json("GET", "/api/v1/events", params={"after": after, "limit": limit})
        return [Event.from_dict(e) for e in data["items"]]

    # -- identity and access ---------------------------------------------------------------

    def whoami(self) -> Identity:
        return Identity.from_dict(self._json("GET", "/api/v1/whoami"))

    def create_principal(self, kind: PrincipalKind, name: str, description: str) -> Principal:
        body = {"name": name, "description": description}
        return Principal.from_dict(self._json("POST", f"/api/v1/{kind.collection}", body=body))

    def principals(self, kind: PrincipalKind) -> list[Principal]:
        data = self._json("GET", f"/api/v1/{kind.collection}")
        return [Principal.from_dict(p) for p in data["items"]]

    def remove_principal(self, kind: PrincipalKind, name: str) -> None:
        self._request("DELETE", f"/api/v1/{kind.collection}/{_seg(name)}")

    def set_membership(self, team: str, member: str, present: bool) -> Principal:
        path = f"/api/v1/teams/{_seg(team)}/members/{_seg(member)}"
        return Principal.from_dict(self._json("PUT" if present else "DELETE", path))

    def create_token(
        self,
        principal: str | None,
        name: str,
        expires_at: datetime | None,
        model: str | None,
        read_only: bool,
    ) -> NewToken:
        body = {
            "principal": principal,
            "name": name,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "model": model,
            "read_only": read_only,
        }
        return NewToken.from_dict(self._json("POST", "/api/v1/tokens", body=body))

    def tokens(self, principal: str | None) -> list[Token]:
        params = {"principal": principal} if principal else {}
        data = self._json("GET", "/api/v1/tokens", params=params)
        return [Token.from_dict(t) for t in data["items"]]

    def revoke_token(self, token_id: str) -> Token:
        return Token.from_dict(self._json("DELETE", f"/api/v1/tokens/{_seg(token_id)}"))

    def set_grant(
        self, principal: str, role: Role, model: str | None, kind: PrincipalKind | None
    ) -> Grant:
        body = {"role": role.label, "kind": kind.value if kind else None}
        return Grant.from_dict(self._json("PUT", _grant_path(principal, model), body=body))

    def revoke_grant(self, principal: str, model: str | None, kind: PrincipalKind | None) -> None:
        params = {"kind": kind.value} if kind else {}
        self._request("DELETE", _grant_path(principal, model), params=params)

    def grants(self, model: str | None) -> list[Grant]:
        path = f"/api/v1/models/{_seg(model)}/grants" if model else "/api/v1/grants"
        return [Grant.from_dict(g) for g in self._json("GET", path)["items"]]

    def set_protected_aliases(self, model: str, aliases: list[str]) -> Model:
        path = f"/api/v1/models/{_seg(model)}/protected-aliases"
        return Model.from_dict(self._json("PUT", path, body={"aliases": aliases}))

    # -- lifecycle ---------------------------------------------------------------------------

    def promote(
        self, name: str, number: int, to: str, comment: str, override: str | None
    ) -> Promotion:
        path = f"/api/v1/models/{_seg(name)}/versions/{number}/promote"
        body = {"to": to, "comment": comment, "override": override}
        return Promotion.from_dict(self._json("POST", path, body=body))

    def requests(self, model: str | None, status: str) -> list[TransitionRequest]:
        params = {"status": status, **({"model": model} if model else {})}
        data = self._json("GET", "/api/v1/requests", params=params)
        return [TransitionRequest.from_dict(r) for r in data["items"]]

    def decide(self, request_id: int, decision: str, comment: str) -> TransitionRequest:
        path = f"/api/v1/requests/{request_id}/{_seg(decision)}"
        return TransitionRequest.from_dict(self._json("POST", path, body={"comment": comment}))

    def rollback(self, name: str, stage: str, comment: str) -> Version:
        body = {"stage": stage, "comment": comment}
        path = f"/api/v1/models/{_seg(name)}/rollback"
        return Version.from_dict(self._json("POST", path, body=body))

    def archive(self, name: str, number: int, restore: bool) -> Version:
        action = "restore" if restore else "archive"
        path = f"/api/v1/models/{_seg(name)}/versions/{number}/{action}"
        return Version.from_dict(self._json("POST", path))

    def delete_version(self, name: str, number: int, hard: bool) -> None:
        path = f"/api/v1/models/{_seg(name)}/versions/{number}"
        self._request("DELETE", path, params={"hard": "true" if hard else "false"})

    def history(self, name: str) -> list[Event]:
        data = self._json("GET", f"/api/v1/models/{_seg(name)}/history")
        return [Event.from_dict(e) for e in data["items"]]

    def policy(self, model: str | None) -> dict[str, Any]:
        path = f"/api/v1/models/{_seg(model)}/policy" if model else "/api/v1/policy"
        data: dict[str, Any] = self._json("GET", path)
        return data

    def apply_policy(self, model: str | None, text: str) -> dict[str, Any]:
        path = f"/api/v1/models/{_seg(model)}/policy" if model else "/api/v1/policy"
        data: dict[str, Any] = self._json("PUT", path, body={"text": text})
        return data

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        if self._client is not None:
            self._client.close()

    # -- champion vs challenger ------------------------------------------------------------

    def compare(self, a: str, b: str) -> Comparison:
        data = self._json("GET", "/api/v1/compare", params={"a": a, "b": b})
        return Comparison.from_dict(data)

    def gate(
        self,
        challenger: str,
        against: str,
        metrics: list[str],
        min_delta: float,
        lower_is_better: bool,
    ) -> GateResult:
        params = {
            "challenger": challenger,
            "against": against,
            "metric": metrics,
            "min_delta": min_delta,
            "lower_is_better": lower_is_better,
        }
        return GateResult.from_dict(self._json("GET", "/api/v1/gate", params=params))


def _grant_path(principal: str, model: str | None) -> str:
    if model is None:
        return f"/api/v1/grants/{_seg(principal)}"
    return f"/api/v1/models/{_seg(model)}/grants/{_seg(principal)}"


def _seg(value: str, safe: str = "") -> str:
    """Quote a path segment so that user input can never change the URL's shape."""
    return quote(value, safe=safe)


def _query(
    filter: str | None, order_by: str | None, page_token: str | None, limit: int | None
) -> dict[str, Any]:
    params = {"filter": filter, "order_by": order_by, "page_token": page_token, "limit": limit}
    return {k: v for k, v in params.items() if v is not None}


def _patch_body(description: str | None, tags: dict[str, str | None] | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if description is not None:
        body["description"] = description
    if tags is not None:
        body["tags"] = tags
    return body


def _error(response: httpx.Response) -> ModelyardError:
    return _error_from(response.status_code, response.content)


def _encode_query(params: dict[str, Any]) -> str:
    """Query parameters as httpx encodes them: lists repeat the key, booleans are
    'true'/'false', None is empty."""
    pairs = []
    for key, value in params.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, bool):
                item = "true" if item else "false"
            pairs.append((key, "" if item is None else str(item)))
    return urlencode(pairs)


def _error_from(status: int, body: bytes) -> ModelyardError:
    try:
        problem = json.loads(body)
        if not isinstance(problem, dict):
            raise ValueError
    except ValueError:
        problem = {"detail": f"HTTP {status}: {body[:200].decode(errors='replace')}"}
    return error_from_problem(status, problem)
