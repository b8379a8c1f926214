"""The SDK, every test over both transports: HTTP to a real server, and in-process.

``target`` parametrises each test (on SQLite and PostgreSQL): ``http`` serves the test's
registry with uvicorn on a loopback port, ``process`` opens its data directory in-process
(the same app, driven without a socket). So the two cannot drift.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

import modelyard
from modelyard.api import create_app
from modelyard.client.credentials import save_token
from modelyard.client.progress import Progress
from modelyard.client.registry import Registry, open_transport
from modelyard.client.transport import Advance, Request, Response, Transport
from modelyard.config import Settings
from modelyard.domain.access import Reach
from modelyard.domain.errors import DigestMismatch
from modelyard.domain.gc import GcReport
from modelyard.domain.models import Environment
from modelyard.service import RegistryService
from tests.conftest import serving

Tree = Callable[[dict[str, bytes]], Path]
TRANSPORTS = ["http", "process"]


class Recorder:
    """A Progress that adds up the bytes reported for each task."""

    def __init__(self) -> None:
        self.done: dict[str, int] = {}

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        self.done[description] = 0

        def advance(n: int) -> None:
            self.done[description] += n

        yield advance


class Recording:
    """A transport around another that notes each request: the seam, observed."""

    def __init__(self, inner: Transport, seen: list[str]) -> None:
        self.inner = inner
        self.seen = seen

    def send(self, request: Request) -> Response:
        self.seen.append(f"{request.method} {request.path}")
        return self.inner.send(request)

    def close(self) -> None:
        self.inner.close()


@dataclass
class Target:
    """Where the SDK reaches the test's registry: a server's URL, or its data directory."""

    location: str
    database_url: str | None = None
    seen: list[str] = field(default_factory=list)
    opened: list[Registry] = field(default_factory=list)

    def connect(self, *, token: str | None = None, progress: Progress | None = None) -> Registry:
        """What ``modelyard.connect`` opens, with every request noted in ``seen``."""
        transport = Recording(open_transport(self.location, self.database_url), self.seen)
        reg = Registry(transport, token=token, progress=progress)
        self.opened.append(reg)
        return reg

    def close(self) -> None:
        for reg in self.opened:
            reg.close()


@pytest.fixture(params=TRANSPORTS)
def target(
    request: pytest.FixtureRequest, service: RegistryService, settings: Settings
) -> Iterator[Target]:
    if request.param == "http":
        with serving(create_app(service, reach=Reach.LOOPBACK)) as url:
            found = Target(url)
            yield found
            found.close()
    else:
        found = Target(str(settings.data_dir), settings.database_url)
        yield found
        found.close()


@pytest.fixture
def reg(target: Target) -> Registry:
    """No token, on an empty registry: single-user local mode, over either transport."""
    return target.connect()


@pytest.fixture
def requests_seen(target: Target) -> list[str]:
    return target.seen


def test_register_and_download_a_directory(reg: Registry, make_tree: Tree, tmp_path: Path) -> None:
    big = os.urandom(3 * 1024 * 1024)
    tree = make_tree({"model.onnx": big, "config.json": b"{}", "nested/vocab.txt": b"a\nb\n"})
    version = reg.register("churn", tree, metrics={"auc": 0.9}, params={"depth": 5})
    assert version.version == 1
    assert {f.path: f.sha256 for f in version.files} == {
        "model.onnx": hashlib.sha256(big).hexdigest(),
        "config.json": hashlib.sha256(b"{}").hexdigest(),
        "nested/vocab.txt": hashlib.sha256(b"a\nb\n").hexdigest(),
    }
    assert version.params == {"depth": "5"}
    assert version.environment is not None and version.environment.python

    out = tmp_path / "out"
    reg.download("churn/1", out)
    assert (out / "model.onnx").read_bytes() == big
    assert (out / "nested" / "vocab.txt").read_bytes() == b"a\nb\n"


def test_reregistering_unchanged_files_sends_no_file_bytes(
    reg: Registry, make_tree: Tree, requests_seen: list[str]
) -> None:
    tree = make_tree({"weights.bin": os.urandom(2 * 1024 * 1024)})
    reg.register("churn", tree)
    assert "POST /api/v1/blobs/uploads" in requests_seen
    requests_seen.clear()
    second = reg.register("churn", tree)
    assert second.version == 2
    assert requests_seen == ["POST /api/v1/blobs/missing", "POST /api/v1/models/churn/versions"]


def test_a_changed_file_is_uploaded_again(reg: Registry, make_tree: Tree) -> None:
    tree = make_tree({"weights.bin": os.urandom(200_000)})
    first = reg.register("churn", tree)
    (tree / "weights.bin").write_bytes(os.urandom(200_000))
    second = reg.register("churn", tree)
    assert first.files[0].sha256 != second.files[0].sha256
    assert second.manifest_digest != first.manifest_digest


def test_download_skips_files_already_in_place_and_refuses_corrupt_ones(
    reg: Registry, make_tree: Tree, tmp_path: Path
) -> None:
    tree = make_tree({"a.bin": os.urandom(100_000)})
    reg.register("churn", tree)
    out = tmp_path / "out"
    reg.download("churn", out)
    (out / "a.bin").write_bytes(b"tampered")
    reg.download("churn", out)  # notices the wrong content and fetches it again
    assert (out / "a.bin").read_bytes() == (tree / "a.bin").read_bytes()


def test_big_download_reports_progress_and_leaves_no_partial_file(
    target: Target, make_tree: Tree, tmp_path: Path
) -> None:
    progress = Recorder()
    reg = target.connect(progress=progress)
    data = os.urandom(9 * 1024 * 1024 + 3)  # several of the download's buffers, and a tail
    reg.register("churn", make_tree({"w.bin": data}))
    out = tmp_path / "out"
    reg.download("churn", out)
    assert (out / "w.bin").read_bytes() == data
    assert progress.done == {"uploading": len(data), "downloading": len(data)}
    assert sorted(p.name for p in out.iterdir()) == ["w.bin"]


def test_a_corrupt_blob_in_the_store_is_refused_and_nothing_is_written(
    reg: Registry, make_tree: Tree, tmp_path: Path, settings: Settings
) -> None:
    data = os.urandom(5 * 1024 * 1024)
    version = reg.register("churn", make_tree({"w.bin": data}))
    digest = version.files[0].sha256
    blob = settings.data_dir / "blobs" / "sha256" / digest[:2] / digest
    blob.write_bytes(os.urandom(len(data)))  # bit rot on the server's disk
    out = tmp_path / "out"
    with pytest.raises(DigestMismatch):
        reg.download("churn", out)
    assert list(out.iterdir()) == []


def test_lineage_is_captured_from_git(
    reg: Registry, make_tree: Tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git[:3], "remote", "add", "origin", "https://u:tok@git.example/r.git"])
    (repo / "train.py").write_text("print(1)\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    (repo / "train.py").write_text("print(2)\n")  # uncommitted change: dirty
    monkeypatch.chdir(repo)
    version = reg.register("churn", make_tree({"m.bin": b"x"}))
    assert version.source is not None
    assert version.source.repo == "https://git.example/r.git"  # credentials stripped
    assert version.source.commit is not None and len(version.source.commit) == 40
    assert version.source.dirty is True


def test_register_alias_resolve_search_and_verify(reg: Registry, make_tree: Tree) -> None:
    reg.register("churn", make_tree({"w.bin": os.urandom(300_000)}), metrics={"auc": 0.8})
    reg.set_alias("churn", "champion", 1)
    assert reg.resolve("churn@champion").metrics == {"auc": 0.8}
    assert [v.reference for v in reg.search("metrics.auc > 0.5")] == ["churn/1"]
    assert reg.verify_journal().ok


def test_errors_from_the_server_keep_their_code(reg: Registry) -> None:
    with pytest.raises(modelyard.NotFound) as caught:
        reg.resolve("ghost@champion")
    assert caught.value.code == "model_not_found"
    with pytest.raises(modelyard.InvalidFilter) as bad:
        reg.versions(filter="metrics.auc >")
    assert bad.value.details["position"] == 13


def test_identity_and_access_through_the_sdk(
    target: Target, service: RegistryService, tmp_path: Path
) -> None:
    # An empty registry: no token needed, and local mode stays local until an admin exists.
    local = target.connect()
    assert local.whoami().local
    with pytest.raises(modelyard.Conflict):
        local.create_user("bob")

    made = service.identity.bootstrap_admin("alice", operator="test")
    admin = target.connect(token=made.token)
    assert admin.whoami().registry_role is modelyard.Role.ADMIN
    admin.create_user("bob")
    admin.create_team("risk")
    assert admin.add_team_member("risk", "bob").members == ("bob",)
    admin.create_service_account("ci", description="pipeline")
    assert [p.name for p in admin.service_accounts()] == ["ci"]
    grant = admin.grant("contributor", "ci", model="churn", kind="service_account")
    assert (grant.role, grant.model) == (modelyard.Role.CONTRIBUTOR, "churn")
    ci_token = admin.create_token(principal="ci", model="churn", expires=timedelta(days=1))
    assert ci_token.info.expires_at is not None and ci_token.info.model == "churn"

    ci = target.connect(token=ci_token.token)
    version = ci.register("churn", _file(tmp_path, b"weights"))
    assert version.creator == "ci"
    with pytest.raises(modelyard.NotFound):
        ci.register("fraud", _file(tmp_path, b"other"))
    with pytest.raises(modelyard.Forbidden) as denied:
        ci.set_alias("churn", "champion", 1)
    assert denied.value.details["permission"] == "alias.set_protected"
    with pytest.raises(modelyard.Forbidden):
        ci.verify_journal()
    assert admin.verify_journal().ok

    assert {(g.principal, g.role.label) for g in admin.grants("churn")} >= {
        ("ci", "contributor"),
        ("alice", "admin"),
    }
    admin.protect_aliases("churn", ["canary"])
    ci.set_alias("churn", "champion", 1)
    admin.revoke("ci", model="churn")
    with pytest.raises(modelyard.NotFound):
        ci.resolve("churn@champion")
    admin.revoke_token(ci_token.info.id)
    with pytest.raises(modelyard.Unauthorized):
        ci.whoami()
    admin.disable_user("bob")
    assert [u.disabled for u in admin.users() if u.name == "bob"] == [True]
    admin.delete_team("risk")
    assert admin.teams() == []


def test_once_users_exist_a_caller_without_a_token_can_do_nothing(
    target: Target, service: RegistryService
) -> None:
    """The attack: open the registry with no token (in-process: just its directory) and make
    yourself admin. 401 without a token, 403 with a viewer's; nothing is written."""
    made = service.identity.bootstrap_admin("alice", operator="test")
    admin = target.connect(token=made.token)
    admin.create_user("vic")
    admin.grant("viewer", "vic")
    viewer = target.connect(token=admin.create_token(principal="vic").token)
    seq = admin.events(limit=1000)[-1].seq

    anonymous = target.connect()
    for attempt in (
        lambda reg: reg.create_user("mallory"),
        lambda reg: reg.grant("admin", "vic"),
        lambda reg: reg.create_token(principal="alice"),
    ):
        with pytest.raises(modelyard.Unauthorized) as unauthenticated:
            attempt(anonymous)
        assert unauthenticated.value.code == "token_missing"
        with pytest.raises(modelyard.Forbidden) as forbidden:
            attempt(viewer)
        assert forbidden.value.details["permission"] == "registry.admin"
    with pytest.raises(modelyard.Unauthorized):
        anonymous.whoami()
    assert [u.name for u in admin.users()] == ["alice", "vic"]
    assert {(g.principal, g.role.label) for g in admin.grants()} == {
        ("alice", "admin"),
        ("vic", "viewer"),
    }
    assert admin.events(after=seq) == []


