"""The UI's reading pages: models, model, version, compare. Rendered by the real app on
both backends; assertions on the HTML a browser would get."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from modelyard.api import create_app
from modelyard.domain.access import Caller, PrincipalKind, Reach, Role
from modelyard.domain.evidence import AttachmentIn
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import DatasetRef, Environment, SourceRef
from modelyard.domain.versions import NewVersion
from modelyard.service import RegistryService
from modelyard.web.links import commit_url
from modelyard.web.security import REPORT_POLICY
from tests.test_advisories import osv, osv_zip

ME = Caller.local_user("tester")
HOSTILE = '<script>alert(1)</script><img src=x onerror="alert(2)">'


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def register(
    service: RegistryService,
    name: str,
    number: int,
    *,
    files: dict[str, bytes] | None = None,
    **fields: Any,
) -> None:
    """Version ``number`` of ``name``: its own weights (and ``files``), inline."""
    contents = {"model.pkl": f"weights {name} {number}".encode(), **(files or {})}
    entries = [FileEntry(path, len(data), sha(data)) for path, data in contents.items()]
    spec = NewVersion(
        files=entries,
        params={"C": str(number / 10), "solver": "lbfgs"},
        metrics={"auc": 0.80 + number / 100, "logloss": 0.5 - number / 100},
        dataset=DatasetRef("customers", f"2026-w{number:02d}"),
        source=SourceRef("git@github.com:acme/churn.git", f"{number:07x}abcdef", "main", False),
        run=f"https://mlflow.example/runs/{number}",
        **{"environment": Environment("3.11.9", "linux", {"scikit-learn": f"1.{number}.0"})}
        | fields,
    )
    inline = {sha(data): data for data in contents.values()}
    service.register_version(name, spec, caller=ME, inline=inline)


def promote(service: RegistryService, reference: str, stage: str) -> None:
    promotion = service.lifecycle.promote(ME, reference, stage)
    if promotion.request is not None and promotion.status == "open":
        service.lifecycle.approve(ME, promotion.request.id)


def churn(service: RegistryService, count: int = 3) -> None:
    """The churn story: weekly versions; v1 then v2 in production, the last in staging."""
    for number in range(1, count + 1):
        register(service, "churn", number, description=f"# Churn v{number}\n\nWeekly retrain.")
    promote(service, "churn/1", "production")
    promote(service, "churn/2", "production")
    promote(service, f"churn/{count}", "staging")


@pytest.fixture
def client(service: RegistryService) -> Iterator[TestClient]:
    with TestClient(create_app(service, reach=Reach.LOOPBACK, local_user="tester")) as test:
        yield test


def text_of(html: str) -> str:
    """The page's text, tags dropped and space collapsed, to assert on what a user reads."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# -- models ------------------------------------------------------------------------------------


def test_models_list_shows_each_model_with_its_stages_owner_and_key_metric(
    service: RegistryService, client: TestClient
) -> None:
    churn(service)
    register(service, "fraud", 1)
    service.update_model("fraud", caller=ME, tags={"owner": "risk-team", "key_metric": "logloss"})
    response = client.get("/")
    assert response.status_code == 200
    html = response.text
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    rows = dict(re.findall(r'data-model="([^"]+)">(.*?)</tr>', html, re.S))
    assert set(rows) == {"churn", "fraud"}
    churn_row = text_of(rows["churn"])
    assert "v3" in churn_row and "production v2" in churn_row and "staging v3" in churn_row
    assert "tester" in churn_row  # the creator owns it
    assert "auc 0.83" in churn_row  # the first metric of the latest version
    fraud_row = text_of(rows["fraud"])
    assert "risk-team" in fraud_row and "logloss 0.49" in fraud_row


def test_models_list_filters_sorts_and_pages(service: RegistryService, client: TestClient) -> None:
    for index in range(55):
        register(service, f"m{index:02d}", 1)
    first = client.get("/", params={"order_by": "name desc"}).text
    assert first.index('data-model="m54"') < first.index('data-model="m10"')
    assert first.count('data-test="model-row"') == 50
    next_link = re.search(r'href="([^"]+)" rel="next"', first)
    assert next_link is not None
    second = client.get(next_link.group(1).replace("&amp;", "&")).text
    assert second.count('data-test="model-row"') == 5 and 'data-model="m00"' in second
    found = client.get("/", params={"filter": 'name like "m1%"'}).text
    assert found.count('data-test="model-row"') == 10


