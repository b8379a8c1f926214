"""Identity and access control, on SQLite and on PostgreSQL.

The permission matrix reads every route of the app, with the permission it declares
(``x-permission``), and calls it as every role and anonymously: a route without a declared
decision, or without a sample request here, fails the suite.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from typing import Any, cast

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import text

from modelyard.api import create_app
from modelyard.api.metrics import Metrics
from modelyard.api.telemetry import Telemetry
from modelyard.domain.access import (
    MINIMUM_ROLE,
    Caller,
    Permission,
    PrincipalKind,
    Reach,
    Role,
)
from modelyard.domain.errors import Conflict, InvalidInput, InvalidName
from modelyard.domain.evidence import AttachmentIn
from modelyard.domain.journal import verify_chain
from modelyard.domain.manifest import FileEntry
from modelyard.domain.signing import SigningKey
from modelyard.domain.versions import NewVersion
from modelyard.service import RegistryService
from modelyard.service.outbound import OutboundPolicy
from modelyard.web.routing import PageRoute
from tests.conftest import free_port
from tests.test_advisories import osv, osv_zip

ROLES = ("anonymous", "none", "viewer", "reader", "contributor", "checker", "maintainer", "admin")
HELD: dict[str, Role | None] = {
    "none": None,
    "viewer": Role.VIEWER,
    "reader": Role.READER,
    "contributor": Role.CONTRIBUTOR,
    "checker": Role.CHECKER,
    "maintainer": Role.MAINTAINER,
    "admin": Role.ADMIN,
}
PUBLIC_FRAMEWORK_ROUTES = {
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/docs/assets",
    "/static",  # the UI's stylesheet, script and icon
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def weights(role: str) -> bytes:
    return f"weights of {role}".encode()


# -- a registry with one user per role ---------------------------------------------------------


@dataclass(frozen=True)
class Handles:
    """What the tests call the world's things by, the same in every restored copy."""

    tokens: dict[str, str] = field(default_factory=dict)
    spare_tokens: dict[str, str] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    webhooks: dict[str, int] = field(default_factory=dict)
    signing_keys: dict[str, bytes] = field(default_factory=dict)  # each user's, PEM
    trusted_key: str = ""  # the id of another registry's key, trusted by the admin


@dataclass
class World:
    """Per role R: user R with a token, model m-R (version 1, aliases), empty-R, and
    victims (a user, a service account and a team) for the admin routes to act on."""

    service: RegistryService
    client: TestClient
    handles: Handles

    @property
    def tokens(self) -> dict[str, str]:
        return self.handles.tokens

    @property
    def spare_tokens(self) -> dict[str, str]:
        return self.handles.spare_tokens

    @property
    def requests(self) -> dict[str, int]:
        return self.handles.requests

    @property
    def webhooks(self) -> dict[str, int]:
        return self.handles.webhooks

    def headers(self, role: str, token: str | None = None) -> dict[str, str]:
        if role == "anonymous":
            return {}
        return {"Authorization": f"Bearer {token or self.tokens[role]}"}

    def caller(self, role: str) -> Caller:
        return self.service.access.authenticate(self.tokens[role])

    def signature(self, role: str) -> dict[str, Any]:
        """A body signing m-R/1 with R's registered key (a stranger's: anonymous's)."""
        pem = self.handles.signing_keys.get(role)
        key = SigningKey.from_pem(pem, role) if pem else SigningKey.generate()
        content = weights(role)
        return {
            "bundle": key.sign(f"m-{role}/1", [FileEntry("model.bin", len(content), sha(content))])
        }


# The world's receivers: loopback, allowed in its outbound policy as an admin allows an
# internal receiver; nothing listens there, so a test send is refused at once.
OUTBOUND = OutboundPolicy(allowed_networks=(ip_network("127.0.0.0/8"),))
HOOK = f"https://127.0.0.1:{free_port()}/hook"


