"""Bundles (docs/security.md, Bundles): a stage's versions exported from one registry and
imported into another with separate data directories, whole (files, metadata, evidence,
checks, signatures, journal); an import again changes nothing; a changed byte in any part,
a key not trusted, a member name that is a path, refused by name with nothing written."""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

import modelyard
from modelyard.api import create_app
from modelyard.config import Settings, open_service
from modelyard.domain.access import Caller, PrincipalKind, Reach, Role
from modelyard.domain.bundles import (
    DOCUMENT,
    END,
    END_OF_ARCHIVE,
    JOURNAL,
    MANIFEST,
    SIGNATURE,
    BundleDocument,
    BundleImport,
    Member,
    blob_member,
    manifest_bytes,
    padding,
    tar_header,
)
from modelyard.domain.errors import BundleInvalid, Conflict, SignatureInvalid, TooLarge
from modelyard.domain.evidence import AttachmentIn
from modelyard.domain.journal import verify_chain
from modelyard.domain.manifest import FileEntry
from modelyard.domain.projection import Projection, compare
from modelyard.domain.signing import SigningKey, canonical
from modelyard.domain.versions import NewVersion
from modelyard.service import RegistryService
from modelyard.service.checks import version_id_or_404
from tests.conftest import BACKENDS, Images, LiveServer, _empty, serving
from tests.test_cli import invoke

BIG = b"weights " * 20_000  # above the inline limit: in the blob store, on disk
SMALL = b'{"layers": 3}'
REPORT = b"auc,0.91\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the source: a registry with a story, built once per test process and backend -----------


@dataclass(frozen=True)
class Source:
    admin: str  # a token
    alice_key: bytes  # alice's private key, PEM: she signed churn/1 there


def build_source(service: RegistryService) -> Source:
    """churn/1 (a big file and a small one, evidence, a card, a check, alice's signature)
    promoted to production, so the registry signed it; churn/2 in development; churn/3
    in staging once, then archived; noisy/1, with more checks than an origin keeps."""
    root = service.identity.bootstrap_admin("root", operator="test")
    admin = service.access.authenticate(root.token)
    service.identity.create_principal(admin, "alice", PrincipalKind.USER)
    service.identity.set_grant(admin, "alice", Role.MAINTAINER, model="churn")
    alice = service.access.authenticate(
        service.identity.create_token(admin, principal="alice").token
    )
    key = SigningKey.generate()
    service.signing.register_key(alice, key.public.pem)
    upload = service.begin_blob_upload(admin, sha(BIG))
    upload.write(BIG)
    service.finish_blob_upload(upload)
    files = [
        FileEntry("weights.bin", len(BIG), sha(BIG)),
        FileEntry("conf.json", len(SMALL), sha(SMALL)),
    ]
    service.create_model("churn", caller=admin, description="Who leaves.", tags={"team": "risk"})
    for number in (1, 2, 3):
        service.register_version(
            "churn",
            NewVersion(files=files, metrics={"auc": 0.9 + number / 100}),
            caller=admin,
            inline={sha(SMALL): SMALL},
            attachments=[AttachmentIn("report.csv", len(REPORT), sha(REPORT), REPORT)],
            card=f"# Churn {number}\n",
        )
    service.checks.report(admin, "churn", 1, "ci", status="pass", url="https://ci.example/1")
    one = service.get_version("churn", 1, caller=admin)
    service.signing.add_signature(alice, "churn", 1, key.sign(one.reference, one.files))
    for stage in ("staging", "production"):
        service.lifecycle.promote(admin, "churn/1", stage, override="tested")
    service.lifecycle.promote(admin, "churn/3", "staging", override="tried")
    service.lifecycle.archive(admin, "churn/3")
    # noisy/1: more check results than an origin keeps.
    service.register_version(
        "noisy", NewVersion(files=files[1:]), caller=admin, inline={sha(SMALL): SMALL}
    )
    for number in range(100):
        service.checks.report(admin, "noisy", 1, f"lint-{number}", status="pass")
    return Source(root.token, key.to_pem())


