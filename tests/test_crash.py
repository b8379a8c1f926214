"""kill -9 at any moment of a registration leaves the whole version or none of it.

A real server process registers versions for a client until it is killed with SIGKILL
at a random moment (seeded, so a failure can be replayed); after a restart on the same
data, every acknowledged version must be whole, every version present must be whole,
numbers must be gapless and the journal must verify.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import threading
from pathlib import Path

import pytest

import modelyard
from modelyard.domain.errors import ModelyardError
from tests.conftest import LiveServer

KILLS = 4


def _register_until_failure(
    url: str, work: Path, acknowledged: list[int], going: threading.Event, stop: threading.Event
) -> None:
    rng = random.Random(os.getpid())
    with modelyard.connect(url) as reg:
        i = 0
        while not stop.is_set():
            i += 1
            # A fresh directory per attempt: a round that acknowledged nothing (a slow
            # machine, an early kill) must not collide with the previous round's names.
            model_dir = Path(tempfile.mkdtemp(prefix=f"m{i}-", dir=work))
            (model_dir / "weights.bin").write_bytes(
                rng.randbytes(rng.choice([10, 300_000, 3_000_000]))
            )
            (model_dir / "config.json").write_bytes(rng.randbytes(64))
            try:
                version = reg.register("crashy", model_dir, metrics={"auc": rng.random()})
            except ModelyardError:
                return
            acknowledged.append(version.version)
            going.set()


@pytest.mark.parametrize("seed", [7])
def test_kill_9_during_registrations_leaves_whole_versions_only(
    live_server: LiveServer, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    acknowledged: list[int] = []
    for _ in range(KILLS):
        going, stop = threading.Event(), threading.Event()
        worker = threading.Thread(
            target=_register_until_failure,
            args=(live_server.url, tmp_path, acknowledged, going, stop),
        )
        before = len(acknowledged)
        worker.start()
        # Once it is going (a loaded machine takes seconds for the first registration, which
        # captures the environment), crash the server somewhere inside a registration.
        assert going.wait(120), "no registration was acknowledged in two minutes"
        stop.wait(rng.uniform(0.3, 1.5))
        live_server.kill()
        stop.set()
        worker.join(timeout=60)
        assert not worker.is_alive()
        live_server.start()
        assert len(acknowledged) >= before

    assert acknowledged, "no registration completed between the crashes: the test proved nothing"
    with modelyard.connect(live_server.url) as reg:
        versions = list(reg.versions("crashy", limit=1000).items)
        numbers = sorted(v.version for v in versions)
        assert numbers == list(range(1, len(numbers) + 1)), "version numbers must be gapless"
        assert set(acknowledged) <= set(numbers), "an acknowledged version was lost"
        for version in versions:
            out = tmp_path / "check" / str(version.version)
            reg.download(version, out)  # verifies every file's sha256
            assert {f.path for f in version.files} == {"weights.bin", "config.json"}
        report = reg.verify_journal()
        assert report.ok, report
        registered = [e for e in reg.events(limit=1000) if e.kind == "version.registered"]
        assert len(registered) == len(numbers)

    blob_root = live_server.data_dir / "blobs" / "sha256"
    for blob in blob_root.glob("*/*"):
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, "a torn blob is visible"
