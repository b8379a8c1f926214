"""The `modelyard` console script end to end: a real server, real subprocesses.

Server starts and interpreter starts are the expensive part, so the README tour and the
user errors against a server share one test (run once per backend by ``live_server``), and
independent invocations run side by side.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import patch

import httpx
import pytest
import typer.main
from rich.text import Text
from typer.testing import CliRunner

import modelyard
from modelyard.cli import output
from modelyard.cli.main import app, is_loopback
from tests.conftest import LiveServer, free_port

_SCRIPT = Path(sys.executable).with_name("modelyard")
MODELYARD = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "modelyard"]
TIMEOUT = 180


@dataclass
class Result:
    args: Sequence[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def ok(self) -> Result:
        assert self.returncode == 0, f"{self.args} -> {self.returncode}\n{self.output}"
        assert "Traceback" not in self.output
        return self


def environment(url: str | None) -> dict[str, str]:
    """The caller's environment, minus anything that would change how output is laid out."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("COLUMNS", "LINES", "MODELYARD_URL", "FORCE_COLOR", "NO_COLOR")
        and k not in ("MODELYARD_TOKEN", "MODELYARD_CONFIG")
    }
    env["TERM"] = "dumb"
    env["MODELYARD_CONFIG"] = os.devnull  # never the developer's saved tokens
    if url is not None:
        env["MODELYARD_URL"] = url
    return env


