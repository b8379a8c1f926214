"""Commands for identity and access: login, whoami, users, teams, tokens, grants, admin."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from modelyard.cli import output
from modelyard.cli.common import JsonOption, UrlOption, handles_errors, registry
from modelyard.client.credentials import save_token
from modelyard.client.registry import Registry, connect
from modelyard.config import DEFAULT_DATA_DIR, DEFAULT_URL
from modelyard.domain.access import (
    Grant,
    NewToken,
    Principal,
    PrincipalKind,
    Token,
    validate_password,
)
from modelyard.domain.errors import InvalidInput
from modelyard.domain.models import iso

_DURATION = re.compile(r"(\d+)([dhms])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def install(app: typer.Typer, alias_app: typer.Typer) -> None:
    """Add the commands to the main app (and protect/unprotect to `modelyard alias`)."""
    for command in (login, logout, whoami, grant, revoke, permissions):
        app.command()(handles_errors(command))
    for kind in PrincipalKind:
        app.add_typer(_principal_app(kind), name=kind.collection)
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(admin_app, name="admin")
    alias_app.command("protect")(handles_errors(_protection_command(True)))
    alias_app.command("unprotect")(handles_errors(_protection_command(False)))


# -- login ------------------------------------------------------------------------------------


def login(
    token: Annotated[
        str | None,
        typer.Option(help="The token; asked for (hidden) when absent, '-' reads stdin."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Check a token against the registry and save it for this URL (mode 0600).

    Afterwards every command and modelyard.connect(URL) use it; MODELYARD_TOKEN still wins.

    [bold]Example[/bold]: modelyard login --url https://models.example.com
    """
    if token == "-":
        token = sys.stdin.readline()
    elif token is None:
        token = typer.prompt("Token", hide_input=True)
    token = token.strip()
    with connect(url, token=token) as reg:
        identity = reg.whoami()
    path = save_token(url, token)
    output.emit(
        json_out,
        {"url": url, "saved_in": str(path), "identity": identity.as_dict()},
        f"logged in to {output.escape(url)} as [bold]{identity.name}[/bold] (saved in"
        f" {output.escape(str(path))})",
    )


def logout(url: UrlOption = DEFAULT_URL, json_out: JsonOption = False) -> None:
    """Forget the token saved for this URL (the token itself stays valid: revoke it too).

    [bold]Example[/bold]: modelyard logout
    """
    path = save_token(url, None)
    output.emit(
        json_out,
        {"url": url, "saved_in": str(path)},
        f"forgot the token for {output.escape(url)} ({output.escape(str(path))})",
    )


def whoami(url: UrlOption = DEFAULT_URL, json_out: JsonOption = False) -> None:
    """Who your token acts as: name, kind, registry-wide role, teams and token limits.

    [bold]Example[/bold]: modelyard whoami
    """
    with registry(url) as reg:
        identity = reg.whoami()
    if json_out:
        output.print_json(identity.as_dict())
        return
    role = identity.registry_role.label if identity.registry_role else "none"
    if identity.local:
        output.console.print(
            f"{identity.name} (single-user local mode: no users exist, everything is allowed)"
        )
        return
    limits = [f"model {identity.model}"] if identity.model else []
    limits += ["read-only"] if identity.read_only else []
    output.console.print(
        f"{identity.name} ({identity.kind.replace('_', ' ')}), registry-wide role: {role}"
        + (f", teams: {', '.join(identity.teams)}" if identity.teams else "")
        + (f", token {identity.token_id}" if identity.token_id else "")
        + (f" limited to {' and '.join(limits)}" if limits else "")
    )


# -- users, service accounts, teams -----------------------------------------------------------


NameArgument = Annotated[str, typer.Argument(help="The name: letters, digits, '.', '_', '@', '-'.")]


