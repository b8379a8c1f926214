"""Caches that cannot go stale, on SQLite and on PostgreSQL.

Every cache is a ``StampedCache`` under a stamp the journal moves: a model's newest event
for resolves, the identity stamp for tokens, grants and local mode. These tests count the
statements the service runs through the engine (the stamp reads use a connection of their
own, outside it) to show which answers stay warm, run a second service on the same
database as another replica, and walk every write path to show that each one journals,
changes nothing, or is declared.
"""

from __future__ import annotations

import ast
import hashlib
import io
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from modelyard.config import Settings, open_service
from modelyard.domain.access import Caller, PrincipalKind, Role
from modelyard.domain.errors import Unauthorized
from modelyard.domain.evidence import AttachmentIn
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import Version, to_us
from modelyard.domain.scanning import Allowlist
from modelyard.domain.signing import SigningKey
from modelyard.domain.versions import NewVersion
from modelyard.service import RegistryService
from modelyard.service.outbound import OutboundPolicy
from modelyard.storage.db.store import UnjournaledWrite, Writer, now_us
from tests.test_advisories import osv, osv_zip

ME = Caller.local_user("tester")
SRC = Path(__file__).parents[1] / "src" / "modelyard"


@pytest.fixture
def replica(settings: Settings) -> Iterator[RegistryService]:
    """A second service on the same database and blob store, as another server would be."""
    other = open_service(settings)
    yield other
    other.close()