def test_the_token_comes_from_the_environment_or_the_login_file(
    target: Target, service: RegistryService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the CLI finds it: MODELYARD_TOKEN, else what 'modelyard login' saved for this URL
    or directory."""
    made = service.identity.bootstrap_admin("alice", operator="test")
    monkeypatch.setenv("MODELYARD_CONFIG", str(tmp_path / "config.json"))
    monkeypatch.delenv("MODELYARD_TOKEN", raising=False)

    def whoami() -> str:
        with modelyard.connect(target.location, database_url=target.database_url) as reg:
            return reg.whoami().name

    with pytest.raises(modelyard.Unauthorized):
        whoami()
    save_token(target.location, made.token)
    assert whoami() == "alice"
    save_token(target.location, None)
    monkeypatch.setenv("MODELYARD_TOKEN", made.token)
    assert whoami() == "alice"


def _file(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / hashlib.sha256(content).hexdigest()[:8]
    path.write_bytes(content)
    return path


def test_lifecycle_through_the_sdk(reg: Registry, make_tree: Tree) -> None:
    """Over REST in local mode: the same objects and errors as in-process."""
    tree = make_tree({"model.bin": b"weights"})
    first = reg.register("churn", tree, metrics={"auc": 0.9})
    second = reg.register("churn", tree, metrics={"auc": 0.8})
    reg.apply_policy("churn", "promotion:\n  production:\n    require: [metrics.auc >= 0.85]\n")
    assert reg.policy("churn")["version"] == 1
    with pytest.raises(modelyard.PolicyFailed) as refused:
        reg.promote("churn/2", "production")
    assert refused.value.details["failures"][0]["detail"] == ("metrics.auc = 0.8; needs >= 0.85")
    opened = reg.promote(f"churn/{first.version}", "production", comment="go")
    assert opened.status == "open" and opened.request is not None
    assert [r.id for r in reg.requests("churn")] == [opened.request.id]
    assert reg.request(opened.request.id) == opened.request
    # Local mode has one user: it may approve its own request.
    assert reg.approve(opened.request.id, comment="ok").status == "executed"
    assert reg.resolve("churn@production").version == first.version
    moved_at = reg.history("churn")[-1].time
    assert reg.archive(f"churn/{second.version}").stage == "archived"
    assert reg.restore(f"churn/{second.version}").stage == "development"
    reg.delete_version(f"churn/{second.version}")
    with pytest.raises(modelyard.NotFound):
        reg.resolve(f"churn/{second.version}")
    assert reg.resolve("churn@production", as_of=moved_at).version == first.version
    with pytest.raises(modelyard.Conflict):
        reg.rollback("churn", stage="production")  # nothing held it before


def test_search_results_carry_their_environments(reg: Registry, make_tree: Tree) -> None:
    captured = reg.register("m", make_tree({"a.bin": b"a"}))
    other = Environment(python="3.12.1", platform="Linux", packages={"torch": "2.13.0"})
    reg.register("m", make_tree({"b.bin": b"b"}), environment=other)
    reg.register("m", make_tree({"c.bin": b"c"}), environment=None)
    found = {v.version: v.environment for v in reg.search('name = "m"')}
    assert captured.environment is not None and captured.environment.packages
    assert found == {1: captured.environment, 2: other, 3: None}


def test_a_registry_shared_by_threads(reg: Registry, make_tree: Tree) -> None:
    for i in range(3):
        reg.register("m", make_tree({"w.bin": f"weights {i}".encode()}))
    reg.set_alias("m", "champion", 2)
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda i: reg.resolve(f"m/{1 + i % 3}").version, range(300)))
    assert found == [1 + i % 3 for i in range(300)]
    assert reg.resolve("m@champion").version == 2


def test_checks_through_the_sdk(reg: Registry, make_tree: Tree) -> None:
    """Local mode's one user may report (it holds every role); the policy reads the result."""
    number = reg.register("churn", make_tree({"model.bin": b"weights"})).version
    policy = "promotion:\n  staging:\n    require: [{check: audit}]\n    approvals: {count: 0}\n"
    reg.apply_policy("churn", policy)
    with pytest.raises(modelyard.PolicyFailed):
        reg.promote("churn@latest", "staging")
    url = "https://ci.example.com/runs/7"
    result = reg.report_check("churn@latest", "audit", "pass", url=url)
    assert (result.reference, result.name, result.status, result.url) == (
        f"churn/{number}",
        "audit",
        "pass",
        url,
    )
    assert [c for c in reg.checks(f"churn/{number}") if c.name != "scan"] == [result]
    assert reg.promote(f"churn/{number}", "staging").status == "executed"
    with pytest.raises(modelyard.InvalidInput) as refused:
        reg.report_check(f"churn/{number}", "audit", "maybe")
    assert refused.value.code == "invalid_status"
    with pytest.raises(modelyard.InvalidInput) as tagged:
        reg.update_version(f"churn/{number}", tags={"check.audit": "pass"})
    assert tagged.value.code == "reserved_tag"


def test_journal_head_checkpoint_and_state(
    reg: Registry, service: RegistryService, make_tree: Tree
) -> None:
    reg.register("churn", make_tree({"model.bin": b"w"}), metrics={"auc": 0.9})
    reg.set_alias("churn", "champion", 1)
    head = reg.journal_head()
    assert head.seq == 3  # the model, the version, the alias
    report = reg.verify_journal(checkpoint=head, state=True)
    assert (report.ok, report.head, report.differences) == (True, head, ())

    with service.db.engine.begin() as conn:
        conn.execute(text("UPDATE versions SET description = 'forged'"))
    report = reg.verify_journal(state=True)
    assert not report.ok and report.head == head
    assert [str(d) for d in report.differences] == [
        "churn/1 description: the journal says '', the tables say 'forged'"
    ]
    assert reg.verify_journal().ok  # the chain alone cannot see it


def test_collect_garbage_after_a_hard_delete(reg: Registry, make_tree: Tree) -> None:
    weights = os.urandom(300_000)  # past the inline limit: a file in the blob store
    version = reg.register("scratch", make_tree({"w.bin": weights}))
    reg.delete_version(version.reference, hard=True)
    dry = reg.collect_garbage(dry_run=True)
    assert isinstance(dry, GcReport)
    assert (dry.dry_run, dry.blobs, dry.blob_bytes) == (True, 1, len(weights))
    assert dry.removed == [
        {"kind": "blob", "name": f"sha256:{hashlib.sha256(weights).hexdigest()}", "size": 300_000}
    ]
    done = reg.collect_garbage(grace=timedelta(0))
    assert (done.dry_run, done.blobs, done.grace_seconds) == (False, 1, 0.0)
    assert reg.collect_garbage().blobs == 0
    assert [e.kind for e in reg.events(limit=1000)][-1] == "registry.gc"


def test_webhooks_through_the_sdk(reg: Registry, make_tree: Tree) -> None:
    reg.register("churn", make_tree({"model.bin": b"w"}))
    # A public address, so the default policy takes it without a lookup; nothing is sent
    # (the app delivers only under 'modelyard serve'), so no test send here.
    url = "https://93.184.215.14/hook"
    made = reg.create_webhook(url, ["version.stage", "alias.*"], model="churn")
    hook, secret = made
    assert isinstance(hook, modelyard.Subscription) and secret.startswith("whsec_")
    assert secret not in repr(made)
    assert (hook.model, hook.url, hook.events) == ("churn", url, ("version.stage", "alias.*"))
    assert reg.webhooks() == [hook] == reg.webhooks(model="churn")
    assert reg.webhook(hook.id) == hook
    updated = reg.update_webhook(hook.id, events=["*"], description="CI")
    assert (updated.events, updated.description) == (("*",), "CI")
    assert reg.disable_webhook(hook.id, "later").disabled_reason == "later"
    assert reg.enable_webhook(hook.id).enabled
    rotated = reg.rotate_webhook_secret(hook.id)
    assert rotated.secret != secret and rotated.subscription.id == hook.id
    # Queued, not sent: this registry delivers nothing (no deliverer runs here).
    assert reg.webhook_deliveries(hook.id) == []
    assert reg.redeliver_webhook(hook.id, 1) == 1  # model.created: '*' takes it
    (queued,) = reg.webhook_deliveries(hook.id)
    assert (queued.seq, queued.status, queued.redelivery, queued.attempts) == (
        1,
        "pending",
        True,
        (),
    )
    with pytest.raises(modelyard.InvalidInput, match="unknown event kind"):
        reg.update_webhook(hook.id, events=["version.promoted"])
    reg.delete_webhook(hook.id)
    with pytest.raises(modelyard.NotFound):
        reg.webhook(hook.id)
    assert reg.webhooks() == []
