"""A version's evidence: attachments, model cards and comments, on SQLite and PostgreSQL.

The service, its REST routes (headers of the bytes included) and the SDK over both
transports; the roles (viewers read evidence, never the model's files; reviewers need
viewer on the model), the attacker's attempts, immutability and the journal.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelyard.api import create_app
from modelyard.client.registry import Registry
from modelyard.domain.access import Caller, PrincipalKind, Reach, Role
from modelyard.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MissingBlobs,
    NotFound,
    PolicyFailed,
    TooLarge,
)
from modelyard.domain.events import decode
from modelyard.domain.evidence import AttachmentIn, Card, media_type
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import Version
from modelyard.domain.versions import NewVersion
from modelyard.service import RegistryService
from tests.conftest import LiveServer, on
from tests.conftest import make_tree as make_tree
from tests.test_cli import invoke
from tests.test_sdk import Tree, reg, target  # noqa: F401  (fixtures)

ME = Caller.local_user("tester")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
CARD = "# Churn\n\nTrained weekly on the CRM export.\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def inline(path: str, content: bytes) -> AttachmentIn:
    return AttachmentIn(path, len(content), sha(content), content)


def spec(
    content: bytes = b"weights", files: dict[str, bytes] | None = None
) -> tuple[NewVersion, dict[str, bytes]]:
    """A version of model.bin (and ``files``), every one inline."""
    every = {"model.bin": content, **(files or {})}
    entries = [FileEntry(p, len(c), sha(c)) for p, c in every.items()]
    return NewVersion(files=entries), {sha(c): c for c in every.values()}


def register(
    service: RegistryService, caller: Caller = ME, content: bytes = b"weights", **kw: Any
) -> Version:
    new, contents = spec(content)
    return service.register_version("churn", new, caller=caller, inline=contents, **kw)


# -- attachments ------------------------------------------------------------------------------


def test_attachments_at_registration_leave_the_manifest_digest_alone(
    service: RegistryService,
) -> None:
    plain = register(service, content=b"same")
    evidence = [inline("eval/roc.png", PNG), inline("metrics.json", b'{"auc": 0.9}')]
    with_evidence = register(service, content=b"same", attachments=evidence)
    assert with_evidence.manifest_digest == plain.manifest_digest
    found = service.evidence.attachments(ME, "churn", with_evidence.version)
    assert [(a.path, a.media_type, a.attached_by) for a in found] == [
        ("eval/roc.png", "image/png", "tester"),
        ("metrics.json", "application/json", "tester"),
    ]
    assert service.evidence.attachments(ME, "churn", plain.version) == []
    # Nothing of the evidence is in the version's files.
    assert [f.path for f in with_evidence.files] == ["model.bin"]


def test_attaching_later_is_append_only_and_journaled(service: RegistryService) -> None:
    version = register(service)
    attached = service.evidence.attach(ME, "churn", 1, [inline("fairness.html", b"<h1>ok</h1>")])
    assert [(a.path, a.media_type) for a in attached] == [("fairness.html", "text/html")]
    with pytest.raises(Conflict) as refused:
        service.evidence.attach(ME, "churn", 1, [inline("fairness.html", b"<h1>other</h1>")])
    assert refused.value.code == "attachment_exists"
    with pytest.raises(Conflict):  # the very same bytes again: still never replaced
        service.evidence.attach(ME, "churn", 1, [inline("fairness.html", b"<h1>ok</h1>")])
    with pytest.raises(InvalidInput):  # one file on a case-insensitive file system
        service.evidence.attach(ME, "churn", 1, [inline("Fairness.HTML", b"x")])
    (kept,) = service.evidence.attachments(ME, "churn", 1)
    assert kept.sha256 == sha(b"<h1>ok</h1>")
    assert service.get_version("churn", 1, caller=ME).manifest_digest == version.manifest_digest
    events = [decode(e) for e in service.events(caller=ME, kind="version.attached")]
    assert [(e.subject(), e.payload()) for e in events] == [
        (
            "churn/1",
            {
                "attachments": [
                    {
                        "path": "fairness.html",
                        "sha256": sha(b"<h1>ok</h1>"),
                        "size": 11,
                        "media_type": "text/html",
                    }
                ]
            },
        )
    ]
    assert service.events(caller=ME, kind="version.attached")[0].actor == "tester"


def test_the_server_decides_the_media_type_from_the_bytes() -> None:
    assert media_type("roc.png", PNG) == "image/png"
    assert media_type("roc.png", b"<script>alert(1)</script>") == "application/octet-stream"
    assert media_type("cm.JPG", b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert media_type("report.pdf", b"%PDF-1.7") == "application/pdf"
    assert media_type("plot.svg", b'<?xml version="1.0"?><svg xmlns="...">') == "image/svg+xml"
    assert media_type("plot.svg", b"not an image") == "application/octet-stream"
    assert media_type("table.csv", b"a,b\n1,2\n") == "text/csv"
    assert media_type("table.csv", b"a,b\x00\xff") == "application/octet-stream"
    assert media_type("train.log", "épochs\n".encode()) == "text/plain"
    assert media_type("weights", b"anything") == "application/octet-stream"


def test_a_blob_named_by_digest_alone_is_missing(service: RegistryService) -> None:
    """A digest is no read key: attaching another model's file by its digest would make
    its bytes readable to whoever may view the attacker's model."""
    identity = service.identity
    admin = service.access.authenticate(identity.bootstrap_admin("root", operator="t").token)
    secret = b"the secret weights"
    new, contents = spec(secret)
    service.register_version("secret", new, caller=admin, inline=contents)
    identity.create_principal(admin, "mallory", PrincipalKind.USER)
    identity.set_grant(admin, "mallory", Role.CONTRIBUTOR, model="churn")
    mallory = service.access.authenticate(identity.create_token(admin, principal="mallory").token)
    register(service, caller=mallory)
    stolen = AttachmentIn("loot.bin", len(secret), sha(secret))
    with pytest.raises(MissingBlobs):
        service.evidence.attach(mallory, "churn", 1, [stolen])
    with pytest.raises(MissingBlobs):  # nor at registration
        register(service, caller=mallory, content=b"v2", attachments=[stolen])
    assert service.evidence.attachments(admin, "churn", 1) == []


