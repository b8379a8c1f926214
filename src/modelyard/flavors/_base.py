"""What a flavor is: how one framework's models are recognised, written, read and called.

Each framework lives in its own private module and imports its library inside its
functions, so that recognising a model (by the modules of its class) loads nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from modelyard.domain.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Saved:
    """What a flavor wrote: its files (relative paths) and the options it needs to read them."""

    files: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


class Flavor(Protocol):
    @property
    def name(self) -> str:
        """The descriptor's flavor."""

    @property
    def framework(self) -> str:
        """The version's framework."""

    @property
    def format(self) -> str:
        """The version's format."""

    @property
    def library(self) -> str:
        """The distribution whose version the descriptor records."""

    @property
    def requirements(self) -> tuple[str, ...]:
        """The distributions a loader needs (their installed versions are recorded)."""

    def owns(self, model: Any) -> bool: ...

    def save(self, model: Any, directory: Path, options: dict[str, Any]) -> Saved: ...

    def inspect(self, files: list[Path]) -> dict[str, Any]:
        """The options of plain files described by hand (``modelyard describe``)."""
        ...

    def load(self, files: list[Path], options: dict[str, Any]) -> Any: ...

    def predictor(self, model: Any, options: dict[str, Any]) -> Callable[[Any], Any]: ...


def class_modules(model: Any) -> set[str]:
    """The top-level packages of the classes ``model`` is an instance of."""
    return {cls.__module__.split(".", 1)[0] for cls in type(model).__mro__}


@functools.cache
def installed_version(distribution: str) -> str | None:
    """Once per process: reading a distribution's metadata costs ~15 ms."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def require(module: str, extra: str) -> Any:
    """Import ``module``, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InvalidInput(
            f"this model needs {module!r}, which is not installed: pip install 'modelyard[{extra}]'"
        ) from None


def one_file(files: list[Path], flavor: str) -> Path:
    if len(files) != 1:
        raise InvalidInput(f"a {flavor} model is one file; the descriptor names {len(files)}")
    return files[0]
