"""Blobs in S3 (the session's moto server): configuration and its errors, garbage collection,
and a real server registering and serving through a bucket.

The blob store itself is proven by tests/test_blobstore.py, which runs on S3 too.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

import modelyard
from modelyard.api import create_app
from modelyard.client import direct
from modelyard.client.registry import REDIRECT
from modelyard.config import Settings, blob_location, open_service
from modelyard.domain.access import Caller, PrincipalKind, Reach, Role
from modelyard.domain.errors import DigestMismatch, InvalidInput
from modelyard.domain.manifest import FileEntry
from modelyard.domain.versions import NewVersion
from modelyard.service import RegistryService
from modelyard.storage.blobs.s3 import S3BlobStore, S3Location
from tests.conftest import LiveServer, S3Server, free_port, serving
from tests.test_cli import assert_user_error, invoke

ME = Caller.local_user("tester")
BIG = os.urandom(20 * 1024 * 1024 + 3)  # three parts of 8 MiB: a real multipart upload


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prefix_of(blob_url: str) -> str:
    return blob_url.removeprefix("s3://").partition("/")[2] + "/"


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://models", S3Location("models", "")),
        ("s3://models/", S3Location("models", "")),
        ("s3://models/team/registry/", S3Location("models", "team/registry/")),
        ("file:///srv/blobs", Path("/srv/blobs")),
    ],
)
def test_a_blob_url_names_a_bucket_and_prefix_or_a_directory(
    url: str, expected: object, tmp_path: Path
) -> None:
    assert blob_location(Settings(data_dir=tmp_path, blob_url=url)) == expected
    assert blob_location(Settings(data_dir=tmp_path)) == tmp_path / "blobs"


@pytest.mark.parametrize(
    "url",
    [
        "models",
        "./blobs",
        "ftp://models",
        "s3://",
        "s3://UPPER",
        "s3://ab",
        "s3://models/../escape",
        "s3://models/a//./b",
        "s3://user@models/x",
        "s3://models:9000/x",
        "s3://models/x?versionId=1",
        "file://host/srv",
        "file:relative",
    ],
)
def test_a_bad_blob_url_is_refused_in_one_line(url: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as refused:
        blob_location(Settings(data_dir=tmp_path / "d", blob_url=url))
    assert "\n" not in refused.value.message and "--blob-url" in refused.value.message
    with pytest.raises(InvalidInput):
        open_service(Settings(data_dir=tmp_path / "d", blob_url=url))
    assert not (tmp_path / "d").exists(), "nothing is made before the URL is accepted"


def test_with_postgresql_the_data_directory_must_be_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MODELYARD_DATA_DIR", raising=False)
    with pytest.raises(InvalidInput, match="--data-dir"):
        Settings.from_env(database_url="postgresql://db/modelyard")
    assert Settings.from_env(str(tmp_path), "postgresql://db/m").data_dir == tmp_path
    monkeypatch.setenv("MODELYARD_DATA_DIR", str(tmp_path))
    assert Settings.from_env(database_url="postgresql://db/m").data_dir == tmp_path
    monkeypatch.delenv("MODELYARD_DATA_DIR")
    assert Settings.from_env().data_dir == Path("./modelyard-data")  # SQLite: the default


def serve(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "modelyard", "serve", "--port", str(free_port())]
    command += ["--data-dir", str(tmp_path / "data"), *args]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_serve_checks_the_store_at_start_and_says_where_blobs_are(
    s3_server: S3Server, tmp_path: Path
) -> None:
    endpoint = ["--s3-endpoint", s3_server.endpoint]
    refused = {
        "s3://no-such-bucket/x": "the bucket does not exist",
        f"s3://{s3_server.bucket}/x --s3-endpoint http://127.0.0.1:{free_port()}": "unreachable",
        "s3://bad_bucket": "is not a bucket name",
    }
    for args, reason in refused.items():
        words = args.split()
        data = ["--data-dir", str(tmp_path / "data"), "--port", str(free_port())]
        given = [*words, *([] if len(words) > 1 else endpoint)]
        result = invoke("serve", *data, "--blob-url", *given, url=None, cwd=tmp_path)
        assert_user_error(result, contains=reason)
    url = s3_server.blob_url()
    process = serve(tmp_path, "--blob-url", url, *endpoint)
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 60
        line = ""
        while "serving" not in line and time.monotonic() < deadline:
            line = process.stderr.readline()
        assert f"blobs: {url} at {s3_server.endpoint}" in line
    finally:
        process.terminate()
        process.wait(30)
    assert not (tmp_path / "data" / "blobs").exists()


# -- garbage collection -----------------------------------------------------------------------


@pytest.fixture
def s3_service(s3_server: S3Server, tmp_path: Path) -> Iterator[RegistryService]:
    settings = Settings(
        data_dir=tmp_path / "data", blob_url=s3_server.blob_url(), s3_endpoint=s3_server.endpoint
    )
    service = open_service(settings)
    yield service
    service.close()


def put_blob(service: RegistryService, content: bytes) -> FileEntry:
    upload = service.begin_blob_upload(ME, sha(content))
    upload.write(content)
    service.finish_blob_upload(upload)
    return FileEntry("model.bin", len(content), sha(content))


def test_gc_collects_what_nothing_names_in_the_bucket(
    s3_service: RegistryService, s3_server: S3Server
) -> None:
    """Unregistered blobs, bytes with no record (a crash between publish and record), a
    staged object and an incomplete multipart upload: each once past the grace period."""
    store = s3_service.blobs
    assert isinstance(store, S3BlobStore)
    kept = put_blob(s3_service, b"referenced" * 10_000)
    s3_service.register_version("m", NewVersion(files=[kept]), caller=ME)
    orphan = put_blob(s3_service, b"uploaded, never registered" * 1000)
    unrecorded = store.begin_upload(None)
    unrecorded.write(b"published, then the server died")
    unrecorded.commit()
    crashed = store.begin_upload(None)  # a crash mid-upload: parts sent, never completed
    crashed.write(BIG[: 9 * 1024 * 1024])
    crashed._pipeline.close()
    for part in crashed._parts:
        part.result()
    store._forget(crashed)  # as if another process had begun it, and died
    staged_name = f"{sha(b'x')}.{'0' * 16}.part"  # completed, never copied into place
    store.client.put_object(Bucket=store.bucket, Key=store.staging_key(staged_name), Body=b"x")
    assert s3_service.clean_up_at_start() is None, "replicas share a bucket: never alone"
    assert s3_service.collect_garbage(ME).blobs == 0, "all of it is younger than the grace"

    keys = [store.key_of(d) for d in (kept.sha256, orphan.sha256, unrecorded.digest)]
    staging = store.staging_key(crashed.name)
    for key in [*keys, store.staging_key(staged_name), staging]:
        s3_server.age(key, 2 * 3600)
    with s3_service.db.engine.begin() as conn:
        conn.execute(text("UPDATE blobs SET created_at = 0"))
    report = s3_service.collect_garbage(ME)
    assert {r["name"] for r in report.removed} == {
        f"sha256:{orphan.sha256}",
        f"sha256:{unrecorded.digest}",
        staged_name,
        crashed.name,
    }
    prefix = store.location.prefix
    assert s3_server.keys(prefix) == [store.key_of(kept.sha256)]
    assert s3_server.multipart_keys(prefix) == []
    assert b"".join(s3_service.read_blob(kept.sha256)) == b"referenced" * 10_000


# -- a real server on S3 ----------------------------------------------------------------------


@dataclass
class S3Live:
    """`modelyard serve --blob-url s3://...` (SQLite metadata) with an admin, a contributor
    and a viewer on model "shared", a read-only token of the contributor, and a stranger."""

    server: LiveServer
    prefix: str
    tokens: dict[str, str]

    def connect(self, who: str = "admin") -> modelyard.Registry:
        return modelyard.connect(self.server.url, token=self.tokens[who])

    def headers(self, who: str, **more: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", **more}


@pytest.fixture(scope="module")
def s3_live(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Live]:
    url = s3_server.blob_url()
    data_dir = tmp_path_factory.mktemp("s3-live") / "data"
    prepared = open_service(
        Settings(data_dir=data_dir, blob_url=url, s3_endpoint=s3_server.endpoint)
    )
    try:
        tokens = {"admin": prepared.identity.bootstrap_admin("root", operator="test").token}
        admin = prepared.access.authenticate(tokens["admin"])
        for name, role in (("carol", Role.CONTRIBUTOR), ("victor", Role.VIEWER), ("sam", None)):
            prepared.identity.create_principal(admin, name, PrincipalKind.USER)
            if role is not None:
                prepared.identity.set_grant(admin, name, role, model="shared")
            tokens[name] = prepared.identity.create_token(admin, principal=name).token
        tokens["carol-ro"] = prepared.identity.create_token(
            admin, principal="carol", read_only=True
        ).token
    finally:
        prepared.close()
    server = LiveServer(data_dir, None)
    server.env = {"MODELYARD_BLOB_URL": url, "MODELYARD_S3_ENDPOINT": s3_server.endpoint}
    server.start()
    yield S3Live(server, prefix_of(url), tokens)
    server.stop()


@pytest.fixture
def parts_sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every part this process's SDK PUT to the store itself."""
    sent: list[int] = []
    real = direct.put_part

    def counting(url: str, data: bytes, headers: dict[str, str]) -> None:
        real(url, data, headers)
        sent.append(len(data))

    monkeypatch.setattr(direct, "put_part", counting)
    return sent


