"""What every command shares: the registry option, one-line errors, the connection."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import wraps
from typing import Annotated, Any, TypeVar

import typer

from modelyard.cli import output
from modelyard.client.registry import Registry, connect
from modelyard.domain.errors import InvalidInput, ModelyardError

F = TypeVar("F", bound=Callable[..., Any])

UrlOption = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="MODELYARD_URL",
        help="Registry URL, or a local data directory to work in-process.",
        show_default=True,
    ),
]
# Where --url names something else (a webhook's receiver) or would read as the URL of what
# a command checks (an OSV dump), the registry is --registry, from the same MODELYARD_URL.
RegistryOption = Annotated[
    str,
    typer.Option(
        "--registry",
        envvar="MODELYARD_URL",
        help="Registry URL, or a local data directory to work in-process.",
        show_default=True,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON (for scripts) instead of text.")
]


def handles_errors(func: F, exit_code: int = 1) -> F:
    """Turn registry errors into one line on stderr and ``exit_code`` (no traceback)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ModelyardError as exc:
            output.errors.print(f"[red]error:[/red] {output.escape(exc.message)}", highlight=False)
            missing = exc.details.get("missing")
            if missing:
                output.errors.print(f"missing: {', '.join(missing[:5])}", highlight=False)
            for failure in exc.details.get("failures") or []:
                output.errors.print(
                    f"  failed: {failure['rule']} ({failure['detail']})", highlight=False
                )
            raise typer.Exit(exit_code) from None
        except OSError as exc:  # a file the user named: missing, unreadable, in the way
            output.errors.print(
                f"[red]error:[/red] {output.escape(_os_error(exc))}", highlight=False
            )
            raise typer.Exit(exit_code) from None
        except KeyboardInterrupt:
            output.errors.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _os_error(exc: OSError) -> str:
    """``PATH: reason``, the way the shell says it, rather than ``[Errno 2] ...: 'PATH'``."""
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror[0].lower()}{exc.strerror[1:]}"
    return str(exc)


@contextmanager
def registry(url: str) -> Iterator[Registry]:
    with connect(url, progress=output.RichProgress()) as reg:
        yield reg


def parse_pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """KEY=VALUE arguments (--tag, --param, --metric) as a dict."""
    result: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{what} {item!r} must look like KEY=VALUE")
        result[key] = value
    return result


def parse_metrics(values: list[str] | None, what: str = "--metric") -> dict[str, float]:
    """NAME=NUMBER arguments as metrics; the registry checks names and finiteness."""
    result: dict[str, float] = {}
    for key, value in parse_pairs(values, what).items():
        try:
            result[key] = float(value)
        except ValueError:
            raise InvalidInput(f"{what} {key}={value!r}: the value must be a number") from None
    return result


def parse_moment(text: str) -> datetime:
    """An ISO 8601 moment; 'Z' or an offset required (a bare time would be ambiguous)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{text!r} is not an ISO time such as 2026-03-03T12:00Z") from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{text!r} needs a time zone: add Z for UTC, or +01:00")
    return moment


def reflow_help(app: typer.Typer) -> None:
    """Let the terminal wrap every command's help. typer's rich mode keeps a docstring's
    line breaks, so at 80 columns each source line of about 90 broke twice, leaving a word
    or two on a line of its own. Joined here, once, for the whole tree."""
    app.info.help = _reflowed(app.info.help) if isinstance(app.info.help, str) else None
    for command in app.registered_commands:
        text = command.help or (inspect.getdoc(command.callback) if command.callback else None)
        command.help = _reflowed(text) if text else text
    for group in app.registered_groups:
        if group.typer_instance is not None:
            reflow_help(group.typer_instance)


def _reflowed(text: str) -> str:
    """Each paragraph's lines joined into one; an indented line (an example) and a list
    item keep a line of their own, and so does what follows them."""
    paragraphs = []
    for paragraph in text.split("\n\n"):
        lines: list[str] = []
        for line in paragraph.split("\n"):
            apart = not line or line[0].isspace() or line.startswith(("- ", "* "))
            if lines and not apart and lines[-1] and not lines[-1][0].isspace():
                lines[-1] += " " + line
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)
