"""Garbage collection of blobs, the start-up clean-up, and a data directory private to its
OS user; on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from modelyard.config import Settings, open_service
from modelyard.domain.access import Caller
from modelyard.domain.manifest import FileEntry
from modelyard.domain.versions import NewVersion
from modelyard.service import RegistryService

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
    assert entry.sha256 in names
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
