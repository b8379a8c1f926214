"""The SDK over REST (the app in-process through httpx) and over a local directory."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import modelyard
from modelyard.api import create_app
from modelyard.client.connections import proxied
from modelyard.client.http import HttpTransport
from modelyard.client.registry import Registry
from modelyard.client.transport import Advance
from modelyard.config import Settings
from modelyard.domain.errors import DigestMismatch
from modelyard.domain.models import Environment
from modelyard.service import RegistryService
from tests.conftest import LiveServer

Tree = Callable[[dict[str, bytes]], Path]


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


@pytest.fixture
def requests_seen(client: TestClient) -> list[str]:
    seen: list[str] = []
    client.event_hooks["request"] = [lambda r: seen.append(f"{r.method} {r.url.path}")]
    return seen


@pytest.fixture
def reg(client: TestClient) -> Iterator[Registry]:
    # The real REST app, in-process: TestClient is an httpx.Client.
    transport = HttpTransport("http://testserver", client=client)
    yield Registry(transport)


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
    client: TestClient, make_tree: Tree, tmp_path: Path
) -> None:
    progress = Recorder()
    reg = Registry(HttpTransport("http://testserver", client=client), progress=progress)
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


def test_local_directory_registry_needs_no_server(tmp_path: Path, make_tree: Tree) -> None:
    with modelyard.connect(tmp_path / "registry") as reg:
        reg.register("churn", make_tree({"w.bin": os.urandom(300_000)}), metrics={"auc": 0.8})
        reg.set_alias("churn", "champion", 1)
        assert reg.resolve("churn@champion").metrics == {"auc": 0.8}
        assert [v.reference for v in reg.search("metrics.auc > 0.5")] == ["churn/1"]
        assert reg.verify_journal().ok


def test_unreachable_server_is_a_clear_error() -> None:
    reg = modelyard.connect("http://127.0.0.1:9")
    with pytest.raises(modelyard.ModelyardError) as caught:
        reg.resolve("churn")
    assert caught.value.code == "unreachable"
    assert "modelyard serve" in caught.value.message
    reg.close()


def test_errors_from_the_server_keep_their_code(reg: Registry) -> None:
    with pytest.raises(modelyard.NotFound) as caught:
        reg.resolve("ghost@champion")
    assert caught.value.code == "model_not_found"
    with pytest.raises(modelyard.InvalidFilter) as bad:
        reg.versions(filter="metrics.auc >")
    assert bad.value.details["position"] == 13


def test_identity_and_access_through_the_sdk(service: RegistryService, tmp_path: Path) -> None:
    """The SDK's access methods over REST, and the same calls in-process (local mode)."""
    made = service.identity.bootstrap_admin("alice", operator="test")
    with TestClient(create_app(service)) as client:

        def as_token(token: str) -> Registry:
            return Registry(HttpTransport("http://testserver", token=token, client=client))

        admin = as_token(made.token)
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

        ci = as_token(ci_token.token)
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

    # In-process the directory's owner is the local admin: the same calls, no token.
    with modelyard.connect(tmp_path / "local") as local:
        assert local.whoami().local
        with pytest.raises(modelyard.Conflict):  # no admin yet: local mode stays local
            local.create_user("bob")


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


# -- the SDK's own connections (http.client, keep-alive) against a real server ----------------


def test_a_registry_shared_by_threads_gives_each_its_connection(
    live_server: LiveServer, make_tree: Callable[[dict[str, bytes]], Path]
) -> None:
    with modelyard.connect(live_server.url) as reg:
        for i in range(3):
            reg.register("m", make_tree({"w.bin": f"weights {i}".encode()}))
        reg.set_alias("m", "champion", 2)
        with ThreadPoolExecutor(8) as pool:
            found = list(pool.map(lambda i: reg.resolve(f"m/{1 + i % 3}").version, range(300)))
        assert found == [1 + i % 3 for i in range(300)]
        assert reg.resolve("m@champion").version == 2
        # the pool's threads are gone, and their connections with them: the main one stays
        direct = reg._transport._direct  # type: ignore[attr-defined]
        assert len(direct._opened) == 1


def test_the_sdk_reconnects_after_the_server_restarts(
    live_server: LiveServer, make_tree: Callable[[dict[str, bytes]], Path]
) -> None:
    with modelyard.connect(live_server.url) as reg:
        reg.register("m", make_tree({"w.bin": b"weights"}))
        assert reg.resolve("m").version == 1
        live_server.stop()  # the kept-alive connection is now closed by the other end
        live_server.start(port=live_server.port)
        assert reg.resolve("m").version == 1
        assert reg.register("m", make_tree({"w.bin": b"new weights"})).version == 2


def test_requests_go_through_httpx_when_a_proxy_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    url = "http://registry.internal:8080"
    assert not proxied(url)
    direct = HttpTransport(url)
    assert direct._direct is not None
    direct.close()
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    assert proxied(url)
    assert not proxied("https://registry.internal")
    through_httpx = HttpTransport(url)
    assert through_httpx._direct is None
    through_httpx.close()
    monkeypatch.setenv("NO_PROXY", "registry.internal")
    assert not proxied(url)
