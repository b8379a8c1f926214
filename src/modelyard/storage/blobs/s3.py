"""A blob store in an S3 bucket (or an S3-compatible store): ``<prefix>/sha256/<hex>``.

An upload streams into a multipart upload under ``<prefix>/staging/<name>`` (parts of
8 MiB or more, a few in flight on threads) while it is hashed; only once the hash matches
the digest claimed (or names an unnamed upload) is it completed and copied server-side to
its final key, so a reader never sees a partial or wrong blob there. A blob smaller than
one part never leaves memory before it is verified: one PUT straight to its final key.
Anything that fails is aborted and deleted; a crash leaves a staged object or an
incomplete multipart upload, which ``uploads()`` lists for garbage collection.

Many replicas share a bucket, so ``exclusive()`` is never true: start-up clean-up leaves
leftovers to ``modelyard gc`` and its grace period.

boto3 (botocore) is used rather than a leaner client: it presigns single and multipart
part uploads with per-part checksums, follows the standard AWS configuration chain, and
is what the test server (moto) is built against.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from modelyard.domain.errors import (
    Conflict,
    DigestMismatch,
    InvalidInput,
    ModelyardError,
    NotFound,
    Unavailable,
)
from modelyard.domain.manifest import validate_digest_hex
from modelyard.storage.blobs.base import (
    BlobInfo,
    UploadLeftover,
    validate_upload_name,
    verified_digest,
)
from modelyard.transfer import MAX_PARTS, Pipeline, part_ranges, part_size

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

CHUNK_SIZE = 4 * 1024 * 1024
PARALLEL_PARTS = 4  # parts of one upload in flight at once: memory is about (this + 2) parts
COPY_LIMIT = 5 * 1024**3  # one CopyObject copies at most 5 GiB; beyond, a multipart copy
PRESIGN_SECONDS = 300  # a download's URL: minutes, and bound to one object
PART_URL_SECONDS = 900  # an upload part's URL: a part started late in a big upload too


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where blobs live: a bucket and a key prefix ("" or ending in '/')."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None

    def __str__(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where} at {self.endpoint}" if self.endpoint else where


def make_client(endpoint: str | None) -> S3Client:
    """An S3 client from the standard AWS configuration (environment, ~/.aws, instance
    role), pointed at ``endpoint`` for an S3-compatible store."""
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        max_pool_connections=32,
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        # The server hashes every byte with SHA-256 itself; a CRC on top is CPU for nothing.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # Virtual-hosted names need DNS for each bucket, which S3-compatible stores
        # (MinIO, moto, a bare IP) seldom have.
        s3={"addressing_style": "path"} if endpoint else {},
    )
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint, config=config)


@dataclass(frozen=True, slots=True)
class DirectPart:
    """One part a client sends itself: its place in the file and where to PUT it."""

    number: int
    offset: int
    size: int
    url: str
    headers: dict[str, str]


class S3BlobStore:
    def __init__(
        self,
        location: S3Location,
        *,
        client: S3Client | None = None,
        parallel_parts: int = PARALLEL_PARTS,
    ) -> None:
        self.location = location
        self.bucket = location.bucket
        self._s3 = client or make_client(location.endpoint)
        self._objects = f"{location.prefix}sha256/"
        self._staging = f"{location.prefix}staging/"
        self._parallel = parallel_parts
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="modelyard-s3")
        self._lock = threading.Lock()
        self._in_flight: dict[str, _S3Upload] = {}

    # -- keys ------------------------------------------------------------------------------

    def key_of(self, digest: str) -> str:
        return self._objects + validate_digest_hex(digest)

    def staging_key(self, name: str) -> str:
        return self._staging + validate_upload_name(name)

    # -- reading ---------------------------------------------------------------------------

    def stat(self, digest: str) -> BlobInfo | None:
        key = self.key_of(digest)
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _missing(exc):
                return None
            raise self._unavailable(exc) from exc
        return BlobInfo(head["ContentLength"], head["LastModified"].timestamp())

    def read(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        key = self.key_of(digest)
        if end is not None and start >= end:
            if self.stat(digest) is None:
                raise _not_found(digest)
            return iter(())
        extra: dict[str, Any] = {}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            answer = self._s3.get_object(Bucket=self.bucket, Key=key, **extra)
        except Exception as exc:
            if _missing(exc):
                raise _not_found(digest) from None
            if _code(exc) == "InvalidRange":  # starts at or past the end: nothing to read
                return iter(())
            raise self._unavailable(exc) from exc
        return _chunks(answer["Body"])

    def url(self, digest: str, *, disposition: str | None = None) -> str | None:
        """A presigned GET of exactly this blob, expiring in minutes; saved as an attachment
        of a type no browser renders (``disposition``: its Content-Disposition)."""
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.key_of(digest),
            "ResponseContentType": "application/octet-stream",
            "ResponseCacheControl": "private, max-age=300",
        }
        if disposition:
            params["ResponseContentDisposition"] = disposition
        return self._s3.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=PRESIGN_SECONDS
        )

    def digests(self) -> Iterator[str]:
        for item in self._list(self._objects):
            hex_digest = item["Key"][len(self._objects) :]
            if _is_hex(hex_digest):
                yield hex_digest

    # -- writing ---------------------------------------------------------------------------

    def begin_upload(self, digest: str | None) -> _S3Upload:
        if digest is not None:
            validate_digest_hex(digest)
        upload = _S3Upload(self, digest, f"{digest or 'unnamed'}.{secrets.token_hex(8)}.part")
        with self._lock:
            self._in_flight[upload.name] = upload
        return upload

    def delete(self, digest: str) -> None:
        key = self.key_of(digest)
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if not _missing(exc):
                raise self._unavailable(exc) from exc

    def publish(self, staged_key: str, digest: str, size: int) -> None:
        """Copy a verified staged object to its final key (server-side), then drop it."""
        target = self.key_of(digest)
        source = {"Bucket": self.bucket, "Key": staged_key}
        if size <= COPY_LIMIT:
            self._s3.copy_object(Bucket=self.bucket, Key=target, CopySource=source)  # type: ignore[arg-type]
        else:
            self._s3.copy(source, self.bucket, target)  # type: ignore[arg-type]
        self._s3.delete_object(Bucket=self.bucket, Key=staged_key)

    # -- direct uploads (presigned parts, sent by the client itself) ------------------------

    def plan_direct(
        self, name: str, ranges: list[tuple[int, int]], checksums: list[str]
    ) -> list[DirectPart]:
        """The parts of a multipart upload at ``staging/<name>`` still to send, each with
        a presigned PUT that carries its SHA-256 (``checksums``, hex, one per range).

        The upload is found again by its name, so a client that died re-plans and sends
        only the parts that are not there yet.
        """
        key = self.staging_key(name)
        try:
            upload_id = self._open_multipart(key)
            sent = self._parts(key, upload_id)
        except Exception as exc:
            raise self._unavailable(exc) from exc
        todo = []
        for number, ((offset, length), checksum) in enumerate(
            zip(ranges, checksums, strict=True), 1
        ):
            if number in sent and sent[number]["Size"] == length:
                continue
            value = checksum_of(checksum)
            url = self._s3.generate_presigned_url(
                "upload_part",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    "UploadId": upload_id,
                    "PartNumber": number,
                    "ChecksumSHA256": value,
                },
                ExpiresIn=PART_URL_SECONDS,
            )
            todo.append(DirectPart(number, offset, length, url, {"x-amz-checksum-sha256": value}))
        return todo

    def finish_direct(self, name: str, digest: str, size: int, *, store_hashes: bool) -> int:
        """Complete the client's multipart upload, verify it is ``digest`` of ``size``
        bytes and publish it; a blob that fails is deleted (DigestMismatch).

        The store checked each part against the SHA-256 it was sent with (where it does:
        moto does not), but a client chooses those: the whole object's SHA-256 is what
        counts. ``store_hashes``: the store computes it while copying the object in place
        (S3 does, with ChecksumAlgorithm); else this server reads the object back.
        """
        key = self.staging_key(name)
        validate_digest_hex(digest)
        try:
            self._complete_direct(key, size)
            # One CopyObject copies at most 5 GiB: past that, the server reads the object.
            actual, stored = self._hash_of(key, store_hashes and size <= COPY_LIMIT)
        except ModelyardError:
            raise
        except Exception as exc:
            raise self._unavailable(exc) from exc
        if actual != digest or stored != size:
            self.remove_staged(key)
            raise DigestMismatch(
                f"the uploaded object ({stored} bytes) hashes to sha256:{actual}, not the"
                f" sha256:{digest} of {size} bytes announced; it was deleted",
                expected=f"sha256:{digest}",
                actual=f"sha256:{actual}",
            )
        self.publish(key, digest, size)
        return size

    def _complete_direct(self, key: str, size: int) -> None:
        uploads = [u for k, u, _ in self._multipart_uploads(key) if k == key]
        if not uploads:
            if self._head(key) is None:
                raise NotFound(
                    "no upload of these bytes is under way: begin it again", code="upload_not_found"
                )
            return  # completed before a crash: verify what is there
        upload_id = uploads[0]
        sent = self._parts(key, upload_id)
        expected = len(part_ranges(size))
        if (
            sorted(sent) != list(range(1, expected + 1))
            or sum(p["Size"] for p in sent.values()) != size
        ):
            raise Conflict(
                f"{len(sent)} of the {expected} parts are uploaded: send the rest first",
                code="upload_incomplete",
            )
        parts: list[CompletedPartTypeDef] = []
        for number in sorted(sent):
            part: CompletedPartTypeDef = {"PartNumber": number, "ETag": sent[number]["ETag"]}
            if sent[number].get("ChecksumSHA256"):
                part["ChecksumSHA256"] = sent[number]["ChecksumSHA256"]
            parts.append(part)
        self._s3.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )

    def _hash_of(self, key: str, store_hashes: bool) -> tuple[str, int]:
        """The staged object's SHA-256 (hex) and size: computed by the store, or here."""
        if store_hashes:
            copied = self._s3.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key},
                ChecksumAlgorithm="SHA256",
                MetadataDirective="REPLACE",
            )
            value = copied.get("CopyObjectResult", {}).get("ChecksumSHA256", "")
            head = self._head(key)
            if value and "-" not in value and head is not None:  # "-N": of parts, not whole
                return base64.b64decode(value).hex(), head["ContentLength"]
        answer = self._s3.get_object(Bucket=self.bucket, Key=key)
        hasher = hashlib.sha256()
        stored = 0
        for chunk in _chunks(answer["Body"]):
            hasher.update(chunk)
            stored += len(chunk)
        return hasher.hexdigest(), stored

    def _open_multipart(self, key: str) -> str:
        for found, upload_id, _ in self._multipart_uploads(key):
            if found == key:
                return upload_id
        made = self._s3.create_multipart_upload(
            Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256"
        )
        return made["UploadId"]

    def _parts(self, key: str, upload_id: str) -> dict[int, Any]:
        found: dict[int, Any] = {}
        for page in self._s3.get_paginator("list_parts").paginate(
            Bucket=self.bucket, Key=key, UploadId=upload_id
        ):
            for part in page.get("Parts", ()):
                found[part["PartNumber"]] = part
        return found

    def _head(self, key: str) -> Any:
        try:
            return self._s3.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _missing(exc):
                return None
            raise

    # -- leftovers -------------------------------------------------------------------------

    def uploads(self) -> list[UploadLeftover]:
        found: dict[str, UploadLeftover] = {}
        for item in self._list(self._staging):
            name = item["Key"][len(self._staging) :]
            if _is_upload_name(name):
                found[name] = UploadLeftover(name, item["Size"], item["LastModified"].timestamp())
        for key, upload_id, initiated in self._multipart_uploads(self._staging):
            name = key[len(self._staging) :]
            if _is_upload_name(name):
                size, modified = self._parts_summary(key, upload_id, initiated)
                found[name] = UploadLeftover(name, size, modified)
        with self._lock:
            mine = list(self._in_flight.values())
        for upload in mine:  # ours, perhaps still in memory: the freshest word on them
            found[upload.name] = UploadLeftover(upload.name, upload.size, upload.modified)
        return list(found.values())

    def remove_upload(self, name: str) -> None:
        key = self.staging_key(name)
        with self._lock:
            upload = self._in_flight.pop(name, None)
        if upload is not None:
            upload.removed = True
        self.remove_staged(key)

    def remove_staged(self, key: str) -> None:
        """Abort every multipart upload at ``key`` and delete the object there, if any."""
        for found, upload_id, _ in self._multipart_uploads(key):
            if found == key:
                with contextlib.suppress(Exception):  # finished or aborted meanwhile
                    self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        with contextlib.suppress(Exception):
            self._s3.delete_object(Bucket=self.bucket, Key=key)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[bool]:
        yield False  # replicas share the bucket: one can never tell it has it alone

    def check(self) -> None:
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise self._unavailable(exc) from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- helpers ---------------------------------------------------------------------------

    def _forget(self, upload: _S3Upload) -> None:
        with self._lock:
            if self._in_flight.get(upload.name) is upload:
                del self._in_flight[upload.name]

    def _list(self, prefix: str) -> Iterator[Any]:
        try:
            for page in self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                yield from page.get("Contents", ())
        except Exception as exc:
            raise self._unavailable(exc) from exc

    def _multipart_uploads(self, prefix: str) -> Iterator[tuple[str, str, float]]:
        try:
            for page in self._s3.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                for item in page.get("Uploads", ()):
                    yield item["Key"], item["UploadId"], item["Initiated"].timestamp()
        except Exception as exc:
            raise self._unavailable(exc) from exc

    def _parts_summary(self, key: str, upload_id: str, initiated: float) -> tuple[int, float]:
        """The bytes a multipart upload holds and its last write (the newest part)."""
        size, modified = 0, initiated
        with contextlib.suppress(Exception):  # completed or aborted meanwhile
            for page in self._s3.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            ):
                for part in page.get("Parts", ()):
                    size += part["Size"]
                    modified = max(modified, part["LastModified"].timestamp())
        return size, modified

    def _unavailable(self, exc: Exception) -> Unavailable:
        return Unavailable(f"blob store {self.location}: {_describe(exc)}", code="blob_store")

    @property
    def client(self) -> S3Client:
        return self._s3

    @property
    def pool(self) -> ThreadPoolExecutor:
        return self._pool