def build_world(service: RegistryService) -> Handles:
    root = service.identity.bootstrap_admin("root", operator="test")
    admin = service.access.authenticate(root.token)
    identity = service.identity
    peer = service.signing.trust_registry(admin, "peer", SigningKey.generate().public.pem)
    handles = Handles(trusted_key=peer.key_id)
    identity.create_principal(admin, "everyone", PrincipalKind.TEAM)
    # Requests into staging stay open (five approvals) and any member may review them.
    review = "promotion:\n  staging:\n    approvals: {count: 5, team: everyone}\n"
    service.lifecycle.apply_policy(admin, None, review)
    service.outbound = OUTBOUND
    for role in ROLES[1:]:
        identity.create_principal(admin, role, PrincipalKind.USER)
        handles.tokens[role] = identity.create_token(admin, principal=role).token
        handles.spare_tokens[role] = identity.create_token(admin, principal=role).info.id
        held = HELD[role]
        if held is Role.ADMIN:
            identity.set_grant(admin, role, Role.ADMIN)
        elif held is not None:
            for model in (f"m-{role}", f"empty-{role}", f"new-{role}"):
                identity.set_grant(admin, role, held, model=model)
        identity.set_membership(admin, "everyone", role, present=True)
        key = SigningKey.generate()
        service.signing.register_key(
            service.access.authenticate(handles.tokens[role]), key.public.pem
        )
        handles.signing_keys[role] = key.to_pem()
        for content in (weights(role), weights(role) + b" v2"):
            upload = service.begin_blob_upload(admin, sha(content))
            upload.write(content)
            service.finish_blob_upload(upload)
            entry = FileEntry("model.bin", len(content), sha(content))
            service.register_version(f"m-{role}", NewVersion(files=[entry]), caller=admin)
        for alias in ("candidate", "champion"):
            service.set_alias(f"m-{role}", alias, 1, caller=admin)
        service.evidence.attach(admin, f"m-{role}", 1, [AttachmentIn(*EVIDENCE)])
        service.evidence.set_card(admin, f"m-{role}", 1, "# The card\n")
        # v1 went to production, then v2 replaced it (v1 archived); v2 awaits staging.
        for number in (1, 2):
            service.lifecycle.promote(admin, f"m-{role}/{number}", "production", override="x")
        opened = service.lifecycle.promote(admin, f"m-{role}/2", "staging").request
        assert opened is not None
        handles.requests[role] = opened.id
        hook = service.webhooks.create(admin, url=HOOK, events=["*"], model=f"m-{role}")
        handles.webhooks[role] = hook.subscription.id
        service.create_model(f"empty-{role}", caller=admin)
        victim = f"victim-{role}"
        identity.create_principal(admin, victim, PrincipalKind.USER)
        identity.create_principal(admin, f"vsa-{role}", PrincipalKind.SERVICE_ACCOUNT)
        identity.create_principal(admin, f"vteam-{role}", PrincipalKind.TEAM)
        identity.set_membership(admin, f"vteam-{role}", victim, present=True)
        identity.set_grant(admin, victim, Role.VIEWER, model=f"m-{role}")
        identity.set_grant(admin, f"vsa-{role}", Role.VIEWER)
    return handles


@pytest.fixture
def world(restored: Callable[[Callable[[RegistryService], Handles]], Any]) -> Iterator[World]:
    """The world, built once per test process and backend, restored for each test."""
    service, handles = restored(build_world)
    service.outbound = OUTBOUND  # configuration, not data: a copy starts without it
    telemetry = Telemetry(Metrics(service.db))  # as the server's: /metrics answers admins
    app = create_app(service, reach=Reach.LOOPBACK, local_user="tester", telemetry=telemetry)
    with TestClient(app) as client:
        yield World(service, client, handles)


# -- the permission matrix ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """How to call a route as role R ({role} in any string is replaced by R's name)."""

    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    raw: bytes | None = None  # a body sent as it is (a zip), {role} not replaced
    # model | blob | anywhere | listing | registry | webhook (one on model m-R: whoever may
    # not manage it gets the 404 of a missing webhook, never a 403 that would confirm it)
    scope: str = "model"
    query: dict[str, str] = field(default_factory=dict)
    # What whoever may call it gets instead of a 2xx, (status, code): MLflow's
    # transition-stage into a protected stage opens a request and says so (nothing moved),
    # and the world has no MLflow tracking server to copy a version from.
    refusal: tuple[int, str] | None = None


_REPORT = b"auc,0.9\n"
EVIDENCE = ("report.csv", len(_REPORT), sha(_REPORT), _REPORT)
MORE_EVIDENCE = {
    "attachments": [
        {
            "path": "later.csv",
            "size": len(_REPORT),
            "sha256": sha(_REPORT),
            "content": base64.b64encode(_REPORT).decode(),
        }
    ]
}


def inline_version(role: str) -> dict[str, Any]:
    content = f"new weights of {role}".encode()
    return {
        "files": [
            {
                "path": "model.bin",
                "size": len(content),
                "sha256": sha(content),
                "content": base64.b64encode(content).decode(),
            }
        ]
    }


