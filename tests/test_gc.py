"""Garbage collection of blobs, the start-up clean-up, and a data directory private to its
OS user; on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from modelyard.config import Settings, open_service
from modelyard.domain.access import Caller, PrincipalKind, Role
from modelyard.domain.errors import Forbidden, InvalidInput
from modelyard.domain.manifest import FileEntry
from modelyard.domain.versions import NewVersion
from modelyard.service import RegistryService
from modelyard.storage.blobs import LocalBlobStore
from tests.conftest import LiveServer
from tests.test_cli import assert_user_error, invoke

ME = Caller.local_user("tester")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_blob(service: RegistryService, content: bytes, caller: Caller = ME) -> FileEntry:
    upload = service.begin_blob_upload(caller, sha(content))
    upload.write(content)
    service.finish_blob_upload(upload)
    return FileEntry("model.bin", len(content), sha(content))


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most systems start with, which alone would leave everything readable."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_the_data_directory_is_private_to_its_os_user(
    settings: Settings, usual_umask: None
) -> None:
    service = open_service(settings)
    try:
        entry = put_blob(service, b"weights" * 20_000)
        small = FileEntry("config.json", 2, sha(b"{}"))
        service.register_version(
            "m", NewVersion(files=[entry, small]), caller=ME, inline={small.sha256: b"{}"}
        )
    finally:
        service.close()
    data = settings.data_dir
    directories = [data, *(p for p in data.rglob("*") if p.is_dir())]
    files = [p for p in data.rglob("*") if p.is_file()]
    assert {p.stat().st_mode & 0o777 for p in directories} == {0o700}, directories
    assert {p.stat().st_mode & 0o777 for p in files} == {0o600}, files
    names = {p.name for p in files}
    assert entry.sha256 in names and "secret.key" in names
    if settings.database_url is None:
        assert "registry.db" in names


def test_an_existing_world_readable_data_directory_is_tightened(
    settings: Settings, usual_umask: None
) -> None:
    open_service(settings).close()
    settings.data_dir.chmod(0o755)
    if settings.database_url is None:
        (settings.data_dir / "registry.db").chmod(0o644)
    open_service(settings).close()
    assert settings.data_dir.stat().st_mode & 0o777 == 0o700
    if settings.database_url is None:
        assert (settings.data_dir / "registry.db").stat().st_mode & 0o777 == 0o600


def test_page_tokens_hold_across_a_restart_and_only_under_the_registry_key(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key lives in the data directory (or MODELYARD_SECRET_KEY): a client paging
    through a restart keeps its place, and a token of another registry is refused."""
    monkeypatch.delenv("MODELYARD_SECRET_KEY", raising=False)
    first = open_service(settings)
    try:
        for model in ("a", "b"):
            first.create_model(model, caller=ME)
        token = first.list_models(caller=ME, limit=1).next_page_token
    finally:
        first.close()
    again = open_service(settings)
    try:
        assert [m.name for m in again.list_models(caller=ME, limit=1, page_token=token).items]
    finally:
        again.close()
    monkeypatch.setenv("MODELYARD_SECRET_KEY", "another registry's key, 32 chars+")
    other = open_service(settings)
    try:
        with pytest.raises(InvalidInput, match="not a token this server issued"):
            other.list_models(caller=ME, limit=1, page_token=token)
    finally:
        other.close()


# -- garbage collection ------------------------------------------------------------------------


def register(service: RegistryService, model: str, *entries: FileEntry) -> int:
    return service.register_version(model, NewVersion(files=list(entries)), caller=ME).version


def age(service: RegistryService, digest: str, seconds: float) -> None:
    """Make a blob look uploaded ``seconds`` ago: its record and its file."""
    then = time.time() - seconds
    with service.db.engine.begin() as conn:
        conn.execute(
            text("UPDATE blobs SET created_at = :t WHERE digest = :d"),
            {"t": int(then * 1_000_000), "d": digest},
        )
    path = service.blobs.path_of(digest)  # type: ignore[attr-defined]
    if path.exists():
        os.utime(path, (then, then))


def recorded(service: RegistryService, digest: str) -> bool:
    with service.db.read() as tx:
        return digest in tx.blob_sizes([digest])


def gc_events(service: RegistryService) -> list[dict[str, object]]:
    return [e.payload for e in service.events(caller=ME, limit=1000) if e.kind == "registry.gc"]


