"""How the UI shows a version's evidence: which safe view each attachment gets, under
which policy, and the first lines of text ones. The type is the one the server decided
when the bytes were attached (``domain.evidence.media_type``), never the name alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from modelyard.domain.evidence import Attachment
from modelyard.service import RegistryService

IMAGES: Final = frozenset({"image/png", "image/jpeg", "image/gif"})
SVG: Final = "image/svg+xml"
HTML: Final = "text/html"
TEXT: Final = frozenset(
    {"text/plain", "text/markdown", "text/csv", "text/tab-separated-values", "application/json"}
)
# An SVG may style itself, nothing more: no script, no fetch, no navigation.
SVG_POLICY: Final = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
# The version page previews the first lines of its first few text attachments.
MAX_PREVIEWS: Final = 6
PREVIEW_BYTES: Final = 4096
PREVIEW_LINES: Final = 20


def view_of(media_type: str) -> str:
    """How the version page shows an attachment: image, report, text or other."""
    if media_type in IMAGES or media_type == SVG:
        return "image"
    if media_type == HTML:
        return "report"
    return "text" if media_type in TEXT else "other"


@dataclass(frozen=True, slots=True)
class Shown:
    """An attachment as the version page shows it."""

    attachment: Attachment
    view: str
    url: str
    preview: str | None = None  # the first lines, for text


def shown(
    service: RegistryService, name: str, number: int, attachments: Sequence[Attachment]
) -> list[Shown]:
    """Each attachment with its view; the first few text ones with their first lines.
    ``attachments`` came from ``evidence.attachments``, which checked that the caller may
    view the model, and so its evidence."""
    found: list[Shown] = []
    previews = 0
    for item in attachments:
        view = view_of(item.media_type)
        url = f"/models/{name}/versions/{number}/attachments/{quote(item.path)}"
        preview = None
        if view == "text" and previews < MAX_PREVIEWS:
            previews += 1
            head = b"".join(service.read_blob(item.sha256, 0, min(item.size, PREVIEW_BYTES)))
            lines = head.decode("utf-8", errors="replace").splitlines()[:PREVIEW_LINES]
            preview = "\n".join(lines)
        found.append(Shown(item, view, url, preview))
    return found
