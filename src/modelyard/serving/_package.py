"""``modelyard package``: a deployment directory that serves one version with no registry.

The directory holds serve-model's own cache with that one version in it (downloaded,
verified whole, recorded as served for the reference pinned to its digest), so the
container's ``serve-model REF --offline`` verifies every byte again at start and serves it
without reaching anything. Beside it: ``requirements.txt`` pinned from the version's
descriptor and environment, a ``Dockerfile`` (non-root, with a healthcheck) and a README.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from modelyard._version import __version__
from modelyard.client.registry import Registry
from modelyard.domain.errors import Conflict
from modelyard.domain.models import Version
from modelyard.flavors import Descriptor, read_descriptor
from modelyard.flavors.core import require_descriptor
from modelyard.flavors.descriptor import validate_requirement
from modelyard.serving._cache import ModelCache

CACHE = "cache"  # the package's serve-model cache, /app/cache in the image
APP = "/app"
PORT = 9000
DEFAULT_PYTHON = "3.11"


@dataclass(frozen=True, slots=True)
class Package:
    """What ``package`` wrote, for the CLI to report."""

    directory: Path
    version: Version
    reference: str  # the pinned reference the image serves: NAME@sha256:DIGEST
    requirements: tuple[str, ...]
    entrypoint: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "directory": str(self.directory),
            "model": self.version.model,
            "version": self.version.version,
            "digest": self.version.manifest_digest,
            "reference": self.reference,
            "requirements": list(self.requirements),
            "entrypoint": list(self.entrypoint),
        }


def package(registry: Registry, reference: str, out: Path) -> Package:
    """Write the deployment directory of the version ``reference`` points at to ``out``.

    ``out`` must not exist (or be an empty directory): everything is written into a
    staging directory beside it and renamed into place, so a failure leaves nothing.
    """
    version = registry.resolve(reference)
    require_descriptor(version)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise Conflict(f"{out} already exists and is not empty: choose a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{secrets.token_hex(4)}.partial"
    try:
        cache = ModelCache(staging / CACHE)
        model_dir = cache.fetch(registry, version)
        pinned = f"{version.model}@{version.manifest_digest}"
        cache.record_served(pinned, version)
        descriptor = read_descriptor(model_dir)  # its requirements validated as it is read
        requirements = pinned_requirements(version, descriptor)
        entrypoint = (
            "modelyard",
            "serve-model",
            pinned,
            "--offline",
            "--cache-dir",
            f"{APP}/{CACHE}",
            "--host",
            "0.0.0.0",
            "--port",
            str(PORT),
        )
        (staging / "requirements.txt").write_text("\n".join(requirements) + "\n", "utf-8")
        docker = dockerfile(version, python_of(version, descriptor), entrypoint)
        (staging / "Dockerfile").write_text(docker, "utf-8")
        (staging / "README.md").write_text(readme(version, pinned), "utf-8")
        if out.exists():
            out.rmdir()  # empty, checked above
        os.rename(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Package(out, version, pinned, tuple(requirements), entrypoint)


def pinned_requirements(version: Version, descriptor: Descriptor) -> list[str]:
    """modelyard with serve-model, and each distribution the flavor needs, pinned to the
    version the model was produced with (its environment, else its descriptor)."""
    produced_with = version.environment.packages if version.environment else {}
    lines = [f"modelyard[serving]=={__version__}"]
    for distribution, recorded in sorted(descriptor.requirements.items()):
        pin = produced_with.get(distribution) or recorded
        lines.append("==".join(validate_requirement(distribution, pin)))
    return lines


def python_of(version: Version, descriptor: Descriptor) -> str:
    """MAJOR.MINOR of the Python the model was produced with (the image's base)."""
    found = descriptor.python or (version.environment.python if version.environment else None)
    parts = (found or "").split(".")[:2]
    return (
        ".".join(parts) if len(parts) == 2 and all(p.isdigit() for p in parts) else DEFAULT_PYTHON
    )


def dockerfile(version: Version, python: str, entrypoint: tuple[str, ...]) -> str:
    probe = f"http://127.0.0.1:{PORT}/readyz"
    ready = f"import sys, urllib.request; sys.exit(urllib.request.urlopen({probe!r}).status != 200)"
    healthcheck = json.dumps(["python", "-c", ready])
    return f"""\
# {version.reference} ({version.manifest_digest}), written by `modelyard package`.
FROM python:{python}-slim
RUN useradd --create-home --uid 10001 modelyard
WORKDIR {APP}
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
# serve-model's cache with this one version: verified again at every start.
COPY --chown=modelyard:modelyard {CACHE}/ {APP}/{CACHE}/
USER modelyard
EXPOSE {PORT}
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD {healthcheck}
ENTRYPOINT {json.dumps(list(entrypoint))}
"""


def readme(version: Version, pinned: str) -> str:
    return f"""\
# {version.reference}

A deployment of `{version.reference}` (`{version.manifest_digest}`), written by
`modelyard package`. It serves this version and no other, with no registry: `{CACHE}/`
holds its files, verified again (every file's sha256 and the manifest's digest) each time
the server starts.

```sh
docker build -t {version.model}:{version.version} .
docker run -p {PORT}:{PORT} {version.model}:{version.version}
curl -s localhost:{PORT}/metadata
curl -s localhost:{PORT}/predict -H 'content-type: application/json' \\
  -d '{{"records": [{{"feature": 1.0}}]}}'
```

`requirements.txt` pins Modelyard and what the model's flavor needs to the versions it was
produced with; `pip install -r requirements.txt` takes them from your package index.
Modelyard must come from your own index (or a wheel beside this file): it is not on PyPI,
and a package of that name there would not be this one.
Without Docker: `pip install -r requirements.txt`, then, in this directory,
`modelyard serve-model {pinned} --offline --cache-dir ./{CACHE}`.
"""
