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
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

import modelyard
from modelyard.config import Settings, blob_location, open_service
from modelyard.domain.access import Caller
from modelyard.domain.errors import InvalidInput
from modelyard.domain.manifest import FileEntry
from modelyard.domain.versions import NewVersion
from modelyard.service import RegistryService
from modelyard.storage.blobs.s3 import S3BlobStore, S3Location
from tests.conftest import LiveServer, S3Server, free_port
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


@pytest.fixture(scope="module")
def s3_live(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, str]]:
    """One `modelyard serve --blob-url s3://...` for the module (SQLite metadata)."""
    url = s3_server.blob_url()
    server = LiveServer(tmp_path_factory.mktemp("s3-live") / "data", None)
    server.env = {"MODELYARD_BLOB_URL": url, "MODELYARD_S3_ENDPOINT": s3_server.endpoint}
    server.start()
    yield server, prefix_of(url)
    server.stop()


def test_register_and_download_through_a_bucket(
    s3_live: tuple[LiveServer, str], s3_server: S3Server, tmp_path: Path
) -> None:
    server, prefix = s3_live
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(BIG)
    (model / "config.json").write_bytes(b'{"layers": 3}')
    with modelyard.connect(server.url) as registry:
        version = registry.register("s3-model", model)
        got = registry.download(version, tmp_path / "out")
    assert (tmp_path / "out" / "weights.bin").read_bytes() == BIG
    assert (tmp_path / "out" / "config.json").read_bytes() == b'{"layers": 3}'
    # The big file is in the bucket under its digest; nothing is left staged; the small one
    # rode inline (the database); the data directory holds no blob.
    assert s3_server.keys(prefix) == [f"{prefix}sha256/{sha(BIG)}"]
    assert s3_server.multipart_keys(prefix) == []
    assert not (server.data_dir / "blobs").exists()
    assert got.manifest_digest == version.manifest_digest

    # A PUT of a digest the client knows, and a ranged read of the file, over REST.
    other = os.urandom(100_000)
    put = httpx.put(f"{server.url}/api/v1/blobs/sha256:{sha(other)}", content=other)
    assert put.status_code == 201
    assert f"{prefix}sha256/{sha(other)}" in s3_server.keys(prefix)
    lied = httpx.put(f"{server.url}/api/v1/blobs/sha256:{sha(b'claimed')}", content=other)
    assert lied.status_code == 400 and lied.json()["code"] == "digest_mismatch"
    assert f"{prefix}sha256/{sha(b'claimed')}" not in s3_server.keys(prefix)
    ranged = httpx.get(
        f"{server.url}/api/v1/models/s3-model/versions/{version.version}/files/weights.bin",
        headers={"Range": "bytes=8388600-8388615"},
    )
    assert ranged.status_code == 206 and ranged.content == BIG[8388600:8388616]