def test_register_and_download_through_a_bucket(
    s3_live: S3Live, s3_server: S3Server, tmp_path: Path, parts_sent: list[int]
) -> None:
    prefix = s3_live.prefix
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(BIG)
    (model / "config.json").write_bytes(b'{"layers": 3}')
    with s3_live.connect("carol") as registry:
        version = registry.register("shared", model)
        got = registry.download(version, tmp_path / "out")
    assert sorted(parts_sent) == [len(BIG) - 2 * 8 * 1024 * 1024, 8 << 20, 8 << 20]
    assert (tmp_path / "out" / "weights.bin").read_bytes() == BIG
    assert (tmp_path / "out" / "config.json").read_bytes() == b'{"layers": 3}'
    # The big file is in the bucket under its digest; nothing is left staged; the small one
    # rode inline (the database); the data directory holds no blob.
    assert f"{prefix}sha256/{sha(BIG)}" in s3_server.keys(prefix)
    assert s3_server.keys(f"{prefix}staging/") == []
    assert s3_server.multipart_keys(prefix) == []
    assert not (s3_live.server.data_dir / "blobs").exists()
    assert got.manifest_digest == version.manifest_digest

    # A client that accepts it is sent to the store: a URL for minutes, for that object,
    # saved as the file; the token stays behind. A browser (no header) gets the bytes.
    file_url = f"{s3_live.server.url}/api/v1/models/shared/versions/{version.version}/files"
    asked = httpx.get(f"{file_url}/weights.bin", headers=s3_live.headers("carol", **REDIRECT))
    assert asked.status_code == 307
    location = asked.headers["location"]
    assert location.startswith(f"{s3_server.endpoint}/{s3_server.bucket}/{prefix}sha256/")
    assert "X-Amz-Expires=300" in location and s3_live.tokens["carol"] not in location
    fetched = httpx.get(location)
    assert fetched.content == BIG
    assert fetched.headers["content-disposition"].startswith('attachment; filename="weights.bin"')
    browser = httpx.get(f"{file_url}/weights.bin", headers=s3_live.headers("carol"))
    assert browser.status_code == 200 and browser.content == BIG
    inline = httpx.get(f"{file_url}/config.json", headers=s3_live.headers("carol", **REDIRECT))
    assert inline.status_code == 200, "bytes kept in the database come from the server"

    # Through the server still: a PUT of a digest the client knows, checked; a range.
    other = os.urandom(100_000)
    blobs = f"{s3_live.server.url}/api/v1/blobs"
    put = httpx.put(f"{blobs}/sha256:{sha(other)}", content=other, headers=s3_live.headers("carol"))
    assert put.status_code == 201
    assert f"{prefix}sha256/{sha(other)}" in s3_server.keys(prefix)
    lied = httpx.put(
        f"{blobs}/sha256:{sha(b'claimed')}", content=other, headers=s3_live.headers("carol")
    )
    assert lied.status_code == 400 and lied.json()["code"] == "digest_mismatch"
    assert f"{prefix}sha256/{sha(b'claimed')}" not in s3_server.keys(prefix)
    ranged = httpx.get(
        f"{file_url}/weights.bin",
        headers=s3_live.headers("carol", Range="bytes=8388600-8388615"),
    )
    assert ranged.status_code == 206 and ranged.content == BIG[8388600:8388616]