def test_a_malformed_filter_shows_the_message_and_its_position(
    service: RegistryService, client: TestClient
) -> None:
    register(service, "churn", 1)
    response = client.get("/", params={"filter": 'name = "churn" and'})
    assert response.status_code == 400
    html = response.text
    assert 'data-test="filter-error"' in html and "position 18" in html
    caret = re.search(r'<pre class="caret" data-position="(\d+)">(.*?)</pre>', html, re.S)
    assert caret is not None and caret.group(1) == "18"
    assert caret.group(2).splitlines()[-1] == " " * 18 + "^"
    bad_order = client.get("/", params={"order_by": "name sideways"})
    assert bad_order.status_code == 400 and "position 5" in bad_order.text


# -- model -------------------------------------------------------------------------------------


def test_model_page_shows_card_versions_chart_timeline_policy_and_roles(
    service: RegistryService, client: TestClient
) -> None:
    churn(service)
    service.set_alias("churn", "candidate", 3, caller=ME)
    opened = service.lifecycle.promote(ME, "churn/2", "staging")
    assert opened.request is not None
    response = client.get("/models/churn")
    assert response.status_code == 200
    html = response.text
    card = section(html, "card")
    assert "<h1>Churn v2</h1>" in card and "production" in card  # v2 is in production
    table = section(html, "versions")
    assert [int(n) for n in re.findall(r'data-version="(\d+)"', table)] == [3, 2, 1]
    assert "customers@2026-w03" in table and "auc" in table and "0.83" in table
    chart = section(html, "metric-chart")
    assert chart.count("<circle") == 3 and "<polyline" in chart
    assert chart.count('data-test="production-band"') == 2  # v1, then v2
    timeline = text_of(section(html, "stage-timeline"))
    assert "production v2" in timeline and "staging v3" in timeline and "now" in timeline
    assert f"Request {opened.request.id}" in section(html, "requests")
    policy = text_of(section(html, "policy"))
    assert "production" in policy and "a request approved by 1 maintainer" in policy
    assert "@candidate" in section(html, "aliases")
    assert 'data-test="roles"' in html  # local mode: the owner is a maintainer


def section(html: str, test_id: str) -> str:
    """The element carrying ``data-test=test_id`` up to the next top-level section."""
    start = html.index(f'data-test="{test_id}"')
    end = html.find("</section>", start)
    return html[start : end if end != -1 else None]


def test_model_page_charts_the_metric_chosen(service: RegistryService, client: TestClient) -> None:
    churn(service)
    html = client.get("/models/churn", params={"metric": "logloss"}).text
    assert "logloss over versions" in html and "v3: 0.47" in html
    assert client.get("/models/churn", params={"metric": "not a metric!"}).status_code == 400
    assert client.get("/models/nothing").status_code == 404


# -- version -----------------------------------------------------------------------------------


def test_links_to_commits_only_on_known_forges_over_https() -> None:
    commit = "0123abcd"
    assert commit_url("git@github.com:acme/churn.git", commit) == (
        "https://github.com/acme/churn/commit/0123abcd"
    )
    assert commit_url("https://gitlab.com/acme/ml/churn", commit) == (
        "https://gitlab.com/acme/ml/churn/-/commit/0123abcd"
    )
    assert commit_url("ssh://git@bitbucket.org/acme/churn.git", commit) == (
        "https://bitbucket.org/acme/churn/commits/0123abcd"
    )
    # The remote's credentials never reach the link.
    assert commit_url("https://bob:secret@github.com/acme/churn.git", commit) == (
        "https://github.com/acme/churn/commit/0123abcd"
    )
    for remote, sha1 in [
        ("https://evil.example/acme/churn", commit),
        ("https://github.com.evil.example/acme/churn", commit),
        ("javascript:alert(1)//github.com/a/b", commit),
        ("https://github.com/acme", commit),
        ('https://github.com/acme/"><script>', commit),
        ("https://github.com/acme/churn", "HEAD; rm -rf"),
        ("/local/path/churn", commit),
    ]:
        assert commit_url(remote, sha1) is None, remote