M = {"name": "m-{role}"}
V = {"name": "m-{role}", "number": "1"}
V2 = {"name": "m-{role}", "number": "2"}
R = {"request_id": "{request}"}
W = {"webhook_id": "{webhook}"}
REGISTRY = "registry"
SAMPLES: dict[tuple[str, str], Sample] = {
    ("GET", "/healthz"): Sample(),
    ("GET", "/readyz"): Sample(),
    ("GET", "/metrics"): Sample(scope=REGISTRY),
    ("POST", "/api/v1/blobs/missing"): Sample(
        json={"digests": ["sha256:" + "0" * 64]}, scope="anywhere"
    ),
    ("PUT", "/api/v1/blobs/{digest}"): Sample(
        params={"digest": "sha256:{upload}"}, content=b"upload of {role}", scope="anywhere"
    ),
    ("POST", "/api/v1/blobs/uploads"): Sample(content=b"unnamed of {role}", scope="anywhere"),
    # Bytes the caller may name already: "nothing to send" on any store (S3's direct
    # uploads themselves are tested against a moto server in test_s3.py).
    ("GET", "/api/v1/blobs/direct-uploads"): Sample(scope="anywhere"),
    ("POST", "/api/v1/blobs/direct-uploads"): Sample(
        json={"digest": "sha256:{blob}", "size": 1, "parts": []}, scope="anywhere"
    ),
    ("POST", "/api/v1/blobs/direct-uploads/complete"): Sample(
        json={"digest": "sha256:{blob}", "size": 1}, scope="anywhere"
    ),
    ("POST", "/api/v1/gc"): Sample(json={"dry_run": True}, scope=REGISTRY),
    # Admins load an OSV dump (whoever else is refused before the body is read); anyone
    # authenticated reads which one is loaded.
    ("PUT", "/api/v1/advisories"): Sample(
        raw=osv_zip([osv("GHSA-1", "requests", {"introduced": "0"})]), scope=REGISTRY
    ),
    ("GET", "/api/v1/advisories"): Sample(),
    ("GET", "/api/v1/blobs/{digest}"): Sample(params={"digest": "sha256:{blob}"}, scope="blob"),
    ("HEAD", "/api/v1/blobs/{digest}"): Sample(params={"digest": "sha256:{blob}"}, scope="blob"),
    ("GET", "/api/v1/models"): Sample(scope="listing"),
    ("POST", "/api/v1/models"): Sample(json={"name": "new-{role}"}),
    ("GET", "/api/v1/models/{name}"): Sample(params=M),
    ("PATCH", "/api/v1/models/{name}"): Sample(params=M, json={"description": "edited"}),
    ("DELETE", "/api/v1/models/{name}"): Sample(params={"name": "empty-{role}"}),
    ("GET", "/api/v1/models/{name}/versions"): Sample(params=M),
    ("POST", "/api/v1/models/{name}/versions"): Sample(params=M, json="inline"),
    ("GET", "/api/v1/models/{name}/versions/{number}"): Sample(params=V),
    ("PATCH", "/api/v1/models/{name}/versions/{number}"): Sample(
        params=V, json={"tags": {"k": "v"}}
    ),
    ("GET", "/api/v1/models/{name}/versions/{number}/files/{path}"): Sample(
        params={**V, "path": "model.bin"}
    ),
    ("HEAD", "/api/v1/models/{name}/versions/{number}/files/{path}"): Sample(
        params={**V, "path": "model.bin"}
    ),
    ("PUT", "/api/v1/models/{name}/aliases/{alias}"): Sample(
        params={**M, "alias": "candidate"}, json={"version": 1}
    ),
    ("GET", "/api/v1/models/{name}/aliases/{alias}"): Sample(params={**M, "alias": "candidate"}),
    ("DELETE", "/api/v1/models/{name}/aliases/{alias}"): Sample(params={**M, "alias": "candidate"}),
    ("GET", "/api/v1/versions"): Sample(scope="listing"),
    ("GET", "/api/v1/resolve/{reference}"): Sample(params={"reference": "m-{role}@candidate"}),
    ("GET", "/api/v1/events"): Sample(scope="listing"),
    ("GET", "/api/v1/events/head"): Sample(scope=REGISTRY),
    ("GET", "/api/v1/events/stream"): Sample(scope="listing", query={"timeout": "0"}),
    ("GET", "/api/v1/whoami"): Sample(),
    ("PUT", "/api/v1/users/{name}/password"): Sample(
        params={"name": "{role}"}, json={"password": "a long password of {role}"}
    ),
    ("POST", "/api/v1/tokens"): Sample(json={"name": "more"}),
    ("GET", "/api/v1/tokens"): Sample(),
    ("DELETE", "/api/v1/tokens/{token_id}"): Sample(params={"token_id": "{spare}"}),
    ("GET", "/api/v1/grants"): Sample(scope=REGISTRY),
    ("PUT", "/api/v1/grants/{principal}"): Sample(
        params={"principal": "victim-{role}"}, json={"role": "viewer"}, scope=REGISTRY
    ),
    ("DELETE", "/api/v1/grants/{principal}"): Sample(
        params={"principal": "vsa-{role}"}, scope=REGISTRY
    ),
    ("GET", "/api/v1/models/{name}/grants"): Sample(params=M),
    ("PUT", "/api/v1/models/{name}/grants/{principal}"): Sample(
        params={**M, "principal": "victim-{role}"}, json={"role": "reader"}
    ),
    ("DELETE", "/api/v1/models/{name}/grants/{principal}"): Sample(
        params={**M, "principal": "victim-{role}"}
    ),
    ("PUT", "/api/v1/models/{name}/protected-aliases"): Sample(
        params=M, json={"aliases": ["champion", "production", "canary"]}
    ),
    ("POST", "/api/v1/models/{name}/versions/{number}/promote"): Sample(
        params=V2, json={"to": "staging", "comment": "again"}
    ),
    ("GET", "/api/v1/requests"): Sample(scope="listing"),
    ("GET", "/api/v1/requests/{request_id}"): Sample(params=R),
    ("POST", "/api/v1/requests/{request_id}/approve"): Sample(params=R, json={"comment": "ok"}),
    ("POST", "/api/v1/requests/{request_id}/reject"): Sample(params=R, json={"comment": "no"}),
    ("POST", "/api/v1/requests/{request_id}/cancel"): Sample(params=R),
    ("POST", "/api/v1/models/{name}/rollback"): Sample(params=M, json={"stage": "production"}),
    ("POST", "/api/v1/models/{name}/versions/{number}/archive"): Sample(params=V2),
    ("POST", "/api/v1/models/{name}/versions/{number}/restore"): Sample(params=V),
    ("DELETE", "/api/v1/models/{name}/versions/{number}"): Sample(params=V),
    ("GET", "/api/v1/models/{name}/history"): Sample(params=M),
    ("GET", "/api/v1/models/{name}/policy"): Sample(params=M),
    ("PUT", "/api/v1/models/{name}/policy"): Sample(
        params=M, json={"text": "promotion:\n  staging:\n    approvals: {count: 2}\n"}
    ),
    ("GET", "/api/v1/policy"): Sample(),
    ("PUT", "/api/v1/policy"): Sample(json={"text": "{}"}, scope=REGISTRY),
    ("PUT", "/api/v1/teams/{name}/members/{member}"): Sample(
        params={"name": "vteam-{role}", "member": "vsa-{role}"}, scope=REGISTRY
    ),
    ("DELETE", "/api/v1/teams/{name}/members/{member}"): Sample(
        params={"name": "vteam-{role}", "member": "victim-{role}"}, scope=REGISTRY
    ),
    ("PUT", "/api/v1/models/{name}/versions/{number}/checks/{check}"): Sample(
        params={**V, "check": "audit"}, json={"status": "pass", "url": "https://ci.example/1"}
    ),
    ("GET", "/api/v1/models/{name}/versions/{number}/checks"): Sample(params=V),
    # The samples' files are clean: an admin finds nothing to accept.
    ("POST", "/api/v1/models/{name}/versions/{number}/checks/scan/accept"): Sample(
        params=V, json={"reason": "read it"}, scope=REGISTRY, refusal=(409, "nothing_to_accept")
    ),
    ("POST", "/api/v1/models/{name}/versions/{number}/online-metrics"): Sample(
        params=V, json={"metrics": {"auc": 0.8, "latency_p99_ms": 12.5}}
    ),
    ("GET", "/api/v1/models/{name}/versions/{number}/online-metrics"): Sample(params=V),
    ("GET", "/api/v1/models/{name}/versions/{number}/attachments"): Sample(params=V),
    ("POST", "/api/v1/models/{name}/versions/{number}/attachments"): Sample(
        params=V, json=MORE_EVIDENCE
    ),
    ("GET", "/api/v1/models/{name}/versions/{number}/attachments/{path}"): Sample(
        params={**V, "path": "report.csv"}
    ),
    ("HEAD", "/api/v1/models/{name}/versions/{number}/attachments/{path}"): Sample(
        params={**V, "path": "report.csv"}
    ),
    ("GET", "/api/v1/models/{name}/versions/{number}/card"): Sample(params=V),
    ("PUT", "/api/v1/models/{name}/versions/{number}/card"): Sample(
        params=V, json={"text": "# Edited by {role}\n"}
    ),
    ("GET", "/api/v1/models/{name}/versions/{number}/card/history"): Sample(params=V),
    ("GET", "/api/v1/models/{name}/versions/{number}/comments"): Sample(params=V),
    ("POST", "/api/v1/models/{name}/versions/{number}/comments"): Sample(
        params=V, json={"body": "A comment by {role}."}
    ),
    ("GET", "/api/v1/requests/{request_id}/comments"): Sample(params=R),
    ("POST", "/api/v1/requests/{request_id}/comments"): Sample(
        params=R, json={"body": "A review by {role}."}
    ),
    ("POST", "/api/v1/webhooks"): Sample(json={"url": HOOK, "events": ["*"], "model": "m-{role}"}),
    ("GET", "/api/v1/webhooks"): Sample(scope="listing"),
    ("GET", "/api/v1/webhooks/{webhook_id}"): Sample(params=W, scope="webhook"),
    ("PATCH", "/api/v1/webhooks/{webhook_id}"): Sample(
        params=W, json={"description": "by {role}"}, scope="webhook"
    ),
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): Sample(params=W, scope="webhook"),
    ("POST", "/api/v1/webhooks/{webhook_id}/rotate-secret"): Sample(params=W, scope="webhook"),
    ("POST", "/api/v1/webhooks/{webhook_id}/disable"): Sample(params=W, scope="webhook"),
    ("POST", "/api/v1/webhooks/{webhook_id}/enable"): Sample(params=W, scope="webhook"),
    ("POST", "/api/v1/webhooks/{webhook_id}/test"): Sample(params=W, scope="webhook"),
    ("GET", "/api/v1/webhooks/{webhook_id}/deliveries"): Sample(params=W, scope="webhook"),
    ("POST", "/api/v1/webhooks/{webhook_id}/redeliver"): Sample(
        params=W, json={"first_seq": 1, "last_seq": 50}, scope="webhook"
    ),
    ("GET", "/api/v1/keys"): Sample(),
    ("POST", "/api/v1/keys"): Sample(json={"pem": "{new_key}"}),
    ("GET", "/api/v1/models/{name}/versions/{number}/signatures"): Sample(params=V),
    ("POST", "/api/v1/models/{name}/versions/{number}/signatures"): Sample(
        params=V, json="signature"
    ),
    ("POST", "/api/v1/models/{name}/versions/{number}/signatures/registry"): Sample(params=V2),
    ("POST", "/api/v1/keys/trusted"): Sample(
        json={"name": "peer-{role}", "pem": "{new_key}"}, scope=REGISTRY
    ),
    ("DELETE", "/api/v1/keys/trusted/{key_id}"): Sample(
        params={"key_id": "{trusted_key}"}, scope=REGISTRY
    ),
    ("GET", "/api/v1/models/{name}/bundle"): Sample(params=M, query={"stage": "production"}),
    # Admins reach the import (checked before the body is read), which refuses these bytes.
    ("POST", "/api/v1/bundles"): Sample(
        content=b"not a bundle of {role}", scope=REGISTRY, refusal=(400, "bundle_invalid")
    ),
    ("GET", "/api/v1/compare"): Sample(query={"a": "m-{role}/1", "b": "m-{role}@candidate"}),
    ("GET", "/api/v1/gate"): Sample(
        query={"challenger": "m-{role}@candidate", "against": "champion", "metric": "auc"}
    ),
}
for _kind, _victim in (
    (PrincipalKind.USER, "victim-{role}"),
    (PrincipalKind.SERVICE_ACCOUNT, "vsa-{role}"),
    (PrincipalKind.TEAM, "vteam-{role}"),
):
    _base = f"/api/v1/{_kind.collection}"
    SAMPLES[("GET", _base)] = Sample(scope=REGISTRY)
    SAMPLES[("POST", _base)] = Sample(
        json={"name": f"{_kind.value[:4]}-new-{{role}}"}, scope=REGISTRY
    )
    SAMPLES[("GET", _base + "/{name}")] = Sample(params={"name": _victim}, scope=REGISTRY)
    SAMPLES[("DELETE", _base + "/{name}")] = Sample(params={"name": _victim}, scope=REGISTRY)

