"""``modelyard watch`` against a real server process, on SQLite and PostgreSQL: the
command runs once per change across a kill -9 of the watch and a restart of the server,
failures are retried, placeholders never meet a shell, and a server told to stop ends
its streams instead of waiting for them."""

from __future__ import annotations

import json
import queue
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import modelyard
from tests.conftest import LiveServer
from tests.test_cli import MODELYARD, environment

DEADLINE = 60.0
Tree = Callable[[dict[str, bytes]], Path]

# Appends its arguments, one line per run, to the file named first.
RECORD = "import sys; open(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + '\\n')"


class Watch:
    """A ``modelyard watch --json`` process, its lines read as they come."""

    def __init__(self, url: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [*MODELYARD, "watch", *args, "--json"],
            env=environment(url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        stdout = self.process.stdout
        threading.Thread(
            target=lambda: [self.lines.put(line) for line in stdout], daemon=True
        ).start()

    def next(self) -> dict[str, Any]:
        """The next change it reports, waited for with a deadline."""
        try:
            line = self.lines.get(timeout=DEADLINE)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"no line from watch: {self.stderr()}") from None
        answer: dict[str, Any] = json.loads(line)
        return answer

    def kill(self) -> None:
        """SIGKILL: no clean-up, like a crash or an OOM kill."""
        self.process.kill()
        self.process.wait()

    def stderr(self) -> str:
        return self.process.stderr.read() if self.process.stderr else ""


@pytest.fixture
def start_watch() -> Iterator[Callable[..., Watch]]:
    """``start_watch(url, *args)``: a watch process, killed at the end whatever happens."""
    started: list[Watch] = []

    def start(url: str, *args: str) -> Watch:
        started.append(Watch(url, *args))
        return started[-1]

    yield start
    for watch in started:
        watch.kill()


def once(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MODELYARD, "watch", *args, "--once", "--json"],
        env=environment(url),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )


def test_watch_runs_once_per_change_across_restarts(
    live_server: LiveServer, make_tree: Tree, tmp_path: Path, start_watch: Callable[..., Watch]
) -> None:
    url = live_server.url
    reg = modelyard.connect(url)
    digests = {}
    for n in (1, 2, 3):
        version = reg.register("churn", make_tree({"model.bin": f"weights {n}".encode()}))
        digests[n] = version.manifest_digest
    reg.set_alias("churn", "champion", 1)
    log = tmp_path / "deployed.log"
    command = shlex.join(
        [sys.executable, "-c", RECORD, str(log), "{model}", "{version}", "{digest}"]
    )
    state = tmp_path / "watch.state"
    args = ("churn@champion", "--exec", command, "--state-file", str(state))

    watch = start_watch(url, *args)
    assert watch.next() == {
        "reference": "churn@champion",
        "model": "churn",
        "version": 1,
        "digest": digests[1],
        "status": "ok",
        "attempts": 1,
        "exit_code": 0,
    }
    reg.set_alias("churn", "champion", 2)
    assert watch.next()["version"] == 2
    watch.kill()
    reg.set_alias("churn", "champion", 3)  # while nobody watches
    watch = start_watch(url, *args)
    assert watch.next()["version"] == 3  # caught up at start, and only that
    watch.kill()
    assert log.read_text().splitlines() == [f"churn {n} {digests[n]}" for n in (1, 2, 3)]
    # Nothing moved since: a restart repeats nothing.
    again = once(url, *args)
    assert (again.returncode, again.stdout) == (0, ""), again.stderr
    assert "handled already" in again.stderr

    # The server dies and comes back on its port: the watch reconnects and resumes.
    watch = start_watch(url, *args)
    reg.set_alias("churn", "champion", 1)
    assert watch.next()["version"] == 1
    live_server.kill()
    live_server.start(port=live_server.port)
    reg.set_alias("churn", "champion", 2)
    assert watch.next()["version"] == 2
    # Told to stop, the server ends the watch's stream rather than wait an hour for it
    # (plain uvicorn waits for every response in progress); it exits by the signal.
    assert live_server.process is not None
    live_server.process.terminate()
    assert live_server.process.wait(timeout=DEADLINE) == -signal.SIGTERM
    watch.kill()
    assert [line.split()[1] for line in log.read_text().splitlines()] == ["1", "2", "3", "1", "2"]
    reg.close()


def test_watch_retries_a_failing_command_then_stops_or_skips(
    sqlite_server: LiveServer, make_tree: Tree, tmp_path: Path
) -> None:
    """Retries, failures and placeholders are the watch's own: one database is enough."""
    url = sqlite_server.url
    with modelyard.connect(url) as reg:
        reg.register("churn", make_tree({"model.bin": b"weights"}))
    marker = tmp_path / "failed-once"
    flaky = (
        "import pathlib, sys; m = pathlib.Path(sys.argv[1]);"
        " sys.exit(0) if m.exists() else (m.touch(), sys.exit(3))"
    )
    command = shlex.join([sys.executable, "-c", flaky, str(marker)])
    state = tmp_path / "flaky.state"
    retried = once(
        url, "churn", "--exec", command, "--state-file", str(state), "--retry-delay", "0"
    )
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout) | {"digest": "-"} == {
        "reference": "churn",
        "model": "churn",
        "version": 1,
        "digest": "-",
        "status": "ok",
        "attempts": 2,
        "exit_code": 0,
    }
    assert "exit status 3 (attempt 1 of 4); again in 0 s" in retried.stderr

    failing = shlex.join([sys.executable, "-c", "raise SystemExit(5)"])
    broken = tmp_path / "broken.state"
    base = ("churn", "--exec", failing, "--state-file", str(broken), "--retry-delay", "0")
    stopped = once(url, *base, "--retries", "1")
    assert stopped.returncode == 1
    assert json.loads(stopped.stdout)["status"] == "failed"
    assert json.loads(stopped.stdout)["attempts"] == 2
    assert not broken.exists()  # a restart tries that version again
    skipped = once(url, *base, "--retries", "0", "--on-failure", "skip")
    assert skipped.returncode == 0
    assert json.loads(skipped.stdout)["status"] == "skipped"
    assert "handled already" in once(url, *base).stderr  # recorded: not run again

    # Placeholders are checked before anything runs, and each fills one argument.
    for wrong in ("echo {oops}", "echo {model!r}", "echo {model:{oops}}", "echo {"):
        refused = once(url, "churn", "--exec", wrong, "--state-file", str(tmp_path / "u"))
        assert refused.returncode == 1 and "error: --exec: " in refused.stderr, wrong
    spaced = tmp_path / "argv.json"
    dump = "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"
    argv_command = shlex.join(
        [sys.executable, "-c", dump, str(spaced), "{reference};ls", "x{version}y"]
    )
    shown = once(url, "churn", "--exec", argv_command, "--state-file", str(tmp_path / "a"))
    assert shown.returncode == 0, shown.stderr
    assert json.loads(spaced.read_text()) == ["churn/1;ls", "x1y"]
