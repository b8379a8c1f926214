"""A journal that proves its completeness, on SQLite and PostgreSQL: the chain covers every
field readers use, its head and an auditor's checkpoint catch deleted newest events, each
kind of tampering is named, journals of chain version 1 still verify, and the tables are
checked against the state the journal replays to."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from modelyard.domain.access import Caller
from modelyard.domain.errors import InvalidInput
from modelyard.domain.journal import (
    GENESIS_HASH,
    Checkpoint,
    JournalReport,
    event_hash,
    verify_chain,
)
from modelyard.domain.manifest import FileEntry
from modelyard.domain.versions import NewVersion
from modelyard.service import RegistryService
from tests.conftest import LiveServer
from tests.test_cli import Result, invoke

ME = Caller.local_user("tester")


def register(service: RegistryService, content: bytes, model: str = "churn") -> int:
    digest = hashlib.sha256(content).hexdigest()
    spec = NewVersion(files=[FileEntry("model.bin", len(content), digest)], metrics={"auc": 0.9})
    return service.register_version(model, spec, caller=ME, inline={digest: content}).version


def history(service: RegistryService) -> None:
    """Six events: two models created, three registrations, an alias."""
    register(service, b"one")
    register(service, b"two")
    service.set_alias("churn", "champion", 1, caller=ME)
    register(service, b"other", model="fraud")


def verify(service: RegistryService, checkpoint: Checkpoint | None = None) -> JournalReport:
    head = service.journal_head(caller=ME)
    return verify_chain(service.events(caller=ME, limit=1000), head=head, checkpoint=checkpoint)


def sql(service: RegistryService, statement: str, **params: Any) -> None:
    with service.db.engine.begin() as conn:
        conn.execute(text(statement), params)


def test_an_intact_journal_verifies_up_to_its_head(service: RegistryService) -> None:
    history(service)
    head = service.journal_head(caller=ME)
    assert head.seq == 6 and head.hash == service.events(caller=ME, limit=1000)[-1].hash
    assert verify(service) == JournalReport(6, True, head=head)
    assert {e.chain for e in service.events(caller=ME, limit=1000)} == {2}


FORGED_PAYLOAD = json.dumps({"after": 2, "before": None})


@pytest.mark.parametrize(
    ("tamper", "seq", "reason"),
    [
        (f"UPDATE events SET payload = '{FORGED_PAYLOAD}' WHERE seq = 4", 4, "altered"),
        ("UPDATE events SET model = 'fraud' WHERE seq = 4", 4, "altered"),
        ("DELETE FROM events WHERE seq = 6", 6, "the newest 1 event(s) were deleted"),
        ("DELETE FROM events WHERE seq = 3", 3, "event 3 missing"),
    ],
    ids=["payload", "model", "last", "middle"],
)
def test_each_kind_of_tampering_is_detected_and_named(
    service: RegistryService, tamper: str, seq: int, reason: str
) -> None:
    history(service)
    with service.db.engine.begin() as conn:
        conn.exec_driver_sql(tamper)
    report = verify(service)
    assert (report.ok, report.first_broken_seq) == (False, seq)
    assert reason in (report.reason or "")


def test_two_reordered_events_are_named(service: RegistryService) -> None:
    history(service)
    columns = "time_us, actor, kind, subject, payload, prev_hash, hash, token_id, model"
    with service.db.engine.begin() as conn:
        rows = {
            r.seq: r._mapping
            for r in conn.execute(text(f"SELECT seq, {columns} FROM events WHERE seq IN (3, 4)"))
        }
        for seq, other in ((3, 4), (4, 3)):
            values = {k: v for k, v in rows[other].items() if k != "seq"}
            assignments = ", ".join(f"{k} = :{k}" for k in values)
            conn.execute(
                text(f"UPDATE events SET {assignments} WHERE seq = :seq"), {**values, "seq": seq}
            )
    report = verify(service)
    assert (report.ok, report.first_broken_seq) == (False, 3)
    assert "reordered" in (report.reason or "")


def test_a_checkpoint_catches_a_truncation_the_head_was_made_to_agree_with(
    service: RegistryService,
) -> None:
    history(service)
    checkpoint = service.journal_head(caller=ME)
    service.set_alias("churn", "champion", 2, caller=ME)
    assert verify(service, checkpoint).ok  # the journal extends the checkpoint

    # Cut the newest events and move the head back: the chain alone still verifies.
    fifth = service.events(caller=ME, after=4, limit=1)[0]
    sql(service, "DELETE FROM events WHERE seq > 5")
    sql(service, "UPDATE journal_head SET seq = 5, hash = :hash", hash=fifth.hash)
    assert verify(service).ok
    report = verify(service, checkpoint)
    assert (report.ok, report.first_broken_seq) == (False, 6)
    assert "the checkpoint is event 6" in (report.reason or "")

    # Rewrite history before the checkpoint, recomputing every hash after it.
    forged = Checkpoint(5, "f" * 64)
    report = verify(service, forged)
    assert (report.ok, report.first_broken_seq) == (False, 5)
    assert "rewritten" in (report.reason or "")


def test_a_head_that_disagrees_with_the_events_is_named(service: RegistryService) -> None:
    history(service)
    sql(service, "UPDATE journal_head SET hash = :hash", hash="e" * 64)
    report = verify(service)
    assert (report.ok, report.first_broken_seq) == (False, 6)
    assert "head" in (report.reason or "")


def test_journals_of_chain_version_1_still_verify(service: RegistryService) -> None:
    """Rewrite the first events as a registry before chain version 2 wrote them (model not
    hashed, token only when present), then keep going: both versions verify in one chain."""
    history(service)
    prev = GENESIS_HASH
    with service.db.engine.begin() as conn:
        conn.execute(text("UPDATE events SET chain = 1"))
        for row in conn.execute(text("SELECT * FROM events ORDER BY seq")).all():
            digest = event_hash(
                prev,
                seq=row.seq,
                time_us=row.time_us,
                actor=row.actor,
                kind=row.kind,
                subject=row.subject,
                payload=json.loads(row.payload),
                token_id=row.token_id,
                chain=1,
            )
            conn.execute(
                text("UPDATE events SET prev_hash = :prev, hash = :hash WHERE seq = :seq"),
                {"prev": prev, "hash": digest, "seq": row.seq},
            )
            prev = digest
        conn.execute(text("UPDATE journal_head SET hash = :hash"), {"hash": prev})
    service.set_alias("churn", "champion", 2, caller=ME)
    events = service.events(caller=ME, limit=1000)
    assert [e.chain for e in events] == [1] * 6 + [2]
    assert verify(service).ok

    # Version 1 did not cover the model: that is what version 2 is for.
    sql(service, "UPDATE events SET model = 'fraud' WHERE seq = 4")
    assert verify(service).ok
    sql(service, "UPDATE events SET model = 'fraud' WHERE seq = 7")
    assert verify(service).first_broken_seq == 7
    sql(service, "UPDATE events SET model = 'churn' WHERE seq = 7")
    # Nor can a newer event be passed off as an older version.
    sql(service, "UPDATE events SET chain = 1 WHERE seq = 7")
    report = verify(service)
    assert report.first_broken_seq == 7 and "altered" in (report.reason or "")


@pytest.mark.parametrize("text_", ["6", "6:abc", "x:" + "a" * 64, "6:" + "A" * 64, ""])
def test_malformed_checkpoints_are_refused(text_: str) -> None:
    with pytest.raises(InvalidInput, match="SEQ:HASH"):
        Checkpoint.parse(text_)
    assert Checkpoint.parse(" 6:" + "a" * 64 + "\n") == Checkpoint(6, "a" * 64)


# -- the CLI, against a real server -------------------------------------------------------------


def test_cli_head_checkpoint_and_state(
    live_server: LiveServer, make_tree: Callable[[dict[str, bytes]], Path], tmp_path: Path
) -> None:
    url = live_server.url
    model = make_tree({"model.bin": b"weights"})

    def cli(*args: str) -> Result:
        return invoke(*args, url=url, cwd=tmp_path)

    for auc in ("0.8", "0.9"):
        cli("register", "churn", str(model), "-m", f"auc={auc}", "--no-capture").ok()
    cli("alias", "set", "churn", "champion", "1").ok()
    head = cli("journal", "head").ok().stdout.strip()
    as_json = json.loads(cli("journal", "head", "--json").ok().stdout)
    assert head == as_json["checkpoint"] == f"{as_json['seq']}:{as_json['hash']}"
    assert as_json["seq"] == 4  # the model, two versions, the alias
    intact = cli("journal", "verify", "--checkpoint", head, "--state").ok()
    assert "journal intact: 4 events" in intact.stdout and "tables match" in intact.stdout

    engine = create_engine(
        live_server.database_url or f"sqlite:///{live_server.data_dir}/registry.db"
    )
    with engine.begin() as conn:
        ids = dict(conn.execute(text("SELECT number, id FROM versions")).all())
        conn.execute(text("UPDATE aliases SET version_id = :v"), {"v": ids[2]})
        conn.execute(
            text("UPDATE version_metrics SET value = 0.99 WHERE version_id = :v"), {"v": ids[1]}
        )
    tampered = cli("journal", "verify", "--state")
    assert tampered.returncode == 2, tampered.output
    assert "churn@champion version: the journal says 1, the tables say 2" in tampered.output
    assert "churn/1 metrics.auc: the journal says 0.8, the tables say 0.99" in tampered.output
    report = json.loads(cli("journal", "verify", "--state", "--json").stdout)
    assert [(d["row"], d["field"]) for d in report["differences"]] == [
        ("churn/1", "metrics.auc"),
        ("churn@champion", "version"),
    ]

    with engine.begin() as conn:
        conn.execute(text("DELETE FROM events WHERE seq = 4"))
        conn.execute(
            text("UPDATE journal_head SET seq = 3, hash = (SELECT hash FROM events WHERE seq = 3)")
        )
    engine.dispose()
    cli("journal", "verify").ok()  # the head was moved back with the events...
    cut = cli("journal", "verify", "--checkpoint", head)  # ...but the auditor kept one
    assert cut.returncode == 2
    assert "journal broken at event 4" in cut.output and "checkpoint is event 4" in cut.output
    bad = cli("journal", "verify", "--checkpoint", "4")
    assert bad.returncode == 1 and "SEQ:HASH" in bad.output
