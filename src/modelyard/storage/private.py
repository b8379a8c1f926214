"""Files and directories only the registry's OS user may read.

The data directory holds every artifact and the metadata behind access control: readable
by other local users, it would bypass every permission the server checks. Directories are
0700 and files 0600 (the database, blobs, keys); existing ones are tightened on open.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from modelyard.domain.errors import Misconfigured

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) 0700, or take group and others' access away."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        path.chmod(mode & DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 if absent, else make it 0600; never truncate."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), FILE_MODE))
    if path.stat().st_mode & 0o077:
        path.chmod(FILE_MODE)
    return path


def create_once(path: Path, content: bytes) -> None:
    """Write ``path`` 0600 with ``content`` unless it exists. Written whole under a private
    name, then linked into place: a process starting beside this one reads either no file
    or the whole file, and only one content wins."""
    if path.exists():
        return
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(staged, path)
    except FileExistsError:
        pass
    finally:
        staged.unlink()


def read_secret_file(path: Path, *, follow: bool = False) -> bytes:
    """The bytes of a key file, refused unless only this user (or root) could have written
    it and nobody else can read it: a key others can read signs for them, and one others
    could replace signs what they chose. A link is refused unless ``follow`` (a key mounted
    by the operator, e.g. a Kubernetes secret, is reached through links)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        reason = "is a symbolic link" if not follow and path.is_symlink() else exc.strerror
        raise Misconfigured(f"{path}: {reason}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise Misconfigured(f"{path}: not a regular file")
        if info.st_uid not in (os.geteuid(), 0):
            raise Misconfigured(
                f"{path}: owned by uid {info.st_uid}, not by this server's user"
                f" ({os.geteuid()}): refusing a key another user could replace",
            )
        if info.st_mode & 0o077:
            raise Misconfigured(
                f"{path}: mode {stat.S_IMODE(info.st_mode):04o} lets other users read or"
                f" change it; refusing it (chmod 600 {path})",
            )
        return handle.read()