class Statements:
    """Counts the statements an engine runs while counting."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *_args: Any) -> None:
        self.count += 1


@contextmanager
def counting(service: RegistryService) -> Iterator[Statements]:
    statements = Statements()
    event.listen(service.db.engine, "before_cursor_execute", statements)
    try:
        yield statements
    finally:
        event.remove(service.db.engine, "before_cursor_execute", statements)


def register(service: RegistryService, model: str, content: bytes, caller: Caller = ME) -> Version:
    digest = hashlib.sha256(content).hexdigest()
    upload = service.begin_blob_upload(caller, digest)
    upload.write(content)
    service.finish_blob_upload(upload)
    spec = NewVersion(files=[FileEntry("model.bin", len(content), digest)])
    return service.register_version(model, spec, caller=caller)


# -- resolve: per model ------------------------------------------------------------------------


def test_a_registration_of_one_model_leaves_another_models_resolves_warm(
    service: RegistryService,
) -> None:
    register(service, "a", b"a1")
    register(service, "b", b"b1")
    service.set_alias("b", "champion", 1, caller=ME)
    refs = ("b@champion", "b", "b/1")
    for ref in refs:
        service.resolve(ref, caller=ME)
    with counting(service) as cold:
        service.resolve("a", caller=ME)
    assert cold.count > 0  # the counter sees a load from the database

    register(service, "a", b"a2")
    with counting(service) as warm:
        assert [service.resolve(ref, caller=ME).version for ref in refs] == [1, 1, 1]
    assert warm.count == 0
    with counting(service) as refreshed:
        assert service.resolve("a", caller=ME).version == 2
    assert refreshed.count > 0

    service.set_alias("b", "champion", 1, caller=ME)  # no change: no event, still warm
    register(service, "b", b"b2")
    assert service.resolve("b", caller=ME).version == 2
    assert service.resolve("b@champion", caller=ME).aliases == ("champion",)


def test_a_change_on_another_replica_refreshes_that_models_answers_only(
    service: RegistryService, replica: RegistryService
) -> None:
    register(service, "a", b"a1")
    register(service, "b", b"b1")
    assert service.resolve("a", caller=ME).version == 1
    assert service.resolve("b", caller=ME).description == ""

    register(replica, "a", b"a2")
    replica.update_version("b", 1, caller=ME, description="edited on the replica")
    replica.set_alias("a", "champion", 1, caller=ME)
    assert service.resolve("a", caller=ME).version == 2
    assert service.resolve("a@champion", caller=ME).version == 1
    assert service.resolve("b", caller=ME).description == "edited on the replica"

    register(replica, "a", b"a3")
    with counting(service) as warm:
        assert service.resolve("b", caller=ME).description == "edited on the replica"
    assert warm.count == 0


def test_a_deleted_and_recreated_model_is_never_served_from_before(
    service: RegistryService, replica: RegistryService
) -> None:
    service.create_model("gone", caller=ME, description="first life")
    assert service.get_model("gone", caller=ME).description == "first life"
    register(service, "kept", b"k1")
    assert service.resolve("kept", caller=ME).version == 1
    replica.delete_model("gone", caller=ME)
    replica.create_model("gone", caller=ME, description="second life")
    register(replica, "gone", b"g1")
    assert service.resolve("gone", caller=ME).version == 1
    with counting(service) as warm:
        assert service.resolve("kept", caller=ME).version == 1
    assert warm.count == 0


# -- identities --------------------------------------------------------------------------------


def test_identity_caches_stay_warm_through_registrations_and_see_revocations_at_once(
    service: RegistryService, replica: RegistryService
) -> None:
    root = replica.identity.bootstrap_admin("root", operator="test")
    admin = service.access.authenticate(root.token)
    assert service.access.role(admin, "a") is Role.ADMIN

    register(replica, "a", b"a1", caller=replica.access.authenticate(root.token))
    with counting(service) as warm:
        assert service.access.authenticate(root.token) == admin
        assert service.access.role(admin, "a") is Role.ADMIN
        assert service.access.is_configured()
    assert warm.count == 0

    on_replica = replica.access.authenticate(root.token)
    bob = replica.identity.create_principal(on_replica, "bob", PrincipalKind.USER)
    bobs = replica.identity.create_token(on_replica, principal=bob.name)
    replica.identity.set_grant(on_replica, "bob", Role.VIEWER, model="a")
    caller = service.access.authenticate(bobs.token)
    assert service.access.role(caller, "a") is Role.VIEWER
    replica.identity.set_grant(on_replica, "bob", Role.MAINTAINER, model="a")
    assert service.access.role(caller, "a") is Role.MAINTAINER  # a grant on a model
    replica.identity.revoke_token(on_replica, bobs.info.id)
    with pytest.raises(Unauthorized, match="revoked"):
        service.access.authenticate(bobs.token)


def test_grants_read_in_an_older_transaction_are_not_cached_as_current(
    service: RegistryService, replica: RegistryService
) -> None:
    """A transaction opened before a grant was removed elsewhere reads the grant (on SQLite,
    its snapshot); that answer must not be cached under the newer stamp, or the removed
    grant would be honoured until the next identity change."""
    root = service.identity.bootstrap_admin("root", operator="test")
    admin = service.access.authenticate(root.token)
    service.identity.create_principal(admin, "bob", PrincipalKind.USER)
    bob = service.access.authenticate(service.identity.create_token(admin, principal="bob").token)
    service.identity.set_grant(admin, "bob", Role.CONTRIBUTOR, model="a")
    with service.db.read() as tx:
        tx.journal_head()  # the transaction's first read: on SQLite, its snapshot
        replica.identity.revoke_grant(replica.access.authenticate(root.token), "bob", model="a")
        service.access.role(bob, "a", tx)  # a miss (the stamp moved), loaded in the old tx
    assert service.access.role(bob, "a") is None


def test_an_expired_token_is_refused_from_the_cache_too(service: RegistryService) -> None:
    root = service.identity.bootstrap_admin("root", operator="test")
    admin = service.access.authenticate(root.token)
    expiry = datetime.now(UTC) + timedelta(minutes=1)
    short = service.identity.create_token(admin, name="short", expires_at=expiry)
    assert service.access.authenticate(short.token).token_id == short.info.id
    service.access.clock = lambda: to_us(expiry)
    with counting(service) as statements, pytest.raises(Unauthorized, match="expired"):
        service.access.authenticate(short.token)
    assert statements.count == 0  # refused by the clock, from the cached record


def test_local_mode_ends_on_every_replica_when_the_first_admin_is_created(
    service: RegistryService, replica: RegistryService
) -> None:
    assert not service.access.is_configured()
    register(replica, "a", b"a1")
    assert not service.access.is_configured()
    replica.identity.bootstrap_admin("root", operator="test")
    assert service.access.is_configured()


# -- every write transaction journals, changes nothing, or is declared ---------------------------


def test_a_write_that_appends_no_event_is_refused_and_rolled_back(
    service: RegistryService,
) -> None:
    register(service, "a", b"a1")
    events = len(service.events(caller=ME))
    with service.db.read() as reader:
        model_id = reader.model_id("a")
    assert model_id is not None
    with (
        pytest.raises(UnjournaledWrite, match="without appending an event"),
        service.db.write() as tx,
    ):
        tx.update_model(model_id, "changed behind the journal", None, now_us())
    assert service.get_model("a", caller=ME).description == ""
    assert len(service.events(caller=ME)) == events
    with service.db.write() as tx:  # reading under the write lock and changing nothing is fine
        assert tx.model_id("a") is not None


def test_only_writes_declared_by_name_may_skip_the_journal(service: RegistryService) -> None:
    with pytest.raises(ValueError, match="not declared"), service.db.write(unjournaled="sneaky"):
        pass
    content = b"declared"
    digest = hashlib.sha256(content).hexdigest()
    with service.db.write(unjournaled="blob.recorded") as tx:
        tx.record_inline_blobs({digest: content})
    with service.db.read() as tx:
        assert tx.blob_content(digest) == content
    assert service.events(caller=ME) == []


def write_paths() -> set[str]:
    """Every function of the service and the store that opens a write transaction."""
    found: set[str] = set()
    for path in (*(SRC / "service").glob("*.py"), SRC / "storage" / "db" / "store.py"):
        tree = ast.parse(path.read_text())
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
                if any(_opens_write(node) for node in ast.walk(fn)):
                    found.add(f"{cls.name}.{fn.name}")
    return found


def _opens_write(node: ast.AST) -> bool:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    receiver = ast.unparse(node.func.value)
    return node.func.attr == "write" and receiver in ("self.db", "self")


def test_every_write_path_journals_or_changes_nothing(
    service: RegistryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy scenario through every write path, no-op variants included: none trips the
    check. A new write path fails this test until a step here takes it."""
    opened: set[str] = set()
    write = service.db.write

    def recording(unjournaled: str | None = None) -> AbstractContextManager[Writer]:
        code = sys._getframe(1).f_code
        opened.add(code.co_qualname)
        return write(unjournaled)

    monkeypatch.setattr(service.db, "write", recording)
    _busy_scenario(service)
    missing = write_paths() - opened
    assert not missing, f"add a step to tests/test_caches.py::_busy_scenario for {missing}"


