"""Commands of the lifecycle: promote, requests, approve, rollback, history, policy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from modelyard.cli import output
from modelyard.cli.common import JsonOption, UrlOption, handles_errors, registry
from modelyard.config import DEFAULT_URL
from modelyard.domain.events import describe
from modelyard.domain.lifecycle import TransitionRequest

Reference = Annotated[str, typer.Argument(help="A version: NAME/N, NAME@ALIAS_OR_STAGE, ...")]
ModelName = Annotated[str, typer.Argument(help="Model name.")]
RequestId = Annotated[int, typer.Argument(help="The request's number (see modelyard requests).")]
Comment = Annotated[str, typer.Option("--comment", "-c", help="Why; kept in the journal.")]

policy_app = typer.Typer(
    help="Promotion policies as code: stages, required metrics and fields, approvals.\n\n"
    "[bold]Example[/bold]: modelyard policy apply churn policy.yaml",
    no_args_is_help=True,
)


def install(app: typer.Typer) -> None:
    for command in (promote, requests, rollback, history, archive, restore, delete):
        app.command()(handles_errors(command))
    for decision, doc in _DECISIONS.items():
        app.command(decision)(handles_errors(_decision_command(decision, doc)))
    app.add_typer(policy_app, name="policy")


def promote(
    reference: Reference,
    to: Annotated[str, typer.Option("--to", help="The stage, e.g. staging or production.")],
    comment: Comment = "",
    override: Annotated[
        str | None, typer.Option(help="Admins: execute now despite the policy; the reason.")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Promote a version. Unprotected stages change at once; protected ones (staging,
    production by default) open a request for reviewers. The policy is checked first:
    a refusal lists every failed rule with its values.

    [bold]Example[/bold]: modelyard promote churn/42 --to production --comment "weekly retrain"
    """
    with registry(url) as reg:
        result = reg.promote(reference, to, comment=comment, override=override)
    if json_out:
        output.print_json(result.as_dict())
        return
    version = result.version
    if result.status == "executed":
        output.console.print(f"{version.reference} is in {version.stage}")
        return
    assert result.request is not None
    request = result.request
    output.console.print(
        f"request {request.id}: {version.reference} → {request.to_stage}, waiting for"
        f" {request.approvals_needed} approval(s); policy: "
        + ("passed" if request.evaluation.passed else "failed")
    )
    output.console.print(f"approve with: modelyard approve {request.id}", highlight=False)


