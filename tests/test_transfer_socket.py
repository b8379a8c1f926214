"""A big upload's body read from the socket itself (api/rawbody.py), against a real
`modelyard serve`: every byte verified, exactly the declared length read, a client that
goes away leaves nothing behind, and the SDK's sendfile upload and readinto download."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import socket
import time
from pathlib import Path

import modelyard
from tests.conftest import LiveServer

MIB = 1024 * 1024


def _post(
    server: LiveServer, body: bytes, path: str = "/api/v1/blobs/uploads"
) -> tuple[int, dict[str, str], dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("POST" if path.endswith("uploads") else "PUT", path, body=body)
        answer = conn.getresponse()
        headers = {k.lower(): v for k, v in answer.getheaders()}
        return answer.status, headers, json.loads(answer.read())
    finally:
        conn.close()


def _staged(server: LiveServer) -> list[str]:
    return sorted(p.name for p in (server.data_dir / "blobs" / "staging").iterdir())


def test_an_upload_read_from_the_socket_is_whole_and_verified(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    data = os.urandom(5 * MIB + 17)  # across pool buffers, not a whole number of blocks
    digest = hashlib.sha256(data).hexdigest()
    status, headers, answer = _post(sqlite_server, data)
    assert (status, answer["digest"], answer["size"]) == (201, f"sha256:{digest}", len(data))
    assert headers["connection"] == "close"  # the socket was taken over: it serves no more
    stored = sqlite_server.data_dir / "blobs" / "sha256" / digest[:2] / digest
    assert stored.read_bytes() == data

    # Named wrong: refused, and nothing of it kept.
    wrong = "0" * 64
    status, _, problem = _post(sqlite_server, data[:-1], f"/api/v1/blobs/sha256:{wrong}")
    assert (status, problem["code"]) == (400, "digest_mismatch")
    assert not (sqlite_server.data_dir / "blobs" / "sha256" / wrong[:2] / wrong).exists()
    assert _staged(sqlite_server) == []

    # The SDK over HTTP: sendfile up, readinto down, both ends hashing.
    model = tmp_path / "model.bin"
    model.write_bytes(os.urandom(3 * MIB + 5))
    with modelyard.connect(sqlite_server.url) as reg:
        version = reg.register("raw", model, source=None, environment=None)
        assert version.files[0].sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
        reg.download(version, tmp_path / "down")
    assert (tmp_path / "down" / "model.bin").read_bytes() == model.read_bytes()


def test_only_the_declared_length_is_read_and_a_client_that_leaves_leaves_nothing(
    sqlite_server: LiveServer,
) -> None:
    body = os.urandom(MIB)
    head = (
        f"POST /api/v1/blobs/uploads HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    # A second request right behind the body, on the same connection: it is never read as
    # part of the blob, and never run (the connection ends with the first answer).
    create = b'{"name": "smuggled"}'
    smuggled = (
        b"POST /api/v1/models HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(create)}\r\n\r\n".encode()
        + create
    )
    received = b""
    with socket.create_connection(("127.0.0.1", sqlite_server.port), timeout=60) as sock:
        sock.sendall(head + body + smuggled)
        with contextlib.suppress(ConnectionResetError):  # unread bytes: the close resets
            while chunk := sock.recv(65536):
                received += chunk
    assert received.count(b"HTTP/1.1 ") <= 1
    digest = hashlib.sha256(body).hexdigest()
    blob = sqlite_server.data_dir / "blobs" / "sha256" / digest[:2] / digest
    deadline = time.monotonic() + 30
    while not blob.exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the answer may be lost to the reset: wait for the blob itself
    assert blob.read_bytes() == body
    conn = http.client.HTTPConnection("127.0.0.1", sqlite_server.port, timeout=10)
    conn.request("GET", "/api/v1/models/smuggled")
    assert conn.getresponse().status == 404
    conn.close()

    # Declares 4 MiB, sends 1, goes away: the upload is aborted, its staged bytes removed.
    with socket.create_connection(("127.0.0.1", sqlite_server.port), timeout=60) as sock:
        sock.sendall(head.replace(str(len(body)).encode(), str(4 * MIB).encode()) + body)
    deadline = time.monotonic() + 30
    while _staged(sqlite_server) and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the server to notice, with a deadline
    assert _staged(sqlite_server) == []
    conn = http.client.HTTPConnection("127.0.0.1", sqlite_server.port, timeout=10)
    conn.request("GET", "/readyz")
    assert conn.getresponse().status == 200
    conn.close()
