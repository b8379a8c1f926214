"""Evidence: `attach` and `attachments`, `card show|edit|set|history`, `comment` and
`comments`."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from modelyard.cli import output
from modelyard.cli.common import JsonOption, UrlOption, handles_errors, registry
from modelyard.config import DEFAULT_URL
from modelyard.domain.errors import InvalidInput
from modelyard.domain.evidence import Card, Comment

Reference = Annotated[str, typer.Argument(help="A version: NAME/N, NAME@ALIAS_OR_STAGE, ...")]
RequestOption = Annotated[
    int | None,
    typer.Option("--request", "-r", help="A promotion request's number instead of a version."),
]

card_app = typer.Typer(
    help="A version's model card: Markdown, editable, every edit kept and journaled.\n\n"
    "[bold]Example[/bold]: modelyard card set churn/43 MODEL_CARD.md",
    no_args_is_help=True,
)


def install(app: typer.Typer) -> None:
    """Add the commands to the main app."""
    for command in (attach, attachments, comment, comments):
        app.command()(handles_errors(command))
    card_app.command("show")(handles_errors(card_show))
    card_app.command("edit")(handles_errors(card_edit))
    card_app.command("set")(handles_errors(card_set))
    card_app.command("history")(handles_errors(card_history))
    app.add_typer(card_app, name="card")


# -- attachments ------------------------------------------------------------------------------


def attach(
    reference: Reference,
    paths: Annotated[
        list[Path], typer.Argument(help="Files or directories of evidence (plots, reports, ...).")
    ],
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Attach evaluation evidence to a version after its registration: plots, reports,
    metric tables, logs. A directory's files keep their paths inside it. Attachments are
    never replaced (a path attached already is refused) and the version's files and
    digest do not change. Takes contributor. Viewers can read attachments.

    [bold]Example[/bold]: modelyard attach churn/43 ./fairness-report.html
    """
    with registry(url) as reg:
        attached = reg.attach(reference, paths)
    if json_out:
        output.print_json({"items": [a.as_dict() for a in attached]})
        return
    for a in attached:
        output.console.print(
            f"attached {output.escape(a.path)} ({a.media_type}, {output.human_size(a.size)})",
            highlight=False,
        )


