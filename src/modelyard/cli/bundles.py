"""Air-gapped transfer: `modelyard export` writes a model's versions into one bundle the
registry signs; `modelyard import-bundle` brings one into another registry, which
verifies all of it first (docs/security.md, Bundles)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelyard.cli import output
from modelyard.cli.common import JsonOption, UrlOption, handles_errors, registry
from modelyard.config import DEFAULT_URL


def install(app: typer.Typer) -> None:
    """Add the commands to the main app."""
    app.command("export")(handles_errors(export))
    app.command("import-bundle")(handles_errors(import_bundle))


def export(
    model: Annotated[str, typer.Argument(help="The model whose versions to export.")],
    stage: Annotated[
        str | None, typer.Option("--stage", help="Export the versions in this stage.")
    ] = None,
    history: Annotated[
        bool,
        typer.Option("--history", help="Export every version, with the model's stage history."),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The bundle to write.", show_default="MODEL.mybundle"),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Write a model's versions into one bundle, for a registry with no network to this one.

    The bundle holds the versions' files, metadata, attachments, cards, check results and
    signatures, and the journal's events about them, with a manifest of every part's
    sha256 that this registry signs. Takes the right to download the model's files.

    The other registry's admin trusts this registry's key once (modelyard keys list
    --owner registry --pem, then there: modelyard keys add --registry NAME --key FILE).

    [bold]Examples[/bold]:
      modelyard export churn --stage production -o churn.mybundle
      modelyard export churn --history
    """
    target = out or Path(f"{model}.mybundle")
    with registry(url) as reg:
        made = reg.export_bundle(model, target, stage=stage, history=history)
    held = ", ".join(f"{model}/{n}" for n in made.versions)
    output.emit(
        json_out,
        made.as_dict(),
        f"wrote [bold]{output.escape(str(target))}[/bold]: {output.escape(held)}"
        f" ({output.human_size(made.size)}, bundle sha256:{made.digest})",
    )


def import_bundle(
    bundle: Annotated[Path, typer.Argument(help="A bundle another registry exported.")],
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Import a bundle another registry exported (admins).

    Nothing is written unless all of it verifies: signed by a registry whose key is trusted
    here (modelyard keys add --registry), every file, the metadata and the journal exactly
    as its signed manifest says. A changed byte is refused, naming the part.

    Versions keep their numbers and land in the model's first stage: this registry's policy
    decides their promotion. Their stage, checks and signatures there are kept as the other
    registry's (modelyard show, modelyard signatures). Run it again: it says "already
    imported" and changes nothing.

    [bold]Example[/bold]: modelyard import-bundle churn.mybundle
    """
    with registry(url) as reg:
        done = reg.import_bundle(bundle)
    lines = []
    if done.imported:
        numbers = ", ".join(f"{done.model}/{n}" for n in done.imported)
        lines.append(f"imported [bold]{output.escape(numbers)}[/bold] from {done.registry}")
    if done.already:
        numbers = ", ".join(f"{done.model}/{n}" for n in done.already)
        lines.append(f"{output.escape(numbers)}: already imported")
    lines.append(f"bundle sha256:{done.bundle}, signed by key {done.key_id}")
    output.emit(json_out, done.as_dict(), "\n".join(lines))