def test_no_url_for_who_may_not_have_the_bytes(s3_live: S3Live, tmp_path: Path) -> None:
    """Viewers, strangers, read-only tokens and anonymous callers get no presigned URL,
    up or down; and nobody completes or resumes another caller's upload."""
    data = os.urandom(9 * 1024 * 1024)  # two parts
    (tmp_path / "w.bin").write_bytes(data)
    with s3_live.connect("carol") as registry:
        version = registry.register("shared", tmp_path / "w.bin")
    base = s3_live.server.url
    file_url = f"{base}/api/v1/models/shared/versions/{version.version}/files/w.bin"
    blob_url = f"{base}/api/v1/blobs/sha256:{sha(data)}"
    digest, sums = direct.hash_parts(tmp_path / "w.bin", len(data))
    begin = {"digest": f"sha256:{sha(b'new bytes')}", "size": 9, "parts": [sha(b"new bytes")]}
    # A read-only token may read: it is sent to the store; nobody else learns a URL.
    statuses = {"victor": 403, "sam": 404, "carol-ro": 307, None: 401}
    for who, want in statuses.items():
        headers = s3_live.headers(who, **REDIRECT) if who else dict(REDIRECT)
        for url in (file_url, blob_url):
            answer = httpx.get(url, headers=headers)
            assert answer.status_code == want, (who, url, answer.text)
            if want != 307:
                assert "location" not in answer.headers
        for path, body in (("", begin), ("/complete", {"digest": begin["digest"], "size": 9})):
            answer = httpx.post(
                f"{base}/api/v1/blobs/direct-uploads{path}", json=body, headers=headers
            )
            assert answer.status_code == (401 if who is None else 403), (who, answer.text)
            assert "amz" not in answer.text.lower()
    assert (
        httpx.get(
            f"{base}/api/v1/blobs/direct-uploads", headers=s3_live.headers("victor")
        ).status_code
        == 403
    )

    # Carol begins an upload and sends one part; root can neither complete nor resume it.
    secret = os.urandom(9 * 1024 * 1024)
    (tmp_path / "secret.bin").write_bytes(secret)
    digest, sums = direct.hash_parts(tmp_path / "secret.bin", len(secret))
    body = {"digest": f"sha256:{digest}", "size": len(secret), "parts": sums}
    plan = httpx.post(
        f"{base}/api/v1/blobs/direct-uploads", json=body, headers=s3_live.headers("carol")
    )
    assert plan.status_code == 201 and plan.headers["cache-control"] == "no-store"
    first = plan.json()["parts"][0]
    direct.put_part(first["url"], secret[: first["size"]], first["headers"])
    done = {"digest": f"sha256:{digest}", "size": len(secret)}
    theirs = httpx.post(
        f"{base}/api/v1/blobs/direct-uploads/complete", json=done, headers=s3_live.headers("admin")
    )
    assert theirs.status_code == 404 and theirs.json()["code"] == "upload_not_found"
    again = httpx.post(
        f"{base}/api/v1/blobs/direct-uploads", json=body, headers=s3_live.headers("admin")
    )
    assert len(again.json()["parts"]) == 2, "root's upload is a new one: carol's part is hers"
    early = httpx.post(
        f"{base}/api/v1/blobs/direct-uploads/complete", json=done, headers=s3_live.headers("carol")
    )
    assert early.status_code == 409 and early.json()["code"] == "upload_incomplete"


