"""Schemathesis against a real server: every operation, in local mode on SQLite and with
an admin's token on PostgreSQL. No server errors, and every response (status, content
type, headers, body) as /openapi.json documents it; schema-violating requests refused;
methods a path does not serve answered 405 with Allow.

Each run fuzzes for MODELYARD_FUZZ_SECONDS (default 10; with Schemathesis's start-up and
its coverage phase the two runs take about a minute) from the seed MODELYARD_FUZZ_SEED;
``make fuzz`` runs a long campaign from a random seed.
A failure prints Schemathesis's report, with the seed and a curl command for each case.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import LiveServer, on

FUZZ_SECONDS = os.environ.get("MODELYARD_FUZZ_SECONDS", "10")
# A fixed seed in the suite, so a red run is reproducible and CI does not flip on luck;
# ``make fuzz`` sets MODELYARD_FUZZ_SEED=random for a fresh campaign.
FUZZ_SEED = os.environ.get("MODELYARD_FUZZ_SEED", "20261201")
# positive_data_acceptance expects a 2xx for every schema-valid request, but a valid name
# of a model that does not exist is rightly a 404.
EXCLUDED_CHECKS = "positive_data_acceptance"
# Subscribing resolves the webhook's host (the SSRF check), and a test never resolves a
# real name: the fuzzer's URLs would go to DNS. tests/test_webhooks.py covers the
# operation, with an injected resolver. Without a subscription, the operations on one are
# 404s, which the fuzzer still checks.
EXCLUDED_OPERATIONS = ["--exclude-operation-id", "create_webhook"]


def _admin_token(server: LiveServer) -> str:
    command = [sys.executable, "-m", "modelyard", "admin", "create", "fuzzer"]
    command += ["--data-dir", str(server.data_dir)]
    if server.database_url:
        command += ["--database-url", server.database_url]
    created = subprocess.run(command, capture_output=True, text=True, check=True)
    return created.stdout.strip()


@on("postgresql")
def test_every_operation_keeps_its_documented_contract(
    tmp_path: Path, database_url: str | None
) -> None:
    """On PostgreSQL, the stricter of the two stores (a NUL in a text, an integer out of
    range are refused there, kept by SQLite): the routes and their contract are the same
    on both, and one campaign takes 17 s."""
    # Streams and long polls end within a second: every case Schemathesis makes of them
    # (no `timeout`, a `wait` of 60) still answers, in time for the next.
    server = LiveServer(
        tmp_path / "server-data", database_url, env={"MODELYARD_STREAM_SECONDS": "1"}
    )
    headers = []
    if database_url is not None:  # PostgreSQL: as an admin with a token; SQLite: local mode
        headers = ["--header", f"Authorization: Bearer {_admin_token(server)}"]
    server.start()
    try:
        command = [str(Path(sys.executable).parent / "schemathesis"), "run"]
        command += [f"{server.url}/openapi.json", *headers]
        command += ["--checks", "all", "--exclude-checks", EXCLUDED_CHECKS, *EXCLUDED_OPERATIONS]
        command += ["--max-time", FUZZ_SECONDS, "--workers", "1", "--no-shrink"]
        if FUZZ_SEED != "random":
            command += ["--seed", FUZZ_SEED]
        env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""}
        result = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, env=env, check=False
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5_000:]