def test_gc_removes_old_unreferenced_blobs_and_keeps_what_versions_name(
    service: RegistryService,
) -> None:
    kept = put_blob(service, b"referenced" * 1000)
    register(service, "m", kept)
    orphan = put_blob(service, b"uploaded, never registered" * 1000)
    age(service, orphan.sha256, 2 * 3600)
    age(service, kept.sha256, 2 * 3600)

    dry = service.collect_garbage(ME, dry_run=True)
    assert (dry.blobs, dry.blob_bytes) == (1, orphan.size)
    assert dry.removed == [{"kind": "blob", "name": f"sha256:{orphan.sha256}", "size": orphan.size}]
    assert recorded(service, orphan.sha256) and service.blobs.stat(orphan.sha256) is not None
    assert gc_events(service) == [], "a dry run changes nothing and journals nothing"

    report = service.collect_garbage(ME)
    assert (report.blobs, report.blob_bytes, report.uploads) == (1, orphan.size, 0)
    assert not recorded(service, orphan.sha256)
    assert service.blobs.stat(orphan.sha256) is None
    assert service.missing_blobs(ME, [orphan.sha256]) == [orphan.sha256]
    assert b"".join(service.read_blob(kept.sha256)) == b"referenced" * 1000
    (event,) = gc_events(service)
    assert event == {"after": report.counts()}
    assert event["after"]["blob_bytes"] == orphan.size  # type: ignore[index]
    assert service.collect_garbage(ME).blobs == 0
    assert len(gc_events(service)) == 1, "a run that removes nothing journals nothing"


def test_gc_spares_blobs_and_uploads_younger_than_the_grace_period(
    service: RegistryService,
) -> None:
    fresh = put_blob(service, b"uploaded a moment ago, about to be registered")
    in_flight = service.begin_blob_upload(ME, sha(b"half of an upload"))
    in_flight.write(b"half of an upload")
    assert service.collect_garbage(ME).blobs == 0
    assert recorded(service, fresh.sha256)
    assert service.blobs.uploads() != []
    in_flight.write(b"")
    service.finish_blob_upload(in_flight)  # the upload still completes, and registers
    register(service, "m", fresh, FileEntry("b", 17, sha(b"half of an upload")))
    assert service.collect_garbage(ME, grace_seconds=0).blobs == 0


def test_gc_removes_stale_upload_leftovers(service: RegistryService) -> None:
    for data in (b"a crash left me", b"and me"):
        left = service.begin_blob_upload(ME, sha(data))
        left.write(data)
    stale = service.blobs.uploads()
    assert len(stale) == 2
    staging = settings_staging(service)
    for leftover in stale:
        then = time.time() - 2 * 3600
        os.utime(staging / leftover.name, (then, then))
    fresh = service.begin_blob_upload(ME, sha(b"still uploading"))
    fresh.write(b"still uploading")
    report = service.collect_garbage(ME)
    assert report.uploads == 2
    assert report.upload_bytes == sum(u.size for u in stale)
    assert {r["name"] for r in report.removed} == {u.name for u in stale}
    assert [u.name for u in service.blobs.uploads()] != []
    service.finish_blob_upload(fresh)
    assert service.blobs.uploads() == []


def settings_staging(service: RegistryService) -> Path:
    return service.blobs.root / "staging"  # type: ignore[attr-defined, no-any-return]


def test_gc_removes_bytes_no_record_names_once_past_the_grace(service: RegistryService) -> None:
    """A crash between publishing the bytes and recording them leaves a file alone."""
    data = b"published, then the server died"
    upload = service.blobs.begin_upload(sha(data))
    upload.write(data)
    upload.commit()
    assert service.collect_garbage(ME).blobs == 0
    age(service, sha(data), 2 * 3600)
    report = service.collect_garbage(ME)
    assert report.removed == [{"kind": "blob", "name": f"sha256:{sha(data)}", "size": len(data)}]
    assert service.blobs.stat(sha(data)) is None


def test_a_hard_delete_of_the_only_holder_makes_its_blobs_collectable_at_once(
    service: RegistryService,
) -> None:
    only = put_blob(service, b"held by one version only" * 1000)
    shared = FileEntry("shared.bin", 11, sha(b"held by two"))
    put_blob(service, b"held by two")
    small = FileEntry("config.json", 8, sha(b"{'x': 1}"))
    first = service.register_version(
        "m", NewVersion(files=[only, shared, small]), caller=ME, inline={small.sha256: b"{'x': 1}"}
    )
    register(service, "other", shared)
    service.lifecycle.delete_version(ME, "m", first.version, hard=True)
    report = service.collect_garbage(ME)  # the default grace of an hour
    assert {r["name"] for r in report.removed} == {
        f"sha256:{only.sha256}",
        f"sha256:{small.sha256}",
    }
    assert report.blob_bytes == only.size + small.size
    assert service.blobs.stat(only.sha256) is None
    assert not recorded(service, only.sha256) and not recorded(service, small.sha256)
    assert b"".join(service.read_blob(shared.sha256)) == b"held by two"