def test_an_uploaded_blob_is_attached_like_a_file(service: RegistryService) -> None:
    register(service)
    big = PNG + b"\x01" * (200 * 1024)
    upload = service.begin_blob_upload(ME, sha(big))
    upload.write(big)
    service.finish_blob_upload(upload)
    (attached,) = service.evidence.attach(
        ME, "churn", 1, [AttachmentIn("cm.png", len(big), sha(big))]
    )
    assert attached.media_type == "image/png"
    _, read = service.evidence.open_attachment(ME, "churn", 1, "cm.png")
    assert b"".join(read(0, None)) == big
    assert b"".join(read(3, 8)) == big[3:8]


def test_registration_with_evidence_is_all_or_nothing(service: RegistryService) -> None:
    register(service)
    missing = AttachmentIn("late.csv", 3, sha(b"abc"))
    with pytest.raises(MissingBlobs):
        register(service, content=b"v2", attachments=[missing])
    with pytest.raises(InvalidInput):
        register(service, content=b"v2", attachments=[inline("ok.csv", b"a")], card="bad\x00")
    broken, contents = spec(b"v2", {"MODEL_CARD.md": b"\xff\xfe"})
    with pytest.raises(InvalidInput):  # a card file that is not UTF-8
        service.register_version("churn", broken, caller=ME, inline=contents)
    model = service.get_model("churn", caller=ME)
    assert model.latest_version == 1
    kinds = [e.kind for e in service.events(caller=ME)]
    assert kinds.count("version.registered") == 1
    assert "version.attached" not in kinds and "version.card_edited" not in kinds


# -- the card ---------------------------------------------------------------------------------


