"""``modelyard package``: the deployment directory, installed into a fresh virtualenv and
started exactly as its Dockerfile says, serving the version it pinned with no registry;
and what it refuses (no descriptor, a directory in the way, a cache with nothing in it).

There is no network here, so the fresh virtualenv cannot download: it sees this test
environment's packages (a ``.pth`` file) as an image sees its index, and ``pip install
--no-index -r requirements.txt`` must find every pin satisfied there.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import httpx
import pytest
import yaml

import modelyard
from modelyard.flavors import DESCRIPTOR_FILE
from tests.conftest import LiveServer, free_port
from tests.test_cli import MODELYARD, environment, run
from tests.test_delivery import wait_until
from tests.test_serve_model import Trained, publish, records_of, trained  # noqa: F401

pytest.importorskip("sklearn")

DEADLINE = 60.0
PIP = [sys.executable, "-m", "pip"]


def dockerfile_instructions(text: str) -> dict[str, list[str]]:
    """Each instruction of a Dockerfile (continuation lines joined), by keyword."""
    found: dict[str, list[str]] = {}
    for line in text.replace("\\\n", " ").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            found.setdefault(keyword.upper(), []).append(rest.strip())
    return found


def fresh_venv(where: Path) -> Path:
    """A new virtualenv that sees this environment's packages; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site_dir = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    # addsitedir, not a bare path: it runs this environment's own .pth files (editable
    # installs among them), as an installed package would be found.
    (Path(site_dir) / "test-index.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return python


def test_the_package_installs_in_a_fresh_venv_and_serves_its_pinned_version_offline(
    sqlite_server: LiveServer,
    trained: Trained,  # noqa: F811
    tmp_path: Path,
) -> None:
    with modelyard.connect(sqlite_server.url) as reg:
        publish(reg, trained, "churn")  # churn/1 in production, churn/2 logged
        production = reg.resolve("churn@production")
    made = run(
        "package", "churn@production", "-o", "pkg", "--json", url=sqlite_server.url, cwd=tmp_path
    ).ok()
    report = json.loads(made.stdout)
    pinned = f"churn@{production.manifest_digest}"
    assert (report["version"], report["reference"]) == (1, pinned)
    pkg = tmp_path / "pkg"
    assert sorted(p.name for p in pkg.iterdir()) == [
        "Dockerfile",
        "README.md",
        "cache",
        "requirements.txt",
    ]
    assert not list(tmp_path.glob(".pkg.*"))  # the staging directory went

    requirements = (pkg / "requirements.txt").read_text().split()
    assert requirements[0] == f"modelyard[serving]=={modelyard.__version__}"
    for distribution in ("scikit-learn", "skops", "pandas"):  # pandas: fitted on a DataFrame
        assert f"{distribution}=={metadata.version(distribution)}" in requirements

    docker = dockerfile_instructions((pkg / "Dockerfile").read_text())
    assert docker["USER"] == ["modelyard"]  # not root
    assert docker["FROM"] == [f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"]
    assert "pip install --no-cache-dir -r requirements.txt" in docker["RUN"]
    entrypoint = json.loads(docker["ENTRYPOINT"][0])
    assert entrypoint[:4] == ["modelyard", "serve-model", pinned, "--offline"]
    (workdir,) = docker["WORKDIR"]
    health = re.fullmatch(r"(--\S+ )+CMD (\[.*\])", docker["HEALTHCHECK"][0])
    assert health is not None
    healthcheck = json.loads(health.group(2))

    python = fresh_venv(tmp_path / "venv")
    requirements_file = pkg / "requirements.txt"
    installed = subprocess.run(
        [*PIP, "--python", str(python), "install", "--no-index", "-r", str(requirements_file)],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    # The entrypoint as the image runs it: its /app is the package, its `modelyard` the
    # fresh venv's; only the address changes, to a free loopback port.
    port = free_port()
    image_port = entrypoint[entrypoint.index("--port") + 1]

    def in_image(argument: str) -> str:
        if argument == image_port:
            return str(port)
        if argument == "0.0.0.0":
            return "127.0.0.1"
        if argument.startswith(workdir):
            return str(pkg) + argument.removeprefix(workdir)
        return argument.replace(f":{image_port}/", f":{port}/")  # the healthcheck's URL

    command = [str(python), "-m", "modelyard", *map(in_image, entrypoint[1:])]
    env = {k: v for k, v in environment(None).items() if not k.startswith("VIRTUAL_ENV")}
    env["MODELYARD_URL"] = "http://127.0.0.1:9"  # nothing there: it must not be asked
    sqlite_server.stop()  # and nothing anywhere: the package needs no registry
    server = subprocess.Popen(
        command, cwd=pkg, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        probe = [str(python), *map(in_image, healthcheck[1:])]

        def healthy() -> bool:
            assert server.poll() is None, server.communicate()
            return subprocess.run(probe, capture_output=True).returncode == 0

        wait_until(healthy, DEADLINE)
        url = f"http://127.0.0.1:{port}"
        batch = trained.features.iloc[10:20]
        answer = httpx.post(f"{url}/predict", json={"records": records_of(batch)}).json()
        assert answer["predictions"] == trained.first.predict(batch).tolist()
        metadata_ = httpx.get(f"{url}/metadata").json()
        assert (metadata_["version"], metadata_["digest"]) == (1, production.manifest_digest)
    finally:
        server.terminate()
        server.wait(timeout=15)


def test_package_refuses_what_it_cannot_serve_and_leaves_nothing(
    sqlite_server: LiveServer,
    trained: Trained,  # noqa: F811
    tmp_path: Path,
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "weights.bin").write_bytes(b"weights")
    with modelyard.connect(sqlite_server.url) as reg:
        reg.register("plain", plain, environment=None, source=None)
        publish(reg, trained, "churn")
    url = sqlite_server.url
    before = sorted(p.name for p in tmp_path.iterdir())
    refused = run("package", "plain/1", "-o", "out", url=url, cwd=tmp_path)
    assert refused.returncode == 1 and "has no modelyard.yaml" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing, not even staging

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep me")
    in_the_way = run("package", "churn/1", "-o", "taken", url=url, cwd=tmp_path)
    assert in_the_way.returncode == 1 and "not empty" in in_the_way.stderr
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["mine.txt"]
    assert not list(tmp_path.glob(".taken.*"))


def test_offline_with_nothing_cached_is_one_line(tmp_path: Path) -> None:
    command = [*MODELYARD, "serve-model", "churn@production", "--offline"]
    command += ["--cache-dir", str(tmp_path / "cache"), "--port", str(free_port())]
    done = subprocess.run(command, env=environment(None), capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith("error: --offline: ") and "holds nothing served" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "requirement",
    [
        {"--index-url https://pypi.example.com/simple": "1"},
        {"skops @ https://example.com/skops.whl": "1"},
        {"skops": "0.16 --extra-index-url https://pypi.example.com"},
    ],
)
def test_a_descriptor_cannot_point_pip_elsewhere(
    sqlite_server: LiveServer,
    trained: Trained,  # noqa: F811
    tmp_path: Path,
    requirement: dict[str, str],
) -> None:
    """A downloaded descriptor is untrusted: its requirements become lines of the package's
    requirements.txt, so an option or a URL there would make the image's pip install
    from the attacker's index. Refused, and nothing is written."""
    model = tmp_path / "model"
    shutil.copytree(trained.first_dir, model)
    descriptor = yaml.safe_load((model / DESCRIPTOR_FILE).read_text())
    descriptor["requirements"] |= requirement
    (model / DESCRIPTOR_FILE).write_text(yaml.safe_dump(descriptor))
    with modelyard.connect(sqlite_server.url) as reg:
        reg.register("tampered", model, environment=None, source=None)
        with pytest.raises(modelyard.InvalidInput, match="not a distribution name"):
            reg.load_model("tampered/1")
    refused = run("package", "tampered/1", "-o", "out", url=sqlite_server.url, cwd=tmp_path)
    assert refused.returncode == 1 and "not a distribution name" in refused.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
