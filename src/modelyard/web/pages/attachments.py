"""An attachment's safe views (``/models/{name}/versions/{n}/attachments/{path}``).

Evidence is shown to anyone who may view the model, and never as a document of the
registry's own origin: images are served with their image type (shown through ``<img>``),
SVG only under a policy that forbids its scripts, HTML reports under ``REPORT_POLICY``
(the version page frames them in ``<iframe sandbox>``), text as plain text, and anything
else as a file to save. The type is the one the server decided when the bytes were
attached (``domain.evidence.media_type``), never the name alone.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Query
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from modelyard.api.streaming import DOWNLOAD_POLICY
from modelyard.api.streaming import attachment as as_download
from modelyard.web.evidence import SVG, SVG_POLICY, view_of
from modelyard.web.pages.models import service_of
from modelyard.web.pages.versions import Number
from modelyard.web.routing import page_router
from modelyard.web.security import REPORT_POLICY
from modelyard.web.session import web_caller

router = page_router()


@router.get("/models/{name}/versions/{number}/attachments/{path:path}")
def attachment_view(
    request: Request,
    name: str,
    number: Number,
    path: str,
    download: Annotated[bool, Query()] = False,
) -> Response:
    """The bytes of an attachment labelled so that a browser shows them safely, or (with
    ``download``, and for every type without a safe view) as a file to save."""
    service = service_of(request)
    found, read = service.evidence.open_attachment(web_caller(request), name, number, path)
    view = view_of(found.media_type)
    saved = as_download(found.path.rsplit("/", 1)[-1])
    if download or view == "other":
        media, policy, disposition = "application/octet-stream", DOWNLOAD_POLICY, saved
    else:
        media = found.media_type if view == "image" else _SHOWN_AS[view]
        policy = SVG_POLICY if found.media_type == SVG else _POLICIES[view]
        disposition = saved.replace("attachment;", "inline;", 1)
    headers = {
        "Content-Length": str(found.size),
        "Content-Disposition": disposition,
        "Content-Security-Policy": policy,
        "Cache-Control": "private, no-cache",
    }
    return StreamingResponse(read(0, None), media_type=media, headers=headers)


_SHOWN_AS: Final = {"report": "text/html; charset=utf-8", "text": "text/plain; charset=utf-8"}
_POLICIES: Final = {"image": DOWNLOAD_POLICY, "report": REPORT_POLICY, "text": DOWNLOAD_POLICY}