def test_the_card_comes_from_the_files_the_attachments_the_text_or_the_previous_version(
    service: RegistryService,
) -> None:
    new, contents = spec(b"v1", {"MODEL_CARD.md": CARD.encode()})
    service.register_version("churn", new, caller=ME, inline=contents)
    card = service.evidence.card(ME, "churn", 1)
    assert card is not None and (card.text, card.source, card.revision) == (CARD, "file", 1)

    register(service, content=b"v2", attachments=[inline("docs/model_card.md", b"# From eval")])
    card = service.evidence.card(ME, "churn", 2)
    assert card is not None and (card.text, card.source) == ("# From eval", "attachment")

    register(service, content=b"v3", card="# Given")
    card = service.evidence.card(ME, "churn", 3)
    assert card is not None and (card.text, card.source) == ("# Given", "edited")

    register(service, content=b"v4", card_from_previous=True)
    card = service.evidence.card(ME, "churn", 4)
    assert card is not None and (card.text, card.source) == ("# Given", "previous")

    register(service, content=b"v5")
    assert service.evidence.card(ME, "churn", 5) is None
    with pytest.raises(InvalidInput):
        register(service, content=b"v6", card="# x", card_from_previous=True)


def test_every_card_edit_is_a_revision_and_journaled(service: RegistryService) -> None:
    register(service, card="# One")
    service.evidence.set_card(ME, "churn", 1, "# Two")
    again = service.evidence.set_card(ME, "churn", 1, "# Two")  # no change, no revision
    assert again.revision == 2
    history = service.evidence.card_history(ME, "churn", 1)
    assert [(c.text, c.revision, c.source) for c in history] == [
        ("# One", 1, "edited"),
        ("# Two", 2, "edited"),
    ]
    events = service.events(caller=ME, kind="version.card_edited")
    assert [(e.subject, e.payload["revision"]) for e in events] == [("churn/1", 1), ("churn/1", 2)]
    assert events[1].payload["sha256"] == sha(b"# Two")
    with pytest.raises(TooLarge):
        service.evidence.set_card(ME, "churn", 1, "x" * (256 * 1024 + 1))


# -- roles ------------------------------------------------------------------------------------


@dataclass
class People:
    admin: Caller
    callers: dict[str, Caller]
    tokens: dict[str, str]


def people(service: RegistryService, roles: dict[str, Role | None]) -> People:
    """An admin, and one user per entry holding that role on churn (None: no role)."""
    identity = service.identity
    root = identity.bootstrap_admin("root", operator="test")
    admin = service.access.authenticate(root.token)
    found = People(admin, {}, {"root": root.token})
    for name, role in roles.items():
        identity.create_principal(admin, name, PrincipalKind.USER)
        if role is not None:
            identity.set_grant(admin, name, role, model="churn")
        token = identity.create_token(admin, principal=name).token
        found.tokens[name] = token
        found.callers[name] = service.access.authenticate(token)
    return found


def test_viewers_read_evidence_and_only_contributors_add_to_it(service: RegistryService) -> None:
    team = people(service, {"vic": Role.VIEWER, "rita": Role.READER, "cole": Role.CONTRIBUTOR})
    vic, cole = team.callers["vic"], team.callers["cole"]
    register(service, caller=team.admin, card="# Card", attachments=[inline("roc.png", PNG)])
    assert [a.path for a in service.evidence.attachments(vic, "churn", 1)] == ["roc.png"]
    _, read = service.evidence.open_attachment(vic, "churn", 1, "roc.png")
    assert b"".join(read(0, None)) == PNG
    card = service.evidence.card(vic, "churn", 1)
    assert card is not None and card.text == "# Card"
    assert service.evidence.comment(vic, model="churn", version=1, body="Fine.").author == "vic"
    with pytest.raises(Forbidden):
        service.file_entry("churn", 1, "model.bin", caller=vic)  # files stay for readers
    for role in ("vic", "rita"):
        with pytest.raises(Forbidden):
            service.evidence.set_card(team.callers[role], "churn", 1, "# Mine")
        with pytest.raises(Forbidden):
            service.evidence.attach(team.callers[role], "churn", 1, [inline("x.txt", b"x")])
    service.evidence.attach(cole, "churn", 1, [inline("later.txt", b"later")])
    assert service.evidence.set_card(cole, "churn", 1, "# Better").revision == 2
    with pytest.raises(Conflict):  # a contributor cannot replace evidence either
        service.evidence.attach(cole, "churn", 1, [inline("roc.png", b"\x89PNG\r\n\x1a\nfake")])