@dataclass
class Registries:
    source: RegistryService
    target: RegistryService
    handles: Source
    target_token: str

    @property
    def source_admin(self) -> Caller:
        return self.source.access.authenticate(self.handles.admin)

    @property
    def target_admin(self) -> Caller:
        return self.target.access.authenticate(self.target_token)

    def export(
        self, stage: str | None = "production", history: bool = False, model: str = "churn"
    ) -> bytes:
        made = self.source.bundles.export(self.source_admin, model, stage=stage, history=history)
        data = b"".join(made.chunks)
        assert len(data) == made.size
        return data

    def trust(self, name: str = "east") -> str:
        pem = self.source.signing.key.public.pem
        return self.target.signing.trust_registry(self.target_admin, name, pem).key_id

    def import_(self, data: bytes) -> BundleImport:
        return self.target.bundles.import_bundle(self.target_admin, io.BytesIO(data))

    def state(self) -> tuple[int, list[str], int]:
        """What an import writes, if anything: the journal's head, the models, the blobs."""
        with self.target.db.engine.connect() as conn:
            blobs = conn.execute(text("SELECT count(*) FROM blobs")).scalar_one()
        models = [m.name for m in self.target.list_models(caller=self.target_admin).items]
        return self.target.db.head_seq(), models, int(blobs)


@pytest.fixture(scope="module", params=BACKENDS)
def source(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RegistryService, Source]]:
    """The source, built once per module and backend on a database of its own (tests only
    export from it), beside each test's target on the per-process one."""
    url = None
    if request.param == "postgresql":
        admin: Engine = request.getfixturevalue("pg_admin")
        name = f"modelyard_test_{secrets.token_hex(6)}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = admin.url.set(database=name).render_as_string(hide_password=False)
    service = open_service(Settings(data_dir=tmp_path_factory.mktemp("source"), database_url=url))
    try:
        yield service, build_source(service)
    finally:
        service.close()
        if url is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def registries(
    source: tuple[RegistryService, Source],
    images: Images,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Registries]:
    """The source and an empty target on the same backend, each with its own data
    directory (so its own signing key) and database."""
    postgresql = source[0].db.engine.dialect.name == "postgresql"
    url: str | None = request.getfixturevalue("pg_url") if postgresql else None
    settings = Settings(data_dir=tmp_path / "target", database_url=url)
    if url is None:
        images.restore(_empty, "sqlite", settings.data_dir, request)
    target = open_service(settings)
    try:
        token = target.identity.bootstrap_admin("root", operator="test").token
        yield Registries(source[0], target, source[1], token)
    finally:
        target.close()


# -- export, import, import again --------------------------------------------------------------


def test_a_stage_exported_arrives_whole_and_keeps_the_sources_word(
    registries: Registries,
) -> None:
    r = registries
    data = r.export()
    assert list(_offsets(data)) == [
        MANIFEST,
        SIGNATURE,
        DOCUMENT,
        JOURNAL,
        *sorted(blob_member(d) for d in (sha(BIG), sha(SMALL), sha(REPORT))),
    ]  # a plain tar: tar -tf lists it
    key_id = r.trust()
    done = r.import_(data)
    assert (done.imported, done.already, done.registry, done.key_id) == ((1,), (), "east", key_id)
    admin = r.target_admin
    here, there = (
        r.target.get_version("churn", 1, caller=admin),
        r.source.get_version("churn", 1, caller=r.source_admin),
    )
    assert (here.manifest_digest, here.files, here.metrics) == (
        there.manifest_digest,
        there.files,
        there.metrics,
    )
    # The target's policy governs: its first stage, the source's stage kept as provenance.
    assert here.stage == "development" and here.creator == "root"
    origin = here.origin
    assert origin is not None
    assert (origin.system, origin.uri, origin.name, origin.version) == (
        "modelyard",
        "east",
        "churn",
        "1",
    )
    assert (origin.stage, origin.key_id, origin.bundle) == ("production", key_id, done.bundle)
    assert (origin.created_by, origin.created_at) == (there.creator, there.created_at)
    assert {(c.name, c.status) for c in origin.checks} == {("ci", "pass"), ("scan", "pass")}
    model = r.target.get_model("churn", caller=admin)
    assert (model.description, model.tags) == ("Who leaves.", {"team": "risk"})
    # The checks are the target's own: its scan ran; the source's ci is provenance only.
    assert [c.name for c in r.target.checks.results(admin, "churn", 1)] == ["scan"]
    attachments = r.target.evidence.attachments(admin, "churn", 1)
    assert [(a.path, a.sha256) for a in attachments] == [("report.csv", sha(REPORT))]
    card = r.target.evidence.card(admin, "churn", 1)
    assert card is not None and card.text == "# Churn 1\n"
    signatures = r.target.signing.signatures(admin, "churn", 1).signatures
    assert {(s.attribution, s.origin) for s in signatures} == {
        ("alice of east", "east"),
        ("registry of east", "east"),
    }
    # The journal: one import, its versions' registrations and carried signatures, a chain
    # that verifies, and tables that are what it replays to.
    events = r.target.events(caller=admin, limit=1000)
    kinds = [e.kind for e in events if e.model == "churn"]
    assert kinds.count("model.bundle_imported") == 1 and kinds.count("version.signed") == 2
    assert verify_chain(events).ok
    listed = r.target.list_versions(caller=admin).items
    assert compare(Projection.replay(events), [model], listed) == []