class _S3Upload:
    """Hashes on one thread while parts go out on others; publishes only verified bytes."""

    def __init__(self, store: S3BlobStore, digest: str | None, name: str) -> None:
        self.name = name
        self.size = 0
        self.modified = time.time()
        self.removed = False
        self._store = store
        self._s3 = store.client
        self._key = store.staging_key(name)
        self._expected = digest
        self._digest = digest or ""
        self._hash = hashlib.sha256()
        self._pipeline = Pipeline([self._hash.update, self._take])
        self._part = bytearray()
        self._parts: list[Future[CompletedPartTypeDef]] = []
        self._slots = threading.Semaphore(store._parallel)
        self._upload_id: str | None = None
        self._completed = False  # the multipart upload became a staged object
        self._done = False

    @property
    def digest(self) -> str:
        return self._digest

    def write(self, chunk: bytes) -> None:
        self._pipeline.write(chunk)
        self.size += len(chunk)
        self.modified = time.time()

    def _take(self, view: memoryview) -> None:
        """The pipeline's last step: gather bytes into parts and send each when full."""
        while view:
            room = part_size(len(self._parts) + 1) - len(self._part)
            self._part += view[:room]
            view = view[room:]
            if len(self._part) == part_size(len(self._parts) + 1):
                self._send_part()

    def _send_part(self) -> None:
        if self._upload_id is None:
            created = self._s3.create_multipart_upload(Bucket=self._store.bucket, Key=self._key)
            self._upload_id = created["UploadId"]
        for sent in self._parts:  # a part that failed stops the upload at once
            if sent.done() and sent.exception() is not None:
                raise sent.exception()  # type: ignore[misc]
        if len(self._parts) >= MAX_PARTS:
            raise InvalidInput(f"a blob may have at most {MAX_PARTS} parts")
        self._slots.acquire()  # backpressure: at most so many parts in flight
        body, self._part = self._part, bytearray()
        number = len(self._parts) + 1
        try:
            future = self._store.pool.submit(self._upload_part, number, body)
        except BaseException:
            self._slots.release()
            raise
        self._parts.append(future)

    def _upload_part(self, number: int, body: bytearray) -> CompletedPartTypeDef:
        try:
            assert self._upload_id is not None
            sent = self._s3.upload_part(
                Bucket=self._store.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,  # type: ignore[arg-type]  # botocore takes a bytearray: no copy
            )
            return {"PartNumber": number, "ETag": sent["ETag"]}
        finally:
            self._slots.release()

    def commit(self) -> int:
        try:
            self._pipeline.close()
            actual = self._hash.hexdigest()
            self._digest = verified_digest(self._expected, actual)
            self._publish()
            self._done = True
            return self.size
        except BaseException:
            self.abort()
            raise
        finally:
            self._store._forget(self)

    def _publish(self) -> None:
        if self.removed:
            raise NotFound("the upload was removed as a leftover before it was committed")
        bucket = self._store.bucket
        if self._upload_id is None:  # smaller than a part: verified in memory, one PUT
            self._s3.put_object(
                Bucket=bucket, Key=self._store.key_of(self._digest), Body=bytes(self._part)
            )
            self._part = bytearray()
            return
        if self._part:
            self._send_part()
        parts = [sent.result() for sent in self._parts]
        if self.removed:
            raise NotFound("the upload was removed as a leftover before it was committed")
        self._s3.complete_multipart_upload(
            Bucket=bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": parts},
        )
        self._upload_id = None  # completed: what is left to clean is the staged object
        self._completed = True
        self._store.publish(self._key, self._digest, self.size)

    def abort(self) -> None:
        self._pipeline.abort()
        self._store._forget(self)
        for sent in self._parts:
            sent.cancel()
        for sent in self._parts:
            with contextlib.suppress(BaseException):
                sent.result()
        self._parts = []
        self._part = bytearray()
        if self._done:
            return
        if self._upload_id is not None:
            with contextlib.suppress(Exception):
                self._s3.abort_multipart_upload(
                    Bucket=self._store.bucket, Key=self._key, UploadId=self._upload_id
                )
            self._upload_id = None
        if self._completed:
            with contextlib.suppress(Exception):
                self._s3.delete_object(Bucket=self._store.bucket, Key=self._key)


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK_SIZE)
    finally:
        body.close()


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _missing(exc: Exception) -> bool:
    return _code(exc) in ("404", "NoSuchKey", "NotFound")