def test_nobody_learns_that_the_evidence_exists(service: RegistryService) -> None:
    team = people(service, {"nobody": None})
    nobody = team.callers["nobody"]
    register(service, caller=team.admin, card="# Card", attachments=[inline("roc.png", PNG)])
    calls: list[Callable[[], object]] = [
        lambda: service.evidence.attachments(nobody, "churn", 1),
        lambda: service.evidence.open_attachment(nobody, "churn", 1, "roc.png"),
        lambda: service.evidence.card(nobody, "churn", 1),
        lambda: service.evidence.card_history(nobody, "churn", 1),
        lambda: service.evidence.comments(nobody, model="churn", version=1),
        lambda: service.evidence.comment(nobody, model="churn", version=1, body="hi"),
        lambda: service.evidence.set_card(nobody, "churn", 1, "# mine"),
        lambda: service.evidence.attach(nobody, "churn", 1, [inline("x.txt", b"x")]),
    ]
    for call in calls:
        with pytest.raises(NotFound) as hidden:
            call()
        assert hidden.value.code == "model_not_found"


def test_a_read_only_token_cannot_comment(service: RegistryService) -> None:
    team = people(service, {"vic": Role.VIEWER})
    register(service, caller=team.admin)
    token = service.identity.create_token(team.admin, principal="vic", read_only=True).token
    with pytest.raises(Forbidden):
        service.evidence.comment(
            service.access.authenticate(token), model="churn", version=1, body="hi"
        )


def test_a_reviewer_needs_viewer_on_the_model_and_then_sees_the_evidence(
    service: RegistryService,
) -> None:
    team = people(service, {"ria": None, "dev": Role.CONTRIBUTOR})
    admin, ria, dev = team.admin, team.callers["ria"], team.callers["dev"]
    service.identity.create_principal(admin, "risk", PrincipalKind.TEAM)
    service.identity.set_membership(admin, "risk", "ria", present=True)
    policy = "promotion:\n  staging:\n    approvals: {count: 1, team: risk}\n"
    register(service, caller=dev, attachments=[inline("roc.png", PNG)], card="# Card")
    service.lifecycle.apply_policy(admin, "churn", policy)
    opened = service.lifecycle.promote(dev, "churn/1", "staging").request
    assert opened is not None
    service.evidence.comment(dev, model="churn", request_id=opened.id, body="Please review.")

    with pytest.raises(NotFound) as refused:  # in the team, but no role on the model
        service.lifecycle.approve(ria, opened.id)
    assert "takes at least viewer on its model" in str(refused.value)
    assert refused.value.code == "request_not_found"
    with pytest.raises(NotFound) as unknown:  # the same answer for a request that is not there
        service.lifecycle.approve(ria, 999)
    assert str(unknown.value).replace("999", str(opened.id)) == str(refused.value)

    service.identity.set_grant(admin, "ria", Role.VIEWER, model="churn")
    _, read = service.evidence.open_attachment(ria, "churn", 1, "roc.png")
    assert b"".join(read(0, None)) == PNG
    assert service.evidence.card(ria, "churn", 1) is not None
    discussion = service.evidence.comments(ria, model="churn", request_id=opened.id)
    assert [c.body for c in discussion] == ["Please review."]
    service.evidence.comment(ria, model="churn", request_id=opened.id, body="Plot reads well.")
    approved = service.lifecycle.approve(ria, opened.id, comment="ok")
    assert approved.status == "executed"
    on_version = service.evidence.comments(ria, model="churn", version=1)
    assert [(c.body, c.request_id) for c in on_version] == [
        ("Please review.", opened.id),
        ("Plot reads well.", opened.id),
    ]


# -- comments ---------------------------------------------------------------------------------