def _principal_app(kind: PrincipalKind) -> typer.Typer:
    """`users`, `service-accounts` and `teams`: create, list, and disable (or delete)."""
    what, group = kind.label, kind.collection
    sub = typer.Typer(
        help=f"Manage {what}s (admins).\n\n[bold]Example[/bold]: modelyard {group} create NAME",
        no_args_is_help=True,
    )

    def create(
        name: NameArgument,
        description: Annotated[str, typer.Option(help="What it is for.")] = "",
        url: UrlOption = DEFAULT_URL,
        json_out: JsonOption = False,
    ) -> None:
        with registry(url) as reg:
            made = _operations(reg, kind)[0](name, description=description)
        output.emit(json_out, made.as_dict(), f"created {what} [bold]{made.name}[/bold]")

    def create_user(
        name: NameArgument,
        description: Annotated[str, typer.Option(help="What it is for.")] = "",
        password: PasswordOption = False,
        password_stdin: PasswordStdinOption = False,
        url: UrlOption = DEFAULT_URL,
        json_out: JsonOption = False,
    ) -> None:
        secret = read_password(password, password_stdin)  # asked, and checked, before creating
        with registry(url) as reg:
            made = reg.create_user(name, description=description)
            if secret is not None:
                reg.set_password(name, secret)
        data = {**made.as_dict(), "password_set": secret is not None}
        signs_in = " (it can sign in to the web UI)" if secret is not None else ""
        output.emit(json_out, data, f"created {what} [bold]{made.name}[/bold]{signs_in}")

    def listing(url: UrlOption = DEFAULT_URL, json_out: JsonOption = False) -> None:
        with registry(url) as reg:
            found = _operations(reg, kind)[1]()
        if json_out:
            output.print_json({"items": [p.as_dict() for p in found]})
        else:
            output.console.print(_principals_table(found))

    def remove(
        name: NameArgument, url: UrlOption = DEFAULT_URL, json_out: JsonOption = False
    ) -> None:
        with registry(url) as reg:
            _operations(reg, kind)[2](name)
        team = kind is PrincipalKind.TEAM
        done = "deleted" if team else "disabled (its tokens are revoked)"
        status = {"name": name, "kind": kind.value, "deleted" if team else "disabled": True}
        output.emit(json_out, status, f"{what} {name} {done}")

    create.__doc__ = f"Create a {what}.\n\n[bold]Example[/bold]: modelyard {group} create NAME"
    create_user.__doc__ = (
        "Create a user; with --password, also the password they sign in to the web UI with."
        "\n\n" + _example("users create bob --password")
    )
    listing.__doc__ = f"List {what}s.\n\n[bold]Example[/bold]: modelyard {group} list"
    sub.command("create")(handles_errors(create_user if kind is PrincipalKind.USER else create))
    if kind is PrincipalKind.USER:
        sub.command("passwd")(handles_errors(passwd))
    sub.command("list")(handles_errors(listing))
    if kind is PrincipalKind.TEAM:
        remove.__doc__ = "Delete a team, its memberships and its grants.\n\n" + _example(
            "teams delete risk"
        )
        sub.command("delete")(handles_errors(remove))
        sub.command("add")(handles_errors(_membership_command(True)))
        sub.command("remove")(handles_errors(_membership_command(False)))
    else:
        remove.__doc__ = (
            f"Disable a {what} and revoke its tokens (the name stays in the history).\n\n"
            + _example(f"{group} disable NAME")
        )
        sub.command("disable")(handles_errors(remove))
    return sub


def _operations(
    reg: Registry, kind: PrincipalKind
) -> tuple[Callable[..., Principal], Callable[[], list[Principal]], Callable[[str], None]]:
    """The SDK's create, list and remove for one kind of principal."""
    if kind is PrincipalKind.USER:
        return reg.create_user, reg.users, reg.disable_user
    if kind is PrincipalKind.SERVICE_ACCOUNT:
        return reg.create_service_account, reg.service_accounts, reg.disable_service_account
    return reg.create_team, reg.teams, reg.delete_team


# -- passwords --------------------------------------------------------------------------------

PasswordOption = Annotated[
    bool, typer.Option("--password", help="Ask for a password (hidden, twice) to set.")
]
PasswordStdinOption = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of stdin (scripts)."
    ),
]


def read_password(prompt: bool, from_stdin: bool) -> str | None:
    """The password the options ask for (None: neither), checked before anything is sent."""
    if from_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
    elif prompt:
        secret = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        return None
    return validate_password(secret)


