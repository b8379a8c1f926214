"""Conformance suite for the BlobStore interface (storage/blobs/base.py).

Every backend (the local directory, memory, and S3 on the session's moto server) runs the
same tests through the ``blobs`` fixture. To add a backend, write one factory that returns a
``Backend`` and add it to ``BACKENDS``:
``store`` is the BlobStore under test and ``leftovers`` lists whatever an upload may leave
behind before it is published (staged files, incomplete multipart uploads), so the suite can
check that failed and aborted uploads clean up after themselves.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from modelyard.domain.errors import DigestMismatch, InvalidInput, NotFound
from modelyard.storage.blobs import BlobStore, LocalBlobStore, MemoryBlobStore
from modelyard.storage.blobs.s3 import S3BlobStore, S3Location
from tests.conftest import S3Server


@dataclass
class Backend:
    store: BlobStore
    leftovers: Callable[[], list[str]]


def _local(tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    root = tmp_path / "blobs"
    store = LocalBlobStore(root)
    return Backend(store, lambda: sorted(p.name for p in (root / "staging").iterdir()))


def _memory(tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    store = MemoryBlobStore()
    return Backend(store, lambda: sorted(u.name for u in store.uploads()))


def _s3(tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    server: S3Server = request.getfixturevalue("s3_server")
    prefix = f"{tmp_path.name}/"
    store = S3BlobStore(S3Location(server.bucket, prefix, server.endpoint), client=server.client())
    client = store.client

    def leftovers() -> list[str]:
        """Staged objects and incomplete multipart uploads in the bucket, and the
        uploads still only in this process's memory (smaller than a part)."""
        staging = f"{prefix}staging/"
        listed = client.list_objects_v2(Bucket=server.bucket, Prefix=staging)
        names = {o["Key"][len(staging) :] for o in listed.get("Contents", ())}
        parts = client.list_multipart_uploads(Bucket=server.bucket, Prefix=staging)
        names |= {u["Key"][len(staging) :] for u in parts.get("Uploads", ())}
        return sorted(names | set(store._in_flight))

    return Backend(store, leftovers)


BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], Backend]] = {
    "local": _local,
    "memory": _memory,
    "s3": _s3,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = BACKENDS[request.param](tmp_path, request)
    yield made
    made.store.close()


@pytest.fixture
def blobs(backend: Backend) -> BlobStore:
    return backend.store


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(store: BlobStore, data: bytes, chunk: int = 7) -> str:
    digest = sha(data)
    upload = store.begin_upload(digest)
    for i in range(0, len(data), chunk):
        upload.write(data[i : i + chunk])
    assert upload.commit() == len(data)
    return digest


def read_all(store: BlobStore, digest: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(store.read(digest, start, end))


PAYLOAD = bytes(range(256)) * 40 + b"tail"  # 10244 bytes, not a multiple of any chunk size


def test_upload_commit_then_exists_size_read(blobs: BlobStore) -> None:
    digest = sha(PAYLOAD)
    assert blobs.stat(digest) is None
    put(blobs, PAYLOAD)
    assert blobs.stat(digest) is not None
    assert blobs.stat(digest).size == len(PAYLOAD)
    assert read_all(blobs, digest) == PAYLOAD


def test_blob_is_invisible_until_commit(blobs: BlobStore) -> None:
    digest = sha(PAYLOAD)
    upload = blobs.begin_upload(digest)
    upload.write(PAYLOAD)
    assert blobs.stat(digest) is None
    upload.commit()
    assert blobs.stat(digest) is not None


def test_large_blob_round_trips_in_large_chunks(blobs: BlobStore) -> None:
    data = (b"0123456789abcdef" * 65536 * 3) + b"!"  # 3 MiB + 1 byte
    digest = put(blobs, data, chunk=1024 * 1024)
    chunks = list(blobs.read(digest))
    assert b"".join(chunks) == data
    assert len(chunks) <= 4, "reads should come in chunks of about 1 MiB, not tiny pieces"


BIG = os.urandom(12 * 1024 * 1024 + 5)  # past any size at which a backend changes strategy


def test_big_upload_in_network_sized_chunks_round_trips(backend: Backend) -> None:
    digest = put(backend.store, BIG, chunk=64 * 1024)
    assert read_all(backend.store, digest) == BIG
    assert backend.leftovers() == []


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, None),
        (1, 4096 * 3 + 1),  # neither end on a block
        (4096 * 5 + 7, 4096 * 5 + 9),  # a few bytes from the middle
        (4 * 1024 * 1024 - 1, 8 * 1024 * 1024 + 1),  # across read windows of a backend
        (len(BIG) - 5, None),  # the unaligned tail
        (len(BIG) - 5, len(BIG) + 100),
    ],
)
def test_big_blob_ranges(backend: Backend, start: int, end: int | None) -> None:
    digest = put(backend.store, BIG, chunk=1024 * 1024 + 3)
    assert read_all(backend.store, digest, start, end) == BIG[start:end]