def test_comments_on_versions_and_requests(service: RegistryService) -> None:
    register(service)
    register(service, content=b"v2")
    opened = service.lifecycle.promote(ME, "churn/2", "staging").request
    assert opened is not None
    first = service.evidence.comment(ME, model="churn", version=1, body="**Good** baseline.")
    service.evidence.comment(ME, model="churn", request_id=opened.id, body="Ship it?")
    assert (first.model, first.version, first.request_id) == ("churn", 1, None)
    assert [c.body for c in service.evidence.comments(ME, model="churn", version=1)] == [
        "**Good** baseline."
    ]
    (on_request,) = service.evidence.comments(ME, model="churn", request_id=opened.id)
    assert (on_request.version, on_request.request_id) == (2, opened.id)
    assert len(service.evidence.comments(ME, model="churn")) == 2
    for bad in ("", "   ", "x" * (16 * 1024 + 1), "nul\x00"):
        with pytest.raises((InvalidInput, TooLarge)):
            service.evidence.comment(ME, model="churn", version=1, body=bad)
    with pytest.raises(InvalidInput):  # on both, or on nothing
        service.evidence.comment(ME, model="churn", version=1, request_id=opened.id, body="x")
    with pytest.raises(InvalidInput):
        service.evidence.comment(ME, model="churn", body="x")
    service.register_version("other", spec(b"o")[0], caller=ME, inline=spec(b"o")[1])
    with pytest.raises(NotFound):  # a request of another model is not found through this one
        service.evidence.comment(ME, model="other", request_id=opened.id, body="x")
    events = service.events(caller=ME, kind="comment.added")
    assert [(e.subject, e.payload["request"]) for e in events] == [
        ("churn/1", None),
        ("churn/2", opened.id),
    ]


# -- policies ---------------------------------------------------------------------------------


def test_a_card_satisfies_description_and_the_card_rule_requires_one(
    service: RegistryService,
) -> None:
    policy = "promotion:\n  staging:\n    require: [description, card]\n    approvals: {count: 0}\n"
    service.lifecycle.apply_policy(ME, None, policy)
    register(service)
    with pytest.raises(PolicyFailed) as refused:
        service.lifecycle.promote(ME, "churn/1", "staging")
    assert {f["rule"] for f in refused.value.details["failures"]} == {"description", "card"}
    service.evidence.set_card(ME, "churn", 1, CARD)
    assert service.lifecycle.promote(ME, "churn/1", "staging").status == "executed"
    strict = "promotion:\n  staging:\n    require: ['card like \"%## Evaluation%\"']\n"
    service.lifecycle.apply_policy(ME, None, strict)
    register(service, content=b"v2", card_from_previous=True)
    with pytest.raises(PolicyFailed):
        service.lifecycle.promote(ME, "churn/2", "staging")


# -- blobs and garbage collection -------------------------------------------------------------


def test_gc_keeps_attached_bytes_and_a_hard_delete_releases_them(service: RegistryService) -> None:
    register(service, attachments=[inline("roc.png", PNG)])
    register(service, content=b"v2", attachments=[inline("cm.png", PNG + b"2")])
    assert service.collect_garbage(ME, grace_seconds=0).blobs == 0
    _, read = service.evidence.open_attachment(ME, "churn", 1, "roc.png")
    assert b"".join(read(0, None)) == PNG
    service.lifecycle.delete_version(ME, "churn", 2, hard=True)
    report = service.collect_garbage(ME)  # released: gone at once, with the grace period
    assert {r["name"] for r in report.removed} == {
        f"sha256:{sha(b'v2')}",
        f"sha256:{sha(PNG + b'2')}",
    }


# -- REST ---------------------------------------------------------------------------------------


@pytest.fixture
def api(service: RegistryService) -> Iterator[TestClient]:
    with TestClient(create_app(service, reach=Reach.LOOPBACK)) as client:
        yield client


def test_rest_bytes_are_downloads_typed_only_when_inert(
    service: RegistryService, api: TestClient
) -> None:
    team = people(service, {"vic": Role.VIEWER})
    evidence = [inline("roc.png", PNG), inline("xss.html", b"<script>alert(1)</script>")]
    register(service, caller=team.admin, attachments=evidence)
    headers = {"Authorization": f"Bearer {team.tokens['vic']}"}
    base = "/api/v1/models/churn/versions/1"
    assert api.get(f"{base}/files/model.bin", headers=headers).status_code == 403
    png = api.get(f"{base}/attachments/roc.png", headers=headers)
    assert png.status_code == 200 and png.content == PNG
    assert png.headers["content-type"] == "image/png"
    assert png.headers["content-disposition"].startswith("attachment;")
    assert png.headers["x-content-type-options"] == "nosniff"
    assert png.headers["cache-control"].startswith("private")
    assert "sandbox" in png.headers["content-security-policy"]
    assert png.headers["etag"] == f'"sha256:{sha(PNG)}"'
    html = api.get(f"{base}/attachments/xss.html", headers=headers)
    assert html.headers["content-type"] == "application/octet-stream"
    part = api.get(f"{base}/attachments/roc.png", headers={**headers, "Range": "bytes=1-3"})
    assert part.status_code == 206 and part.content == PNG[1:4]
    head = api.head(f"{base}/attachments/roc.png", headers=headers)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(PNG))
    listed = api.get(f"{base}/attachments", headers=headers).json()["items"]
    assert [(a["path"], a["media_type"]) for a in listed] == [
        ("roc.png", "image/png"),
        ("xss.html", "text/html"),
    ]
    missing = api.get(f"{base}/attachments/nope.png", headers=headers)
    assert (missing.status_code, missing.json()["code"]) == (404, "attachment_not_found")