def run_many(commands: Sequence[Sequence[str]], *, url: str | None, cwd: Path) -> list[Result]:
    """Run several invocations of the CLI at once and wait for all of them."""
    env = environment(url)
    procs = [
        (
            args,
            subprocess.Popen(
                [*MODELYARD, *args],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for args in commands
    ]
    results = []
    for args, proc in procs:
        out, err = proc.communicate(timeout=TIMEOUT)
        results.append(Result(args, proc.returncode, out, err))
    return results


def run(*args: str, url: str | None, cwd: Path) -> Result:
    return run_many([args], url=url, cwd=cwd)[0]


def run_with(
    *args: str, url: str | None, cwd: Path, env: dict[str, str], stdin: str = ""
) -> Result:
    """One invocation with extra environment (a token, a config file) and input."""
    proc = subprocess.run(
        [*MODELYARD, *args],
        cwd=cwd,
        env={**environment(url), **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return Result(args, proc.returncode, proc.stdout, proc.stderr)


def pasted(script: str, *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Shell steps as a person pastes them: bash with -euo pipefail, this venv's console
    script first on PATH, and a trap that stops background jobs (a receiver, a model
    server) however the steps end, so that none holds the output open."""
    trap = "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", trap + script],
        cwd=cwd,
        env={**env, "PATH": f"{_SCRIPT.parent}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def invoke(
    *args: str, url: str | None, cwd: Path, env: dict[str, str] | None = None, stdin: str = ""
) -> Result:
    """One invocation in this process: the app the console script runs, through typer's
    runner, with the environment and working directory ``run`` gives a subprocess. For
    tests of what commands do; an interpreter's start (a second or so here) is tested by
    the tests that run the console script."""
    changes: dict[str, str | None] = {
        name: None for name in ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR", "MODELYARD_TOKEN")
    }
    changes |= {"TERM": "dumb", "MODELYARD_CONFIG": os.devnull, "MODELYARD_URL": url}
    changes |= env or {}
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, list(args), env=changes, input=stdin)
    finally:
        os.chdir(previous)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # What a subprocess would have printed: a test's "no traceback" check must see it.
        stderr += "".join(traceback.format_exception(result.exception))
    return Result(args, result.exit_code, result.stdout, stderr)


def invoke_many(commands: Sequence[Sequence[str]], *, url: str | None, cwd: Path) -> list[Result]:
    return [invoke(*args, url=url, cwd=cwd) for args in commands]


def assert_user_error(result: Result, *, contains: str, single_line: bool = True) -> list[str]:
    """A non-zero exit, exactly one 'error: ...' line on stderr, and no traceback anywhere.

    Progress bars may come before the error line; with ``single_line`` nothing may follow it.
    Returns stderr's lines from the error line on.
    """
    assert result.returncode != 0, result.output
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(starts) == 1, result.stderr
    assert contains in lines[starts[0]], result.stderr
    if single_line:
        assert starts[0] == len(lines) - 1, result.stderr
    assert result.stdout == "", result.stdout
    return lines[starts[0] :]


def tree_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def dead_url() -> str:
    """A loopback URL where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def model_dir(make_tree: Callable[[dict[str, bytes]], Path]) -> Path:
    # Over the 4 MiB progress threshold, so the progress bars run too (on a pipe, not a tty).
    weights = bytes((i * 7919) % 251 for i in range(5_000_000))
    return make_tree(
        {
            "model.onnx": weights,
            "config.json": b'{"threshold": 0.5}\n',
            "assets/vocab.txt": b"a\nb\nc\n",
        }
    )


def test_readme_tour_and_user_errors(live_server: Any, model_dir: Path, tmp_path: Path) -> None:
    url: str = live_server.url
    work = tmp_path / "work"
    work.mkdir()

    def cli(*args: str) -> Result:
        return invoke(*args, url=url, cwd=work)

    first = cli(
        "register",
        "churn",
        str(model_dir),
        "--metric",
        "auc=0.87",
        "--param",
        "max_depth=5",
        "--tag",
        "team=growth",
        "--dataset",
        "customers@2024-w36",
        "--description",
        "Weekly churn model",
    ).ok()
    assert "registered churn/1" in first.stdout
    second = cli("register", "churn", str(model_dir), "-m", "auc=0.84", "-t", "team=growth").ok()
    assert "registered churn/2" in second.stdout
    versions = httpx.get(f"{url}/api/v1/models/churn/versions").json()["items"]
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["manifest_digest"] == versions[1]["manifest_digest"]  # same files
    assert versions[0]["metrics"] == {"auc": 0.84} and versions[0]["params"] == {}

    found = cli("search", 'metrics.auc >= 0.85 and tags.team = "growth"').ok()
    assert "churn/1" in found.stdout
    assert "churn/2" not in found.stdout
    assert "1 version(s)" in found.stderr
    assert "auc=0.87" in found.stdout

    alias = cli("alias", "set", "churn", "champion", "1").ok()
    assert "churn@champion" in alias.stdout and "churn/1" in alias.stdout

    shown = cli("show", "churn@champion").ok()
    for expected in (
        "churn/1",
        "champion",
        "auc=0.87",
        "max_depth=5",
        "team=growth",
        "customers@2024-w36",
        "Weekly churn model",
        "onnx",
        "model.onnx",
        "assets/vocab.txt",
    ):
        assert expected in shown.stdout, (expected, shown.stdout)

    deploy = work / "deploy"
    downloaded = cli("download", "churn@champion", "-o", str(deploy)).ok()
    assert "churn/1" in downloaded.stdout
    assert tree_files(deploy) == tree_files(model_dir)

    # what the README's curl does: the alias resolves over plain HTTP too
    resolved = httpx.get(f"{url}/api/v1/resolve/churn@champion").json()
    assert resolved["reference"] == "churn/1"
    assert resolved["params"] == {"max_depth": "5"}
    assert resolved["dataset"]["name"] == "customers"
    assert resolved["dataset"]["version"] == "2024-w36"
    assert resolved["framework"] == "onnx"
    # The directory declares no environment, and the CLI's own virtualenv is not the model's.
    assert resolved["environment"] is None

    # user errors: one line on stderr, non-zero exit, no traceback, nothing changed
    unknown, bad_filter, bad_metric, bad_pair, no_version, bad_ref = invoke_many(
        [
            ["show", "nope"],
            ["search", "metrics.auc >= "],
            ["register", "churn", str(model_dir), "--metric", "auc=high"],
            ["register", "churn", str(model_dir), "--tag", "novalue"],
            ["alias", "set", "churn", "champion", "9"],
            ["show", "Churn@champion"],
        ],
        url=url,
        cwd=work,
    )
    assert_user_error(unknown, contains="model 'nope' not found")
    # a filter error is one error line plus the filter with a caret under the mistake
    caret = assert_user_error(bad_filter, contains="position 15", single_line=False)
    assert len(caret) == 3, caret
    assert caret[1].strip() == "metrics.auc >=" and caret[2].strip() == "^"
    assert caret[2].index("^") - caret[1].index("m") == 15
    assert_user_error(bad_metric, contains="--metric auc='high'")
    assert_user_error(bad_pair, contains="KEY=VALUE")
    assert_user_error(no_version, contains="churn/9")
    assert_user_error(bad_ref, contains="Churn")

    edited = cli("edit", "churn/2", "--tag", "reviewed=yes", "--untag", "team").ok()
    assert "churn/2" in edited.stdout
    assert httpx.get(f"{url}/api/v1/resolve/churn/2").json()["tags"] == {"reviewed": "yes"}

    verified = cli("journal", "verify").ok()
    # model created, two versions, the alias, the edit: the failed commands wrote nothing
    assert "journal intact: 5 events" in verified.stdout


def test_in_process_mode_without_a_server(model_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    # MODELYARD_URL points at nothing: --url with a directory must win and need no server
    env_url = dead_url()

    def cli(*args: str) -> Result:
        return invoke(*args, "--url", "./registry", url=env_url, cwd=work)

    registered = cli("register", "churn", str(model_dir), "-m", "auc=0.9", "--no-capture").ok()
    assert "registered churn/1" in registered.stdout
    assert (work / "registry").is_dir()

    shown = json.loads(cli("show", "churn", "--json").ok().stdout)
    assert shown["reference"] == "churn/1"
    assert shown["metrics"] == {"auc": 0.9}
    assert shown["source"] is None and shown["environment"] is None  # --no-capture
    assert sorted(f["path"] for f in shown["files"]) == sorted(tree_files(model_dir))

    out = work / "out"
    cli("download", "churn/1", "-o", str(out)).ok()
    assert tree_files(out) == tree_files(model_dir)

    searched, verified = invoke_many(
        [
            ["search", "metrics.auc > 0.5", "--json", "--url", "./registry"],
            ["journal", "verify", "--url", "./registry"],
        ],
        url=env_url,
        cwd=work,
    )
    assert [v["reference"] for v in json.loads(searched.ok().stdout)["items"]] == ["churn/1"]
    assert "journal intact: 2 events" in verified.ok().stdout


def test_server_not_running(model_dir: Path, tmp_path: Path) -> None:
    url = dead_url()
    results = run_many(
        [
            ["show", "churn@champion"],
            ["register", "churn", str(model_dir), "--no-capture"],
            ["journal", "verify"],
        ],
        url=url,
        cwd=tmp_path,
    )
    for result in results:
        assert_user_error(result, contains="cannot reach Modelyard", single_line=False)
        assert url in result.stderr.replace("\n", "")


def test_server_not_running_error_is_one_line(tmp_path: Path) -> None:
    result = run("show", "churn", url=dead_url(), cwd=tmp_path)
    assert_user_error(result, contains="cannot reach Modelyard", single_line=True)


def _command_paths() -> tuple[list[list[str]], list[list[str]]]:
    """Every (sub)command as argument lists: (leaf commands, groups with [] the top level)."""
    leaves: list[list[str]] = []
    groups: list[list[str]] = [[]]

    def walk(command: object, path: list[str]) -> None:
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            if getattr(sub, "commands", None) is not None:
                groups.append([*path, name])
                walk(sub, [*path, name])
            else:
                leaves.append([*path, name])

    walk(typer.main.get_command(app), [])
    return leaves, groups


def help_of(path: list[str]) -> str:
    """`modelyard PATH --help`, rendered in-process (the same Typer app the script runs)."""
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0, (path, result.output)
    assert "Traceback" not in result.output
    return result.output


def test_a_missing_file_is_named_as_the_shell_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.pkl"
    env = {"COLUMNS": "200", "TERM": "dumb"}
    osv = ["advisories", "check", "--osv", str(missing), "--package", "numpy==2.0.0"]
    for args in (["scan", str(missing)], osv):
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code != 0, result.output
        assert f"{missing}: no such file or directory" in result.output, result.output
        assert "Errno" not in result.output and "Traceback" not in result.output


def test_help_of_every_command() -> None:
    leaves, groups = _command_paths()
    expected = {"serve", "register", "show", "resolve", "download", "search", "edit"}
    assert expected <= {" ".join(p) for p in leaves}
    assert {"alias set", "alias delete", "journal verify"} <= {" ".join(p) for p in leaves}
    for path in leaves:
        text = help_of(path)
        assert "Usage:" in text
        assert "Example" in text, (path, text)
        example = text[text.index("Example") :].replace("\n", " ")
        assert f"modelyard {' '.join(path)}" in example, (path, text)
    for path in groups:
        text = help_of(path)
        for child in [p[-1] for p in leaves + groups if p[:-1] == path and p != path]:
            assert child in text, (path, child)


def test_help_through_the_console_script(tmp_path: Path) -> None:
    top, register = run_many([["--help"], ["register", "--help"]], url=None, cwd=tmp_path)
    for name in ("register", "search", "download", "alias", "journal", "serve"):
        assert name in top.ok().stdout
    assert "Example" in register.ok().stdout
    assert "--metric" in register.stdout


def test_help_of_every_group_has_an_example() -> None:
    _, groups = _command_paths()
    for path in groups:
        assert "Example" in help_of(path), path


def test_register_help_shows_the_dataset_syntax() -> None:
    assert "NAME[@VERSION]" in help_of(["register"])


def test_console_script_is_installed() -> None:
    assert _SCRIPT.exists() or shutil.which("modelyard"), "the modelyard console script is missing"


def test_files_the_user_names_fail_with_one_line(model_dir: Path, tmp_path: Path) -> None:
    def cli(*args: str) -> Result:
        return invoke(*args, "--url", "./registry", url=dead_url(), cwd=tmp_path)

    missing = cli(
        "register", "churn", str(model_dir), "--no-capture", "--description-file", "nope.md"
    )
    assert_user_error(missing, contains="nope.md")
    cli("register", "churn", str(model_dir), "--no-capture").ok()
    (tmp_path / "in-the-way").write_text("a file, not a directory")
    blocked = cli("download", "churn/1", "-o", "in-the-way")
    assert_user_error(blocked, contains="in-the-way")


def test_shared_server_start_rules_login_and_a_ci_token(
    tmp_path: Path, database_url: str | None, model_dir: Path
) -> None:
    """Loopback with nobody configured is local mode; any other address needs an admin."""
    data = tmp_path / "shared"
    local = LiveServer(data, database_url)
    local.start()
    try:
        whoami = httpx.get(f"{local.url}/api/v1/whoami").json()
        assert (whoami["local"], whoami["registry_role"]) == (True, "admin")
    finally:
        local.stop()

    db = ["--data-dir", str(data)] + (["--database-url", database_url] if database_url else [])
    refused = run(
        "serve", "--host", "0.0.0.0", "--port", str(free_port()), *db, url=None, cwd=tmp_path
    )
    assert refused.returncode == 1 and "Traceback" not in refused.output
    assert "modelyard admin create NAME" in refused.stderr

    created = run("admin", "create", "alice", *db, url=None, cwd=tmp_path).ok()
    admin_token = created.stdout.strip()
    assert admin_token.startswith("myd_") and len(created.stdout.splitlines()) == 1

    server = LiveServer(data, database_url, host="0.0.0.0")
    server.start()
    try:
        response = httpx.get(f"{server.url}/api/v1/models")
        assert response.status_code == 401 and "Bearer" in response.headers["www-authenticate"]
        config = tmp_path / "config" / "modelyard.json"
        env = {"MODELYARD_CONFIG": str(config)}
        url = server.url
        invoke("login", "--token", "-", url=url, cwd=tmp_path, env=env, stdin=admin_token).ok()
        assert config.stat().st_mode & 0o777 == 0o600
        assert (
            "alice (user), registry-wide role: admin"
            in invoke("whoami", url=url, cwd=tmp_path, env=env).ok().stdout
        )

        # The README's shared-server steps: a team, a service account, its CI token.
        for args in (
            ("teams", "create", "risk"),
            ("users", "create", "bob"),
            ("teams", "add", "risk", "bob"),
            ("service-accounts", "create", "ci-churn"),
            ("grant", "contributor", "--model", "churn", "--service-account", "ci-churn"),
            ("grant", "viewer", "--team", "risk"),
        ):
            invoke(*args, url=url, cwd=tmp_path, env=env).ok()
        made = invoke(
            "tokens",
            "create",
            "--for",
            "ci-churn",
            "--model",
            "churn",
            "--expires",
            "90d",
            url=url,
            cwd=tmp_path,
            env=env,
        ).ok()
        ci = {"MODELYARD_TOKEN": made.stdout.strip(), "MODELYARD_CONFIG": os.devnull}
        invoke("register", "churn", str(model_dir), url=url, cwd=tmp_path, env=ci).ok()
        denied = invoke("register", "fraud", str(model_dir), url=url, cwd=tmp_path, env=ci)
        assert_user_error(denied, contains="model 'fraud' not found")
        protected = invoke("alias", "set", "churn", "champion", "1", url=url, cwd=tmp_path, env=ci)
        assert_user_error(protected, contains="alias.set_protected needs maintainer")
        listing = invoke("permissions", "churn", url=url, cwd=tmp_path, env=env).ok().stdout
        assert "ci-churn" in listing and "contributor" in listing and "risk" in listing
        journal = httpx.get(
            f"{url}/api/v1/events?limit=1000", headers={"Authorization": f"Bearer {admin_token}"}
        ).json()["items"]
        registered = [e for e in journal if e["kind"] == "version.registered"]
        assert [(e["actor"], e["token_id"]) for e in registered] == [
            ("ci-churn", ci["MODELYARD_TOKEN"].split("_")[1])
        ]
        bad = invoke("whoami", url=url, cwd=tmp_path, env={"MODELYARD_TOKEN": "myd_nope"})
        assert_user_error(bad, contains="malformed")
    finally:
        server.stop()
    logged = (
        server.process.stderr.read().decode() if server.process and server.process.stderr else ""
    )
    assert admin_token not in logged and ci["MODELYARD_TOKEN"] not in logged


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("models.example.com", False),
    ],
)
def test_which_bind_addresses_count_as_this_machine_only(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_blocks(heading: str) -> list[str]:
    """The ```sh blocks of one README section, as a newcomer would paste them."""
    text = README.read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```sh\n")[1:]]


def test_readme_shared_server_and_churn_story_run_verbatim(tmp_path: Path) -> None:
    """The README's shared-server commands and the churn story, pasted into bash, on the
    README's data directory (the story's steps run on PostgreSQL in the API, SDK and CLI
    tests; pasted, they take 20 s per database)."""
    work = tmp_path / "clone"
    (work / "model_dir").mkdir(parents=True)
    (work / "model_dir" / "model.onnx").write_bytes(b"onnx weights" * 1000)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "model"]):
        subprocess.run([*git, *args], cwd=work, check=True)
    data = tmp_path / "shared-data"
    created = run("admin", "create", "alice", "--data-dir", str(data), url=None, cwd=work)
    admin_token = created.ok().stdout.strip()
    server = LiveServer(data, None)
    server.start()
    try:
        shared = readme_blocks("Running a shared server")
        story = readme_blocks("Promotion, approvals and rollback: the churn story")
        assert len(shared) == 3 and len(story) == 1
        # What `modelyard login` saved, in the README, is the admin's token.
        env = {**environment(server.url), "MODELYARD_TOKEN": admin_token}
        done = pasted(shared[2] + story[0], cwd=work, env=env)
    finally:
        server.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert (work / "ci.token").stat().st_mode & 0o777 == 0o600  # a secret, for you alone
    lines = done.stdout.splitlines()
    resolved = [line.split()[0] for line in lines if re.match(r"churn/\d+ sha256:", line)]
    # after the approval, after the rollback, and as of Tuesday noon
    assert resolved == ["churn/2", "churn/1", "churn/2"], done.stdout
    assert "churn@production is churn/1 again" in done.stdout
    assert "request 1: churn/2 → production" in done.stdout
    assert "password set for bob" in done.stdout


# -- the CLI in scripts: --json everywhere, nothing cut on a pipe --------------------------------

# Commands that print nothing a script would parse, and why.
PRINT_NO_JSON = {"serve": "runs the server; it logs to stderr"}


def test_help_paragraphs_are_wrapped_by_the_terminal_not_the_source() -> None:
    """Docstrings break their lines near 90 columns, and typer's rich mode keeps breaks: at
    80 columns a sentence would break twice, a word or two left on a line of its own."""
    leaves, groups = _command_paths()
    broken = []
    for path in leaves + groups:
        shown = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"}).output
        description = shown.split("╭")[0].splitlines()
        for line, after in itertools.pairwise(description):
            continued = after.startswith(" ") and not after.startswith("   ")
            fragment = 0 < len(line.strip()) < 40 and not line.strip().endswith(":")
            if fragment and continued and after.strip()[:1].islower():
                broken.append(f"{' '.join(path)}: {line.strip()!r} / {after.strip()!r}")
    assert broken == []


def test_every_command_that_prints_has_json() -> None:
    """Walks the whole command tree, so a command added without --json fails here."""
    leaves, _ = _command_paths()
    root = typer.main.get_command(app)
    lacking = []
    for path in leaves:
        command: Any = root
        for name in path:
            command = command.commands[name]
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        if "--json" not in options and " ".join(path) not in PRINT_NO_JSON:
            lacking.append(" ".join(path))
    assert lacking == [], f"commands that print without --json: {lacking}"
    assert set(PRINT_NO_JSON) <= {" ".join(p) for p in leaves}  # no stale exemptions


LONG = "a-rather-long-model-name-that-scripts-pass-around"
METRICS = {
    "auc": 0.998,
    "f1": 0.91,
    "logloss": 0.0421,
    "precision": 0.93,
    "recall": 0.89,
    "val/auc": 0.997,
    "train:accuracy": 0.999,
}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_output_for_scripts_and_json_on_every_command(
    live_server: LiveServer, make_tree: Callable[[dict[str, bytes]], Path], tmp_path: Path
) -> None:
    url = live_server.url
    env = {"MODELYARD_CONFIG": os.devnull, "COLUMNS": "80", "FORCE_COLOR": None}
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(app, [*args, "--url", url], env=env)
        assert result.exit_code == 0, (args, result.output)
        return result.stdout

    def cli_json(*args: str) -> Any:
        return json.loads(cli(*args, "--json"))

    model = make_tree({"model.bin": b"weights"})
    metrics = [f"--metric={k}={v}" for k, v in METRICS.items()]
    for _ in range(2):
        cli("register", LONG, str(model), *metrics, "--no-capture")
    promoted = cli_json("promote", f"{LONG}/1", "--to", "production", "--override", "first")
    assert promoted["status"] == "executed" and promoted["version"]["stage"] == "production"

    # resolve: reference and digest on one line however long, so `read REF DIGEST` works
    line = cli("resolve", f"{LONG}@production")
    ref, digest = line.split()
    assert line == f"{ref} {digest}\n" and ref == f"{LONG}/1"
    resolved = cli_json("resolve", f"{LONG}@production")
    assert (resolved["reference"], resolved["manifest_digest"]) == (ref, digest)

    # versions: every metric whole, on the row of its version, with the stage
    rows = {r.split()[1]: r for r in cli("versions", LONG).splitlines() if f"{LONG}/" in r}
    assert set(rows) == {f"{LONG}/1", f"{LONG}/2"}, rows
    for reference, stage in ((f"{LONG}/1", "production"), (f"{LONG}/2", "development")):
        assert stage in rows[reference].split()
        for key, value in METRICS.items():
            assert f"{key}={value:g}" in rows[reference].split(), (key, rows[reference])
        assert "…" not in rows[reference] and "more)" not in rows[reference]

    # on a terminal the table fits, wraps between pairs and says how many it left out
    with modelyard.connect(url) as reg:
        page = reg.versions(LONG)
    screen = _Terminal()
    terminal = output._Console(file=screen, width=120)
    with patch.object(output, "console", terminal):
        terminal.print(output.versions_table(page.items))
        cell = output.pairs(METRICS)
    assert cell == "auc=0.998 f1=0.91 logloss=0.0421 precision=0.93 (+3 more)"
    shown = screen.getvalue()
    assert max(map(len, Text.from_ansi(shown).plain.splitlines())) <= 120, shown
    assert shown.count("(+3") == 2, shown
    for pair in ("auc=0.998", "f1=0.91", "logloss=0.0421"):
        assert pair in shown, (pair, shown)  # the first pairs, never split

    # --json on the commands that lacked it: resolve (above), promote (above), approve,
    # alias list, download, edit, rollback
    request = cli_json("promote", f"{LONG}/2", "--to", "production", "--comment", "weekly")
    assert request["status"] == "open" and request["request"]["to_stage"] == "production"
    approved = cli_json("approve", str(request["request"]["id"]), "--comment", "ok")
    assert approved["status"] == "executed" and approved["id"] == request["request"]["id"]
    assert cli("resolve", f"{LONG}@production").split()[0] == f"{LONG}/2"
    rolled = cli_json("rollback", LONG, "--stage", "production", "--comment", "back")
    assert (rolled["reference"], rolled["stage"]) == (f"{LONG}/1", "production")

    alias = cli_json("alias", "set", LONG, "champion", "2")
    assert alias["reference"] == f"{LONG}/2" and "champion" in alias["aliases"]
    assert cli_json("alias", "list", LONG) == {
        "items": [{"alias": "champion", "version": 2, "reference": f"{LONG}/2"}]
    }
    edited = cli_json("edit", f"{LONG}/2", "--tag", "reviewed=yes")
    assert edited["tags"] == {"reviewed": "yes"}
    out = tmp_path / "deploy"
    downloaded = cli_json("download", f"{LONG}@champion", "-o", str(out))
    assert downloaded["directory"] == str(out)
    assert downloaded["version"]["reference"] == f"{LONG}/2"
    assert (out / "model.bin").read_bytes() == b"weights"
    deleted = cli_json("alias", "delete", LONG, "champion")
    assert deleted == {"model": LONG, "alias": "champion", "deleted": True}
    report = cli_json("journal", "verify")
    assert report["ok"] is True and report["events"] > 0

    # and through a real pipe, as a shell script reads it
    script = (
        f'modelyard resolve {LONG}@production | {{ read -r REF DIGEST; echo "$REF|$DIGEST"; }}\n'
        f"modelyard versions {LONG} | grep -c 'val/auc=0.997 '\n"
    )
    piped = pasted(script, cwd=tmp_path, env=environment(url))
    assert piped.returncode == 0, piped.stdout + piped.stderr
    first, count = piped.stdout.splitlines()
    assert first == f"{LONG}/1|{digest}"
    assert count == "2"


def readme_code(heading: str, language: str = "sh") -> list[str]:
    """The code blocks of one README section in one language."""
    text = README.read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split(f"```{language}\n")[1:]]


def test_readme_tour_runs_verbatim(tmp_path: Path) -> None:
    """The five-minute tour, shell and Python, pasted as a newcomer would, on a server at
    another port than 8080: only the one line that says where the server is changes."""
    # Like `make serve`: webhooks may go to receivers on this machine.
    server = LiveServer(tmp_path / "data", None, env={"MODELYARD_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"})
    server.start()
    receiver_port = free_port()
    try:
        (shell,) = readme_code("A five-minute tour")
        (python,) = readme_code("A five-minute tour", "python")
        assert shell.count("127.0.0.1:8080") == 1  # in the export only: the rest follow it
        assert "8080" not in python
        script = shell.replace("http://127.0.0.1:8080", server.url)
        script = script.replace(". .venv/bin/activate\n", "")  # the test's venv is on PATH
        script = script.replace("127.0.0.1:8000", f"127.0.0.1:{receiver_port}")
        # Delivery is asynchronous: before reading the receiver's log, wait (with a deadline)
        # until the alias's event has reached it, as a newcomer would look again.
        arrived = 'timeout 30 sh -c "until grep -q alias.set webhook.log; do sleep 0.05; done"'
        script = script.replace("cat webhook.log", f"{arrived}; cat webhook.log")
        shutil.copytree(README.parent / "examples", tmp_path / "examples")
        env = {**environment(None), "PORT": str(receiver_port)}
        tour = pasted(script + f"python - <<'PYTHON'\n{python}PYTHON\n", cwd=tmp_path, env=env)
    finally:
        server.stop()
    assert tour.returncode == 0, tour.stdout + tour.stderr
    out = tour.stdout
    # model created, two versions, the alias
    assert "alias.set churn@champion" in out  # the webhook, signed and verified
    for expected in ("registered churn/1", "registered churn/2", "journal intact: 5 events"):
        assert expected in out, (expected, out)
    # curl's answer, then what the Python part prints
    rest = out[out.index("\n{") + 1 :]
    resolved, end = json.JSONDecoder().raw_decode(rest)
    assert resolved["reference"] == "churn/1"  # the alias, over plain HTTP
    # (between them, the webhook's deliveries and what its receiver printed)
    assert rest[end:].strip().splitlines()[-3:] == ["{'auc': 0.88}", "churn/3 0.88", "churn/1 0.87"]
    assert tree_files(tmp_path / "deploy") == tree_files(tmp_path / "model_dir")


def test_readme_serving_tour_runs_verbatim(tmp_path: Path) -> None:
    """log_model, load_model, then serve-model following iris@production through a
    promotion and a rollback, and a package: the README's Python and shell as pasted, on
    free ports (only where the server and the model server listen changes)."""
    pytest.importorskip("sklearn")
    server = LiveServer(tmp_path / "data", None)
    server.start()
    port = free_port()
    try:
        heading = "From training to serving: log_model, load_model, serve-model"
        (python,) = readme_code(heading, "python")
        (shell,) = readme_code(heading)
        assert "9000" not in shell.replace("localhost:9000", "").replace("--port 9000", "")
        script = shell.replace("localhost:9000", f"localhost:{port}")
        script = script.replace("--port 9000", f"--port {port}")
        # Its waits for the model server end by TIMEOUT at the latest.
        python_then_shell = f"python - <<'PYTHON'\n{python}PYTHON\n{script}"
        tour = pasted(python_then_shell, cwd=tmp_path, env=environment(server.url))
    finally:
        server.stop()
    assert tour.returncode == 0, tour.stdout + tour.stderr
    lines = tour.stdout.splitlines()
    assert lines[0].startswith("logged iris/1 {'accuracy': 0.9")
    assert lines[1].startswith("logged iris/2 {'accuracy': 0.6")
    assert lines[2] == "iris/1 [0 1 2]"  # load_model's predictor, by its signature
    answers = [json.loads(line) for line in lines if line.startswith('{"predictions"')]
    assert [(a["version"], a["predictions"]) for a in answers] == [(1, [2]), (2, [1]), (1, [2])]
    log = (tmp_path / "serve.log").read_text()
    assert re.findall(r"serve-model: serving .* version=(\d+)", log) == ["1", "2", "1"]
    assert (tmp_path / "iris-pkg" / "Dockerfile").is_file()


def test_make_serve_takes_a_port() -> None:
    root = README.parent
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "MAKEFLAGS", "MFLAGS")}

    def dry_run(*args: str) -> str:
        done = subprocess.run(
            ["make", "-n", "serve", *args], cwd=root, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "modelyard serve --port 8090" in dry_run("PORT=8090")
    assert "modelyard serve --port 8080" in dry_run()


def test_gitignore_covers_what_the_readme_writes(tmp_path: Path) -> None:
    """Every file and directory the README's steps create stays out of git."""
    text = README.read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```sh\n")[1:]]
    files: set[str] = set()
    directories = {"modelyard-data"}  # make serve's default
    for block in blocks:
        files |= set(re.findall(r"> ([\w./-]+)", block))  # redirections
        directories |= set(re.findall(r"(?:mkdir -p|-o|--data-dir) (?:\./)?([\w-]+)", block))
    assert {"alice.token", "ci.token", "policy.yaml"} <= files, files
    assert {"shared-data", "deploy", "model_dir"} <= directories, directories
    shutil.copy(README.parent / ".gitignore", tmp_path / ".gitignore")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    for path in files | {f"{d}/file" for d in directories}:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert status == ["?? .gitignore"], status