def test_big_upload_with_wrong_digest_leaves_nothing(backend: Backend) -> None:
    upload = backend.store.begin_upload(sha(b"something else"))
    for i in range(0, len(BIG), 1024 * 1024):
        upload.write(BIG[i : i + 1024 * 1024])
    with pytest.raises(DigestMismatch):
        upload.commit()
    assert backend.store.stat(sha(BIG)) is None
    assert backend.leftovers() == []


def test_big_upload_abort_leaves_nothing(backend: Backend) -> None:
    upload = backend.store.begin_upload(sha(BIG))
    upload.write(BIG[: 8 * 1024 * 1024])
    upload.abort()
    assert backend.store.stat(sha(BIG)) is None
    assert backend.leftovers() == []


def test_empty_blob(blobs: BlobStore) -> None:
    digest = put(blobs, b"")
    assert blobs.stat(digest) is not None
    assert blobs.stat(digest).size == 0
    assert read_all(blobs, digest) == b""


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, None),
        (0, 1),
        (10, 20),
        (1000, 5000),
        (len(PAYLOAD) - 4, None),  # the last bytes, as a suffix range resolves to
        (len(PAYLOAD) - 1, len(PAYLOAD)),
        (5, len(PAYLOAD) + 100),  # an end past the blob stops at the blob's end
        (len(PAYLOAD), None),  # nothing left
        (7, 7),  # an empty range
    ],
)
def test_read_ranges(blobs: BlobStore, start: int, end: int | None) -> None:
    digest = put(blobs, PAYLOAD)
    assert read_all(blobs, digest, start, end) == PAYLOAD[start:end]


def test_range_across_chunk_boundary(blobs: BlobStore) -> None:
    data = bytes(i % 251 for i in range(2 * 1024 * 1024 + 10))
    digest = put(blobs, data, chunk=1024 * 1024)
    start, end = 1024 * 1024 - 3, 1024 * 1024 + 5
    assert read_all(blobs, digest, start, end) == data[start:end]
    assert read_all(blobs, digest, len(data) - 10) == data[-10:]


def test_named_upload_reports_its_digest(blobs: BlobStore) -> None:
    digest = sha(PAYLOAD)
    upload = blobs.begin_upload(digest)
    assert upload.digest == digest
    upload.write(PAYLOAD)
    upload.commit()
    assert upload.digest == digest


def test_unnamed_upload_is_named_by_what_it_hashes_to(backend: Backend) -> None:
    blobs = backend.store
    upload = blobs.begin_upload(None)
    for i in range(0, len(PAYLOAD), 1000):
        upload.write(PAYLOAD[i : i + 1000])
    assert blobs.stat(sha(PAYLOAD)) is None
    assert upload.commit() == len(PAYLOAD)
    assert upload.digest == sha(PAYLOAD)
    assert read_all(blobs, sha(PAYLOAD)) == PAYLOAD
    assert backend.leftovers() == []


def test_unnamed_upload_of_a_stored_blob_keeps_it(backend: Backend) -> None:
    blobs = backend.store
    digest = put(blobs, PAYLOAD)
    upload = blobs.begin_upload(None)
    upload.write(PAYLOAD)
    assert upload.commit() == len(PAYLOAD)
    assert upload.digest == digest
    assert read_all(blobs, digest) == PAYLOAD
    assert backend.leftovers() == []


def test_unnamed_upload_abort_leaves_nothing(backend: Backend) -> None:
    upload = backend.store.begin_upload(None)
    upload.write(b"partial")
    upload.abort()
    assert backend.store.stat(sha(b"partial")) is None
    assert backend.leftovers() == []