def test_a_tampered_part_is_deleted_and_the_registration_refused(
    s3_live: S3Live, s3_server: S3Server, tmp_path: Path
) -> None:
    """The store is trusted with nothing: moto checks no part's checksum, so the server's
    own hash of the whole object is what refuses bytes that are not the digest."""
    data = os.urandom(9 * 1024 * 1024)
    (tmp_path / "w.bin").write_bytes(data)
    digest, sums = direct.hash_parts(tmp_path / "w.bin", len(data))
    base = f"{s3_live.server.url}/api/v1/blobs/direct-uploads"
    body = {"digest": f"sha256:{digest}", "size": len(data), "parts": sums}
    plan = httpx.post(base, json=body, headers=s3_live.headers("carol")).json()
    for part in plan["parts"]:
        piece = bytearray(data[part["offset"] : part["offset"] + part["size"]])
        if part["number"] == 2:
            piece[100] ^= 0xFF  # one bit pattern changed in transit, or by a liar
        direct.put_part(part["url"], bytes(piece), part["headers"])
    done = {"digest": f"sha256:{digest}", "size": len(data)}
    refused = httpx.post(f"{base}/complete", json=done, headers=s3_live.headers("carol"))
    assert refused.status_code == 400 and refused.json()["code"] == "digest_mismatch"
    prefix = s3_live.prefix
    assert f"{prefix}sha256/{digest}" not in s3_server.keys(prefix)
    left = s3_server.keys(f"{prefix}staging/") + s3_server.multipart_keys(prefix)
    assert [key for key in left if digest in key] == []
    registration = {"files": [{"path": "w.bin", "size": len(data), "sha256": digest}]}
    answer = httpx.post(
        f"{s3_live.server.url}/api/v1/models/shared/versions",
        json=registration,
        headers=s3_live.headers("carol"),
    )
    assert answer.status_code == 409 and answer.json()["code"] == "missing_blobs"