def test_a_blob_uploaded_again_after_its_release_is_spared(service: RegistryService) -> None:
    entry = put_blob(service, b"released, then wanted again")
    number = register(service, "m", entry)
    service.lifecycle.delete_version(ME, "m", number, hard=True)
    put_blob(service, b"released, then wanted again")  # someone is about to register it
    assert service.collect_garbage(ME).blobs == 0
    register(service, "m", entry)


def test_gc_takes_an_admin(service: RegistryService) -> None:
    root = service.identity.bootstrap_admin("root", operator="test")
    admin = service.access.authenticate(root.token)
    service.identity.create_principal(admin, "carol", PrincipalKind.USER)
    service.identity.set_grant(admin, "carol", Role.MAINTAINER)
    carol = service.access.authenticate(
        service.identity.create_token(admin, principal="carol").token
    )
    with pytest.raises(Forbidden):
        service.collect_garbage(carol)
    with pytest.raises(InvalidInput):
        service.collect_garbage(admin, grace_seconds=-1)
    assert service.collect_garbage(admin, dry_run=True).blobs == 0


def test_gc_never_collects_an_upload_in_flight_or_awaiting_registration(
    service: RegistryService,
) -> None:
    """Uploaders upload and register while gc runs again and again: every registration
    succeeds and stays downloadable, and old garbage still goes."""
    garbage = [put_blob(service, f"old garbage {i}".encode() * 500) for i in range(20)]
    for entry in garbage:
        age(service, entry.sha256, 2 * 3600)
    done = threading.Event()
    failures: list[BaseException] = []
    registered: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def uploader(worker: int) -> None:
        try:
            for i in range(6):
                data = f"worker {worker} model {i} ".encode() * 20_000
                upload = service.begin_blob_upload(ME, sha(data))
                for start in range(0, len(data), 64 * 1024):
                    upload.write(data[start : start + 64 * 1024])
                service.finish_blob_upload(upload)
                number = register(service, "busy", FileEntry("w.bin", len(data), sha(data)))
                with lock:
                    registered.append((number, data))
        except BaseException as exc:
            failures.append(exc)

    def collector() -> None:
        while not done.is_set():
            service.collect_garbage(ME, grace_seconds=60)

    workers = [threading.Thread(target=uploader, args=(w,)) for w in range(3)]
    gc_thread = threading.Thread(target=collector)
    gc_thread.start()
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    done.set()
    gc_thread.join(timeout=120)
    assert failures == []
    assert len(registered) == 18
    for number, data in registered:
        entry = service.file_entry("busy", number, "w.bin", caller=ME)
        assert b"".join(service.read_blob(entry.sha256)) == data
    assert all(not recorded(service, g.sha256) for g in garbage)
    assert all(service.blobs.stat(g.sha256) is None for g in garbage)
    assert service.blobs.uploads() == []


# -- start-up clean-up -------------------------------------------------------------------------


def _crash_leftovers(service: RegistryService) -> tuple[str, str, str]:
    """What kills leave: a staged upload, bytes never recorded, a blob never registered."""
    staged = service.begin_blob_upload(ME, sha(b"killed mid-upload"))
    staged.write(b"killed mid-upload")
    unrecorded = service.blobs.begin_upload(sha(b"killed before the record"))
    unrecorded.write(b"killed before the record")
    unrecorded.commit()
    unregistered = put_blob(service, b"killed before the registration")
    return service.blobs.uploads()[0].name, sha(b"killed before the record"), unregistered.sha256


def test_start_up_removes_every_leftover_when_nothing_else_has_the_store(
    settings: Settings,
) -> None:
    service = open_service(settings)
    kept = put_blob(service, b"registered")
    register(service, "m", kept)
    _, unrecorded, unregistered = _crash_leftovers(service)
    report = service.clean_up_at_start()
    assert report is not None
    assert (report.uploads, report.blobs) == (1, 2)
    assert service.blobs.uploads() == []
    assert set(service.blobs.digests()) == {kept.sha256}
    assert not recorded(service, unregistered) and not recorded(service, unrecorded)
    (event,) = service.events(caller=ME, kind="registry.gc")
    assert event.actor == "modelyard:start-up"
    service.close()


def test_start_up_leaves_leftovers_to_gc_while_another_process_has_the_store(
    settings: Settings,
) -> None:
    service = open_service(settings)
    _crash_leftovers(service)
    other = LocalBlobStore(settings.data_dir / "blobs")  # an in-process SDK, say
    try:
        assert service.clean_up_at_start() is None
        assert len(service.blobs.uploads()) == 1
        assert len(list(service.blobs.digests())) == 2
    finally:
        other.close()
        service.close()