def requests(
    model: Annotated[str | None, typer.Option(help="Only this model's requests.")] = None,
    status: Annotated[
        str, typer.Option(help="open, executed, rejected, cancelled, invalidated, refused, all")
    ] = "open",
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """The promotion queue: requests waiting for approval (or, with --status, decided).

    [bold]Example[/bold]: modelyard requests --model churn
    """
    with registry(url) as reg:
        found = reg.requests(model, status=status)
    if json_out:
        output.print_json({"items": [r.as_dict() for r in found]})
        return
    table = output.Table("id", "version", "to", "status", "requester", "approvals", "policy")
    for r in found:
        table.add_row(
            str(r.id),
            f"{r.model}/{r.version}",
            r.to_stage,
            r.status,
            output.escape(r.requester),
            f"{len(r.approvals)}/{r.approvals_needed}"
            + (f" ({', '.join(a.approver for a in r.approvals)})" if r.approvals else ""),
            "passed" if r.evaluation.passed else "failed",
        )
    output.console.print(table)


_DECISIONS = {
    "approve": "Approve a request; with enough approvals the promotion executes.",
    "reject": "Reject a request (a reviewer's no).",
    "cancel": "Withdraw a request (its requester, or a maintainer).",
}


def _decision_command(decision: str, doc: str) -> Callable[..., None]:
    """`approve`, `reject` and `cancel`: one shape."""

    def decide(
        request_id: RequestId,
        comment: Comment = "",
        url: UrlOption = DEFAULT_URL,
        json_out: JsonOption = False,
    ) -> None:
        with registry(url) as reg:
            method = {"approve": reg.approve, "reject": reg.reject, "cancel": reg.cancel}
            found = method[decision](request_id, comment=comment)
        output.emit(json_out, found.as_dict(), _request_line(found))

    decide.__doc__ = f"{doc}\n\n[bold]Example[/bold]: modelyard {decision} 7 --comment 'checked'"
    return decide


def _request_line(r: TransitionRequest) -> str:
    line = f"request {r.id} ({r.model}/{r.version} → {r.to_stage}): {r.status}"
    if r.status == "open":
        line += f", {len(r.approvals)}/{r.approvals_needed} approval(s)"
    return line


def rollback(
    name: ModelName,
    stage: Annotated[str, typer.Option(help="The stage to roll back.")] = "production",
    comment: Comment = "",
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Put back the version that held the stage before the current one, in one step.
    Maintainers; no approval needed: it is the emergency exit.

    [bold]Example[/bold]: modelyard rollback churn --stage production -c "v42 misbehaves"
    """
    with registry(url) as reg:
        version = reg.rollback(name, stage=stage, comment=comment)
    output.emit(json_out, version.as_dict(), f"{name}@{stage} is {version.reference} again")


def archive(
    reference: Reference, url: UrlOption = DEFAULT_URL, json_out: JsonOption = False
) -> None:
    """Archive a version: kept, but not promotable until restored.

    [bold]Example[/bold]: modelyard archive churn/40
    """
    with registry(url) as reg:
        version = reg.archive(reference)
    output.emit(json_out, version.as_dict(), f"{version.reference} is archived")


def restore(
    reference: Reference, url: UrlOption = DEFAULT_URL, json_out: JsonOption = False
) -> None:
    """Restore an archived version to the first stage.

    [bold]Example[/bold]: modelyard restore churn/40
    """
    with registry(url) as reg:
        version = reg.restore(reference)
    output.emit(json_out, version.as_dict(), f"{version.reference} is in {version.stage}")


def delete(
    reference: Reference,
    hard: Annotated[
        bool, typer.Option("--hard", help="Erase it (admins; never once in a protected stage).")
    ] = False,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Delete a version: hidden from every listing and reference, but kept (--hard erases).

    [bold]Example[/bold]: modelyard delete churn/39
    """
    with registry(url) as reg:
        reg.delete_version(reference, hard=hard)
    output.emit(
        json_out,
        {"reference": reference, "deleted": True, "hard": hard},
        f"{reference} {'erased' if hard else 'deleted (kept, hidden)'}",
    )


def history(name: ModelName, url: UrlOption = DEFAULT_URL, json_out: JsonOption = False) -> None:
    """Every stage move, alias change, request, approval and policy of a model, and its
    evidence (attachments, card edits, comments): when, who, from which version to which,
    through which request.

    [bold]Example[/bold]: modelyard history churn
    """
    with registry(url) as reg:
        events = reg.history(name)
    if json_out:
        output.print_json({"items": [e.as_dict() for e in events]})
        return
    table = output.Table("time", "who", "what", "subject", "detail")
    for e in events:
        table.add_row(
            e.time.strftime("%Y-%m-%d %H:%M:%S"),
            output.escape(e.actor),
            e.kind,
            output.escape(e.subject),
            output.escape(describe(e)),
        )
    output.console.print(table)


PolicyFile = Annotated[Path, typer.Argument(help="The policy, YAML.")]


@policy_app.command("apply")
@handles_errors
def policy_apply(
    name: ModelName, file: PolicyFile, url: UrlOption = DEFAULT_URL, json_out: JsonOption = False
) -> None:
    """Store a new version of a model's policy (maintainers); it is in force at once.

    [bold]Example[/bold]: modelyard policy apply churn policy.yaml
    """
    with registry(url) as reg:
        shown = reg.apply_policy(name, file.read_text())
    output.emit(json_out, shown, f"policy version {shown['version']} of {name} is in force")


@policy_app.command("apply-registry")
@handles_errors
def policy_apply_registry(
    file: PolicyFile, url: UrlOption = DEFAULT_URL, json_out: JsonOption = False
) -> None:
    """Store the registry-wide policy (admins): in force for models without their own.

    [bold]Example[/bold]: modelyard policy apply-registry policy.yaml
    """
    with registry(url) as reg:
        shown = reg.apply_policy(None, file.read_text())
    output.emit(json_out, shown, f"registry policy version {shown['version']} is in force")


@policy_app.command("show")
@handles_errors
def policy_show(
    name: Annotated[str | None, typer.Argument(help="Model name; the registry's without.")] = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Show the policy in force and the stages.

    [bold]Example[/bold]: modelyard policy show churn
    """
    with registry(url) as reg:
        shown = reg.policy(name)
    if json_out:
        output.print_json(shown)
        return
    source = (
        f"version {shown['version']}" + ("" if shown["own"] or not name else " (the registry's)")
        if shown["version"]
        else "the defaults"
    )
    output.console.print(f"policy of {name or 'the registry'}: {source}")
    for stage in shown["stages"]:
        flags = [k for k in ("exclusive", "protected") if stage[k]]
        output.console.print(
            f"  {stage['name']}" + (f" ({', '.join(flags)})" if flags else ""), highlight=False
        )
    if shown["text"]:
        output.console.print(shown["text"], highlight=False, markup=False)