def test_digest_mismatch_raises_and_leaves_nothing(backend: Backend) -> None:
    blobs = backend.store
    claimed = sha(b"what the client said")
    upload = blobs.begin_upload(claimed)
    upload.write(b"what the client sent")
    with pytest.raises(DigestMismatch) as excinfo:
        upload.commit()
    assert excinfo.value.code == "digest_mismatch"
    assert excinfo.value.details["expected"] == f"sha256:{claimed}"
    assert excinfo.value.details["actual"] == f"sha256:{sha(b'what the client sent')}"
    assert blobs.stat(claimed) is None
    with pytest.raises(NotFound):
        read_all(blobs, claimed)
    assert backend.leftovers() == []


def test_digest_mismatch_does_not_touch_an_existing_blob(backend: Backend) -> None:
    blobs = backend.store
    digest = put(blobs, PAYLOAD)
    upload = blobs.begin_upload(digest)
    upload.write(b"forged bytes under a good digest")
    with pytest.raises(DigestMismatch):
        upload.commit()
    assert read_all(blobs, digest) == PAYLOAD
    assert backend.leftovers() == []


def test_abort_leaves_nothing(backend: Backend) -> None:
    blobs = backend.store
    digest = sha(PAYLOAD)
    upload = blobs.begin_upload(digest)
    upload.write(PAYLOAD[:100])
    upload.abort()
    assert blobs.stat(digest) is None
    assert backend.leftovers() == []
    upload.abort()  # aborting twice is harmless
    assert backend.leftovers() == []


def test_abort_without_writing_leaves_nothing(backend: Backend) -> None:
    upload = backend.store.begin_upload(sha(b"x"))
    upload.abort()
    assert backend.store.stat(sha(b"x")) is None
    assert backend.leftovers() == []


def test_commit_leaves_no_staging_behind(backend: Backend) -> None:
    put(backend.store, PAYLOAD)
    assert backend.leftovers() == []


def test_idempotent_reupload(backend: Backend) -> None:
    blobs = backend.store
    digest = put(blobs, PAYLOAD)
    assert put(blobs, PAYLOAD, chunk=1000) == digest
    assert blobs.stat(digest).size == len(PAYLOAD)
    assert read_all(blobs, digest) == PAYLOAD
    assert backend.leftovers() == []


def test_delete(blobs: BlobStore) -> None:
    keep = put(blobs, b"keep me")
    digest = put(blobs, PAYLOAD)
    blobs.delete(digest)
    assert blobs.stat(digest) is None
    with pytest.raises(NotFound):
        read_all(blobs, digest)
    blobs.delete(digest)  # deleting an absent blob is not an error
    assert read_all(blobs, keep) == b"keep me"
    assert put(blobs, PAYLOAD) == digest  # and it can be uploaded again
    assert read_all(blobs, digest) == PAYLOAD


def test_read_of_absent_blob_raises_not_found(blobs: BlobStore) -> None:
    with pytest.raises(NotFound) as excinfo:
        read_all(blobs, sha(b"never stored"))
    assert excinfo.value.code == "blob_not_found"
    assert excinfo.value.status == 404


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "sha256:" + "a" * 64,  # the store takes bare hex
        "A" * 64,  # uppercase
        "g" * 64,
        "a" * 63,
        "a" * 65,
        "../" + "a" * 61,
        "a" * 62 + "/x",
        "a" * 63 + "\x00",
    ],
)
def test_invalid_digest_is_refused(blobs: BlobStore, bad: str) -> None:
    with pytest.raises(InvalidInput):
        blobs.begin_upload(bad)
    with pytest.raises(InvalidInput):
        blobs.stat(bad)
    with pytest.raises(InvalidInput):
        blobs.url(bad)
    with pytest.raises(InvalidInput):
        read_all(blobs, bad)
    with pytest.raises(InvalidInput):
        blobs.delete(bad)


def test_interleaved_uploads_of_the_same_digest_both_succeed(backend: Backend) -> None:
    blobs = backend.store
    digest = sha(PAYLOAD)
    first, second = blobs.begin_upload(digest), blobs.begin_upload(digest)
    first.write(PAYLOAD[:5000])
    second.write(PAYLOAD[:3000])
    first.write(PAYLOAD[5000:])
    second.write(PAYLOAD[3000:])
    assert first.commit() == len(PAYLOAD)
    assert second.commit() == len(PAYLOAD)
    assert read_all(blobs, digest) == PAYLOAD
    assert backend.leftovers() == []


