"""The descriptor ``modelyard.yaml``: which flavor opens a model directory, and with what.

It is read from a downloaded version, so nothing in it is trusted: every path must name a
file inside the directory (no '..', no absolute path, no symlink out), the flavor must be
one Modelyard knows, and ``unsafe_pickle`` must be declared for a pickle to be opened.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelyard.domain.errors import InvalidInput, InvalidPath
from modelyard.domain.names import validate_file_path
from modelyard.flavors.signature import Signature

DESCRIPTOR_FILE = "modelyard.yaml"
SCHEMA_VERSION = 1
# A distribution's name (PEP 508) and a version (PEP 440's characters): a requirement read
# from a downloaded descriptor becomes a line of a requirements file, where an option
# (`--index-url ...`) or a URL (`name @ https://...`) would make pip fetch from elsewhere.
_DISTRIBUTION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_VERSION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.+!_-]*[A-Za-z0-9])?")


def validate_requirement(distribution: str, version: str) -> tuple[str, str]:
    """A (distribution, version) pair safe to write as ``distribution==version``."""
    if not _DISTRIBUTION.fullmatch(distribution) or not _VERSION.fullmatch(version):
        raise InvalidInput(
            f"{distribution!r} {version!r} is not a distribution name and a version"
            " (such as scikit-learn 1.5.2)"
        )
    return distribution, version


@dataclass(frozen=True, slots=True)
class Descriptor:
    """What ``save_model`` wrote, or ``modelyard describe`` or a person."""

    flavor: str
    format: str
    library: str
    library_version: str | None
    files: tuple[str, ...]
    signature: Signature | None = None
    input_example: str | None = None
    unsafe_pickle: bool = False
    # The flavor's own settings (skops' trusted types, a PyTorch class path, ...).
    options: dict[str, Any] = field(default_factory=dict)
    # What the model needs installed: distribution name -> version.
    requirements: dict[str, str] = field(default_factory=dict)
    python: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "modelyard": SCHEMA_VERSION,
            "flavor": self.flavor,
            "format": self.format,
            "library": self.library,
            "library_version": self.library_version,
            "files": list(self.files),
            "unsafe_pickle": self.unsafe_pickle,
        }
        if self.signature is not None:
            data["signature"] = self.signature.to_dict()
        if self.input_example is not None:
            data["input_example"] = self.input_example
        if self.options:
            data["options"] = self.options
        if self.requirements:
            data["requirements"] = self.requirements
        if self.python:
            data["python"] = self.python
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Descriptor:
        if not isinstance(data, Mapping):
            raise InvalidInput(f"{DESCRIPTOR_FILE} must be a mapping")
        if data.get("modelyard", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise InvalidInput(
                f"{DESCRIPTOR_FILE} is of schema {data.get('modelyard')!r}; this Modelyard"
                f" reads schema {SCHEMA_VERSION}"
            )
        flavor, files = data.get("flavor"), data.get("files")
        if not isinstance(flavor, str) or not flavor:
            raise InvalidInput(f"{DESCRIPTOR_FILE} names no flavor")
        if isinstance(files, str):
            files = [files]
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            raise InvalidInput(f"{DESCRIPTOR_FILE}: files must be a non-empty list of paths")
        example = data.get("input_example")
        unsafe = data.get("unsafe_pickle", False)
        options, requirements = data.get("options") or {}, data.get("requirements") or {}
        if not isinstance(unsafe, bool):
            raise InvalidInput(f"{DESCRIPTOR_FILE}: unsafe_pickle must be true or false")
        if not isinstance(options, dict) or not isinstance(requirements, dict):
            raise InvalidInput(f"{DESCRIPTOR_FILE}: options and requirements must be mappings")
        signature = data.get("signature")
        return cls(
            flavor=flavor,
            format=str(data.get("format") or flavor),
            library=str(data.get("library") or flavor),
            library_version=_text_or_none(data.get("library_version")),
            files=tuple(validate_file_path(f) for f in files),
            signature=Signature.from_dict(signature) if signature is not None else None,
            input_example=validate_file_path(example) if example is not None else None,
            unsafe_pickle=unsafe,
            options=dict(options),
            requirements=dict(
                validate_requirement(str(k), str(v)) for k, v in requirements.items()
            ),
            python=_text_or_none(data.get("python")),
        )

    def paths(self, directory: Path) -> list[Path]:
        """Every file the descriptor names, inside ``directory``; InvalidPath otherwise."""
        named = [*self.files, *([self.input_example] if self.input_example else [])]
        return [inside(directory, rel) for rel in named]

    def write(self, directory: Path) -> Path:
        """Write (or replace) the descriptor whole: a reader sees the old one or the new."""
        target = directory / DESCRIPTOR_FILE
        partial = directory / f".{DESCRIPTOR_FILE}.partial"
        partial.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        os.replace(partial, target)
        return target


def read_descriptor(directory: Path) -> Descriptor:
    """The directory's descriptor, validated, with every path it names checked."""
    path = directory / DESCRIPTOR_FILE
    if not path.is_file():
        raise InvalidInput(
            f"{directory} has no {DESCRIPTOR_FILE}: save the model with log_model, or"
            f" describe its files with `modelyard describe`"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{DESCRIPTOR_FILE} is not valid YAML: {exc}") from None
    descriptor = Descriptor.from_dict(data)
    for file in descriptor.paths(directory):
        if not file.is_file():
            raise InvalidInput(f"{DESCRIPTOR_FILE} names {file.name!r}, which is not a file")
    return descriptor


def inside(directory: Path, relative: str) -> Path:
    """``relative`` under ``directory``, refusing '..', absolute paths and symlinks out."""
    validate_file_path(relative)
    root = directory.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise InvalidPath(f"{DESCRIPTOR_FILE} names {relative!r}, outside the model directory")
    return target


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