def attachments(
    reference: Reference,
    save: Annotated[
        str | None, typer.Option("--save", help="Download this attachment (its path).")
    ] = None,
    out: Annotated[
        Path, typer.Option("--output", "-o", help="With --save: a file or directory.")
    ] = Path("."),
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """List a version's attachments, or download one with --save (verified against its
    sha256). Viewers may: evidence is for whoever reviews the model.

    [bold]Example[/bold]: modelyard attachments churn/43 --save roc.png -o ./review/
    """
    with registry(url) as reg:
        if save is not None:
            written = reg.download_attachment(reference, save, out)
            output.emit(
                json_out,
                {"path": save, "written": str(written)},
                f"saved {output.escape(save)} to {output.escape(str(written))}",
            )
            return
        found = reg.attachments(reference)
    if json_out:
        output.print_json({"items": [a.as_dict() for a in found]})
        return
    table = output.Table("path", "type", "size", "attached by", "at")
    for a in found:
        table.add_row(
            output.escape(a.path),
            a.media_type,
            output.human_size(a.size),
            output.escape(a.attached_by),
            a.attached_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    output.console.print(table)


# -- the card ---------------------------------------------------------------------------------


def card_show(
    reference: Reference, url: UrlOption = DEFAULT_URL, json_out: JsonOption = False
) -> None:
    """Print a version's model card (its Markdown, as written).

    [bold]Example[/bold]: modelyard card show churn@production
    """
    with registry(url) as reg:
        card = reg.card(reference)
    if json_out:
        output.print_json(card.as_dict() if card else None)
        return
    if card is None:
        output.errors.print(f"{output.escape(reference)} has no model card")
        raise typer.Exit(1)
    sys.stdout.write(card.text if card.text.endswith("\n") else card.text + "\n")


def card_set(
    reference: Reference,
    file: Annotated[str, typer.Argument(help="A Markdown file, or - to read standard input.")],
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Replace a version's model card with a file's text: a new revision, journaled; the
    earlier ones are kept. Takes contributor.

    [bold]Example[/bold]: modelyard card set churn/43 MODEL_CARD.md

    [bold]Example[/bold]: generate-card | modelyard card set churn/43 -
    """
    text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    with registry(url) as reg:
        _print_card_saved(reg.set_card(reference, text), reference, json_out)


def card_edit(
    reference: Reference, url: UrlOption = DEFAULT_URL, json_out: JsonOption = False
) -> None:
    """Edit a version's model card in $VISUAL or $EDITOR (else vi); saving an unchanged
    text changes nothing. Takes contributor.

    [bold]Example[/bold]: EDITOR=nano modelyard card edit churn/43
    """
    with registry(url) as reg:
        current = reg.card(reference)
        before = current.text if current else ""
        after = _edited(before)
        if after == before:
            output.emit(json_out, current.as_dict() if current else None, "the card is unchanged")
            return
        _print_card_saved(reg.set_card(reference, after), reference, json_out)


def _edited(text: str) -> str:
    """``text`` as the user's editor leaves it."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.TemporaryDirectory() as scratch:
        draft = Path(scratch) / "MODEL_CARD.md"
        draft.write_text(text, encoding="utf-8")
        done = subprocess.run([*shlex.split(editor), str(draft)], check=False)
        if done.returncode != 0:
            raise InvalidInput(
                f"the editor ({editor}) exited with {done.returncode}; nothing saved"
            )
        return draft.read_text(encoding="utf-8")


def _print_card_saved(card: Card, reference: str, json_out: bool) -> None:
    output.emit(
        json_out,
        card.as_dict(),
        f"{output.escape(reference)}: card revision {card.revision} saved",
    )


def card_history(
    reference: Reference, url: UrlOption = DEFAULT_URL, json_out: JsonOption = False
) -> None:
    """Every revision of a version's model card: who, when, from where.

    [bold]Example[/bold]: modelyard card history churn/43
    """
    with registry(url) as reg:
        found = reg.card_history(reference)
    if json_out:
        output.print_json({"items": [c.as_dict() for c in found]})
        return
    table = output.Table("revision", "source", "by", "at", "characters")
    for c in found:
        table.add_row(
            str(c.revision),
            c.source,
            output.escape(c.updated_by),
            c.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(len(c.text)),
        )
    output.console.print(table)


# -- comments ---------------------------------------------------------------------------------


def comment(
    words: Annotated[
        list[str],
        typer.Argument(
            help="REF TEXT, or (with --request) TEXT; a TEXT of - reads standard input.",
            metavar="[REF] TEXT",
        ),
    ],
    request: RequestOption = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Comment on a version or on a promotion request: Markdown, journaled. Viewers may
    comment (reviewers discuss what they review).

    [bold]Example[/bold]: modelyard comment churn/43 "The ROC plot looks right."

    [bold]Example[/bold]: modelyard comment --request 7 "Approving after the fairness report."
    """
    expected = 1 if request is not None else 2
    if len(words) != expected:
        usage = "--request ID TEXT" if request is not None else "REF TEXT"
        raise InvalidInput(f"give {usage}, quoting the text")
    text = sys.stdin.read() if words[-1] == "-" else words[-1]
    with registry(url) as reg:
        posted = reg.comment(request if request is not None else words[0], text)
    output.emit(json_out, posted.as_dict(), f"comment {posted.id} on {_on(posted)}")


def comments(
    reference: Annotated[
        str | None, typer.Argument(help="A version (or use --request).", show_default=False)
    ] = None,
    request: RequestOption = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """The comments on a version (its requests' included) or on a request, oldest first.

    [bold]Example[/bold]: modelyard comments churn/43
    """
    if (reference is None) == (request is None):
        raise InvalidInput("name a version (REF) or a request (--request ID)")
    with registry(url) as reg:
        found = reg.comments(request if request is not None else str(reference))
    if json_out:
        output.print_json({"items": [c.as_dict() for c in found]})
        return
    for c in found:
        when = c.created_at.strftime("%Y-%m-%d %H:%M:%S")
        output.console.print(
            f"[bold]{output.escape(c.author)}[/bold] {when} on {_on(c)}", highlight=False
        )
        output.console.print(output.escape(c.body), highlight=False)
        output.console.print()


def _on(c: Comment) -> str:
    version = f"{c.model}/{c.version}"
    return f"request {c.request_id} ({version})" if c.request_id is not None else version
