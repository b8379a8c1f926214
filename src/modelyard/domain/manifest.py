"""The manifest: the immutable list of a version's files and the digest that names it.

The digest is sha256 over a canonical JSON encoding of the entries sorted by path, so
the same files always give the same digest, whoever computes it (client or server).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from modelyard.domain.errors import InvalidInput, InvalidPath
from modelyard.domain.names import path_key, validate_file_path

MAX_FILES_PER_VERSION = 10_000
_HEX_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    size: int
    sha256: str

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def validate_digest_hex(value: str) -> str:
    if not isinstance(value, str) or _HEX_RE.fullmatch(value) is None:
        raise InvalidInput(f"{value!r} is not a sha256 digest (64 lowercase hex digits)")
    return value


def build_manifest(entries: Iterable[FileEntry]) -> list[FileEntry]:
    """Validate entries and return them sorted by path, rejecting duplicates and bad paths."""
    result = sorted(entries, key=lambda e: e.path)
    if not result:
        raise InvalidInput("a version needs at least one file")
    if len(result) > MAX_FILES_PER_VERSION:
        raise InvalidInput(f"a version may have at most {MAX_FILES_PER_VERSION} files")
    # Paths by the name a case-insensitive file system gives them: two files that differ
    # only in case (or Unicode normalisation) would overwrite each other there.
    seen: dict[str, str] = {}
    for entry in result:
        validate_file_path(entry.path)
        validate_digest_hex(entry.sha256)
        if isinstance(entry.size, bool) or not isinstance(entry.size, int) or entry.size < 0:
            raise InvalidInput(f"file {entry.path!r} has an invalid size {entry.size!r}")
        key = path_key(entry.path)
        other = seen.get(key)
        if other == entry.path:
            raise InvalidPath(f"file path {entry.path!r} appears twice in the manifest")
        if other is not None:
            raise InvalidPath(
                f"file paths {other!r} and {entry.path!r} differ only in case; they would be"
                " one file on macOS and Windows"
            )
        seen[key] = entry.path
    # A file and a directory of the same name cannot both exist once downloaded.
    for entry in result:
        parts = entry.path.split("/")
        for depth in range(1, len(parts)):
            parent = seen.get(path_key("/".join(parts[:depth])))
            if parent is not None:
                raise InvalidPath(f"{parent!r} is both a file and a directory in the manifest")
    return result


def manifest_digest(entries: Iterable[FileEntry]) -> str:
    """'sha256:<hex>' over the canonical JSON of entries sorted by path."""
    canonical = json.dumps(
        [e.as_dict() for e in sorted(entries, key=lambda e: e.path)],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