def test_version_page_shows_every_piece_of_metadata(
    service: RegistryService, client: TestClient
) -> None:
    churn(service)
    service.update_version("churn", 3, caller=ME, tags={"reviewed": "yes"})
    html = client.get("/models/churn/versions/3").text
    shown = text_of(html)
    for expected in [
        "C 0.3", "solver lbfgs", "auc 0.83", "logloss 0.47", "customers", "2026-w03",
        "git@github.com:acme/churn.git", "0000003abcdef", "main", "3.11.9", "linux",
        "scikit-learn 1.3.0", "reviewed yes", "staging",
    ]:  # fmt: skip
        assert expected in shown, expected
    assert 'href="https://github.com/acme/churn/commit/0000003abcdef"' in html
    assert 'href="https://mlflow.example/runs/3"' in html
    files = section(html, "files")
    assert "model.pkl" in files and sha(b"weights churn 3") in files
    assert 'href="/models/churn/versions/3/files/model.pkl"' in files
    assert "<h1>Churn v3</h1>" in section(html, "card")
    history = text_of(section(html, "history"))
    assert "version.registered" in history and "development → staging" in history
    compare = re.search(r'href="(/compare\?[^"]+)"', html)
    assert compare is not None and "a=churn%40production" in compare.group(1)


def test_version_page_shows_the_registrys_scan_its_findings_and_acceptance(
    service: RegistryService, client: TestClient
) -> None:
    register(service, "churn", 1)
    register(service, "churn", 2, files={"model.pkl": b"cos\nsystem\n(S'id'\ntR."})
    clean = client.get("/models/churn/versions/1").text
    assert 'data-test="scan-badge"' in clean and "scan: pass" in text_of(clean)
    assert 'data-test="scan-findings"' not in clean
    html = client.get("/models/churn/versions/2").text
    assert "scan: fail" in text_of(html)
    findings = text_of(section(html, "checks"))
    assert "model.pkl at byte 0 : imports os.system, which can run code" in findings
    assert "modelyard accept-scan churn/2 --reason TEXT" in findings
    service.scans.accept(ME, "churn", 2, "a <b>fixture</b> that never loads")
    accepted = client.get("/models/churn/versions/2").text
    assert "scan: pass" in text_of(accepted)
    assert "1 finding(s) accepted by tester: a &lt;b&gt;fixture&lt;/b&gt;" in accepted


def test_version_page_shows_the_known_vulnerabilities_escaped(
    service: RegistryService, client: TestClient
) -> None:
    """An OSV dump is untrusted input: an advisory's id, aliases and summary are shown as
    text, never markup."""
    register(service, "churn", 1)  # scikit-learn 1.1.0
    register(service, "churn", 2, environment=None)
    hostile = osv(
        "GHSA-<b>x</b>",
        "scikit-learn",
        {"introduced": "0"},
        {"fixed": "1.5.0"},
        aliases=["CVE-<i>1</i>"],
        summary=HOSTILE,
    )
    service.advisories.load(ME, io.BytesIO(osv_zip([hostile])))
    html = client.get("/models/churn/versions/1").text
    checks = section(html, "checks")
    assert HOSTILE not in checks and "&lt;script&gt;alert(1)&lt;/script&gt;" in checks
    assert "GHSA-&lt;b&gt;x&lt;/b&gt;" in checks and "CVE-&lt;i&gt;1&lt;/i&gt;" in checks
    row = text_of(section(html, "advisories"))
    assert "scikit-learn 1.1.0" in row and "UNKNOWN 1.5.0 affected" in row
    assert "1 advisory finding(s) among 1 package(s), severity unknown" in text_of(checks)
    none = text_of(section(client.get("/models/churn/versions/2").text, "checks"))
    assert "no captured environment" in none and 'data-test="advisories"' not in none


def test_file_download_through_the_page_route(service: RegistryService, client: TestClient) -> None:
    register(service, "churn", 1, files={"eval/report.html": b"<script>alert(1)</script>"})
    response = client.get("/models/churn/versions/1/files/eval/report.html")
    assert response.status_code == 200 and response.content == b"<script>alert(1)</script>"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["content-type"] == "application/octet-stream"
    assert client.get("/models/churn/versions/1/files/nope.bin").status_code == 404


def bearer(service: RegistryService, admin: Caller, principal: str) -> dict[str, str]:
    """Headers that make a page's caller ``principal`` (a new token of theirs)."""
    token = service.identity.create_token(admin, principal=principal).token
    return {"Authorization": f"Bearer {token}"}


