"""modelyard advisories: known vulnerabilities in an environment's packages, from the OSV
dump a site downloads where the network allows (docs/security.md): checked here (`check`),
or loaded into the registry (`load`, admins), which then checks every version itself
(`status` says which dump it holds)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from modelyard.cli import output
from modelyard.cli.common import JsonOption, RegistryOption, handles_errors, registry
from modelyard.client.capture import environment_from_file
from modelyard.config import DEFAULT_URL
from modelyard.domain.errors import InvalidInput

if TYPE_CHECKING:
    from modelyard.domain.advisories import AdvisoryDB, DumpSummary, Verdict

# By Severity's name: the matcher is imported when the command runs, not with every
# other command (it costs each `modelyard` invocation 13 ms).
_STYLE = {
    "CRITICAL": "bold red",
    "HIGH": "red",
    "MEDIUM": "yellow",
    "LOW": "default",
    "UNKNOWN": "magenta",
}

advisories_app = typer.Typer(
    help="Known vulnerabilities in a version's environment, matched offline against the"
    " advisories OSV publishes for PyPI.\n\n"
    "[bold]Examples[/bold]: modelyard advisories check --osv all.zip churn@production;"
    " modelyard advisories load all.zip",
    no_args_is_help=True,
)


def install(app: typer.Typer) -> None:
    app.add_typer(advisories_app, name="advisories")


@advisories_app.command("check")
@handles_errors
def check(
    osv: Annotated[
        Path,
        typer.Option(
            "--osv",
            metavar="FILE.zip",
            help="OSV's PyPI dump (all.zip), as downloaded: docs/security.md says from where.",
        ),
    ],
    reference: Annotated[
        str | None,
        typer.Argument(
            metavar="REF",
            help="A version (NAME/N, NAME@ALIAS...): the environment captured with it.",
        ),
    ] = None,
    requirements: Annotated[
        Path | None,
        typer.Option(
            "--requirements",
            "-r",
            metavar="FILE",
            help="A requirements.txt (name==version a line) or conda environment file.",
        ),
    ] = None,
    package: Annotated[
        list[str] | None,
        typer.Option("--package", metavar="NAME==VERSION", help="A package, repeatable."),
    ] = None,
    fail_on: Annotated[
        Literal["low", "medium", "high", "critical"],
        typer.Option(
            help="Exit 1 on a finding of this severity or above (one of unknown severity"
            " counts at every level)."
        ),
    ] = "low",
    registry_url: RegistryOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Match packages and their versions against OSV's advisories, without the network.

    Give one of: a version REF (its captured environment), --requirements or --package.

    A version PEP 440 cannot read is reported as unknown, never passed as unaffected.

    Exits 1 when a finding reaches --fail-on (default low: any finding fails).

    [bold]Examples[/bold]:
      modelyard advisories check --osv all.zip churn@production
      modelyard advisories check --osv all.zip --requirements requirements.txt --json
      modelyard advisories check --osv all.zip --package numpy==1.21.0 --fail-on high
    """
    label, packages = _packages(reference, requirements, package or [], registry_url)
    from modelyard.domain.advisories import AdvisoryDB, Severity, Verdict

    db = AdvisoryDB.from_zip(osv)
    verdict = Verdict.of(db.match(packages), Severity[fail_on.upper()])
    if json_out:
        output.print_json(
            {
                **verdict.as_dict(),
                "checked": label,
                "packages": len(packages),
                "osv": {"records": db.records, "skipped": db.skipped},
            }
        )
    else:
        if verdict.findings:
            output.console.print(_table(verdict))
        for line in _summary(label, len(packages), db, verdict):
            output.console.print(line, highlight=False)
    if verdict.status == "fail":
        raise typer.Exit(1)


