"""Validation of every name and path that reaches storage.

These checks run at the edge (API, SDK) and again in the service layer, so no
caller, local or remote, can put a name or path into the registry that would
later break a URL, a file system or a shell.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from modelyard.domain.errors import InvalidInput, InvalidName, InvalidPath, TooLarge

MAX_NAME_LENGTH: Final = 128
# In UTF-8 bytes. A component: the limit of ext4, XFS, APFS and NTFS alike. A path: well
# inside Linux's PATH_MAX (4096) and macOS's (1024 with the download directory's prefix
# left out), so a version downloads under any reasonable directory.
MAX_COMPONENT_BYTES: Final = 255
MAX_PATH_LENGTH: Final = 1024
MAX_TAG_VALUE_LENGTH: Final = 1024

NAME_PATTERN: Final = r"[a-z0-9][a-z0-9._-]{0,127}"  # models and aliases (also in OpenAPI)
_NAME_RE: Final = re.compile(NAME_PATTERN)
_KEY_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/:]{0,127}")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Bidirectional controls make a name display as another ("evil\u202etxt.exe" shows as
# "evilexe.txt"): marks, embeddings, overrides and isolates.
_BIDI_RE: Final = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def validate_model_name(name: str) -> str:
    """Model names: lowercase letters, digits, '.', '_', '-', 1..128, starting alphanumeric."""
    _check_name(name, "model name")
    return name


def validate_alias_name(name: str) -> str:
    """Alias names follow the model-name rules and must not look like a version or digest."""
    _check_name(name, "alias name")
    if name.isdigit():
        raise InvalidName(f"alias name {name!r} must not be a number (it would read as a version)")
    if name.startswith("sha256"):
        raise InvalidName(f"alias name {name!r} must not start with 'sha256'")
    if name == "latest":
        raise InvalidName("'latest' is reserved: it always means the newest version")
    return name


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidName(f"{what} must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"{what} is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}")
    if _NAME_RE.fullmatch(name) is None:
        raise InvalidName(
            f"{what} {_shown(name)} is not allowed: use lowercase letters, digits,"
            " '.', '_' and '-', starting with a letter or digit"
        )


def validate_key(key: str, what: str = "key") -> str:
    """Keys of tags, params and metrics: these become filter fields like ``metrics.auc``."""
    if not isinstance(key, str) or _KEY_RE.fullmatch(key) is None:
        raise InvalidName(
            f"{what} {_shown(key)} is not allowed: use letters, digits, '_', '.', '-', '/', ':'"
            " (1..128 characters, starting with a letter, digit or '_')"
        )
    return key


def validate_tag_value(value: str, what: str = "tag value") -> str:
    if not isinstance(value, str):
        raise InvalidName(f"{what} must be a string")
    if len(value) > MAX_TAG_VALUE_LENGTH:
        raise InvalidName(f"{what} is longer than {MAX_TAG_VALUE_LENGTH} characters")
    if "\x00" in value:
        raise InvalidName(f"{what} must not contain NUL")
    return value


def validate_file_path(path: str) -> str:
    """A file's path inside a version: relative, '/'-separated, no '..', no control characters.

    Returns the path unchanged; rejects rather than normalises, so the manifest a client
    hashes is the manifest the server stores.
    """
    if not isinstance(path, str) or not path:
        raise InvalidPath("file path must not be empty")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidPath(f"file path {_shown(path)} is not valid Unicode") from None
    if size > MAX_PATH_LENGTH:
        raise InvalidPath(
            f"file path {_shown(path)} is {size} bytes in UTF-8; the limit is"
            f" {MAX_PATH_LENGTH}, so that it can be downloaded on every platform"
        )
    if _CONTROL_RE.search(path):
        raise InvalidPath(f"file path {_shown(path)} contains a control character or NUL")
    if _BIDI_RE.search(path):
        raise InvalidPath(
            f"file path {_shown(path)} contains a bidirectional control character"
            " (U+202E and the like), which makes a name display as another"
        )
    if "\\" in path:
        raise InvalidPath(f"file path {_shown(path)} contains a backslash; use '/'")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise InvalidPath(
            f"file path {_shown(path)} is absolute; paths are relative to the version"
        )
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidPath(
                f"file path {_shown(path)} has an empty, '.' or '..' component;"
                " paths must stay inside the version"
            )
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise InvalidPath(
                f"file path {_shown(path)} has a component of {len(part.encode('utf-8'))}"
                f" bytes in UTF-8; file systems allow at most {MAX_COMPONENT_BYTES}"
            )
    return path


def path_key(path: str) -> str:
    """What ``path`` is called on a case-insensitive file system (macOS, Windows) that also
    equates Unicode normalisation forms: two paths with one key are one file there."""
    return unicodedata.normalize("NFC", path).casefold()


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_text(text: str, what: str, limit: int) -> str:
    """Free text (a description, a reason, a dataset's name): a string of bounded length,
    without NUL."""
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be a string")
    if len(text) > limit:
        raise TooLarge(f"{what} may be at most {limit} characters; this one has {len(text)}")
    if "\x00" in text:
        raise InvalidInput(f"{what} must not contain NUL")
    return text
