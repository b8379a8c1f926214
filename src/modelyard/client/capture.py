"""Automatic lineage: the git state and the Python environment a model was registered from,
or the environment a model directory declares (requirements.txt, conda.yaml, modelyard.yaml).

Both are captured once per process and directory and then reused, because a
subprocess per git question would otherwise cost more than the registration itself.
Remote URLs are stripped of credentials before they leave the machine.
"""

from __future__ import annotations

import functools
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

from modelyard.domain.errors import InvalidInput
from modelyard.domain.models import Environment, SourceRef


@functools.cache
def capture_environment() -> Environment:
    packages: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[name.lower()] = dist.version
    return Environment(
        python=platform.python_version(),
        platform=platform.platform(),
        packages=dict(sorted(packages.items())),
    )


@functools.cache
def capture_source(directory: Path) -> SourceRef | None:
    """The git remote, commit, branch and dirty flag of ``directory``, or None outside git."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=directory,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    remote = git("config", "--get", "remote.origin.url")
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return SourceRef(
        repo=strip_credentials(remote) if remote else None,
        commit=commit,
        branch=None if branch in (None, "HEAD") else branch,
        dirty=bool(status) if status is not None else None,
    )


def strip_credentials(url: str) -> str:
    """'https://user:token@host/x.git' -> 'https://host/x.git'; scp-style URLs unchanged."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def environment_from_file(path: Path) -> Environment:
    """The environment a requirements.txt or a conda environment file declares.

    Packages map to their pinned version ('==1.5.0' -> '1.5.0'), else to their specifier
    as written ('>=1.24'), or '' when unpinned.
    """
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        return _conda_environment(path, text)
    return Environment(packages=_requirements(text.splitlines()))


def declared_environment(directory: Path) -> Environment | None:
    """What a model directory declares it needs: its requirements.txt, conda.yaml, or the
    requirements of its modelyard.yaml; None if it declares nothing."""
    if not directory.is_dir():
        return None
    for name in DECLARED_FILES:
        if (directory / name).is_file():
            return environment_from_file(directory / name)
    from modelyard.flavors.descriptor import DESCRIPTOR_FILE, read_descriptor

    if (directory / DESCRIPTOR_FILE).is_file():
        descriptor = read_descriptor(directory)
        return Environment(python=descriptor.python, packages=dict(descriptor.requirements))
    return None


DECLARED_FILES = ("requirements.txt", "conda.yaml", "conda.yml", "environment.yml")
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*?)\s*$")


def _requirements(lines: list[str]) -> dict[str, str]:
    packages: dict[str, str] = {}
    for raw in lines:
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line or line.startswith("-"):
            continue  # options such as -r, -e, --index-url
        match = _REQUIREMENT.match(line)
        if match is None:
            raise InvalidInput(f"cannot read the requirement {raw.strip()!r}")
        name, spec = match.group(1).lower(), match.group(2).replace(" ", "")
        packages[name] = spec.removeprefix("==")
    return dict(sorted(packages.items()))


def _conda_environment(path: Path, text: str) -> Environment:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path} is not valid YAML: {exc}") from None
    dependencies = data.get("dependencies") if isinstance(data, dict) else None
    if not isinstance(dependencies, list):
        raise InvalidInput(f"{path} has no list of dependencies")
    python: str | None = None
    conda: list[str] = []
    for item in dependencies:
        if isinstance(item, dict) and isinstance(item.get("pip"), list):
            conda.extend(str(r) for r in item["pip"])
        elif isinstance(item, str) and re.search(r"[<>!~]", item):
            conda.append(item.replace(" ", ""))
        elif isinstance(item, str):
            name, _, version = item.partition("=")
            if name.strip().lower() == "python":
                python = version.lstrip("=") or None
            else:
                conda.append(f"{name}=={version.lstrip('=')}" if version else name)
    return Environment(python=python, packages=_requirements(conda))