def _busy_scenario(service: RegistryService) -> None:
    life, identity = service.lifecycle, service.identity
    register(service, "m", b"m1")
    register(service, "m", b"m1")  # the blob again: recorded already
    register(service, "m", b"m2")
    service.create_model("empty", caller=ME)
    for _ in range(2):  # the second time, each of these changes nothing
        service.update_model("m", caller=ME, description="edited")
        service.update_version("m", 1, caller=ME, tags={"k": "v"})
        service.set_alias("m", "best", 1, caller=ME)
        identity.set_protected_aliases(ME, "m", ["gold"])
    service.delete_alias("m", "best", caller=ME)
    service.checks.report(ME, "m", 1, "audit", status="pass")
    evidence = b"plot"
    digest = hashlib.sha256(evidence).hexdigest()
    service.evidence.attach(ME, "m", 1, [AttachmentIn("roc.png", 4, digest, evidence)])
    for _ in range(2):  # the second time, the same text changes nothing
        service.evidence.set_card(ME, "m", 1, "# m\n")
    service.evidence.comment(ME, model="m", version=1, body="ok")
    life.apply_policy(ME, "m", "promotion:\n  staging:\n    approvals: {count: 1}\n")
    life.promote(ME, "m/1", "production", override="first release")
    for close in (life.cancel, life.reject, life.approve):
        opened = life.promote(ME, "m/2", "staging").request
        assert opened is not None
        close(ME, opened.id)
    life.promote(ME, "m/2", "production", override="hotfix")
    life.rollback(ME, "m", "production")
    life.archive(ME, "m/3")
    life.archive(ME, "m/3", restore=True)
    life.delete_version(ME, "m", 3, hard=False)
    register(service, "m", b"m4")
    life.delete_version(ME, "m", 4, hard=True)
    register(service, "m", b"\x80\x02cacme\nModel\n)\x81.")  # m/5: its scan fails
    service.scans.accept(ME, "m", 5, "a class of our own")
    service.scans.allow = service.scans.allow.extended(Allowlist.from_text("acme:Model"))
    assert service.scans.rescan_stale() == 3  # m/1, m/2 and m/5: m/3 is deleted
    dump = osv_zip([osv("GHSA-1", "requests", {"introduced": "0"})])
    for _ in range(2):  # the second time, the dump in force already: nothing to write
        service.advisories.load(ME, io.BytesIO(dump))
    pending = service.reserve_version("m", "runs:/r/model", caller=ME, run="r")  # a copy's
    service.copy_alive("m", pending)
    service.copy_failed("m", pending, "the source went away")
    service.reserve_version("copied", "runs:/r/model", caller=ME, run=None)  # a new model's
    service.delete_model("empty", caller=ME)

    root = identity.bootstrap_admin("root", operator="test")
    admin = service.access.authenticate(root.token)
    key = SigningKey.generate()
    service.signing.register_key(admin, key.public.pem)
    m1 = service.get_version("m", 1, caller=admin)
    service.signing.add_signature(admin, "m", 1, key.sign(m1.reference, m1.files))
    service.signing.sign_as_registry(admin, "m", 1)  # signed entering production: nothing new
    identity.create_principal(admin, "u", PrincipalKind.USER)
    identity.create_principal(admin, "t", PrincipalKind.TEAM)
    identity.create_principal(admin, "sa", PrincipalKind.SERVICE_ACCOUNT)
    token = identity.create_token(admin, principal="u").info.id
    identity.set_password(admin, "u", "a long enough password")
    cookie, _ = service.sessions.start_session("u", "a long enough password")
    for _ in range(2):  # the second sign-out finds the session ended: nothing to write
        service.sessions.end_session(cookie)
    service.sessions.end_session(service.sessions.start_session_with_token(root.token)[0])
    for _ in range(2):
        identity.set_membership(admin, "t", "u", present=True)
        identity.set_grant(admin, "u", Role.VIEWER, model="m")
        identity.revoke_token(admin, token)
        identity.disable_principal(admin, "sa", PrincipalKind.SERVICE_ACCOUNT)
    identity.set_membership(admin, "t", "u", present=False)
    identity.revoke_grant(admin, "u", model="m")
    identity.delete_team(admin, "t")
    service.outbound = OutboundPolicy(allowed_networks=(ip_network("203.0.113.0/24"),))
    hooks = service.webhooks
    hook = hooks.create(admin, url="https://203.0.113.1/hook", events=["*"], model="m")
    for _ in range(2):  # the second time, each of these changes nothing
        hooks.update(admin, hook.subscription.id, description="CI")
        hooks.disable(admin, hook.subscription.id)
        hooks.disabled_by_receiver(hook.subscription.id, "410 Gone")
        hooks.enable(admin, hook.subscription.id)
    hooks.rotate_secret(admin, hook.subscription.id)
    hooks.delete(admin, hook.subscription.id)
    with tempfile.TemporaryDirectory() as scratch:  # another registry, to import from
        source = open_service(Settings(data_dir=Path(scratch)))
        try:
            register(source, "shipped", b"s1")
            made = source.bundles.export(ME, "shipped", stage="development")
            bundle = b"".join(made.chunks)
            east = service.signing.trust_registry(admin, "east", source.signing.key.public.pem)
        finally:
            source.close()
    for _ in range(2):  # the second time, its version is here already: nothing to write
        service.bundles.import_bundle(admin, io.BytesIO(bundle))
    service.signing.distrust_registry(admin, east.key_id)
    assert service.collect_garbage(admin, dry_run=True).blobs  # m/4's, released
    assert service.collect_garbage(admin).blobs