def test_a_viewer_sees_no_download_links_and_gets_403_on_the_bytes(
    service: RegistryService, client: TestClient
) -> None:
    """The page asks AccessControl (as the bytes do); a reader downloads."""
    register(service, "churn", 1)
    root = service.identity.bootstrap_admin("root", operator="test")
    admin = service.access.authenticate(root.token)
    headers = {}
    for role in (Role.VIEWER, Role.READER):
        service.identity.create_principal(admin, role.label, PrincipalKind.USER)
        service.identity.set_grant(admin, role.label, role, model="churn")
        headers[role] = bearer(service, admin, role.label)
    file_url = "/models/churn/versions/1/files/model.pkl"
    as_viewer = client.get("/models/churn/versions/1", headers=headers[Role.VIEWER])
    assert as_viewer.status_code == 200 and "model.pkl" in as_viewer.text
    assert file_url not in as_viewer.text and 'data-test="download"' not in as_viewer.text
    assert 'data-test="no-download"' in as_viewer.text
    refused = client.get(file_url, headers=headers[Role.VIEWER])
    assert refused.status_code == 403 and b"weights" not in refused.content
    as_reader = client.get("/models/churn/versions/1", headers=headers[Role.READER])
    assert f'href="{file_url}"' in as_reader.text
    assert client.get(file_url, headers=headers[Role.READER]).content == b"weights churn 1"
    # Nobody signed in: sent to sign in, for the page and for the bytes alike.
    for path in ("/models/churn/versions/1", file_url):
        assert client.get(path, follow_redirects=False).headers["location"].startswith("/signin")


def test_hostile_metadata_is_escaped(service: RegistryService, client: TestClient) -> None:
    register(
        service,
        "churn",
        1,
        description=HOSTILE,
        tags={"note": HOSTILE},
        files={"<img src=x onerror=alert(3)>.txt": b"x"},
    )
    service.update_model("churn", caller=ME, description=HOSTILE, tags={"key_metric": HOSTILE})
    attach(service, "churn", 1, {f"{HOSTILE}.csv": HOSTILE.encode(), "a.md": HOSTILE.encode()})
    service.evidence.set_card(ME, "churn", 1, HOSTILE + "\n[x](javascript:alert(5))")
    service.evidence.comment(ME, model="churn", version=1, body=HOSTILE)
    for path in ["/", "/models/churn", "/models/churn/versions/1", "/compare?a=churn/1&b=churn/1"]:
        elements = Elements.of(client.get(path).text)
        # The page's own script, from /static; no element a payload made; no handler.
        assert [a for t, a in elements.found if t == "script"] == [{"src": "/static/modelyard.js",
            "defer": None}], path  # fmt: skip
        assert not [t for t, _ in elements.found if t in ("iframe", "object", "embed")], path
        charts = [a for t, a in elements.found if t == "svg"]
        assert all((a.get("class") or "").startswith("chart") for a in charts), path
        sources = [a["src"] or "" for t, a in elements.found if t == "img" and "src" in a]
        assert all(src.startswith("/") for src in sources), path  # the sanitiser's rule
        assert not [a for _, attrs in elements.found for a in attrs if a.startswith("on")], path
        values = [v or "" for _, attrs in elements.found for v in attrs.values()]
        assert not [v for v in values if v.strip().lower().startswith("javascript:")], path