def _not_found(digest: str) -> NotFound:
    return NotFound(f"blob sha256:{digest} not found", code="blob_not_found")


def _describe(exc: Exception) -> str:
    """One line on why the store cannot be used: what a person can act on."""
    code = _code(exc)
    if code in ("404", "NoSuchBucket", "NotFound"):
        return "the bucket does not exist (create it, or fix --blob-url)"
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"access denied ({code}): check the AWS credentials and the bucket's policy"
    from botocore.exceptions import BotoCoreError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found (AWS_ACCESS_KEY_ID, ~/.aws or an instance role)"
    if isinstance(exc, BotoCoreError):
        return f"unreachable ({exc.__class__.__name__}): check the endpoint and the network"
    return f"{exc.__class__.__name__}: {code or exc}"


def require_reachable(location: S3Location, timeout: float = 5.0) -> None:
    """Fail at once, in one line, when nothing listens at the endpoint: botocore would
    retry a refused connection with backoff for several seconds first."""
    if location.endpoint is None:
        return
    parts = urlsplit(location.endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout).close()
    except OSError as exc:
        raise Unavailable(
            f"blob store {location}: unreachable ({exc.strerror or exc.__class__.__name__}):"
            " check the endpoint and the network",
            code="blob_store",
        ) from None


def checksum_of(hex_digest: str) -> str:
    """The x-amz-checksum-sha256 value (base64 of the digest's bytes) of a sha256."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def _is_hex(text: str) -> bool:
    try:
        validate_digest_hex(text)
    except InvalidInput:
        return False
    return True


def _is_upload_name(name: str) -> bool:
    try:
        validate_upload_name(name)
    except InvalidInput:
        return False
    return True
