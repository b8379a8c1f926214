"""Pure rules: names, references, manifests, page tokens, lineage capture, the hash cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.client.capture import capture_source, strip_credentials
from modelyard.client.hashing import HashCache, hash_file
from modelyard.domain.errors import InvalidInput, InvalidName, InvalidPath, InvalidReference
from modelyard.domain.frameworks import detect_framework
from modelyard.domain.keys import ServerKey
from modelyard.domain.manifest import FileEntry, build_manifest, manifest_digest
from modelyard.domain.models import DatasetRef, parse_iso, to_us, utc_from_us
from modelyard.domain.names import validate_alias_name, validate_file_path, validate_model_name
from modelyard.domain.pagination import PageTokens
from modelyard.domain.references import RefKind, parse_reference

HEX = "a" * 64


@pytest.mark.parametrize("name", ["churn", "a", "x" * 128, "fraud-v2.1_b", "9lives"])
def test_valid_model_names(name: str) -> None:
    assert validate_model_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 129, "Churn", "a/b", "a b", ".hidden", "a\x00", "é"])
def test_invalid_model_names(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_model_name(name)


@pytest.mark.parametrize("alias", ["42", "sha256", "latest", "Champion"])
def test_aliases_that_would_be_ambiguous_are_refused(alias: str) -> None:
    with pytest.raises(InvalidName):
        validate_alias_name(alias)


@pytest.mark.parametrize(
    "path", ["../x", "/etc/passwd", "a/../b", "a//b", "./a", "a/.", "C:/x", "a\\b", "a\x00", ""]
)
def test_paths_that_could_escape_are_refused(path: str) -> None:
    with pytest.raises(InvalidPath):
        validate_file_path(path)


def test_references_parse_into_their_kind() -> None:
    assert parse_reference("churn").kind is RefKind.LATEST
    assert parse_reference("churn/42").value == 42
    assert parse_reference("churn@champion").value == "champion"
    digest = parse_reference(f"churn@sha256:{HEX}")
    assert (digest.kind, digest.value) == (RefKind.DIGEST, f"sha256:{HEX}")
    assert str(parse_reference("churn/7")) == "churn/7"
    for bad in ("churn/0", "churn/-1", "churn/٣", "churn@sha256:abc", "@x", "a@b@c"):
        with pytest.raises(InvalidReference):
            parse_reference(bad)


def test_manifest_digest_is_canonical() -> None:
    a = FileEntry("b.bin", 1, HEX)
    b = FileEntry("a.txt", 2, "b" * 64)
    assert manifest_digest([a, b]) == manifest_digest([b, a])
    assert manifest_digest([a]) != manifest_digest([FileEntry("b.bin", 2, HEX)])
    assert [e.path for e in build_manifest([a, b])] == ["a.txt", "b.bin"]
    with pytest.raises(InvalidInput):
        build_manifest([])
    with pytest.raises(InvalidInput):
        build_manifest([FileEntry("x", -1, HEX)])
    with pytest.raises(InvalidInput):
        build_manifest([FileEntry("x", 1, "NOTHEX")])


def test_framework_detection() -> None:
    assert detect_framework(["model/MLmodel", "model/model.pkl"]) == ("mlflow", "mlflow")
    assert detect_framework(["weights.PT"]) == ("pytorch", "torch")
    assert detect_framework(["README.md"]) == (None, None)


def test_dataset_reference_parsing() -> None:
    assert DatasetRef.parse("customers@2024-w36") == DatasetRef("customers", "2024-w36")
    assert DatasetRef.parse("s3://bucket/x@y") == DatasetRef("s3://bucket/x@y")


def test_times_round_trip_exactly_to_the_microsecond() -> None:
    micros = 1_732_000_000_123_457
    assert to_us(utc_from_us(micros)) == micros
    assert to_us(parse_iso("2024-11-19T07:06:40.123457Z")) == micros


def test_page_tokens_are_bound_to_their_query() -> None:
    tokens = PageTokens(ServerKey.random().derive("page-tokens"))
    token = tokens.encode(200, "q1")
    assert tokens.decode(token, "q1") == 200
    assert tokens.decode(None, "q1") == 0
    with pytest.raises(InvalidInput, match="different query"):
        tokens.decode(token, "q2")
    with pytest.raises(InvalidInput, match="not a token this server issued"):
        tokens.decode("not-a-token!", "q1")


def test_a_page_token_signed_under_another_key_is_refused() -> None:
    """Another registry's token, or one a client built itself, names no position here."""
    ours, theirs = (PageTokens(ServerKey.random().derive("page-tokens")) for _ in range(2))
    with pytest.raises(InvalidInput, match="not a token this server issued"):
        ours.decode(theirs.encode(100, "q1"), "q1")


def test_page_tokens_survive_a_restart_under_the_same_key() -> None:
    key = ServerKey.from_text("k" * 40)
    token = PageTokens(key.derive("page-tokens")).encode(300, "q")
    assert PageTokens(ServerKey.from_text("k" * 40).derive("page-tokens")).decode(token, "q") == 300


def test_each_purpose_gets_its_own_key_and_a_short_secret_is_refused() -> None:
    key = ServerKey.random()
    assert key.derive("page-tokens") != key.derive("sessions")
    assert repr(key) == "ServerKey()"  # the secret is never printed
    with pytest.raises(InvalidInput, match="at least 32 bytes"):
        ServerKey.from_text("short")


def test_git_remote_credentials_are_stripped() -> None:
    assert (
        strip_credentials("https://user:s3cret@github.com/o/r.git") == "https://github.com/o/r.git"
    )
    assert strip_credentials("git@github.com:o/r.git") == "git@github.com:o/r.git"


def test_source_is_none_outside_git(tmp_path: Path) -> None:
    assert capture_source(tmp_path) is None


def test_hash_cache_skips_unchanged_files_and_notices_changes(tmp_path: Path) -> None:
    file = tmp_path / "w.bin"
    file.write_bytes(b"one")
    cache = HashCache(tmp_path / "cache.sqlite")
    read: list[int] = []
    first = cache.sha256(file, read.append)
    assert first == hash_file(file, lambda _: None)
    file.write_bytes(b"two")  # new content, new mtime/size stamp
    assert cache.sha256(file, read.append) == hash_file(file, lambda _: None) != first
    cache.close()


def test_the_recorded_head_revision_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    from modelyard.storage.db import engine
    from modelyard.storage.db.migrations import HEAD_REVISION

    assert ScriptDirectory(str(engine._MIGRATIONS)).get_current_head() == HEAD_REVISION
