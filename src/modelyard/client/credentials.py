"""Where the CLI and SDK find a token: MODELYARD_TOKEN, else what `modelyard login` saved.

The config file holds one token per registry URL (or data directory, opened in-process). It
is written with mode 0600 in a 0700 directory, atomically, so a half-written file or a
moment of wider permissions never exists.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def config_path() -> Path:
    """$MODELYARD_CONFIG, else $XDG_CONFIG_HOME/modelyard/config.json (~/.config/...)."""
    explicit = os.environ.get("MODELYARD_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "modelyard" / "config.json"


def _read() -> dict[str, Any]:
    try:
        data = json.loads(config_path().read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _key(target: str) -> str:
    """A URL without its trailing slash; a data directory as its absolute path."""
    if target.startswith(("http://", "https://")):
        return target.rstrip("/")
    return os.path.abspath(target)


def token_for(url: str) -> str | None:
    """The token for ``url`` (or a directory): the environment's, else the saved one."""
    from_env = os.environ.get("MODELYARD_TOKEN")
    if from_env:
        return from_env.strip()
    entry = _read().get("registries", {}).get(_key(url), {})
    token = entry.get("token") if isinstance(entry, dict) else None
    return token if isinstance(token, str) and token else None


def save_token(url: str, token: str | None) -> Path:
    """Remember (or, with None, forget) the token for ``url``; returns the file's path."""
    path = config_path()
    data = _read()
    registries = data.setdefault("registries", {})
    if token is None:
        registries.pop(_key(url), None)
    else:
        registries[_key(url)] = {"token": token}
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".config-")  # created 0600
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path