def passwd(
    name: NameArgument,
    password_stdin: PasswordStdinOption = False,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Set the password a user signs in to the web UI with: your own, or (admins) anyone's.

    Asks for it twice, hidden (or reads it from stdin with --password-stdin). It ends the
    user's web sessions; the registry keeps only an Argon2id hash of it.

    [bold]Example[/bold]: modelyard users passwd bob
    """
    secret = read_password(True, password_stdin)
    assert secret is not None
    with registry(url) as reg:
        reg.set_password(name, secret)
    output.emit(
        json_out,
        {"name": name, "password_set": True},
        f"password set for [bold]{output.escape(name)}[/bold]; any web sessions they had"
        " were ended",
    )


TeamArgument = Annotated[str, typer.Argument(help="The team.")]
MembersArgument = Annotated[list[str], typer.Argument(help="Users or service accounts.")]


def _membership_command(present: bool) -> Callable[..., None]:
    """`teams add` and `teams remove`."""

    def change(
        team: TeamArgument,
        members: MembersArgument,
        url: UrlOption = DEFAULT_URL,
        json_out: JsonOption = False,
    ) -> None:
        with registry(url) as reg:
            update = reg.add_team_member if present else reg.remove_team_member
            for member in members:
                found = update(team, member)
        shown = f"team {team}: {', '.join(found.members) or '(no members)'}"
        output.emit(json_out, found.as_dict(), shown)

    change.__doc__ = (
        "Add users or service accounts to a team.\n\n" + _example("teams add risk alice bob")
        if present
        else "Remove members from a team.\n\n" + _example("teams remove risk bob")
    )
    return change


# -- tokens -----------------------------------------------------------------------------------

tokens_app = typer.Typer(
    help="Create, list and revoke API tokens.\n\n"
    "[bold]Example[/bold]: modelyard tokens create --name laptop --expires 90d",
    no_args_is_help=True,
)


@tokens_app.command("create")
@handles_errors
def tokens_create(
    holder: Annotated[
        str | None,
        typer.Option("--for", help="A user or service account (admins); yourself by default."),
    ] = None,
    name: Annotated[str, typer.Option(help="What the token is for, e.g. 'ci'.")] = "",
    expires: Annotated[
        str | None, typer.Option(help="A duration (90d, 12h, 30m) or an ISO date/time.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Limit the token to this model.")] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="It can only read.")] = False,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Create a token. The secret goes to stdout, alone, once: only its hash is kept
    (--json: the secret and the token's details).

    [bold]Example[/bold]: modelyard tokens create --for ci-churn --model churn --expires 90d
    """
    with registry(url) as reg:
        made = reg.create_token(
            principal=holder,
            name=name,
            expires=parse_expiry(expires),
            model=model,
            read_only=read_only,
        )
    info = made.info
    output.errors.print(
        f"token {info.id} for {info.principal}"
        + (f", expires {iso(info.expires_at)}" if info.expires_at else ", no expiry")
        + (f", model {info.model} only" if info.model else "")
        + (", read-only" if info.read_only else "")
        + ". Store it now: it is not shown again."
    )
    _print_secret(made, json_out)


@tokens_app.command("list")
@handles_errors
def tokens_list(
    holder: Annotated[
        str | None, typer.Option("--for", help="Whose tokens (admins); '*' for everyone's.")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """List tokens (never their secrets).

    [bold]Example[/bold]: modelyard tokens list --for ci-churn
    """
    with registry(url) as reg:
        found = reg.tokens(holder)
    if json_out:
        output.print_json({"items": [t.as_dict() for t in found]})
    else:
        output.console.print(_tokens_table(found))


@tokens_app.command("revoke")
@handles_errors
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (see tokens list).")],
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Revoke a token: it stops working at once.

    [bold]Example[/bold]: modelyard tokens revoke 3f9c2a1b7d004e21
    """
    with registry(url) as reg:
        token = reg.revoke_token(token_id)
    output.emit(json_out, token.as_dict(), f"revoked token {token.id} of {token.principal}")


def parse_duration(text: str) -> timedelta | None:
    """'90d', '12h', '30m' or '45s' as a duration; None when ``text`` is not one."""
    duration = _DURATION.fullmatch(text.strip())
    if duration is None:
        return None
    return timedelta(**{_UNITS[duration.group(2)]: int(duration.group(1))})


def parse_expiry(text: str | None) -> datetime | timedelta | None:
    if text is None:
        return None
    duration = parse_duration(text)
    if duration is not None:
        return duration
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"--expires {text!r}: give a duration such as 90d, 12h, 30m or an ISO date"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- grants -----------------------------------------------------------------------------------

UserOption = Annotated[str | None, typer.Option("--user", help="A user.")]
TeamOption = Annotated[str | None, typer.Option("--team", help="A team.")]
AccountOption = Annotated[str | None, typer.Option("--service-account", help="A service account.")]
ModelOption = Annotated[
    str | None, typer.Option("--model", help="The model; registry-wide without it (admins).")
]


def _grantee(user: str | None, team: str | None, account: str | None) -> tuple[str, PrincipalKind]:
    given = [
        (name, kind)
        for name, kind in (
            (user, PrincipalKind.USER),
            (team, PrincipalKind.TEAM),
            (account, PrincipalKind.SERVICE_ACCOUNT),
        )
        if name
    ]
    if len(given) != 1:
        raise InvalidInput("name exactly one of --user, --team or --service-account")
    return given[0]


def grant(
    role: Annotated[str, typer.Argument(help="viewer, reader, contributor, maintainer, admin.")],
    model: ModelOption = None,
    user: UserOption = None,
    team: TeamOption = None,
    service_account: AccountOption = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Grant a role on a model (maintainers) or registry-wide (admins); replaces the old one.

    viewer sees metadata; reader also downloads; contributor registers and edits; maintainer
    moves protected aliases and manages grants; admin (registry-wide) does everything.

    [bold]Example[/bold]: modelyard grant contributor --model churn --service-account ci-churn
    """
    who, kind = _grantee(user, team, service_account)
    with registry(url) as reg:
        made = reg.grant(role, who, model=model, kind=kind)
    where = f"on {made.model}" if made.model else "registry-wide"
    shown = f"{made.kind.label} {made.principal} is {made.role.label} {where}"
    output.emit(json_out, made.as_dict(), shown)


def revoke(
    model: ModelOption = None,
    user: UserOption = None,
    team: TeamOption = None,
    service_account: AccountOption = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Take away the role granted on a model (or registry-wide).

    [bold]Example[/bold]: modelyard revoke --model churn --user bob
    """
    who, kind = _grantee(user, team, service_account)
    with registry(url) as reg:
        reg.revoke(who, model=model, kind=kind)
    output.emit(
        json_out,
        {"principal": who, "kind": kind.value, "model": model, "revoked": True},
        f"{who} no longer holds a role {f'on {model}' if model else 'registry-wide'}",
    )


def permissions(
    name: Annotated[str | None, typer.Argument(help="A model; every grant without it.")] = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Who may do what on a model: its grants and the registry-wide ones.

    [bold]Example[/bold]: modelyard permissions churn
    """
    with registry(url) as reg:
        found = reg.grants(name)
        protected = reg.model(name).protected_aliases if name else ()
    if json_out:
        output.print_json({"items": [g.as_dict() for g in found]})
        return
    output.console.print(_grants_table(found))
    if name:
        output.console.print(f"protected aliases: {', '.join(protected) or '(none)'}")


# -- protected aliases ------------------------------------------------------------------------


ModelArgument = Annotated[str, typer.Argument(help="Model name.")]
AliasesArgument = Annotated[list[str], typer.Argument(help="Alias names.")]


def _protection_command(protect: bool) -> Callable[..., None]:
    """`alias protect` and `alias unprotect`."""

    def change(
        name: ModelArgument,
        aliases: AliasesArgument,
        url: UrlOption = DEFAULT_URL,
        json_out: JsonOption = False,
    ) -> None:
        _change_protection(url, name, aliases, protect=protect, json_out=json_out)

    change.__doc__ = (
        "Protect aliases: only maintainers may move them (champion, production by default)."
        "\n\n" + _example("alias protect churn canary")
        if protect
        else "Let contributors move these aliases again.\n\n"
        + _example("alias unprotect churn champion")
    )
    return change


def _change_protection(
    url: str, name: str, aliases: list[str], *, protect: bool, json_out: bool
) -> None:
    with registry(url) as reg:
        current = set(reg.model(name).protected_aliases)
        wanted = current | set(aliases) if protect else current - set(aliases)
        model = reg.protect_aliases(name, sorted(wanted))
    output.emit(
        json_out,
        {"model": name, "protected_aliases": list(model.protected_aliases)},
        f"protected aliases of {name}: {', '.join(model.protected_aliases) or '(none)'}",
    )


# -- admin ------------------------------------------------------------------------------------

admin_app = typer.Typer(
    help="Bootstrap a shared registry, working on its database directly.\n\n"
    "[bold]Example[/bold]: modelyard admin create alice",
    no_args_is_help=True,
)


@admin_app.command("create")
@handles_errors
def admin_create(
    name: Annotated[str, typer.Argument(help="The admin's user name.")],
    data_dir: Annotated[
        str | None,
        typer.Option(
            envvar="MODELYARD_DATA_DIR",
            show_default=DEFAULT_DATA_DIR,
            help="The registry's data directory (required with --database-url).",
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(envvar="MODELYARD_DATABASE_URL", help="Its PostgreSQL URL, if it uses one."),
    ] = None,
    password: PasswordOption = False,
    password_stdin: PasswordStdinOption = False,
    json_out: JsonOption = False,
) -> None:
    """Make NAME a registry-wide admin and print a new token for it, once.

    Works on the data directory (or database) itself, so run it where the server runs.
    Creates the user if needed; also the way back in when every admin token is lost.
    With --password (or --password-stdin), also sets the password NAME signs in to the
    web UI with.

    [bold]Example[/bold]: modelyard admin create alice --data-dir /srv/modelyard
    """
    from modelyard.config import Settings, open_service, os_user
    from modelyard.domain.access import Caller

    secret = read_password(password, password_stdin)
    # Blobs are not touched: the blob store is left closed (a bucket need not answer).
    service = open_service(Settings.from_env(data_dir, database_url), artifacts=False)
    try:
        made = service.identity.bootstrap_admin(name, operator=os_user())
        if secret is not None:
            service.identity.set_password(Caller.local_user(os_user()), name, secret)
    finally:
        service.close()
    output.errors.print(
        f"{name} is an admin; token {made.info.id} below. Store it now: it is not shown"
        " again. Then: modelyard login --url URL-OF-THE-SERVER"
    )
    _print_secret(made, json_out)


def _print_secret(made: NewToken, json_out: bool) -> None:
    """A new token on stdout: the secret alone on its line, or with its details as JSON."""
    if json_out:
        output.print_json(made.as_dict())
    else:
        print(made.token)


# -- tables -----------------------------------------------------------------------------------


def _principals_table(found: list[Principal]) -> output.Table:
    table = output.Table("name", "kind", "created", "status", "members", "description")
    for p in found:
        table.add_row(
            output.escape(p.name),
            p.kind.label,
            p.created_at.strftime("%Y-%m-%d %H:%M"),
            "disabled" if p.disabled else "active",
            output.escape(", ".join(p.members)),
            output.escape(p.description[:60]),
        )
    return table


def _tokens_table(found: list[Token]) -> output.Table:
    table = output.Table("id", "holder", "name", "expires", "limits", "status")
    table.columns[0].no_wrap = True
    now = datetime.now(UTC)
    for t in found:
        status = "revoked" if t.revoked_at else "active"
        if not t.revoked_at and t.expires_at and t.expires_at <= now:
            status = "expired"
        limits = ", ".join(
            ([f"model {t.model}"] if t.model else []) + (["read-only"] if t.read_only else [])
        )
        table.add_row(
            t.id,
            output.escape(t.principal),
            output.escape(t.name),
            t.expires_at.strftime("%Y-%m-%d") if t.expires_at else "never",
            output.escape(limits),
            status,
        )
    return table


def _grants_table(found: list[Grant]) -> output.Table:
    table = output.Table("principal", "kind", "role", "on", "granted by")
    table.columns[2].no_wrap = True
    for g in found:
        table.add_row(
            output.escape(g.principal),
            g.kind.label,
            g.role.label,
            output.escape(g.model) if g.model else "registry-wide",
            output.escape(g.created_by),
        )
    return table


def _example(command: str) -> str:
    return f"[bold]Example[/bold]: modelyard {command}"