def test_rest_registration_card_and_comments(api: TestClient) -> None:
    content = b"weights"
    report = b"auc,0.91\n"

    def item(path: str, data: bytes) -> dict[str, object]:
        return {
            "path": path,
            "size": len(data),
            "sha256": sha(data),
            "content": base64.b64encode(data).decode(),
        }

    body = {
        "files": [item("model.bin", content)],
        "attachments": [item("eval/report.csv", report)],
        "card": CARD,
    }
    created = api.post("/api/v1/models/churn/versions", json=body)
    assert created.status_code == 201, created.text
    base = "/api/v1/models/churn/versions/1"
    assert api.get(f"{base}/card").json()["text"] == CARD
    assert api.get(f"{base}/attachments").json()["items"][0]["media_type"] == "text/csv"
    again = api.post(f"{base}/attachments", json={"attachments": [item("eval/report.csv", b"x")]})
    assert (again.status_code, again.json()["code"]) == (409, "attachment_exists")
    assert api.put(f"{base}/card", json={"text": "# v2"}).json()["revision"] == 2
    assert len(api.get(f"{base}/card/history").json()["items"]) == 2
    posted = api.post(f"{base}/comments", json={"body": "Nice."})
    assert posted.status_code == 201 and posted.json()["version"] == 1
    assert [c["body"] for c in api.get(f"{base}/comments").json()["items"]] == ["Nice."]
    api.post("/api/v1/models/churn/versions", json={"files": [item("model.bin", b"v2")]})
    assert api.get("/api/v1/models/churn/versions/2/card").json()["code"] == "card_not_found"
    promoted = api.post(f"{base}/promote", json={"to": "staging"}).json()
    request_id = promoted["request"]["id"]
    assert (
        api.post(f"/api/v1/requests/{request_id}/comments", json={"body": "?"}).status_code == 201
    )
    on_request = api.get(f"/api/v1/requests/{request_id}/comments").json()["items"]
    assert [(c["body"], c["version"]) for c in on_request] == [("?", 1)]
    assert api.get("/api/v1/requests/999/comments").json()["code"] == "request_not_found"


# -- the SDK, over both transports ------------------------------------------------------------


def _card(registry: Registry, reference: str) -> Card:
    card = registry.card(reference)
    assert card is not None, reference
    return card


def test_sdk_evidence(reg: Registry, make_tree: Tree, tmp_path: Path) -> None:  # noqa: F811
    model = make_tree({"model.bin": b"weights"})
    evaluation = make_tree({"roc.png": PNG, "big.csv": b"a,b\n" * 40_000, "MODEL_CARD.md": b"# C"})
    version = reg.register("churn", model, attachments=[evaluation])
    assert [f.path for f in version.files] == ["model.bin"]
    assert [a.path for a in reg.attachments("churn/1")] == ["MODEL_CARD.md", "big.csv", "roc.png"]
    assert (_card(reg, "churn/1").text, _card(reg, "churn/1").source) == ("# C", "attachment")

    later = make_tree({"fairness.html": b"<h1>fair</h1>"})
    (attached,) = reg.attach("churn/1", later / "fairness.html")
    assert attached.media_type == "text/html"
    with pytest.raises(Conflict):
        reg.attach("churn/1", [later])
    written = reg.download_attachment("churn/1", "big.csv", tmp_path)
    assert written == tmp_path / "big.csv" and written.read_bytes() == b"a,b\n" * 40_000
    assert reg.resolve("churn/1").manifest_digest == version.manifest_digest

    card_file = tmp_path / "card.md"
    card_file.write_text("# From a file\n")
    again = reg.register("churn", model, card=card_file)
    assert again.version == 2
    assert _card(reg, "churn/2").text == "# From a file\n"
    assert reg.set_card("churn/2", "# Edited").revision == 2
    assert [c.text for c in reg.card_history("churn/2")] == ["# From a file\n", "# Edited"]
    reg.register("churn", model, card_from_previous=True)
    assert (_card(reg, "churn/3").text, _card(reg, "churn/3").source) == ("# Edited", "previous")
    reg.register("churn", model)
    assert reg.card("churn/4") is None

    reg.comment("churn/1", "Looks right.")
    opened = reg.promote("churn/1", "staging").request
    assert opened is not None
    reg.comment(opened.id, "Approve?")
    assert [c.body for c in reg.comments("churn/1")] == ["Looks right.", "Approve?"]
    assert [c.body for c in reg.comments(opened.id)] == ["Approve?"]