def test_importing_again_says_already_imported_and_writes_nothing(registries: Registries) -> None:
    r = registries
    data = r.export()
    r.trust()
    assert r.import_(data).imported == (1,)
    before = r.state()
    again = r.import_(data)
    assert (again.imported, again.already) == ((), (1,))
    assert r.state() == before
    # A later export of the same version (another bundle) is the same version: already.
    assert r.import_(r.export()).already == (1,)
    assert r.state() == before


def test_history_exports_every_version_with_its_stage_history(registries: Registries) -> None:
    r = registries
    data = r.export(stage=None, history=True)
    document = BundleDocument.from_bytes(members_of(data)[DOCUMENT])
    journal = members_of(data)[JOURNAL]
    assert [v.version.version for v in document.versions] == [1, 2, 3] and document.history
    assert journal.count(b'"kind":"version.stage"') == 4  # 1: staging, production; 3: two
    r.trust()
    assert r.import_(data).imported == (1, 2, 3)
    stages = {}
    for number in (1, 2, 3):
        version = r.target.get_version("churn", number, caller=r.target_admin)
        assert version.origin is not None and version.stage == "development"
        stages[number] = version.origin.stage
    assert stages == {1: "production", 2: "development", 3: "archived"}


def test_a_download_verifies_the_sources_signature_while_its_key_is_trusted(
    registries: Registries,
) -> None:
    r = registries
    r.trust()
    r.import_(r.export())
    app = create_app(r.target, reach=Reach.LOOPBACK)
    with serving(app) as url, modelyard.connect(url, token=r.target_token) as reg:
        verified = reg.verify("churn/1")
        assert verified.signers == ("registry of east",)  # alice's key is not trusted here
        reg.distrust_registry(verified.key_ids[0])
        with pytest.raises(SignatureInvalid, match="not trusted here"):
            reg.verify("churn/1")


def test_a_carried_signature_counts_for_no_one_here(registries: Registries) -> None:
    """A user of the target registers alice's public key (it is public) as theirs: the
    signature the bundle carried must not pass as theirs for a policy's signed_by."""
    r = registries
    r.trust()
    r.import_(r.export())
    admin = r.target_admin
    r.target.identity.create_principal(admin, "mallory", PrincipalKind.USER)
    mallory = r.target.access.authenticate(
        r.target.identity.create_token(admin, principal="mallory").token
    )
    alice = SigningKey.from_pem(r.handles.alice_key, "alice")
    r.target.signing.register_key(mallory, alice.public.pem)
    version = r.target.get_version("churn", 1, caller=admin)
    with r.target.db.read() as tx:
        version_id = version_id_or_404(tx, "churn", 1)
        assert r.target.signing.signers(tx, version_id, version.files) == frozenset()


# -- refusals: nothing written ----------------------------------------------------------------


def test_a_bundle_signed_by_a_key_not_trusted_here_is_refused(registries: Registries) -> None:
    r = registries
    data = r.export()
    before = r.state()
    with pytest.raises(BundleInvalid, match="not trusted here") as caught:
        r.import_(data)
    assert (caught.value.code, caught.value.details["member"]) == ("bundle_untrusted", SIGNATURE)
    r.trust()
    resigned = rebuilt(members_of(data), SigningKey.generate())  # an attacker's own key
    with pytest.raises(BundleInvalid, match="not trusted here"):
        r.import_(resigned)
    assert r.state()[1:] == before[1:]


def _flip(data: bytes, at: int) -> bytes:
    changed = bytearray(data)
    changed[at] ^= 0x01
    return bytes(changed)


