"""One version (``/models/{name}/versions/{n}``) and its files' bytes, for readers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Header, Path
from starlette.requests import Request
from starlette.responses import Response

from modelyard.api.streaming import stream_version_file
from modelyard.domain.access import Permission
from modelyard.domain.advisories import summary_of
from modelyard.domain.checks import ADVISORIES_CHECK, SCAN_CHECK
from modelyard.domain.events import describe
from modelyard.domain.online import MAX_SERIES_POINTS
from modelyard.domain.overview import top_stage
from modelyard.domain.scanning import open_findings
from modelyard.web.charts import metric_chart
from modelyard.web.evidence import shown
from modelyard.web.links import commit_url, web_url
from modelyard.web.pages.models import Text, service_of
from modelyard.web.render import page
from modelyard.web.routing import page_router
from modelyard.web.session import web_caller

router = page_router()

# A version's files listed on its page: the rest through the CLI or the API.
MAX_FILES = 500
HISTORY_EVENTS = 200
Number = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/models/{name}/versions/{number}")
def version_page(request: Request, name: str, number: Number, online: Text = None) -> Response:
    """Every piece of a version's metadata (its metrics offline and online, a chart of
    one online series), its files (download links for readers), its card, attachments,
    signatures, comments and history."""
    caller = web_caller(request)
    service = service_of(request)
    version = service.get_version(name, number, caller=caller)
    latest = service.online.latest(caller, name, number)
    chosen = online if online in latest else online_key(version.metrics, latest)
    series = service.online.series(caller, name, chosen, number) if chosen else ()
    policy, _, _ = service.lifecycle.policy(caller, name)
    top = top_stage(policy)
    history = service.events(caller=caller, subject=version.reference, limit=HISTORY_EVENTS)
    evidence = service.evidence.attachments(caller, name, number)
    source = version.source
    compare = {"a": f"{name}@{top}", "b": version.reference}
    checks = service.checks.results(caller, name, number)
    scan = next((c for c in checks if c.name == SCAN_CHECK), None)
    scan_details = scan.details if scan and scan.details else None
    advised = next((c for c in checks if c.name == ADVISORIES_CHECK and c.details), None)
    return page(
        request,
        "version.html",
        page_version=version,
        files=version.files[:MAX_FILES],
        more_files=max(0, len(version.files) - MAX_FILES),
        can_download=service.access.allows(caller, Permission.DOWNLOAD, name),
        commit_link=commit_url(source.repo, source.commit) if source else None,
        run_link=web_url(version.run),
        history=[(e, describe(e)) for e in reversed(history)],
        top=top,
        compare_link="/compare?" + urlencode(compare),
        card=service.evidence.card(caller, name, number),
        attachments=shown(service, name, number, evidence),
        comments=service.evidence.comments(caller, model=name, version=number),
        checks=checks,
        scan=scan,
        scan_findings=open_findings(scan_details) if scan_details else [],
        scan_accepted=scan_details.get("accepted", []) if scan_details else [],
        advisories=advised.details if advised else None,
        advisories_summary=summary_of(advised.details) if advised and advised.details else "",
        signatures=service.signing.signatures(caller, name, number),
        online=latest,
        online_metric=chosen,
        max_points=MAX_SERIES_POINTS,
        online_chart=metric_chart(
            chosen or "", series, (), top, f"online {chosen} of {version.reference} over time"
        ),
    )


def online_key(offline: Mapping[str, float], online: Mapping[str, float]) -> str | None:
    """The online metric a chart shows first: one the version also has offline (what the
    registry can compare), else the first by name."""
    candidates = sorted(set(offline) & set(online)) or sorted(online)
    return candidates[0] if candidates else None


@router.get("/models/{name}/versions/{number}/files/{path:path}")
def download_file(
    request: Request,
    name: str,
    number: Number,
    path: str,
    range: Annotated[str | None, Header()] = None,
) -> Response:
    """A file's bytes, for those who may download them (the REST route's service call,
    with the browser's session): always an attachment, never rendered here."""
    return stream_version_file(
        service_of(request),
        web_caller(request),
        name,
        number,
        path,
        range,
        instance=request.url.path,
    )