# -- the CLI ----------------------------------------------------------------------------------


@on("sqlite")
def test_cli_evidence_commands(live_server: LiveServer, tmp_path: Path, make_tree: Tree) -> None:
    """register --attach --card, attach, attachments (--save), card show|set|edit|history,
    comment and comments, against a server, as a user types them."""
    data = live_server.url
    model = make_tree({"model.bin": b"weights"})
    evaluation = make_tree({"roc.png": PNG, "metrics.csv": b"auc\n0.9\n"})
    card = tmp_path / "card.md"
    card.write_text("# Churn one\n")

    def cli(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> str:
        return invoke(*args, url=data, cwd=tmp_path, env=env or {}, stdin=stdin).ok().stdout

    cli("register", "churn", str(model), "--attach", str(evaluation), "--card", str(card))
    later = tmp_path / "fairness.html"
    later.write_text("<h1>fair</h1>")
    assert "attached fairness.html (text/html" in cli("attach", "churn/1", str(later))
    refused = invoke("attach", "churn/1", str(later), url=data, cwd=tmp_path, env={})
    assert refused.returncode == 1 and "never replaced" in refused.stderr
    listed = json.loads(cli("attachments", "churn/1", "--json"))["items"]
    assert [(a["path"], a["media_type"]) for a in listed] == [
        ("fairness.html", "text/html"),
        ("metrics.csv", "text/csv"),
        ("roc.png", "image/png"),
    ]
    cli("attachments", "churn/1", "--save", "roc.png", "-o", str(tmp_path))
    assert (tmp_path / "roc.png").read_bytes() == PNG

    assert cli("card", "show", "churn/1") == "# Churn one\n"
    cli("card", "set", "churn/1", "-", stdin="# Churn two\n")
    cli("card", "edit", "churn/1", env={"EDITOR": "sed -i s/two/three/", "VISUAL": ""})
    assert cli("card", "show", "churn/1") == "# Churn three\n"
    history = json.loads(cli("card", "history", "churn/1", "--json"))["items"]
    assert [c["revision"] for c in history] == [1, 2, 3]
    unchanged = cli("card", "edit", "churn/1", env={"EDITOR": "true", "VISUAL": ""})
    assert "unchanged" in unchanged

    cli("comment", "churn/1", "The *ROC* plot looks right.")
    request = json.loads(cli("promote", "churn/1", "--to", "staging", "--json"))["request"]
    cli("comment", "--request", str(request["id"]), "Ship it?")
    shown = json.loads(cli("comments", "churn/1", "--json"))["items"]
    assert [(c["body"], c["request_id"]) for c in shown] == [
        ("The *ROC* plot looks right.", None),
        ("Ship it?", request["id"]),
    ]
    assert "Ship it?" in cli("comments", "--request", str(request["id"]))
    wrong = invoke("comment", "churn/1", url=data, cwd=tmp_path, env={})
    assert wrong.returncode == 1 and "REF TEXT" in wrong.stderr


def test_a_models_history_shows_its_evidence(service: RegistryService) -> None:
    register(service, attachments=[inline("roc.png", PNG)], card="# One")
    service.evidence.comment(ME, model="churn", version=1, body="Seen.")
    kinds = [e.kind for e in service.lifecycle.history(ME, "churn")]
    assert kinds == [
        "version.registered",
        "version.attached",
        "version.card_edited",
        "comment.added",
    ]
