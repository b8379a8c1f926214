"""Hashing files, with a cache so that unchanged files are never hashed twice.

The cache maps (path, size, mtime_ns, inode, ctime_ns) to the sha256 of the content:
re-registering an unchanged 1 GiB file then costs a stat, not a pass over its bytes.
It lives in the user's cache directory and can be deleted at any time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
from pathlib import Path

from modelyard.client.transport import Advance

CHUNK = 1024 * 1024


def cache_dir() -> Path:
    base = os.environ.get("MODELYARD_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "modelyard"


class HashCache:
    def __init__(self, path: Path | None = None) -> None:
        self._path = path or cache_dir() / "hashes.sqlite"
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is None:
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=OFF")  # a cache: losing it costs a re-hash
                db.execute(
                    "CREATE TABLE IF NOT EXISTS hashes"
                    " (path TEXT PRIMARY KEY, stamp TEXT, sha256 TEXT)"
                )
                self._db = db
            except (OSError, sqlite3.Error):
                return None  # no cache is slower, never wrong
        return self._db

    def sha256(self, path: Path, advance: Advance) -> str:
        """The file's sha256, from the cache when the file is unchanged since last time."""
        stamp = file_stamp(path)
        cached = self.lookup(path, stamp)
        if cached is not None:
            advance(path.stat().st_size)
            return cached
        digest = hash_file(path, advance)
        self.store(path, stamp, digest)
        return digest

    def lookup(self, path: Path, stamp: str) -> str | None:
        with self._lock:
            db = self._connect()
            if db is None:
                return None
            query = "SELECT sha256 FROM hashes WHERE path = ? AND stamp = ?"
            row = db.execute(query, (str(path.resolve()), stamp)).fetchone()
        return str(row[0]) if row else None

    def store(self, path: Path, stamp: str, digest: str) -> None:
        """Remember ``digest`` for the file as it was when ``stamp`` was taken."""
        with self._lock:
            db = self._connect()
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.execute(
                        "INSERT OR REPLACE INTO hashes (path, stamp, sha256) VALUES (?, ?, ?)",
                        (str(path.resolve()), stamp, digest),
                    )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def file_stamp(path: Path) -> str:
    """What must not change for a cached digest to stay valid. Take it before reading."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}:{stat.st_ctime_ns}"


def hash_file(path: Path, advance: Advance, stop: threading.Event | None = None) -> str:
    """The sha256 of the file's bytes, read into one reused buffer (no allocation per
    chunk); ``stop`` set ends it early (with a digest of nothing in particular)."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    with path.open("rb", buffering=0) as handle, memoryview(buffer) as whole:
        while (n := handle.readinto(buffer)) and not (stop is not None and stop.is_set()):
            with whole[:n] as view:
                digest.update(view)
            advance(n)
    return digest.hexdigest()


class BackgroundHash:
    """A file hashed on a thread of its own while the caller does something else with it
    (sends it): the two overlap on two cores instead of taking turns on one.

    ``result()`` waits for the digest and raises what hashing raised; leaving the ``with``
    block without it stops the thread.
    """

    def __init__(self, path: Path) -> None:
        self._stop = threading.Event()
        self._digest = ""
        self._failure: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(path,), name="modelyard-hash", daemon=True
        )
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            self._digest = hash_file(path, lambda _: None, self._stop)
        except BaseException as exc:  # raised to the caller by result()
            self._failure = exc

    def result(self) -> str:
        self._thread.join()
        if self._failure is not None:
            raise self._failure
        return self._digest

    def __enter__(self) -> BackgroundHash:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