def test_a_threads_stamp_connection_closes_when_the_thread_ends(
    service: RegistryService, settings: Settings
) -> None:
    """Stamps are read on a connection of each thread's own; the server's worker threads
    come and go, and each that ended used to leave its connection open for good (on
    PostgreSQL, until "too many clients")."""
    db = service.db

    def connections() -> int:
        if settings.database_url is None:  # the SQLite file's open descriptors here
            database = (settings.data_dir / "registry.db").resolve()
            fds = Path("/proc/self/fd")
            return sum(1 for fd in fds.iterdir() if _points_at(fd, database))
        with db.engine.connect() as conn:  # every session but this one
            return int(
                conn.exec_driver_sql(
                    "SELECT count(*) - 1 FROM pg_stat_activity WHERE datname = current_database()"
                ).scalar_one()
            )

    def in_a_thread_of_its_own() -> None:
        thread = threading.Thread(target=db.head_seq)
        thread.start()
        thread.join()

    db.head_seq()  # this thread's own, kept while it lives
    # SQLite keeps one descriptor of a closed connection while others hold locks on the
    # file (its unix VFS closes it with the last): count from after one thread ended.
    in_a_thread_of_its_own()
    before = connections()
    for _ in range(12):
        in_a_thread_of_its_own()
    assert connections() == before
    db.head_seq()  # and this thread's still answers
    assert connections() == before


def _points_at(fd: Path, target: Path) -> bool:
    try:
        return Path(os.readlink(fd)) == target
    except OSError:  # closed meanwhile
        return False