def test_a_restart_after_kills_leaves_no_crash_leftovers(live_server: LiveServer) -> None:
    """Kill -9 mid-upload, and between an upload and its registration; then restart."""
    data = os.urandom(3_000_000)
    stored = live_server.data_dir / "blobs" / "sha256" / sha(data)[:2] / sha(data)
    uploaded = httpx.put(f"{live_server.url}/api/v1/blobs/sha256:{sha(data)}", content=data)
    assert uploaded.status_code == 201, uploaded.text
    release = threading.Event()

    def stalled_body() -> Iterator[bytes]:
        yield os.urandom(4 * 1024 * 1024)
        release.wait(60)
        yield b"never arrives"

    def upload() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.put(
                f"{live_server.url}/api/v1/blobs/sha256:{'0' * 64}",
                content=stalled_body(),
                timeout=60,
            )

    sender = threading.Thread(target=upload)
    sender.start()
    staging = live_server.data_dir / "blobs" / "staging"
    deadline = time.monotonic() + 30
    while not list(staging.glob("*.part")) and time.monotonic() < deadline:
        time.sleep(0.02)  # polling for the upload to begin, not standing in for it
    live_server.kill()
    release.set()
    sender.join(timeout=60)
    assert len(list(staging.glob("*.part"))) == 1 and stored.exists()

    live_server.start()
    assert list(staging.glob("*.part")) == []
    assert not stored.exists()
    asked = {"digests": [f"sha256:{sha(data)}"]}
    missing = httpx.post(f"{live_server.url}/api/v1/blobs/missing", json=asked).json()
    assert missing == {"missing": [f"sha256:{sha(data)}"]}
    events = httpx.get(f"{live_server.url}/api/v1/events").json()["items"]
    (gc,) = [e for e in events if e["kind"] == "registry.gc"]
    assert (gc["payload"]["after"]["uploads"], gc["payload"]["after"]["blobs"]) == (1, 1)
    assert gc["payload"]["after"]["blob_bytes"] == len(data)


def test_gc_over_rest(client: TestClient, service: RegistryService) -> None:
    orphan = put_blob(service, b"nobody registers me")
    age(service, orphan.sha256, 2 * 3600)
    dry = client.post("/api/v1/gc", json={"dry_run": True})
    assert dry.status_code == 200, dry.text
    assert dry.json() == {
        "dry_run": True,
        "grace_seconds": 3600.0,
        "blobs": 1,
        "blob_bytes": orphan.size,
        "uploads": 0,
        "upload_bytes": 0,
        "removed": [{"kind": "blob", "name": f"sha256:{orphan.sha256}", "size": orphan.size}],
        "unlisted": 0,
    }
    assert recorded(service, orphan.sha256)
    done = client.post("/api/v1/gc")  # no body: the defaults
    assert (done.status_code, done.json()["blobs"]) == (200, 1)
    assert not recorded(service, orphan.sha256)
    for bad in ({"grace_seconds": -1}, {"grace_seconds": "1h"}, {"dry_run": "yes"}, {"x": 1}):
        refused = client.post("/api/v1/gc", json=bad)
        assert refused.status_code == 400, (bad, refused.text)
    events = client.get("/api/v1/events").json()["items"]
    assert [e["payload"]["after"]["blobs"] for e in events if e["kind"] == "registry.gc"] == [1]


def test_gc_from_the_command_line(live_server: LiveServer, tmp_path: Path) -> None:
    data = b"uploaded, never registered" * 1000
    url = live_server.url
    assert httpx.put(f"{url}/api/v1/blobs/sha256:{sha(data)}", content=data).status_code == 201
    dry_run = invoke("gc", "--dry-run", "--grace", "0s", "--json", url=url, cwd=tmp_path)
    dry = json.loads(dry_run.ok().stdout)
    assert (dry["dry_run"], dry["blobs"], dry["blob_bytes"]) == (True, 1, len(data))
    assert dry["removed"] == [{"kind": "blob", "name": f"sha256:{sha(data)}", "size": len(data)}]
    listed = invoke("gc", "--dry-run", "--grace", "0s", url=url, cwd=tmp_path).ok().stdout
    assert f"sha256:{sha(data)}" in listed and "would remove 1 blob(s)" in listed
    kept = invoke("gc", url=url, cwd=tmp_path).ok().stdout  # the default hour spares it
    assert "removed 0 blob(s)" in kept
    done = invoke("gc", "--grace", "0s", url=url, cwd=tmp_path).ok().stdout
    assert "removed 1 blob(s) no version references (25.4 KiB)" in done
    asked = {"digests": [f"sha256:{sha(data)}"]}
    assert httpx.post(f"{url}/api/v1/blobs/missing", json=asked).json()["missing"] != []
    assert_user_error(invoke("gc", "--grace", "soon", url=url, cwd=tmp_path), contains="--grace")