def _offsets(data: bytes) -> dict[str, tarfile.TarInfo]:
    """Each member's header, as Python's own tar reader finds them: a bundle is a plain tar."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def _inside(data: bytes, name: str, needle: bytes, skip: int = 10) -> int:
    """An offset in member ``name``'s bytes, ``skip`` past the end of ``needle`` there."""
    member = _offsets(data)[name]
    content = data[member.offset_data : member.offset_data + member.size]
    return member.offset_data + content.index(needle) + len(needle) + skip


def _in_base64(data: bytes, name: str, key: bytes) -> tuple[bytes, str]:
    """One base64 character of a JSON string changed for another: the text still decodes."""
    at = _inside(data, name, b'"' + key + b'":"', 20)
    changed = bytearray(data)
    changed[at] = ord("B") if changed[at] != ord("B") else ord("C")
    return bytes(changed), name


def _in_padding(data: bytes) -> tuple[bytes, str]:
    """A byte of the zeros after a member's last byte."""
    for name in (DOCUMENT, JOURNAL, MANIFEST, SIGNATURE):
        member = _offsets(data)[name]
        if member.size % 512:
            return _flip(data, member.offset_data + member.size), name
    raise AssertionError("no member has padding")


def _in_blob(data: bytes, content: bytes) -> tuple[bytes, str]:
    name = blob_member(sha(content))
    return _flip(data, _offsets(data)[name].offset_data + len(content) // 2), name


TAMPERS: dict[str, Callable[[bytes], tuple[bytes, str]]] = {
    "manifest": lambda d: (_flip(d, _inside(d, MANIFEST, b'"members"')), MANIFEST),
    "signature": lambda d: _in_base64(d, SIGNATURE, b"sig"),
    "signed payload": lambda d: _in_base64(d, SIGNATURE, b"payload"),
    "metadata": lambda d: (_flip(d, _inside(d, DOCUMENT, b'"metrics"')), DOCUMENT),
    "journal": lambda d: (_flip(d, _inside(d, JOURNAL, b'"actor"')), JOURNAL),
    "file": lambda d: _in_blob(d, BIG),
    "inline file": lambda d: _in_blob(d, SMALL),
    "attachment": lambda d: _in_blob(d, REPORT),
    "header": lambda d: (_flip(d, _offsets(d)[JOURNAL].offset + 2), JOURNAL),
    "padding": _in_padding,
    "end": lambda d: (_flip(d, len(d) - 5), END_OF_ARCHIVE),
}


@pytest.mark.parametrize("part", list(TAMPERS))
def test_a_flipped_byte_anywhere_is_refused_naming_the_part(
    registries: Registries, part: str
) -> None:
    r = registries
    data = r.export()
    changed, member = TAMPERS[part](data)
    assert changed != data and len(changed) == len(data)
    r.trust()
    before = r.state()
    with pytest.raises(BundleInvalid) as caught:
        r.import_(changed)
    assert caught.value.details["member"] == member, caught.value.message
    assert r.state() == before  # verified before anything was written: no blob, no event


# Bundles the trusted registry signed but that do not hold together: whoever holds its key
# cannot make the target believe more than the parts agree on.


def _journal_altered(members: dict[str, bytes]) -> None:
    members[JOURNAL] = members[JOURNAL].replace(b'"actor":"root"', b'"actor":"rooT"', 1)


def _stage_claimed(members: dict[str, bytes]) -> None:
    members[DOCUMENT] = members[DOCUMENT].replace(b'"stage":"production"', b'"stage":"staging"')


def _tag_added(members: dict[str, bytes]) -> None:
    members[DOCUMENT] = members[DOCUMENT].replace(b'"tags":{}', b'"tags":{"shipped":"yes"}', 1)


def _file_missing(members: dict[str, bytes]) -> None:
    del members[blob_member(sha(REPORT))]


def _signature_swapped(members: dict[str, bytes]) -> None:
    other = SigningKey.generate().sign("churn/1", [FileEntry("weights.bin", 1, sha(b"x"))])
    old = members[DOCUMENT]
    start = old.index(b'"bundle":{') + len(b'"bundle":')
    depth, end = 0, start
    for end in range(start, len(old)):
        depth += {ord("{"): 1, ord("}"): -1}.get(old[end], 0)
        if depth == 0:
            break
    members[DOCUMENT] = old[:start] + canonical(other) + old[end + 1 :]


@pytest.mark.parametrize(
    ("change", "member", "why"),
    [
        (_journal_altered, JOURNAL, "does not match its hash"),
        (_stage_claimed, DOCUMENT, "stage is 'staging', but journal.jsonl says 'production'"),
        (_tag_added, DOCUMENT, "tags.shipped is 'yes', but journal.jsonl says None"),
        (_file_missing, DOCUMENT, "disagree about blob"),
        (_signature_swapped, DOCUMENT, "signature by key"),
    ],
    ids=["journal", "stage", "tag", "file", "signature"],
)
def test_a_bundle_that_does_not_hold_together_is_refused(
    registries: Registries, change: Callable[[dict[str, bytes]], None], member: str, why: str
) -> None:
    r = registries
    r.trust()
    members = members_of(r.export())
    change(members)
    before = r.state()
    with pytest.raises(BundleInvalid, match=why) as caught:
        r.import_(rebuilt(members, r.source.signing.key))
    assert caught.value.details["member"] == member
    assert r.state() == before


def _symlink(name: str) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return info.tobuf(tarfile.USTAR_FORMAT)


@pytest.mark.parametrize(
    ("listed", "extra", "named", "why"),
    [
        (["../../etc/passwd"], [], "../../etc/passwd", "not a member of the bundle's layout"),
        (["/etc/cron.d/x"], [], "/etc/cron.d/x", "not a member of the bundle's layout"),
        ([], [("../evil", b"#!/bin/sh\n")], "../evil", "unknown member"),
        ([], [(DOCUMENT, b"{}")], DOCUMENT, "a second"),
        ([], [("link", None)], "link", "only regular files"),
    ],
    ids=["traversal", "absolute", "unlisted", "duplicate", "symlink"],
)
def test_member_names_are_never_paths(
    registries: Registries,
    listed: list[str],
    extra: list[tuple[str, bytes | None]],
    named: str,
    why: str,
) -> None:
    """A name the layout does not have is refused, listed in a signed manifest or not:
    nothing is ever written under a member's name."""
    r = registries
    r.trust()
    members = members_of(r.export())
    for name in listed:
        members[name] = b"x"
    data = rebuilt(members, r.source.signing.key)
    for name, content in extra:
        tail = _symlink(name) if content is None else _member(name, content)
        data = data[: -len(END)] + tail + END
    before = r.state()
    with pytest.raises(BundleInvalid, match=why) as caught:
        r.import_(data)
    assert caught.value.details["member"] == named
    assert r.state() == before


def test_a_size_beyond_the_caps_is_refused_before_it_is_read(registries: Registries) -> None:
    r = registries
    r.trust()
    data = r.export()
    manifest = _offsets(data)[MANIFEST]
    huge = tar_header(MANIFEST, 10**12)  # a terabyte of manifest
    with pytest.raises(BundleInvalid, match="beyond its cap") as caught:
        r.import_(huge + data[manifest.offset_data :])
    assert caught.value.details["member"] == MANIFEST


def test_a_version_this_registry_would_refuse_is_refused_before_a_blob_is_copied(
    registries: Registries,
) -> None:
    """Each version is checked as its registration would be before anything is written:
    here its origin would keep more check results than an origin takes."""
    r = registries
    data = r.export(stage="development", model="noisy")
    r.trust()
    before = r.state()
    with pytest.raises(TooLarge, match="at most 100 checks"):
        r.import_(data)
    assert r.state() == before


def test_a_number_given_here_already_is_refused_before_anything_is_written(
    registries: Registries,
) -> None:
    r = registries
    r.trust()
    admin = r.target_admin
    r.target.register_version(
        "churn",
        NewVersion(files=[FileEntry("mine.bin", 4, sha(b"mine"))]),
        caller=admin,
        inline={sha(b"mine"): b"mine"},
    )
    before = r.state()
    with pytest.raises(Conflict, match="keep their numbers") as caught:
        r.import_(r.export())
    assert caught.value.code == "number_taken"
    assert r.state() == before


# -- who may: over REST ------------------------------------------------------------------------


def test_a_viewer_cannot_export_and_a_contributor_cannot_import(registries: Registries) -> None:
    r = registries
    data = r.export()
    r.trust()
    admin = r.target_admin
    identity = r.target.identity
    for name, role in (("vic", Role.VIEWER), ("carl", Role.CONTRIBUTOR)):
        identity.create_principal(admin, name, PrincipalKind.USER)
        identity.set_grant(admin, name, role, model="churn")
    r.import_(data)
    tokens = {n: identity.create_token(admin, principal=n).token for n in ("vic", "carl")}
    before = r.state()
    with TestClient(create_app(r.target, reach=Reach.LOOPBACK)) as client:
        viewer = {"Authorization": f"Bearer {tokens['vic']}"}
        refused = client.get("/api/v1/models/churn/bundle?history=true", headers=viewer)
        assert (refused.status_code, refused.json()["permission"]) == (403, "model.download")
        contributor = {"Authorization": f"Bearer {tokens['carl']}"}
        refused = client.post("/api/v1/bundles", content=data, headers=contributor)
        assert (refused.status_code, refused.json()["permission"]) == (403, "registry.admin")
        stranger = client.get("/api/v1/models/churn/bundle?history=true")
        assert stranger.status_code == 401
    assert r.state() == before


# -- the CLI, end to end ------------------------------------------------------------------------


def test_the_cli_carries_a_model_across_to_a_live_server(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    """export from one registry (in-process, on its data directory), keys add --registry
    and import-bundle on another (a real server, as its admin), download --verify there."""
    source_dir = tmp_path / "source-cli"
    source = open_service(Settings(data_dir=source_dir))
    caller = Caller.local_user("tester")
    try:
        upload = source.begin_blob_upload(caller, sha(BIG))
        upload.write(BIG)
        source.finish_blob_upload(upload)
        entry = FileEntry("weights.bin", len(BIG), sha(BIG))
        source.register_version("churn", NewVersion(files=[entry]), caller=caller)
        for stage in ("staging", "production"):
            source.lifecycle.promote(caller, "churn/1", stage, override="first")
    finally:
        source.close()
    local: dict[str, Any] = {"url": str(source_dir), "cwd": tmp_path}
    assert invoke("export", "churn", "--stage", "production", **local).ok()
    pem = invoke("keys", "list", "--owner", "registry", "--pem", **local).ok().stdout
    (tmp_path / "east.pem").write_text(pem)
    env = {"MODELYARD_TOKEN": admin_token(sqlite_server)}
    remote: dict[str, Any] = {"url": sqlite_server.url, "cwd": tmp_path, "env": env}
    refused = invoke("import-bundle", "churn.mybundle", **remote)
    assert refused.returncode == 1 and "not trusted here" in refused.stderr
    assert invoke("keys", "add", "--registry", "east", "--key", "east.pem", **remote).ok()
    done = invoke("import-bundle", "churn.mybundle", **remote).ok()
    assert "imported churn/1 from east" in done.stdout
    again = json.loads(invoke("import-bundle", "churn.mybundle", "--json", **remote).ok().stdout)
    assert (again["imported"], again["already"]) == ([], [1])
    fetched = invoke("download", "churn/1", "--verify", "-o", "out", **remote).ok()
    assert "signed by registry of east" in fetched.stdout
    assert (tmp_path / "out" / "weights.bin").read_bytes() == BIG


# -- helpers: members out of a bundle and a bundle out of members, signed ----------------------


def members_of(data: bytes) -> dict[str, bytes]:
    """Every member after the manifest and its signature, in order."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.name not in (MANIFEST, SIGNATURE)
        }


def _member(name: str, content: bytes) -> bytes:
    return tar_header(name, len(content)) + content + padding(len(content))


def rebuilt(members: dict[str, bytes], key: SigningKey) -> bytes:
    """A bundle of these members with a manifest ``key`` signs: what the holder of a key
    can make."""
    listed = [Member(name, sha(content), len(content)) for name, content in members.items()]
    manifest = manifest_bytes("churn", datetime.now(UTC), listed)
    signature = canonical(key.sign_payload(manifest))
    parts = [(MANIFEST, manifest), (SIGNATURE, signature), *members.items()]
    return b"".join(_member(name, content) for name, content in parts) + END


def admin_token(server: LiveServer) -> str:
    """The first admin of a live server's registry, made in its database."""
    settings = Settings(data_dir=server.data_dir, database_url=server.database_url)
    service = open_service(settings)
    try:
        return service.identity.bootstrap_admin("root", operator="test").token
    finally:
        service.close()