def test_concurrent_uploads_of_the_same_digest_both_succeed(backend: Backend) -> None:
    blobs = backend.store
    data = PAYLOAD * 50
    digest = sha(data)
    workers = 4
    barrier = threading.Barrier(workers)
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def upload() -> None:
        try:
            up = blobs.begin_upload(digest)
            barrier.wait(timeout=30)  # every upload is open before any commits
            for i in range(0, len(data), 64 * 1024):
                up.write(data[i : i + 64 * 1024])
            barrier.wait(timeout=30)  # every upload is fully written before any commits
            size = up.commit()
            with lock:
                results.append(size)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=upload) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert results == [len(data)] * workers
    assert read_all(blobs, digest) == data
    assert backend.leftovers() == []


def test_a_reader_keeps_its_bytes_while_the_blob_is_replaced(blobs: BlobStore) -> None:
    digest = put(blobs, PAYLOAD)
    reader = blobs.read(digest, 0, None)
    put(blobs, PAYLOAD)  # an idempotent re-upload publishes the same digest again
    assert b"".join(reader) == PAYLOAD


def test_stat_tells_size_and_when_the_bytes_were_published(blobs: BlobStore) -> None:
    before = time.time()
    digest = put(blobs, PAYLOAD)
    info = blobs.stat(digest)
    assert info is not None
    assert info.size == len(PAYLOAD)
    assert before - 2 <= info.modified <= time.time() + 2


def test_republishing_moves_the_publication_time(
    blobs: BlobStore, request: pytest.FixtureRequest
) -> None:
    """A collector's grace period must spare bytes that were just uploaded again."""
    digest = put(blobs, PAYLOAD)
    first = blobs.stat(digest)
    assert first is not None
    if isinstance(blobs, LocalBlobStore):
        long_ago = time.time() - 3 * 3600
        os.utime(blobs.path_of(digest), (long_ago, long_ago))
    elif isinstance(blobs, S3BlobStore):
        s3_server: S3Server = request.getfixturevalue("s3_server")
        s3_server.age(blobs.key_of(digest), 3 * 3600)
        assert blobs.stat(digest).modified < first.modified - 3000
    else:
        assert isinstance(blobs, MemoryBlobStore)
        blobs._blobs[digest] = (PAYLOAD, first.modified - 3 * 3600)
    put(blobs, PAYLOAD)
    again = blobs.stat(digest)
    assert again is not None
    assert again.modified >= first.modified - 1


def test_url_is_none_where_the_server_streams_the_bytes(blobs: BlobStore) -> None:
    digest = put(blobs, PAYLOAD)
    if not isinstance(blobs, S3BlobStore):
        assert blobs.url(digest) is None
        return
    url = blobs.url(digest, disposition='attachment; filename="m.bin"')
    assert url is not None
    answer = httpx.get(url)
    assert answer.status_code == 200
    assert answer.content == PAYLOAD
    assert answer.headers["content-disposition"] == 'attachment; filename="m.bin"'
    assert answer.headers["content-type"] == "application/octet-stream"
    forged = url.replace(digest, sha(b"another blob"))  # the signature binds the key
    assert httpx.get(forged).status_code == 403


def test_digests_lists_every_stored_blob_and_nothing_else(blobs: BlobStore) -> None:
    assert list(blobs.digests()) == []
    stored = {put(blobs, PAYLOAD), put(blobs, b""), put(blobs, b"third")}
    upload = blobs.begin_upload(sha(b"not committed"))
    upload.write(b"not committed")
    assert sorted(blobs.digests()) == sorted(stored)
    blobs.delete(sha(b"third"))
    assert sorted(blobs.digests()) == sorted(stored - {sha(b"third")})
    upload.abort()


def test_uploads_lists_what_is_in_flight_until_committed(backend: Backend) -> None:
    blobs = backend.store
    assert blobs.uploads() == []
    named, unnamed = blobs.begin_upload(sha(PAYLOAD)), blobs.begin_upload(None)
    named.write(PAYLOAD[:100])
    unnamed.write(b"abc")
    found = {u.name: u for u in blobs.uploads()}
    assert sorted(found) == backend.leftovers()
    assert len(found) == 2
    assert sorted(u.size for u in found.values()) in ([0, 0], [3, 100])  # buffered or not
    assert all(time.time() - 60 < u.modified <= time.time() + 1 for u in found.values())
    named.write(PAYLOAD[100:])
    named.commit()
    assert [u.name for u in blobs.uploads()] == backend.leftovers()
    assert len(blobs.uploads()) == 1
    unnamed.abort()
    assert blobs.uploads() == []