# MLflow's registry API (tests/test_mlflow_api.py drives it with MLflow's own client), under
# both of its prefixes: the same model, versions, aliases and files as the REST samples.
_MV = {"name": "m-{role}", "version": "1"}
for _api in ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow"):
    _rm, _mv = f"{_api}/registered-models", f"{_api}/model-versions"
    SAMPLES |= {
        ("POST", f"{_rm}/create"): Sample(json={"name": "new-{role}"}),
        ("GET", f"{_rm}/get"): Sample(query=M),
        ("PATCH", f"{_rm}/update"): Sample(json={**M, "description": "edited"}),
        ("DELETE", f"{_rm}/delete"): Sample(json={"name": "empty-{role}"}),
        ("GET", f"{_rm}/search"): Sample(scope="listing"),
        ("POST", f"{_rm}/get-latest-versions"): Sample(json=M),
        ("POST", f"{_rm}/set-tag"): Sample(json={**M, "key": "k", "value": "v"}),
        ("DELETE", f"{_rm}/delete-tag"): Sample(json={**M, "key": "k"}),
        ("POST", f"{_rm}/alias"): Sample(json={**M, "alias": "candidate", "version": "1"}),
        ("DELETE", f"{_rm}/alias"): Sample(json={**M, "alias": "candidate"}),
        ("GET", f"{_rm}/alias"): Sample(query={**M, "alias": "candidate"}),
        ("GET", f"{_mv}/get"): Sample(query=_MV),
        ("PATCH", f"{_mv}/update"): Sample(json={**_MV, "description": "edited"}),
        ("DELETE", f"{_mv}/delete"): Sample(json=_MV),
        ("GET", f"{_mv}/search"): Sample(scope="listing"),
        ("POST", f"{_mv}/set-tag"): Sample(json={**_MV, "key": "k", "value": "v"}),
        ("DELETE", f"{_mv}/delete-tag"): Sample(json={**_MV, "key": "k"}),
        # Staging is protected: whoever may promote opens a request, answered as a refusal.
        ("POST", f"{_mv}/transition-stage"): Sample(
            json={"name": "m-{role}", "version": "2", "stage": "Staging"},
            refusal=(403, "request_opened"),
        ),
        ("POST", f"{_mv}/create"): Sample(
            json={"name": "m-{role}", "source": "runs:/0123/model"},
            refusal=(400, "source_refused"),
        ),
        ("GET", f"{_mv}/get-download-uri"): Sample(query=_MV),
    }