RESUMED = """
import sys, threading
from contextlib import contextmanager
import modelyard

class PauseAfterParts:
    @contextmanager
    def task(self, description, total):
        parts = []
        def advance(n):
            if n:
                parts.append(n)
            if len(parts) >= 3:
                print("paused", flush=True)
                threading.Event().wait()  # until killed
        yield advance

url, token, path = sys.argv[1:]
with modelyard.connect(url, token=token, progress=PauseAfterParts()) as registry:
    registry.register("shared", path)
"""


def test_a_killed_upload_continues_from_the_parts_already_sent(
    s3_live: S3Live, s3_server: S3Server, tmp_path: Path, parts_sent: list[int]
) -> None:
    data = os.urandom(64 * 1024 * 1024)  # eight parts
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    child = subprocess.Popen(
        [sys.executable, "-c", RESUMED, s3_live.server.url, s3_live.tokens["carol"], str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "paused"
    finally:
        child.kill()  # SIGKILL: no clean-up of any kind
        child.wait()
    digest = sha(data)
    staged = [k for k in s3_server.multipart_keys(s3_live.prefix) if digest in k]
    assert len(staged) == 1
    with s3_live.connect("carol") as registry:
        version = registry.register("shared", path)
        registry.download(version, tmp_path / "out")
    assert (tmp_path / "out" / "big.bin").read_bytes() == data
    assert 0 < sum(parts_sent) <= len(data) - 3 * 8 * 1024 * 1024, "the second run sent less"
    assert [k for k in s3_server.multipart_keys(s3_live.prefix) if digest in k] == []


def test_proxy_transfers_keep_every_byte_on_the_server(
    s3_server: S3Server, tmp_path: Path, parts_sent: list[int]
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        blob_url=s3_server.blob_url(),
        s3_endpoint=s3_server.endpoint,
        proxy_transfers=True,
    )
    service = open_service(settings)
    data = os.urandom(9 * 1024 * 1024)
    (tmp_path / "w.bin").write_bytes(data)
    try:
        with serving(create_app(service, reach=Reach.LOOPBACK)) as url:
            with modelyard.connect(url) as registry:
                version = registry.register("m", tmp_path / "w.bin")
                registry.download(version, tmp_path / "out")
            answer = httpx.get(f"{url}/api/v1/models/m/versions/1/files/w.bin", headers=REDIRECT)
            assert answer.status_code == 200 and answer.content == data
            assert httpx.get(f"{url}/api/v1/blobs/direct-uploads").json()["enabled"] is False
    finally:
        service.close()
    assert parts_sent == []
    assert (tmp_path / "out" / "w.bin").read_bytes() == data
    assert service.blobs.stat(sha(data)) is not None


@pytest.mark.parametrize("store_hashes", [False, True])
def test_a_direct_upload_is_verified_by_the_server_or_by_the_stores_own_hash(
    s3_service: RegistryService, store_hashes: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways hash the bytes the store holds, not what a client claims of them; with
    the store's hash no byte comes back through the server."""
    store = s3_service.blobs
    assert isinstance(store, S3BlobStore)
    if store_hashes:

        def no_read_back(**_: object) -> None:
            raise AssertionError("the server read the object back")

        monkeypatch.setattr(store.client, "get_object", no_read_back)
    good, bad = os.urandom(6 << 20), os.urandom(6 << 20)
    for data, sent in ((good, good), (bad, bad[:-1] + b"!")):
        name = f"{sha(data)}.{store_hashes:016x}.part"
        (part,) = store.plan_direct(name, [(0, len(data))], [sha(data)])
        direct.put_part(part.url, sent, part.headers)
        if data is good:
            store.finish_direct(name, sha(data), len(data), store_hashes=store_hashes)
            assert store.stat(sha(data)).size == len(good)  # type: ignore[union-attr]
        else:
            with pytest.raises(DigestMismatch):
                store.finish_direct(name, sha(data), len(data), store_hashes=store_hashes)
            assert store.stat(sha(data)) is None
            assert store.uploads() == []