def test_remove_upload_discards_a_leftover(backend: Backend) -> None:
    blobs = backend.store
    upload = blobs.begin_upload(sha(PAYLOAD))
    upload.write(PAYLOAD)
    (leftover,) = blobs.uploads()
    blobs.remove_upload(leftover.name)
    assert blobs.uploads() == []
    assert backend.leftovers() == []
    blobs.remove_upload(leftover.name)  # already gone: not an error
    with pytest.raises(Exception):  # noqa: B017 - the upload's bytes are gone, it cannot commit
        upload.commit()
    assert blobs.stat(sha(PAYLOAD)) is None
    assert backend.leftovers() == []


@pytest.mark.parametrize("bad", ["", "../escape.part", "notes.txt", "a/b.part", "x" * 300])
def test_remove_upload_refuses_what_is_not_an_upload(blobs: BlobStore, bad: str) -> None:
    with pytest.raises(InvalidInput):
        blobs.remove_upload(bad)


def test_exclusive_when_nothing_else_shares_the_store(blobs: BlobStore) -> None:
    with blobs.exclusive() as alone:
        # Replicas share a bucket: an S3 store never knows it is alone.
        assert alone is not isinstance(blobs, S3BlobStore)
        digest = put(blobs, PAYLOAD)  # the store stays usable while held
    assert read_all(blobs, digest) == PAYLOAD


def test_check_passes_on_a_usable_store(backend: Backend) -> None:
    backend.store.check()
    assert backend.leftovers() == []


# -- LocalBlobStore specifics -------------------------------------------------------------------


def test_local_store_is_private_to_its_os_user(tmp_path: Path) -> None:
    """Other local users must not read artifacts past the server's access control."""
    old = os.umask(0o022)  # the usual umask, which alone would make everything readable
    try:
        store = LocalBlobStore(tmp_path / "blobs")
        digest = put(store, PAYLOAD)
        upload = store.begin_upload(sha(b"in flight"))
        upload.write(b"in flight")
        staged = tmp_path / "blobs" / "staging" / store.uploads()[0].name
        assert staged.stat().st_mode & 0o777 == 0o600
        upload.abort()
    finally:
        os.umask(old)
    for directory in (tmp_path / "blobs", store.path_of(digest).parent, staged.parent):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    assert store.path_of(digest).stat().st_mode & 0o777 == 0o600


def test_local_store_tightens_a_directory_made_world_readable(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    LocalBlobStore(root).close()
    assert root.stat().st_mode & 0o777 == 0o700


def test_local_store_is_exclusive_only_while_no_other_store_has_it_open(tmp_path: Path) -> None:
    first = LocalBlobStore(tmp_path / "blobs")
    with first.exclusive() as alone:
        assert alone
    second = LocalBlobStore(tmp_path / "blobs")  # another process sharing the directory
    with first.exclusive() as alone:
        assert not alone
    with second.exclusive() as alone:
        assert not alone
    second.close()
    with first.exclusive() as alone:
        assert alone
    # The shared lock is back after each block: a newcomer is refused the directory alone.
    third = LocalBlobStore(tmp_path / "blobs")
    with third.exclusive() as alone:
        assert not alone
    third.close()
    first.close()


def test_local_store_lists_only_its_own_files(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = LocalBlobStore(root)
    digest = put(store, PAYLOAD)
    (root / "sha256" / "zz").mkdir()
    (root / "sha256" / "zz" / "notes.txt").write_bytes(b"x")
    (root / "sha256" / digest[:2] / "notes.txt").write_bytes(b"x")
    (root / "staging" / "notes.txt").write_bytes(b"x")
    assert list(store.digests()) == [digest]
    assert store.uploads() == []


def test_local_store_layout(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    digest = put(store, PAYLOAD)
    assert store.path_of(digest) == tmp_path / "blobs" / "sha256" / digest[:2] / digest
    assert store.path_of(digest).read_bytes() == PAYLOAD