class Elements(HTMLParser):
    """The elements of a page as a browser's parser sees them (not its text)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))

    @classmethod
    def of(cls, html: str) -> Elements:
        parser = cls()
        parser.feed(html)
        return parser


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
EVIDENCE = {
    "eval/roc.png": PNG,
    "eval/confusion.jpg": b"\xff\xd8\xff\xe0" + b"\x00" * 32,
    "eval/pr.svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "eval/report.html": b"<html><script>fetch('/x?c='+document.cookie)</script>report</html>",
    "eval/metrics.csv": b"threshold,precision\n0.5,<b>0.91</b>\n",
    "eval/metrics.json": b'{"auc": 0.83}',
    "eval/fairness.pdf": b"%PDF-1.4 fairness",
    "eval/<img src=x onerror=alert(4)>.txt": b"hostile name",
}


def attach(service: RegistryService, name: str, number: int, files: dict[str, bytes]) -> None:
    items = [AttachmentIn(path, len(data), sha(data), data) for path, data in files.items()]
    service.evidence.attach(ME, name, number, items)


def test_version_page_shows_the_evidence_each_through_its_safe_view(
    service: RegistryService, client: TestClient
) -> None:
    churn(service)
    attach(service, "churn", 3, EVIDENCE)
    service.evidence.set_card(ME, "churn", 3, "# Churn card\n\nEdited **card**.")
    service.evidence.comment(ME, model="churn", version=3, body="Looks *good*")
    html = client.get("/models/churn/versions/3").text
    views = {
        path: view for view, path in re.findall(r'data-view="(\w+)" data-path="([^"]+)"', html)
    }
    assert views["eval/roc.png"] == views["eval/confusion.jpg"] == views["eval/pr.svg"] == "image"
    assert views["eval/report.html"] == "report" and views["eval/fairness.pdf"] == "other"
    assert views["eval/metrics.csv"] == views["eval/metrics.json"] == "text"
    base = "/models/churn/versions/3/attachments/"
    assert f'<img src="{base}eval/roc.png"' in html and f'<img src="{base}eval/pr.svg"' in html
    assert f'<iframe class="report" sandbox src="{base}eval/report.html"' in html
    assert "0.5,&lt;b&gt;0.91&lt;/b&gt;" in html  # the CSV's first lines, escaped
    assert "<h1>Churn card</h1>" in section(html, "card")
    assert "<em>good</em>" in section(html, "comments")
    assert html.count('data-test="attachment"') == len(EVIDENCE)
    assert html.count("?download=1") == len(EVIDENCE)  # each can be saved


def test_attachment_views_carry_their_type_and_policy(
    service: RegistryService, client: TestClient
) -> None:
    churn(service)
    attach(service, "churn", 3, EVIDENCE)
    base = "/models/churn/versions/3/attachments/"
    png = client.get(base + "eval/roc.png")
    assert png.content == PNG and png.headers["content-type"] == "image/png"
    assert png.headers["x-content-type-options"] == "nosniff"
    svg = client.get(base + "eval/pr.svg")
    assert svg.headers["content-type"] == "image/svg+xml"
    assert svg.headers["content-security-policy"] == (
        "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    )
    report = client.get(base + "eval/report.html")
    assert report.headers["content-type"].startswith("text/html")
    assert report.headers["content-security-policy"] == REPORT_POLICY
    csv = client.get(base + "eval/metrics.csv")
    assert csv.headers["content-type"].startswith("text/plain")
    assert "sandbox" in csv.headers["content-security-policy"]
    pdf = client.get(base + "eval/fairness.pdf")
    assert pdf.headers["content-type"] == "application/octet-stream"
    assert pdf.headers["content-disposition"].startswith("attachment;")
    saved = client.get(base + "eval/report.html", params={"download": "1"})
    assert saved.headers["content-type"] == "application/octet-stream"
    assert saved.headers["content-disposition"].startswith("attachment;")
    assert client.get(base + "eval/missing.png").status_code == 404


def test_a_viewer_sees_the_evidence_it_may_review(
    service: RegistryService, client: TestClient
) -> None:
    churn(service)
    attach(service, "churn", 3, {"eval/roc.png": PNG})
    root = service.identity.bootstrap_admin("root", operator="test")
    admin = service.access.authenticate(root.token)
    service.identity.create_principal(admin, "ann", PrincipalKind.USER)
    service.identity.set_grant(admin, "ann", Role.VIEWER, model="churn")
    viewer = {
        "Authorization": f"Bearer {service.identity.create_token(admin, principal='ann').token}"
    }
    page_html = client.get("/models/churn/versions/3", headers=viewer).text
    assert 'data-path="eval/roc.png"' in page_html and 'data-test="download"' not in page_html
    image = client.get("/models/churn/versions/3/attachments/eval/roc.png", headers=viewer)
    assert image.status_code == 200 and image.content == PNG
    service.identity.create_principal(admin, "eve", PrincipalKind.USER)
    stranger = {
        "Authorization": f"Bearer {service.identity.create_token(admin, principal='eve').token}"
    }
    hidden = client.get("/models/churn/versions/3/attachments/eval/roc.png", headers=stranger)
    assert hidden.status_code == 404


# -- compare -----------------------------------------------------------------------------------


def test_compare_shows_deltas_lineage_packages_files_and_a_gate(
    service: RegistryService, client: TestClient
) -> None:
    churn(service)
    html = client.get(
        "/compare", params={"a": "churn@production", "b": "churn/3", "metric": "logloss:lower"}
    ).text
    metrics = text_of(section(html, "compare-metrics"))
    assert "auc 0.82 0.83 +0.01" in metrics
    assert section(html, "compare-metrics").count("<rect") == 4  # two metrics, two sides
    assert "C 0.2 0.3" in text_of(section(html, "compare-params"))
    lineage = text_of(section(html, "compare-lineage"))
    assert "2026-w02" in lineage and "2026-w03" in lineage
    assert "scikit-learn 1.2.0 1.3.0" in text_of(section(html, "compare-environment"))
    assert "model.pkl" in section(html, "compare-files")
    gate = text_of(section(html, "gate"))
    assert "pass" in gate and "logloss" in gate and "lower is better" in gate
    failing = client.get("/compare", params={"a": "churn/3", "b": "churn/1", "metric": "auc"})
    assert "fail" in text_of(section(failing.text, "gate"))


def test_compare_defaults_and_errors(service: RegistryService, client: TestClient) -> None:
    churn(service)
    empty = client.get("/compare")
    assert empty.status_code == 200 and 'name="a"' in empty.text
    missing = client.get("/compare", params={"a": "churn/9", "b": "churn/1"})
    assert missing.status_code == 404 and "churn/9" in missing.text
    against_production = client.get("/compare", params={"b": "churn/3"}).text
    assert 'value="churn@production"' in against_production
    assert 'A: <a href="/models/churn/versions/2">churn/2</a>' in against_production
    bad_metric = client.get("/compare", params={"a": "churn/1", "b": "churn/2", "metric": "a b"})
    assert bad_metric.status_code == 200 and 'data-test="gate-error"' in bad_metric.text


# -- queries and size --------------------------------------------------------------------------


@contextmanager
def counted(service: RegistryService) -> Iterator[list[str]]:
    """Every statement the database runs meanwhile: through SQLAlchemy (an engine event)
    and, on SQLite, on the DBAPI connections themselves (the prebuilt statements)."""
    statements: list[str] = []
    engine = service.db.engine

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def trace(dbapi_connection: Any, *args: Any) -> None:
        dbapi_connection.set_trace_callback(statements.append)

    def untrace(dbapi_connection: Any, *args: Any) -> None:
        dbapi_connection.set_trace_callback(None)

    hooks = (
        [("checkout", trace), ("checkin", untrace)]
        if service.db.is_sqlite
        else [("before_cursor_execute", record)]
    )
    for name, hook in hooks:
        event.listen(engine, name, hook)
    try:
        yield statements
    finally:
        for name, hook in hooks:
            event.remove(engine, name, hook)


PAGES = [
    "/",
    "/models/churn",
    "/models/churn/versions/3",
    "/compare?a=churn@production&b=churn/3&metric=auc",
]


def test_each_page_runs_a_fixed_number_of_queries(service: RegistryService) -> None:
    """With 5 and with 51 versions (and their stage moves), each page runs as many
    statements: nothing is loaded one row at a time."""
    counts: dict[int, list[int]] = {}
    with TestClient(create_app(service, reach=Reach.LOOPBACK, local_user="tester")) as client:
        done = 0
        for total in (5, 51):
            for number in range(done + 1, total + 1):
                register(service, "churn", number, description=f"v{number}")
                if number % 2 == 0:
                    promote(service, f"churn/{number}", "production")
            promote(service, f"churn/{total}", "staging")
            if done == 0:
                attach(service, "churn", 3, EVIDENCE)
            done = total
            for path in PAGES:  # warm the caches first: a page then costs what it will
                assert client.get(path).status_code == 200
            counts[total] = []
            for path in PAGES:
                with counted(service) as statements:
                    assert client.get(path).status_code == 200
                counts[total].append(len(statements))
    assert counts[5] == counts[51]


def test_pages_stay_small(service: RegistryService, client: TestClient) -> None:
    churn(service, 3)
    for path in PAGES:
        assert len(client.get(path).content) < 150_000
