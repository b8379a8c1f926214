"""The client works without the server's stack: a serving image installs `modelyard` and a
flavor's extra, not FastAPI, uvicorn, SQLAlchemy or psycopg. The SDK and the CLI run here
in processes where every module of the `server` extra fails to import, against a real
server; what needs the server side says which extra to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.config import SERVER_PACKAGES
from tests.conftest import LiveServer

ROOT = Path(__file__).resolve().parent.parent
# Run first in the child: any import of a server package fails, as if it were not installed.
BLOCK = textwrap.dedent(
    f"""
    import importlib.abc, sys
    BLOCKED = {sorted(SERVER_PACKAGES)!r}

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    """
)


def run_without_server(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )


def cli_without_server(*args: str) -> subprocess.CompletedProcess[str]:
    return run_without_server(
        "import sys; sys.argv = ['modelyard', *sys.argv[1:]]\n"
        "from modelyard.cli import main\n"
        "main()\n",
        *args,
    )


def test_the_clients_own_requirements_are_none_of_the_servers() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    server = {_name(r) for r in project["optional-dependencies"]["server"]}
    assert not names & server
    assert {"fastapi", "uvicorn", "sqlalchemy", "psycopg", "alembic"} <= server
    # What SERVER_PACKAGES blocks covers every distribution of the extra.
    modules = {
        "argon2-cffi": "argon2",
        "markdown-it-py": "markdown_it",
        "python-multipart": "multipart",
        "swagger-ui-py": "swagger_ui",
    }
    shared = {"pydantic"}  # typer, the CLI's, needs it too
    assert {modules.get(n, n.replace("-", "_")) for n in server - shared} <= SERVER_PACKAGES


def _name(requirement: str) -> str:
    for stop in "[<>=!~; ":
        requirement = requirement.split(stop, 1)[0]
    return requirement.lower()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """One backend is enough: what is tested is the client's process."""
    running = LiveServer(tmp_path / "server-data", None)
    running.start()
    yield running
    running.stop()


def test_the_sdk_and_the_cli_work_over_http_without_the_server_stack(
    server: LiveServer, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"light client weights")
    sdk = run_without_server(
        """
        import json, sys
        import modelyard
        with modelyard.connect(sys.argv[1]) as reg:
            v = reg.register("light", sys.argv[2], metrics={"auc": 0.9})
            reg.set_alias("light", "champion", v.version)
            got = reg.download("light@champion", sys.argv[3])
        loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
        print(json.dumps({"version": got.version, "loaded": loaded}))
        """,
        server.url,
        str(model),
        str(tmp_path / "out"),
    )
    assert sdk.returncode == 0, sdk.stderr
    assert json.loads(sdk.stdout) == {"version": 1, "loaded": []}
    assert (tmp_path / "out" / "weights.bin").read_bytes() == b"light client weights"

    shown = cli_without_server("show", "light@champion", "--url", server.url, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["metrics"] == {"auc": 0.9}


def test_what_needs_the_server_side_says_which_extra_to_install(tmp_path: Path) -> None:
    for args in (
        ["serve", "--data-dir", str(tmp_path / "data")],
        ["models", "--url", str(tmp_path / "data")],  # local mode: a registry in a directory
    ):
        done = cli_without_server(*args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "pip install 'modelyard[server]'" in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # nothing half-made
