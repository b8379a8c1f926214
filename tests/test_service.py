"""The store suite: every use case of the service, on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from modelyard.domain.access import Caller
from modelyard.domain.errors import (
    Conflict,
    InvalidFilter,
    InvalidInput,
    InvalidName,
    InvalidPath,
    InvalidReference,
    MissingBlobs,
    NotFound,
    TooLarge,
)
from modelyard.domain.journal import verify_chain
from modelyard.domain.manifest import FileEntry, manifest_digest
from modelyard.domain.models import DatasetRef, Environment, SourceRef
from modelyard.domain.references import Reference, RefKind
from modelyard.domain.versions import NewVersion
from modelyard.service import RegistryService

ME = Caller.local_user("tester")


def as_user(name: str) -> Caller:
    """Journal tests tell actors apart; the local mode lets each of them do anything."""
    return Caller.local_user(name)


def put_blob(service: RegistryService, content: bytes) -> FileEntry:
    digest = hashlib.sha256(content).hexdigest()
    upload = service.begin_blob_upload(ME, digest)
    upload.write(content)
    service.finish_blob_upload(upload)
    return FileEntry("model.bin", len(content), digest)


def spec_with(
    service: RegistryService, content: bytes = b"weights", **fields: object
) -> NewVersion:
    entry = put_blob(service, content)
    return NewVersion(files=[entry], **fields)  # type: ignore[arg-type]


def all_events(service: RegistryService) -> list[object]:
    return list(service.events(after=0, limit=1000, caller=ME))


def test_register_assigns_gapless_numbers_and_keeps_all_metadata(service: RegistryService) -> None:
    spec = spec_with(
        service,
        params={"max_depth": "5"},
        metrics={"auc": 0.87, "loss": 0.1},
        tags={"team": "growth"},
        description="# Churn\nA model card.",
        dataset=DatasetRef("customers", "2024-w36", "sha256:abc"),
        source=SourceRef("https://git.example/churn.git", "a" * 40, "main", False),
        environment=Environment("3.11.7", "linux", {"numpy": "2.0.0"}),
        run="run-42",
    )
    first = service.register_version("churn", spec, caller=as_user("alice"))
    second = service.register_version("churn", spec, caller=as_user("bob"))

    assert (first.version, second.version) == (1, 2)
    assert first.manifest_digest == manifest_digest(spec.files) == second.manifest_digest
    assert first.params == {"max_depth": "5"}
    assert first.metrics == {"auc": 0.87, "loss": 0.1}
    assert first.tags == {"team": "growth"}
    assert first.dataset == DatasetRef("customers", "2024-w36", "sha256:abc")
    assert first.source == SourceRef("https://git.example/churn.git", "a" * 40, "main", False)
    assert first.environment is not None and first.environment.packages == {"numpy": "2.0.0"}
    assert (first.creator, second.creator) == ("alice", "bob")
    assert first.stage == "development"
    assert first.run == "run-42"
    assert service.get_model("churn", caller=ME).latest_version == 2
    # What registration returns is exactly what is stored and read back.
    assert service.resolve("churn/1", caller=ME) == first
    assert service.resolve("churn/2", caller=ME) == second


def test_framework_is_detected_from_file_names_unless_given(service: RegistryService) -> None:
    entry = put_blob(service, b"onnx bytes")
    onnx = FileEntry("model.onnx", entry.size, entry.sha256)
    detected = service.register_version("m", NewVersion(files=[onnx]), caller=as_user("a"))
    given = service.register_version(
        "m", NewVersion(files=[onnx], framework="pytorch", format="onnx"), caller=as_user("a")
    )
    assert (detected.framework, detected.format) == ("onnx", "onnx")
    assert (given.framework, given.format) == ("pytorch", "onnx")


def test_manifest_naming_an_absent_blob_writes_nothing(service: RegistryService) -> None:
    ghost = FileEntry("model.bin", 3, "f" * 64)
    with pytest.raises(MissingBlobs) as caught:
        service.register_version("churn", NewVersion(files=[ghost]), caller=as_user("a"))
    assert caught.value.details["missing"] == ["sha256:" + "f" * 64]
    with pytest.raises(NotFound):
        service.get_model("churn", caller=ME)
    assert all_events(service) == []


@pytest.mark.parametrize(
    "name", ["", "x" * 129, "Churn", "a/b", "a\x00b", "a\nb", "-lead", "spa ce", "ünï"]
)
def test_invalid_model_names_are_refused(service: RegistryService, name: str) -> None:
    with pytest.raises(InvalidName):
        service.register_version(name, spec_with(service), caller=as_user("a"))
    assert all_events(service) == []


@pytest.mark.parametrize(
    "paths",
    [["../escape"], ["/abs"], ["a/../b"], ["a\\b"], ["a\x00b"], ["a", "a"], ["a", "a/b"], [""]],
)
def test_paths_that_escape_or_collide_are_refused(
    service: RegistryService, paths: list[str]
) -> None:
    entry = put_blob(service, b"x")
    files = [FileEntry(p, entry.size, entry.sha256) for p in paths]
    with pytest.raises((InvalidPath, InvalidInput)):
        service.register_version("m", NewVersion(files=files), caller=as_user("a"))
    assert all_events(service) == []


def test_oversized_metadata_is_refused(service: RegistryService) -> None:
    spec = spec_with(service, tags={f"t{i}": "v" for i in range(101)})
    with pytest.raises(TooLarge):
        service.register_version("m", spec, caller=as_user("a"))
    with pytest.raises(InvalidInput):
        service.register_version(
            "m", spec_with(service, metrics={"x": float("nan")}), caller=as_user("a")
        )
    with pytest.raises(TooLarge):
        service.register_version(
            "m", spec_with(service, description="x" * 70_000), caller=as_user("a")
        )


def test_concurrent_registrations_get_unique_gapless_numbers(service: RegistryService) -> None:
    spec = spec_with(service)
    numbers: list[int] = []
    failures: list[BaseException] = []

    def register() -> None:
        try:
            for _ in range(5):
                numbers.append(service.register_version("race", spec, caller=as_user("t")).version)
        except BaseException as exc:  # collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=register) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sorted(numbers) == list(range(1, 41))
    assert verify_chain(service.events(limit=1000, caller=ME)).ok


def test_resolve_every_kind_of_reference(service: RegistryService) -> None:
    v1 = service.register_version("churn", spec_with(service, b"one"), caller=as_user("a"))
    v2 = service.register_version("churn", spec_with(service, b"two"), caller=as_user("a"))
    service.set_alias("churn", "champion", 1, caller=as_user("a"))

    assert service.resolve("churn", caller=ME).version == 2
    assert service.resolve("churn@latest", caller=ME).version == 2
    assert service.resolve("churn/1", caller=ME).version == 1
    assert service.resolve("churn@champion", caller=ME).version == 1
    assert service.resolve(f"churn@{v1.manifest_digest}", caller=ME).version == 1
    assert service.resolve(f"churn@{v2.manifest_digest}", caller=ME).version == 2
    assert service.resolve("churn/1", caller=ME).aliases == ("champion",)


@pytest.mark.parametrize(
    ("reference", "code"),
    [
        ("ghost", "model_not_found"),
        ("churn/9", "version_not_found"),
        ("churn@nobody", "alias_not_found"),
        ("churn@sha256:" + "0" * 64, "version_not_found"),
    ],
)
def test_unknown_references_say_what_is_missing(
    service: RegistryService, reference: str, code: str
) -> None:
    service.register_version("churn", spec_with(service), caller=as_user("a"))
    with pytest.raises(NotFound) as caught:
        service.resolve(reference, caller=ME)
    assert caught.value.code == code


@pytest.mark.parametrize("reference", ["", "churn/0", "churn/x", "churn@", "churn@sha256:zz", "A"])
def test_malformed_references_are_invalid(service: RegistryService, reference: str) -> None:
    with pytest.raises(InvalidReference):
        service.resolve(reference, caller=ME)


def test_aliases_move_and_delete_with_before_and_after_in_the_journal(
    service: RegistryService,
) -> None:
    for content in (b"1", b"2"):
        service.register_version("churn", spec_with(service, content), caller=as_user("a"))
    service.set_alias("churn", "champion", 1, caller=as_user("alice"))
    service.set_alias("churn", "champion", 2, caller=as_user("bob"))
    service.set_alias("churn", "champion", 2, caller=as_user("bob"))  # no change, no event
    assert service.get_model("churn", caller=ME).aliases == {"champion": 2}
    service.delete_alias("churn", "champion", caller=as_user("carol"))
    with pytest.raises(NotFound):
        service.resolve("churn@champion", caller=ME)
    alias_events = [e for e in service.events(limit=1000, caller=ME) if e.kind.startswith("alias.")]
    assert [(e.kind, e.actor, e.payload) for e in alias_events] == [
        ("alias.set", "alice", {"before": None, "after": 1}),
        ("alias.set", "bob", {"before": 1, "after": 2}),
        ("alias.deleted", "carol", {"before": 2, "after": None}),
    ]
    with pytest.raises(InvalidName):
        service.set_alias("churn", "42", 1, caller=as_user("a"))
    with pytest.raises(NotFound):
        service.set_alias("churn", "x", 99, caller=as_user("a"))


def test_description_and_tags_are_editable_and_journaled(service: RegistryService) -> None:
    service.register_version(
        "churn", spec_with(service, tags={"a": "1", "b": "2"}), caller=as_user("a")
    )
    edited = service.update_version(
        "churn",
        1,
        caller=as_user("rev"),
        description="better",
        tags={"a": "9", "b": None, "c": "3"},
    )
    assert edited.description == "better"
    assert edited.tags == {"a": "9", "c": "3"}
    event = service.events(limit=1000, caller=ME)[-1]
    assert event.kind == "version.updated"
    assert event.actor == "rev"
    assert event.payload["before"] == {"description": "", "tags": {"a": "1", "b": "2"}}
    assert event.payload["after"] == {"description": "better", "tags": {"a": "9", "c": "3"}}
    # The files never change: the manifest digest is the one registered.
    assert edited.manifest_digest == service.resolve("churn/1", caller=ME).manifest_digest


def test_model_lifecycle(service: RegistryService) -> None:
    service.create_model("empty", caller=as_user("a"), description="d", tags={"k": "v"})
    with pytest.raises(Conflict):
        service.create_model("empty", caller=as_user("a"))
    updated = service.update_model("empty", caller=as_user("a"), tags={"k": None, "n": "1"})
    assert updated.tags == {"n": "1"}
    service.register_version("full", spec_with(service), caller=as_user("a"))
    with pytest.raises(Conflict) as caught:
        service.delete_model("full", caller=as_user("a"))
    assert caught.value.code == "model_not_empty"
    service.delete_model("empty", caller=as_user("a"))
    with pytest.raises(NotFound):
        service.get_model("empty", caller=ME)


def test_search_filters_orders_and_pages(service: RegistryService) -> None:
    for i in range(12):
        spec = spec_with(
            service,
            f"v{i}".encode(),
            metrics={"auc": 0.80 + i / 100},
            tags={"team": "growth" if i % 2 else "risk"},
            params={"depth": str(i)},
        )
        service.register_version("churn" if i < 6 else "fraud", spec, caller=as_user("a"))

    page = service.list_versions(filter='metrics.auc >= 0.85 and tags.team = "growth"', caller=ME)
    assert sorted(v.reference for v in page.items) == [
        "churn/6",
        "fraud/2",
        "fraud/4",
        "fraud/6",
    ]
    ordered = service.list_versions(order_by="metrics.auc desc", limit=3, caller=ME)
    assert [v.metrics["auc"] for v in ordered.items] == [0.91, 0.90, 0.89]

    seen: list[str] = []
    token = None
    while True:
        page = service.list_versions(
            filter="params.depth >= 2", page_token=token, limit=4, caller=ME
        )
        seen += [v.reference for v in page.items]
        token = page.next_page_token
        if token is None:
            break
    assert len(seen) == len(set(seen)) == 10

    assert [v.version for v in service.list_versions("churn", caller=ME).items] == [
        6,
        5,
        4,
        3,
        2,
        1,
    ]
    with pytest.raises(InvalidFilter) as caught:
        service.list_versions(filter="metrics.auc >= ", caller=ME)
    assert caught.value.details["position"] == 15
    with pytest.raises(InvalidInput):
        service.list_versions(filter="metrics.auc > 0.1", page_token=token or "bogus", caller=ME)

    models = service.list_models(filter='name like "fr%"', caller=ME)
    assert [m.name for m in models.items] == ["fraud"]


def test_versions_load_in_the_order_given_from_one_list_of_ids(service: RegistryService) -> None:
    """The ids travel as one parameter (a JSON array, an array): any length, any order."""
    for i in range(3):
        spec = spec_with(service, f"w{i}".encode(), metrics={"auc": i / 10}, tags={"n": str(i)})
        service.register_version("churn", spec, caller=ME)
    service.set_alias("churn", "champion", 2, caller=ME)
    with service.db.read() as tx:
        one, two, three = (tx.resolve_id(Reference("churn", RefKind.NUMBER, n)) for n in (1, 2, 3))
        assert one is not None and two is not None and three is not None
        # Longer than any batch or bound-parameter limit would allow, unknown ids skipped.
        ids = [three, *range(10**6, 10**6 + 40_000), one, two]
        loaded = tx.load_versions(ids)
    assert [(v.version, v.metrics, v.tags, v.aliases) for v in loaded] == [
        (3, {"auc": 0.2}, {"n": "2"}, ()),
        (1, {"auc": 0.0}, {"n": "0"}, ()),
        (2, {"auc": 0.1}, {"n": "1"}, ("champion",)),
    ]


def test_every_mutation_is_journaled_and_the_chain_verifies(service: RegistryService) -> None:
    service.register_version("churn", spec_with(service), caller=as_user("alice"))
    service.set_alias("churn", "champion", 1, caller=as_user("alice"))
    service.update_version("churn", 1, caller=as_user("alice"), description="card")
    events = service.events(limit=1000, caller=ME)
    assert [e.kind for e in events] == [
        "model.created",
        "version.registered",
        "alias.set",
        "version.updated",
    ]
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert verify_chain(events).ok
    assert service.events(after=2, limit=1000, caller=ME)[0].seq == 3


def test_tampering_with_the_journal_is_detected(service: RegistryService) -> None:
    service.register_version("churn", spec_with(service), caller=as_user("alice"))
    service.set_alias("churn", "champion", 1, caller=as_user("alice"))
    with service.db.engine.begin() as conn:
        conn.execute(text("UPDATE events SET actor = 'mallory' WHERE seq = 2"))
    report = verify_chain(service.events(limit=1000, caller=ME))
    assert not report.ok
    assert report.first_broken_seq == 2

    with service.db.engine.begin() as conn:
        conn.execute(text("UPDATE events SET actor = 'alice' WHERE seq = 2"))
        conn.execute(text("DELETE FROM events WHERE seq = 1"))
    report = verify_chain(service.events(limit=1000, caller=ME))
    assert (report.ok, report.first_broken_seq) == (False, 1)


def test_blob_upload_verifies_the_digest(
    service: RegistryService, make_tree: Callable[[dict[str, bytes]], Path]
) -> None:
    digest = hashlib.sha256(b"right").hexdigest()
    upload = service.begin_blob_upload(ME, digest)
    upload.write(b"wrong")
    with pytest.raises(InvalidInput) as caught:
        service.finish_blob_upload(upload)
    assert caught.value.code == "digest_mismatch"
    assert service.missing_blobs(ME, [digest]) == [digest]


def test_resolve_never_serves_a_stale_answer(service: RegistryService) -> None:
    for content in (b"1", b"2"):
        service.register_version("churn", spec_with(service, content), caller=as_user("a"))
    service.set_alias("churn", "champion", 1, caller=as_user("a"))
    assert service.resolve("churn@champion", caller=ME).version == 1
    assert service.resolve("churn", caller=ME).version == 2
    service.set_alias("churn", "champion", 2, caller=as_user("a"))
    service.register_version("churn", spec_with(service, b"3"), caller=as_user("a"))
    assert service.resolve("churn@champion", caller=ME).version == 2
    assert service.resolve("churn", caller=ME).version == 3
    service.update_version("churn", 3, caller=as_user("a"), tags={"fresh": "yes"})
    assert service.resolve("churn/3", caller=ME).tags == {"fresh": "yes"}


def test_small_files_can_come_inline_with_the_registration(service: RegistryService) -> None:
    content = b"tiny weights"
    entry = FileEntry("w.bin", len(content), hashlib.sha256(content).hexdigest())
    version = service.register_version(
        "inline", NewVersion(files=[entry]), caller=as_user("a"), inline={entry.sha256: content}
    )
    assert version.files == (entry,)
    assert b"".join(service.read_blob(entry.sha256)) == content
    assert b"".join(service.read_blob(entry.sha256, 5, 8)) == content[5:8]
    assert service.blob_size(ME, entry.sha256) == len(content)
    assert service.missing_blobs(ME, [entry.sha256]) == []
    # kept in the database, durable with the version's commit: no file in the blob store
    assert service.blobs.stat(entry.sha256) is None


def test_a_blob_kept_in_the_database_can_still_be_uploaded(service: RegistryService) -> None:
    content = b"small, then uploaded too"
    entry = FileEntry("w.bin", len(content), hashlib.sha256(content).hexdigest())
    inline = {entry.sha256: content}
    service.register_version("m", NewVersion(files=[entry]), caller=ME, inline=inline)
    assert put_blob(service, content) == FileEntry("model.bin", len(content), entry.sha256)
    assert b"".join(service.read_blob(entry.sha256)) == content
    service.register_version("m", NewVersion(files=[entry]), caller=ME, inline=inline)
    assert service.resolve("m", caller=ME).version == 2


def test_inline_contents_that_lie_write_nothing(service: RegistryService) -> None:
    entry = FileEntry("w.bin", 5, hashlib.sha256(b"truth").hexdigest())
    with pytest.raises(InvalidInput) as caught:
        service.register_version(
            "inline",
            NewVersion(files=[entry]),
            caller=as_user("a"),
            inline={entry.sha256: b"lies!"},
        )
    assert caught.value.code == "digest_mismatch"
    other = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(InvalidInput):
        service.register_version(
            "inline", NewVersion(files=[entry]), caller=as_user("a"), inline={other: b"other"}
        )
    assert service.missing_blobs(ME, [entry.sha256, other]) == [entry.sha256, other]
    assert all_events(service) == []


def test_a_manifest_size_that_disagrees_with_the_blob_is_refused(
    service: RegistryService,
) -> None:
    entry = put_blob(service, b"twelve bytes")
    wrong = FileEntry(entry.path, entry.size + 1, entry.sha256)
    with pytest.raises(InvalidInput) as caught:
        service.register_version("m", NewVersion(files=[wrong]), caller=as_user("a"))
    assert caught.value.code == "size_mismatch"
    assert all_events(service) == []


@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_ordering_by_a_metric_pages_through_all_versions_missing_ones_last(
    service: RegistryService, direction: str
) -> None:
    aucs = [0.7, None, 0.9, 0.8, None, 0.9, 0.6, None]
    for i, auc in enumerate(aucs):
        metrics = {} if auc is None else {"auc": auc}
        service.register_version(
            "m", spec_with(service, f"{i}".encode(), metrics=metrics), caller=as_user("a")
        )
    seen: list[int] = []
    token = None
    while True:
        page = service.list_versions(
            "m", order_by=f"metrics.auc {direction}, version", page_token=token, limit=3, caller=ME
        )
        filtered = service.list_versions(
            "m",
            filter="metrics.auc > 0.65 or version >= 7",
            order_by=f"metrics.auc {direction}",
            caller=ME,
        )
        assert {v.version for v in filtered.items} == {1, 3, 4, 6, 7, 8}
        seen += [v.version for v in page.items]
        if (token := page.next_page_token) is None:
            break
    with_metric = sorted(
        (n for n in range(1, 9) if aucs[n - 1] is not None),
        key=lambda n: ((-1 if direction == "desc" else 1) * (aucs[n - 1] or 0), n),
    )
    without = [n for n in range(1, 9) if aucs[n - 1] is None]
    assert seen == with_metric + without


def test_inline_contents_are_checked_even_when_the_blob_is_stored(
    service: RegistryService,
) -> None:
    entry = put_blob(service, b"truth")
    with pytest.raises(InvalidInput) as caught:
        service.register_version(
            "inline",
            NewVersion(files=[entry]),
            caller=as_user("a"),
            inline={entry.sha256: b"a lie"},
        )
    assert caught.value.code == "digest_mismatch"
    assert all_events(service) == []
