"""Automatic lineage: the git state and the Python environment a model was registered from.

Both are captured once per process and directory and then reused, because a
subprocess per git question would otherwise cost more than the registration itself.
Remote URLs are stripped of credentials before they leave the machine.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

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
