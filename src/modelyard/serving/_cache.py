"""The server's own cache of versions: what it downloaded, verified, and served last.

Each version lives under ``versions/<manifest digest>/`` (its files in ``model/``, its
record in ``version.json``), reached only through a staging directory that was downloaded
and verified whole first, then renamed into place. ``served/`` remembers, per reference,
the version served last, so that a restart serves it again without the registry; it is
verified again (every file's sha256, the manifest's digest) before it is loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

from modelyard.client.registry import Registry, _inside
from modelyard.domain.errors import DigestMismatch
from modelyard.domain.manifest import manifest_digest
from modelyard.domain.models import Version


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/modelyard/serving (~/.cache/modelyard/serving)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "modelyard" / "serving"


class ModelCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        for part in ("versions", "staging", "served"):
            (root / part).mkdir(parents=True, exist_ok=True, mode=0o700)

    def model_dir(self, version: Version) -> Path:
        return self._version_dir(version) / "model"

    def _version_dir(self, version: Version) -> Path:
        return self.root / "versions" / version.manifest_digest.removeprefix("sha256:")

    def fetch(self, registry: Registry, version: Version) -> Path:
        """The version's verified model directory: from the cache when it is there and
        verifies, else downloaded into a staging directory (its signatures checked first
        when its stage is protected), verified whole, then renamed into place (a version
        is never half there)."""
        final = self._version_dir(version)
        if final.is_dir():
            try:
                return self.verified(version)
            except DigestMismatch:
                self.discard(version)  # damaged: fetched afresh below
        staging = self.root / "staging" / secrets.token_hex(8)
        try:
            registry.download(version, staging / "model", verify=None)
            verify(staging / "model", version)
            (staging / "version.json").write_text(json.dumps(version.as_dict()), "utf-8")
            try:
                os.rename(staging, final)
            except OSError:
                if not final.is_dir():  # not another worker's copy of the same version
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.verified(version)

    def discard(self, version: Version) -> None:
        shutil.rmtree(self._version_dir(version), ignore_errors=True)

    def verified(self, version: Version) -> Path:
        """The cached model directory of ``version`` after checking every byte of it."""
        directory = self.model_dir(version)
        verify(directory, version)
        return directory

    def record_served(self, reference: str, version: Version) -> None:
        """Remember what ``reference`` served last: written whole, then renamed over."""
        path = self._served_file(reference)
        staged = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        body = {"reference": reference, "version": version.as_dict()}
        staged.write_text(json.dumps(body), "utf-8")
        os.replace(staged, path)

    def last_served(self, reference: str) -> Version | None:
        """The version ``reference`` served last, if it is still cached, else None."""
        try:
            data = json.loads(self._served_file(reference).read_text("utf-8"))
            if data.get("reference") != reference:
                return None
            version = Version.from_dict(data["version"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return version if self.model_dir(version).is_dir() else None

    def _served_file(self, reference: str) -> Path:
        key = hashlib.sha256(reference.encode()).hexdigest()[:32]
        return self.root / "served" / f"{key}.json"


def verify(directory: Path, version: Version) -> None:
    """Every file of the manifest present with its size and sha256, nothing else, and the
    manifest itself the one the version's digest names: else ``DigestMismatch``."""
    if manifest_digest(version.files) != version.manifest_digest:
        raise DigestMismatch(f"{version.reference}: its manifest does not hash to its digest")
    expected = {entry.path for entry in version.files}
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    extra = sorted(present - expected)
    if extra:
        raise DigestMismatch(f"{version.reference}: files outside its manifest: {extra[:5]}")
    for entry in version.files:
        target = _inside(directory, entry.path)
        try:
            with target.open("rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
        except FileNotFoundError:
            raise DigestMismatch(f"{version.reference}: {entry.path} is missing") from None
        if digest != entry.sha256:
            raise DigestMismatch(
                f"{version.reference}: {entry.path} hashes to sha256:{digest},"
                f" expected sha256:{entry.sha256}"
            )


def discard_staging(root: Path) -> None:
    """Staging directories a killed process left behind."""
    for leftover in (root / "staging").iterdir():
        with contextlib.suppress(OSError):
            shutil.rmtree(leftover)