for _api in ("/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts"):
    SAMPLES |= {
        ("GET", f"{_api}/artifacts"): Sample(query={"path": "modelyard-models/m-{role}/1"}),
        ("GET", f"{_api}/artifacts/{{path}}"): Sample(
            params={"path": "modelyard-models/m-{role}/1/model.bin"}
        ),
    }


class _RoutesOnly:
    """Just enough of a service to build the app and read its route table."""

    class access:  # stands in for RegistryService.access
        @staticmethod
        def require_servable(reach: Reach) -> None:
            return None


def app_routes() -> list[tuple[str, str, str | None]]:
    """(method, path, declared permission) of every route the app serves."""
    app = create_app(cast(RegistryService, _RoutesOnly()), reach=Reach.LOOPBACK)
    found = []
    for route in _walk(app.routes):
        declared = (route.openapi_extra or {}).get("x-permission")
        found += [(method, route.path_format, declared) for method in sorted(route.methods)]
    return found


def _walk(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, PageRoute):
            continue  # the UI's pages: HTML over the same service (tests/test_web.py)
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # an included router, as newer FastAPI keeps it
            yield from _walk(route.original_router.routes)
        else:
            assert route.path in PUBLIC_FRAMEWORK_ROUTES, route


ROUTES = app_routes()


def test_every_route_declares_a_decision_and_has_a_sample() -> None:
    undecided = [(m, p) for m, p, declared in ROUTES if declared is None]
    assert undecided == [], "routes without openapi_extra=needs(...)"
    known = {"public", "authenticated"} | {p.value for p in Permission}
    assert {d for _, _, d in ROUTES} <= known
    missing = [(m, p) for m, p, _ in ROUTES if (m, p) not in SAMPLES]
    assert missing == [], "routes the permission matrix does not call: add a Sample"
    assert set(SAMPLES) == {(m, p) for m, p, _ in ROUTES}, "samples of routes that are gone"


