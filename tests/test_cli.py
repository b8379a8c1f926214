"""The `modelyard` console script end to end: a real server, real subprocesses.

Server starts and interpreter starts are the expensive part, so the README tour and the
user errors against a server share one test (run once per backend by ``live_server``), and
independent invocations run side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.main

from modelyard.cli.main import app

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
    }
    env["TERM"] = "dumb"
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


def assert_user_error(result: Result, *, first_line: str, single_line: bool = True) -> None:
    """A non-zero exit, 'error: ...' first on stderr, and no traceback anywhere."""
    assert result.returncode != 0, result.output
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert lines, result.output
    assert lines[0].startswith("error: "), result.stderr
    assert first_line in lines[0], result.stderr
    assert sum(line.startswith("error:") for line in lines) == 1, result.stderr
    if single_line:
        assert len(lines) == 1, result.stderr


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
        return run(*args, url=url, cwd=work)

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
    assert resolved["environment"]["python"]  # captured automatically

    # user errors: one line on stderr, non-zero exit, no traceback, nothing changed
    unknown, bad_filter, bad_metric, bad_pair, no_version, bad_ref = run_many(
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
    assert_user_error(unknown, first_line="model 'nope' not found")
    # a filter error is one error line plus the filter with a caret under the mistake
    assert_user_error(bad_filter, first_line="position 15", single_line=False)
    caret = bad_filter.stderr.strip().splitlines()
    assert caret[1].strip() == "metrics.auc >=" and caret[2].strip() == "^"
    assert caret[2].index("^") - caret[1].index("m") == 15
    assert_user_error(bad_metric, first_line="--metric auc='high'")
    assert_user_error(bad_pair, first_line="KEY=VALUE")
    assert_user_error(no_version, first_line="churn/9")
    assert_user_error(bad_ref, first_line="Churn", single_line=False)  # long: see the xfail below

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
        return run(*args, "--url", "./registry", url=env_url, cwd=work)

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

    searched, verified = run_many(
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
        assert_user_error(result, first_line="cannot reach Modelyard", single_line=False)
        assert url in result.stderr.replace("\n", "")


@pytest.mark.xfail(
    reason="BUG: cli/output.py errors = Console(stderr=True) wraps at the terminal width"
    " (80 columns on a pipe), so a long 'error:' message such as 'cannot reach Modelyard ...'"
    " is split over two lines",
    strict=True,
)
def test_server_not_running_error_is_one_line(tmp_path: Path) -> None:
    result = run("show", "churn", url=dead_url(), cwd=tmp_path)
    assert_user_error(result, first_line="cannot reach Modelyard", single_line=True)


def _command_paths() -> tuple[list[list[str]], list[list[str]]]:
    """Every (sub)command of the CLI as argument lists: (leaf commands, groups)."""
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


def test_help_of_every_command(tmp_path: Path) -> None:
    leaves, groups = _command_paths()
    expected = {"serve", "register", "show", "resolve", "download", "search", "edit"}
    assert expected <= {" ".join(p) for p in leaves}
    assert {"alias set", "alias delete", "journal verify"} <= {" ".join(p) for p in leaves}

    results = run_many([[*p, "--help"] for p in leaves + groups], url=None, cwd=tmp_path)
    for path, result in zip(leaves + groups, results, strict=True):
        result.ok()
        assert "Usage:" in result.stdout
        if path in leaves:
            assert "Example" in result.stdout, (path, result.stdout)
            assert f"modelyard {' '.join(path)}" in result.stdout.replace("\n", " "), path
        else:
            listed = [p[-1] for p in leaves + groups if p[:-1] == path and p != path]
            for name in listed:
                assert name in result.stdout, (path, name)


@pytest.mark.xfail(
    reason="BUG: cli/main.py register --dataset help 'NAME[@VERSION]' is read as Rich markup"
    " (rich_markup_mode='rich'), so '[@VERSION]' vanishes from --help",
    strict=True,
)
def test_register_help_shows_the_dataset_syntax(tmp_path: Path) -> None:
    result = run("register", "--help", url=None, cwd=tmp_path).ok()
    assert "NAME[@VERSION]" in result.stdout


def test_console_script_is_installed() -> None:
    assert _SCRIPT.exists() or shutil.which("modelyard"), "the modelyard console script is missing"
