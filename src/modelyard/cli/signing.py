"""Signatures: `modelyard keys list|add|remove` (the public keys whose signatures count:
the registry's, other registries' it trusts, and your own), `modelyard sign` (your
signature of a version), `modelyard signatures` (who signed a version, and whether it
verifies)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group

from modelyard.cli import output
from modelyard.cli.common import JsonOption, UrlOption, handles_errors, registry
from modelyard.config import DEFAULT_URL
from modelyard.domain.errors import InvalidInput, SignatureInvalid

Reference = Annotated[str, typer.Argument(help="A version: NAME/N, NAME@ALIAS_OR_STAGE, ...")]


KeyFile = Annotated[Path, typer.Option("--key", "-k", help="A PEM file.")]
keys_app = typer.Typer(
    help="The public keys whose signatures the registry vouches for, and yours.\n\n"
    "[bold]Example[/bold]: modelyard keys list --pem > trusted.pem",
    no_args_is_help=True,
)


def install(app: typer.Typer) -> None:
    """Add the commands to the main app."""
    app.add_typer(keys_app, name="keys")
    keys_app.command("list")(handles_errors(list_keys))
    keys_app.command("add")(handles_errors(add_key))
    keys_app.command("remove")(handles_errors(remove_key))
    app.command()(handles_errors(sign))
    app.command()(handles_errors(signatures))


def list_keys(
    pem: Annotated[
        bool, typer.Option("--pem", help="Print the keys as PEM, e.g. to pin them in a file.")
    ] = False,
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner", help="Only the keys of this owner: registry, registry:NAME, a user."
        ),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """The public keys whose signatures the registry vouches for: its own ECDSA P-256 key
    (each it has signed with), other registries' keys an admin trusts (registry:NAME) and
    the keys registered to its users. A client that should not take the registry's word for
    its keys pins them: save them with --pem and point MODELYARD_TRUSTED_KEYS at the file.

    [bold]Example[/bold]: modelyard keys list --pem > trusted.pem

    [bold]Example[/bold]: modelyard keys list --owner registry --pem > this-registry.pem
    """
    with registry(url) as reg:
        found = [k for k in reg.public_keys() if owner is None or k.owner == owner]
    if json_out:
        output.print_json({"items": [k.as_dict() for k in found]})
        return
    if pem:
        print("".join(k.pem for k in found), end="")
        return
    table = output.Table("key id", "owner", "first signed")
    for k in found:
        first = output.when(k.created_at) if k.created_at else "not yet"
        table.add_row(k.key_id, output.escape(k.owner), first)
    output.console.print(table)


def add_key(
    key: KeyFile,
    registry_name: Annotated[
        str | None,
        typer.Option(
            "--registry",
            help="Trust another registry's key under this name instead (admins): its bundles"
            " import here (modelyard import-bundle), its signatures verify downloads.",
        ),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Register your public key (a PEM file; given a private key, only its public part is
    sent): the versions you sign with it count as signed by you, and by your teams, for a
    policy's signed_by. Make a key with: openssl ecparam -name prime256v1 -genkey -noout
    -out key.pem (ECDSA P-256)

    With --registry, an admin trusts another registry's key (there: modelyard keys list
    --owner registry --pem), carried here by a channel you trust: compare its key id.

    [bold]Example[/bold]: modelyard keys add --key key.pem

    [bold]Example[/bold]: modelyard keys add --registry prod-east --key prod-east.pem
    """
    with registry(url) as reg:
        if registry_name is None:
            added = reg.register_key(key)
            said = f"registered key {added.key_id} to {added.owner}"
        else:
            added = reg.trust_registry(registry_name, key)
            said = f"trusted key {added.key_id} as {added.owner}"
    output.emit(json_out, added.as_dict(), output.escape(said))


def remove_key(
    key_id: Annotated[str, typer.Argument(help="The key id (modelyard keys list).")],
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Stop trusting another registry's key (admins): its bundles are refused and its
    signatures verify nothing here from now on.

    [bold]Example[/bold]: modelyard keys remove 3f2a…
    """
    with registry(url) as reg:
        reg.distrust_registry(key_id)
    output.emit(json_out, {"key_id": key_id, "trusted": False}, f"no longer trusts key {key_id}")


def sign(
    reference: Reference,
    key: Annotated[
        Path | None, typer.Option("--key", "-k", help="Your private key, a PEM file.")
    ] = None,
    as_registry: Annotated[
        bool,
        typer.Option(
            "--registry",
            help="Have the registry sign with its own key instead (admins): for a version"
            " already in a protected stage, promoted before the registry signed.",
        ),
    ] = False,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Sign a version's files with your private key (it never leaves this machine) and add
    the signature, in the OpenSSF model-signing format; the registry checks it against the
    keys registered to you. A policy asks for it with signed_by: [YOU or YOUR-TEAM].

    [bold]Example[/bold]: modelyard sign churn/43 --key key.pem

    [bold]Example[/bold]: modelyard sign churn@production --registry
    """
    if (key is None) == (not as_registry):
        raise InvalidInput("give --key KEY.pem (your signature) or --registry, not both")
    with registry(url) as reg:
        version = reg.resolve(reference)
        signed = reg.sign(version, key) if key is not None else reg.sign_as_registry(version)
    output.emit(
        json_out,
        signed.as_dict(),
        f"signed [bold]{version.reference}[/bold] as {output.escape(signed.signer)}"
        f" (key {signed.key_id})",
    )


def signatures(
    reference: Reference, url: UrlOption = DEFAULT_URL, json_out: JsonOption = False
) -> None:
    """Who signed a version, and whether its signatures verify against the trusted keys
    (exit code 1 if not). The registry signs a version when it enters a protected stage.

    [bold]Example[/bold]: modelyard signatures churn@production
    """
    with registry(url) as reg:
        version = reg.resolve(reference)
        found = reg.signatures(version)
        try:
            verdict, problem = reg.verify(version), None
        except SignatureInvalid as exc:
            verdict, problem = None, exc.message
    table = output.Table("signer", "key id", "at")
    for s in found.signatures:
        table.add_row(output.escape(s.attribution), s.key_id, output.when(s.created_at))
    stage = f"{found.stage}, protected" if found.protected else found.stage
    line = f"verified: signed by {', '.join(verdict.signers)}" if verdict else problem
    output.emit(
        json_out,
        {**found.as_dict(), "verified": verdict.as_dict() if verdict else None, "problem": problem},
        Group(table, f"{found.reference} ({stage}): {output.escape(line or '')}"),
    )
    if problem is not None:
        raise typer.Exit(1)