@advisories_app.command("load")
@handles_errors
def load(
    dump: Annotated[
        Path,
        typer.Argument(
            metavar="FILE.zip",
            help="OSV's PyPI dump (all.zip), as downloaded: docs/security.md says from where.",
        ),
    ],
    registry_url: RegistryOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Load OSV's PyPI dump into the registry (admins), in place of the one it holds.

    The registry checks the zip whole first (a zip bomb, what is not a zip, a dump with no
    PyPI advisory are refused, and nothing changes), then matches every live version's
    environment against it: each verdict is the version's advisories check, and a policy
    may require checks.advisories = "pass" or limit advisories.severity.

    [bold]Example[/bold]:
      curl -O https://osv-vulnerabilities.storage.googleapis.com/PyPI/all.zip
      modelyard advisories load all.zip
    """
    with registry(registry_url) as reg:
        loaded = reg.load_advisories(dump)
    if json_out:
        output.print_json(loaded.as_dict())
        return
    said = "loaded" if loaded.replaced else "already loaded:"
    output.console.print(f"{said} {_dump_line(loaded.dump)}", highlight=False)
    done = loaded.evaluation
    output.console.print(
        f"evaluated {done.versions} version(s) against it: {done.changed} verdict(s) changed,"
        f" {done.affected} version(s) in a protected or exclusive stage newly affected",
        highlight=False,
    )


@advisories_app.command("status")
@handles_errors
def status(registry_url: RegistryOption = DEFAULT_URL, json_out: JsonOption = False) -> None:
    """The OSV dump the registry matches versions against: its digest, what it holds, who
    loaded it when, and whether every live version has been evaluated against it.

    [bold]Example[/bold]: modelyard advisories status --json
    """
    with registry(registry_url) as reg:
        dump = reg.advisories()
    if json_out:
        output.print_json({"dump": dump.as_dict() if dump is not None else None})
        return
    if dump is None:
        output.console.print(
            "no OSV dump is loaded: versions have no advisories check"
            " (an admin loads one: modelyard advisories load all.zip)",
            highlight=False,
        )
        return
    output.console.print(_dump_line(dump), highlight=False)
    newest = f"; its newest record modified {dump.modified}" if dump.modified else ""
    output.console.print(
        f"loaded by {output.escape(dump.loaded_by)} on {output.when(dump.loaded_at)}{newest}",
        highlight=False,
    )
    output.console.print(
        "evaluation of the live versions under way"
        if dump.pending
        else "every live version is evaluated against it",
        highlight=False,
    )


def _dump_line(dump: DumpSummary) -> str:
    skipped = f", {dump.skipped} member(s) skipped: not OSV records" if dump.skipped else ""
    return (
        f"OSV dump sha256:{dump.sha256} ({dump.size} bytes): {dump.advisories} advisories"
        f" naming {dump.packages} PyPI package(s), of {dump.records} record(s){skipped}"
    )


def _packages(
    reference: str | None, requirements: Path | None, pins: list[str], registry_url: str
) -> tuple[str, dict[str, str]]:
    """What to check, named for the summary, and its packages: name -> version."""
    if sum((reference is not None, requirements is not None, bool(pins))) != 1:
        raise InvalidInput("give one of REF, --requirements FILE or --package NAME==VERSION")
    if requirements is not None:
        return str(requirements), environment_from_file(requirements).packages
    if pins:
        return "--package", dict(_pin(pin) for pin in pins)
    assert reference is not None
    with registry(registry_url) as reg:
        version = reg.resolve(reference)
    if version.environment is None:
        raise InvalidInput(f"{version.reference} has no captured environment to check")
    return version.reference, version.environment.packages


def _pin(text: str) -> tuple[str, str]:
    name, sep, version = text.partition("==")
    if not sep or not name.strip() or not version.strip():
        raise InvalidInput(f"--package {text!r} must look like NAME==VERSION")
    return name.strip(), version.strip()


def _table(verdict: Verdict) -> output.Table:
    table = output.Table("package", "installed", "advisory", "severity", "fixed in", "match")
    for f in verdict.findings:
        style = _STYLE[f.severity.name]
        aliases = f" ({', '.join(f.aliases)})" if f.aliases else ""
        table.add_row(
            output.escape(f.package),
            output.escape(f.installed),
            output.escape(f.advisory + aliases),
            f"[{style}]{f.severity.name}[/{style}]",
            output.escape(", ".join(f.fixed) or "-"),
            f.match if f.match == "affected" else "[magenta]unknown[/magenta]",
        )
    return table


def _summary(label: str, checked: int, db: AdvisoryDB, verdict: Verdict) -> list[str]:
    findings = verdict.findings
    counts = Counter(f.severity.name for f in findings)
    by_severity = ", ".join(f"{n} {name}" for name, n in counts.items())
    unknown = sum(f.match == "unknown" for f in findings)
    lines = [
        f"{output.escape(label)}: {len(findings)} finding(s)"
        + (f" ({by_severity})" if findings else "")
        + f" in {len({f.package for f in findings})} of {checked} package(s)"
        + (f"; {unknown} could not be evaluated (a version PEP 440 cannot read)" if unknown else "")
    ]
    skipped = f", {db.skipped} member(s) skipped: not OSV records" if db.skipped else ""
    lines.append(f"OSV dump: {db.records} record(s){skipped}")
    lines.append(f"verdict: {verdict.status} (--fail-on {verdict.fail_on.name.lower()})")
    return lines