def expected(declared: str, scope: str, role: str) -> int | str:
    """The status a role must get: 'ok' (2xx), 401, 403 or 404."""
    if declared == "public":
        return "ok"
    if role == "anonymous":
        return 401
    if declared == "authenticated" or scope == "listing":
        return "ok"
    needed = MINIMUM_ROLE[Permission(declared)]
    held = HELD[role]
    if scope == "registry":
        return "ok" if held is Role.ADMIN else 403
    if scope == "anywhere":
        return "ok" if held is not None and held >= needed else 403
    if scope == "webhook":
        return "ok" if held is not None and held >= needed else 404
    if held is None:
        return 404  # model or blob scope: what the caller may not see does not exist
    return "ok" if held >= needed else 403


@pytest.mark.parametrize(
    ("method", "path", "declared"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES]
)
def test_permission_matrix(world: World, method: str, path: str, declared: str) -> None:
    sample = SAMPLES[(method, path)]
    for role in ROLES:
        values = {
            "role": role,
            "blob": sha(weights(role)),
            "upload": sha(f"upload of {role}".encode()),
            "spare": world.spare_tokens.get(role, "0" * 16),
            "request": str(world.requests.get(role, 1)),
            "webhook": str(world.webhooks.get(role, 1)),
            "new_key": SigningKey.generate().public.pem,
            "trusted_key": world.handles.trusted_key,
        }

        def fill(template: str, values: dict[str, str] = values) -> str:
            for key, value in values.items():
                template = template.replace("{" + key + "}", value)
            return template

        url = path
        for key, template in sample.params.items():
            url = url.replace("{" + key + "}", fill(template))
        body = {"inline": inline_version, "signature": world.signature}.get(
            sample.json if isinstance(sample.json, str) else "", lambda _: sample.json
        )(role)
        if isinstance(body, dict):
            body = {k: fill(v) if isinstance(v, str) else v for k, v in body.items()}
        content = fill(sample.content.decode()).encode() if sample.content else sample.raw
        query = {k: fill(v) for k, v in sample.query.items()}
        response = world.client.request(
            method, url, params=query, json=body, content=content, headers=world.headers(role)
        )
        want = expected(declared, sample.scope, role)
        where = f"{method} {url} as {role}: {response.status_code} {response.text[:300]}"
        if want == "ok" and sample.refusal:
            assert (response.status_code, response.json()["code"]) == sample.refusal, where
        elif want == "ok":
            assert 200 <= response.status_code < 300, where
        else:
            assert response.status_code == want, where
        if want == 401:
            assert response.headers["www-authenticate"].startswith("Bearer"), where
        if method == "HEAD":
            continue  # no body to read the problem from
        if want == 403:
            assert response.json()["permission"] == declared, where
        if want == 404:
            assert response.json()["code"] in (
                "model_not_found",
                "blob_not_found",
                "request_not_found",
                "webhook_not_found",
            ), where


# -- tokens -----------------------------------------------------------------------------------


def test_bad_tokens_get_401_with_a_challenge(world: World) -> None:
    client = world.client
    token = world.tokens["viewer"]
    token_id = token.split("_")[1]
    wrong_secret = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    cases = {
        "token_missing": {},
        "token_malformed": {"Authorization": "Bearer not-a-token"},
        "token_invalid": {"Authorization": f"Bearer {wrong_secret}"},
    }
    cases["token_malformed_scheme"] = {"Authorization": f"Basic {token}"}
    for case, headers in cases.items():
        for url in ("/api/v1/models/m-viewer", "/api/v1/resolve/m-viewer"):
            response = client.get(url, headers=headers)
            assert response.status_code == 401, (case, response.text)
            assert response.json()["code"] == case.removesuffix("_scheme")
            challenge = response.headers["www-authenticate"]
            assert challenge.startswith('Bearer realm="modelyard"')
            assert ("invalid_token" in challenge) == (case != "token_missing")
            assert token not in response.text and wrong_secret not in response.text

    # Revoked: works, then is revoked, then is refused (the cache must not keep it alive).
    assert client.get("/api/v1/resolve/m-viewer", headers=world.headers("viewer")).is_success
    world.service.identity.revoke_token(world.caller("admin"), token_id)
    for url in ("/api/v1/models/m-viewer", "/api/v1/resolve/m-viewer"):
        response = client.get(url, headers=world.headers("viewer"))
        assert (response.status_code, response.json()["code"]) == (401, "token_revoked")


