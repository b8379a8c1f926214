"""Check results: `modelyard check` reports one (checkers, e.g. CI), `modelyard checks`
lists a version's with the findings of the registry's own checks (its scan's, the known
vulnerabilities in its environment), `modelyard accept-scan` accepts the scan's (admins)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from modelyard.cli import output
from modelyard.cli.common import JsonOption, UrlOption, handles_errors, registry
from modelyard.config import DEFAULT_URL
from modelyard.domain.checks import ADVISORIES_CHECK, SCAN_CHECK, CheckResult

Reference = Annotated[str, typer.Argument(help="A version: NAME/N, NAME@ALIAS_OR_STAGE, ...")]


def install(app: typer.Typer) -> None:
    """Add the commands to the main app."""
    app.command()(handles_errors(check))
    app.command()(handles_errors(checks))
    app.command("accept-scan")(handles_errors(accept_scan))


def check(
    reference: Reference,
    name: Annotated[str, typer.Argument(help="The check, e.g. tests or bias-audit.")],
    status: Annotated[str, typer.Option("--status", "-s", help="pass, fail or pending.")],
    details_url: Annotated[
        str | None,
        typer.Option("--details-url", "-d", help="Where its details are (an http(s) URL)."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Report the result of a check on a version. Takes the checker role (give it to the
    CI account that scans or tests): the author of a version cannot pass its checks, and
    no tag can. The latest report of a check counts; every one is journaled. A policy
    requires one with the rule checks.NAME = "pass". The name scan is the registry's own
    (it scans every file itself), so nobody reports it.

    [bold]Example[/bold]: modelyard check churn/43 bias-audit --status pass
    --details-url https://ci.example.com/runs/7
    """
    with registry(url) as reg:
        result = reg.report_check(reference, name, status, url=details_url)
    if json_out:
        output.print_json(result.as_dict())
        return
    output.console.print(
        f"{result.reference}: {result.name} = {result.status} (reported by {result.reporter})",
        highlight=False,
    )


def checks(
    reference: Reference, url: UrlOption = DEFAULT_URL, json_out: JsonOption = False
) -> None:
    """The latest result of every check on a version: those checkers reported, and the
    registry's own: scan, of every file and attachment, with its open findings; and
    advisories, the known vulnerabilities in its environment (once an admin loaded an OSV
    dump), with each advisory, its severity and the versions that fix it.

    [bold]Example[/bold]: modelyard checks churn/43
    """
    with registry(url) as reg:
        found = reg.checks(reference)
    if json_out:
        output.print_json({"items": [c.as_dict() for c in found]})
        return
    table = output.Table("check", "status", "reported by", "at", "details")
    for c in found:
        table.add_row(
            output.escape(c.name),
            c.status.value,
            output.escape(c.reporter),
            c.reported_at.strftime("%Y-%m-%d %H:%M:%S"),
            output.escape(c.url or _summary(c)),
        )
    output.console.print(table)
    for c in found:
        for line in _findings(c):
            output.console.print(f"  {output.escape(line)}", highlight=False)


def accept_scan(
    reference: Reference,
    reason: Annotated[
        str, typer.Option("--reason", "-r", help="Why the findings are safe (journaled).")
    ],
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Accept the open findings of the registry's scan of a version (admins): its scan
    check passes, so the version may leave development. The journal keeps who accepted
    which findings and why; a re-scan that finds anything else fails again. To trust a
    class everywhere instead, list it in the server's MODELYARD_SCAN_ALLOW file.

    [bold]Example[/bold]: modelyard accept-scan churn/43 --reason "our own tokenizer class"
    """
    with registry(url) as reg:
        result = reg.accept_scan(reference, reason)
    if json_out:
        output.print_json(result.as_dict())
        return
    output.console.print(
        f"{result.reference}: scan = {result.status} (findings accepted by you)", highlight=False
    )


def _summary(check: CheckResult) -> str:
    """The details column of the registry's own checks (others have none)."""
    details = check.details
    if details is None:
        return "-"
    if check.name == ADVISORIES_CHECK:
        from modelyard.domain.advisories import summary_of  # here: most commands never need it

        return summary_of(details)
    from modelyard.domain.scanning import open_findings

    findings = len(open_findings(details))
    accepted = details["findings_total"] - findings
    parts = [f"{details['files_total']} file(s) scanned", f"{findings} open finding(s)"]
    return ", ".join(parts + ([f"{accepted} accepted"] if accepted else []))


def _findings(check: CheckResult) -> list[str]:
    """A line per finding of the registry's own checks: the scan's open ones; each
    advisory affecting the environment (or that may: a version that cannot be compared)."""
    details: dict[str, Any] = check.details or {}
    if check.name == ADVISORIES_CHECK and details:
        lines = [_advisory_line(f) for f in details["findings"]]
        more = details["findings_total"] - len(details["findings"])
        return lines + ([f"and {more} more: modelyard checks REF --json"] if more > 0 else [])
    if check.name != SCAN_CHECK or not details:
        return []
    from modelyard.domain.scanning import open_findings

    lines = []
    for finding in open_findings(details):
        where = f" at byte {finding['offset']}" if finding.get("offset") is not None else ""
        lines.append(f"{finding['path']}{where}: {finding['message']}")
    return lines


def _advisory_line(finding: dict[str, Any]) -> str:
    aliases = f" ({', '.join(finding['aliases'])})" if finding["aliases"] else ""
    fixed = f"fixed in {', '.join(finding['fixed'])}" if finding["fixed"] else "no fix listed"
    may = "" if finding["match"] == "affected" else ", may affect it (cannot compare versions)"
    return (
        f"{finding['package']} {finding['installed']}: {finding['advisory']}{aliases}"
        f" {finding['severity']}, {fixed}{may}"
    )
