"""Links the pages build from stored metadata: only to places known to be what they say,
and only over https. A remote or a run reference is text a registrant chose."""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

# The forges whose commit pages we know how to address, and how.
_COMMIT_PATHS = {
    "github.com": "{path}/commit/{commit}",
    "gitlab.com": "{path}/-/commit/{commit}",
    "bitbucket.org": "{path}/commits/{commit}",
}
_SCP_RE = re.compile(r"(?:[A-Za-z0-9._-]+@)?([A-Za-z0-9.-]+):(?!//)(.+)")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_COMMIT_RE = re.compile(r"[0-9a-fA-F]{7,64}")


def _host_and_path(remote: str) -> tuple[str, str] | None:
    """(host, owner/name) of a git remote: https://, ssh:// or scp-like git@host:path."""
    if "://" in remote:
        parts = urlsplit(remote)
        if parts.scheme not in ("https", "http", "ssh", "git"):
            return None
        return (parts.hostname or "").lower(), parts.path
    scp = _SCP_RE.fullmatch(remote)
    return (scp.group(1).lower(), scp.group(2)) if scp else None


def commit_url(remote: str | None, commit: str | None) -> str | None:
    """The https page of ``commit`` on a known forge, or None. Built from the host and the
    repository path only (never the remote's credentials), each segment checked."""
    if not remote or not commit or _COMMIT_RE.fullmatch(commit) is None:
        return None
    found = _host_and_path(remote.strip())
    if found is None or found[0] not in _COMMIT_PATHS:
        return None
    host, path = found
    path = path.strip("/").removesuffix(".git")
    segments = path.split("/")
    if len(segments) < 2 or not all(_SEGMENT_RE.fullmatch(s) for s in segments):
        return None
    page = _COMMIT_PATHS[host].format(path="/".join(quote(s) for s in segments), commit=commit)
    return f"https://{host}/{page}"


def web_url(text: str | None) -> str | None:
    """``text`` when it is an http(s) URL with a host (a run reference may be one)."""
    if not text:
        return None
    parts = urlsplit(text.strip())
    if parts.scheme in ("https", "http") and parts.hostname and not parts.username:
        return text.strip()
    return None