def test_expired_token(world: World) -> None:
    service = world.service
    admin = world.caller("admin")
    made = service.identity.create_token(
        admin, principal="reader", expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    headers = {"Authorization": f"Bearer {made.token}"}
    assert world.client.get("/api/v1/resolve/m-reader", headers=headers).is_success
    with pytest.raises(InvalidInput, match="future"):
        service.identity.create_token(admin, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    naive = world.client.post(
        "/api/v1/tokens", json={"expires_at": "2030-01-01T00:00:00"}, headers=world.headers("admin")
    )
    assert (naive.status_code, naive.json()["code"]) == (400, "invalid_input")
    # Two hours later by the registry's clock (no waiting): refused, even from the cache.
    later = datetime.now(UTC) + timedelta(hours=2)
    service.access.clock = lambda: int(later.timestamp() * 1_000_000)
    for url in ("/api/v1/resolve/m-reader", "/api/v1/models/m-reader"):
        response = world.client.get(url, headers=headers)
        assert (response.status_code, response.json()["code"]) == (401, "token_expired")
    assert world.client.get("/api/v1/whoami", headers=world.headers("reader")).is_success


def test_model_scoped_and_read_only_tokens(world: World) -> None:
    service = world.service
    admin = world.caller("admin")
    identity = service.identity
    identity.set_grant(admin, "contributor", Role.CONTRIBUTOR, model="m-viewer")
    scoped = identity.create_token(admin, principal="contributor", model="m-contributor").token
    as_scoped = {"Authorization": f"Bearer {scoped}"}
    client = world.client
    # Its own model: everything the role allows.
    assert client.post(
        "/api/v1/models/m-contributor/versions", json=inline_version("s"), headers=as_scoped
    ).is_success
    # Another model the user may otherwise write to: invisible with this token.
    for url in ("/api/v1/models/m-viewer", "/api/v1/resolve/m-viewer"):
        response = client.get(url, headers=as_scoped)
        assert (response.status_code, response.json()["code"]) == (404, "model_not_found")
    listed = client.get("/api/v1/models", headers=as_scoped).json()["items"]
    assert [m["name"] for m in listed] == ["m-contributor"]
    # A token made with a scoped token is scoped alike; broader is refused.
    response = client.post("/api/v1/tokens", json={"model": "m-viewer"}, headers=as_scoped)
    assert response.status_code == 403
    narrower = client.post("/api/v1/tokens", json={}, headers=as_scoped).json()
    assert narrower["model"] == "m-contributor"

    read_only = identity.create_token(admin, principal="contributor", read_only=True).token
    as_reader = {"Authorization": f"Bearer {read_only}"}
    response = client.post(
        "/api/v1/models/m-contributor/versions", json=inline_version("r"), headers=as_reader
    )
    assert (response.status_code, response.json()["permission"]) == (403, "model.register")
    file_url = "/api/v1/models/m-contributor/versions/1/files/model.bin"
    assert client.get(file_url, headers=as_reader).content == weights("contributor")


def test_tokens_are_stored_hashed_and_listed_without_secrets(world: World) -> None:
    service = world.service
    made = service.identity.create_token(world.caller("viewer"), name="laptop")
    secret = made.token.split("_", 2)[2]
    with service.db.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM tokens")).all()
    assert all(secret not in str(tuple(row)) for row in rows)
    listed = world.client.get("/api/v1/tokens", headers=world.headers("viewer")).json()["items"]
    assert {t["name"] for t in listed} >= {"laptop"}
    assert all("token" not in t and t["principal"] == "viewer" for t in listed)
    # Only admins list or revoke other people's tokens; a stranger's token "does not exist".
    others = world.client.get("/api/v1/tokens?principal=admin", headers=world.headers("viewer"))
    assert others.status_code == 403
    response = world.client.delete(
        f"/api/v1/tokens/{world.spare_tokens['admin']}", headers=world.headers("viewer")
    )
    assert (response.status_code, response.json()["code"]) == (404, "token_not_found")


# -- visibility, protected aliases, teams, the journal -----------------------------------------


def test_invisible_models_are_absent_everywhere(world: World) -> None:
    client, headers = world.client, world.headers("viewer")
    names = [m["name"] for m in client.get("/api/v1/models", headers=headers).json()["items"]]
    assert names == ["empty-viewer", "m-viewer"]
    versions = client.get("/api/v1/versions", headers=headers).json()["items"]
    assert {v["model"] for v in versions} == {"m-viewer"}
    events = client.get("/api/v1/events?limit=1000", headers=headers).json()["items"]
    models_of_events = {e["model"] for e in events}
    assert models_of_events == {"m-viewer", "empty-viewer", "new-viewer"}  # new: a grant
    hidden = client.get("/api/v1/models/m-reader", headers=headers)
    absent = client.get("/api/v1/models/no-such-model", headers=headers)
    assert hidden.status_code == absent.status_code == 404
    assert hidden.json()["code"] == absent.json()["code"]
    assert hidden.json()["detail"].replace("m-reader", "X") == absent.json()["detail"].replace(
        "no-such-model", "X"
    )
    # A viewer sees the metadata and not one byte of the artifact.
    file_url = "/api/v1/models/m-viewer/versions/1/files/model.bin"
    for method in ("GET", "HEAD"):
        response = client.request(method, file_url, headers={**headers, "Range": "bytes=0-0"})
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"
        assert weights("viewer") not in response.content
    blob = client.get(f"/api/v1/blobs/sha256:{sha(weights('viewer'))}", headers=headers)
    assert blob.status_code == 403 and weights("viewer") not in blob.content


def test_protected_aliases_take_a_maintainer(world: World) -> None:
    service = world.service
    admin = world.caller("admin")
    service.identity.set_grant(admin, "contributor", Role.CONTRIBUTOR, model="m-maintainer")
    client = world.client
    url = "/api/v1/models/m-maintainer/aliases/champion"
    response = client.put(url, json={"version": 1}, headers=world.headers("contributor"))
    assert (response.status_code, response.json()["permission"]) == (403, "alias.set_protected")
    assert client.delete(url, headers=world.headers("contributor")).status_code == 403
    assert client.put(url, json={"version": 1}, headers=world.headers("maintainer")).is_success
    protected = client.put(
        "/api/v1/models/m-maintainer/protected-aliases",
        json={"aliases": ["production"]},
        headers=world.headers("maintainer"),
    )
    assert protected.json()["protected_aliases"] == ["production"]
    assert client.put(url, json={"version": 1}, headers=world.headers("contributor")).is_success


def test_team_grants_reach_members(world: World) -> None:
    service = world.service
    admin = world.caller("admin")
    identity = service.identity
    identity.create_principal(admin, "risk", PrincipalKind.TEAM)
    identity.set_membership(admin, "risk", "none", present=True)
    headers = world.headers("none")
    assert world.client.get("/api/v1/models/m-reader", headers=headers).status_code == 404
    identity.set_grant(admin, "risk", Role.READER, model="m-reader", kind=PrincipalKind.TEAM)
    file_url = "/api/v1/models/m-reader/versions/1/files/model.bin"
    assert world.client.get(file_url, headers=headers).content == weights("reader")
    assert world.client.get("/api/v1/whoami", headers=headers).json()["teams"] == [
        "everyone",
        "risk",
    ]
    identity.set_membership(admin, "risk", "none", present=False)
    assert world.client.get(file_url, headers=headers).status_code == 404


def test_journal_names_actor_and_token_for_every_change(world: World) -> None:
    service = world.service
    client = world.client
    maintainer = world.headers("maintainer")
    token_id = world.tokens["maintainer"].split("_")[1]
    client.put(
        "/api/v1/models/m-maintainer/grants/victim-maintainer",
        json={"role": "reader"},
        headers=maintainer,
    )
    client.delete("/api/v1/models/m-maintainer/grants/victim-maintainer", headers=maintainer)
    client.put("/api/v1/models/m-maintainer/aliases/prod", json={"version": 1}, headers=maintainer)
    admin = world.caller("admin")
    events = service.events(caller=admin, limit=1000)
    # (Besides the key the world registered as each user, which is theirs to register.)
    mine = [e for e in events if e.actor == "maintainer" and e.kind != "key.registered"]
    assert [(e.kind, e.payload.get("after")) for e in mine] == [
        ("grant.set", "reader"),
        ("grant.revoked", None),
        ("alias.set", 1),
    ]
    assert {e.token_id for e in mine} == {token_id}
    assert all(e.token_id for e in events if e.actor != "test")  # only bootstrap is local
    assert verify_chain(events).ok
    # Grants of a model are in its history for those who may see it; admin events are not.
    visible = client.get("/api/v1/events?limit=1000", headers=maintainer).json()["items"]
    assert {"grant.set", "grant.revoked"} <= {e["kind"] for e in visible}
    assert not {"principal.created", "token.created"} & {e["kind"] for e in visible}


def test_first_user_needs_an_admin_and_local_mode_ends(service: RegistryService) -> None:
    local = Caller.local_user("owner")
    with TestClient(create_app(service, reach=Reach.LOOPBACK, local_user="owner")) as client:
        assert client.get("/api/v1/whoami").json() == {
            "name": "owner",
            "kind": "local",
            "token_id": None,
            "registry_role": "admin",
            "teams": [],
            "model": None,
            "read_only": False,
            "local": True,
        }
        response = client.post("/api/v1/users", json={"name": "alice"})
        assert (response.status_code, response.json()["code"]) == (409, "no_admin")
        made = service.identity.bootstrap_admin("alice", operator=local.name)
        response = client.get("/api/v1/models")
        assert (response.status_code, response.json()["code"]) == (401, "token_missing")
        headers = {"Authorization": f"Bearer {made.token}"}
        assert client.get("/api/v1/whoami", headers=headers).json()["name"] == "alice"
    with TestClient(create_app(service, reach=Reach.NETWORK)) as remote:
        assert remote.get("/api/v1/models").status_code == 401


def test_the_app_is_built_for_how_it_is_reached(service: RegistryService) -> None:
    """Local mode follows from the reach, decided by access control where the app is built."""
    with pytest.raises(Conflict) as refused:  # other machines, and nobody to answer for it
        create_app(service, reach=Reach.NETWORK)
    assert refused.value.code == "no_admin"
    assert "modelyard admin create" in refused.value.message
    for reach in (Reach.PROCESS, Reach.LOOPBACK):
        with TestClient(create_app(service, reach=reach, local_user="owner")) as client:
            assert client.get("/api/v1/whoami").json()["local"] is True, reach
    made = service.identity.bootstrap_admin("alice", operator="owner")
    bearer = {"Authorization": f"Bearer {made.token}"}
    for reach in Reach:  # a registry with users: a token everywhere, in-process too
        with TestClient(create_app(service, reach=reach, local_user="owner")) as client:
            response = client.get("/api/v1/models")
            assert (response.status_code, response.json()["code"]) == (401, "token_missing")
            assert response.headers["www-authenticate"] == 'Bearer realm="modelyard"'
            assert client.get("/api/v1/whoami", headers=bearer).json()["name"] == "alice"


def test_users_teams_and_service_accounts_share_one_namespace(service: RegistryService) -> None:
    made = service.identity.bootstrap_admin("alice", operator="t")
    admin = service.access.authenticate(made.token)
    service.identity.create_principal(admin, "shared", PrincipalKind.TEAM)
    with pytest.raises(Conflict, match="already exists"):
        service.identity.create_principal(admin, "shared", PrincipalKind.USER)
    with pytest.raises(InvalidName, match="not allowed"):
        service.identity.create_principal(admin, "bad name", PrincipalKind.USER)
