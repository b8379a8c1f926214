"""``modelyard watch``: run a command for each version a reference points at, the way a
deployment or a model server's hot reload follows ``churn@production``.

Progress is a state file holding the version last handled: after a restart the command
runs only if the reference has moved meanwhile, so no move is missed and none repeated.
The command is split into arguments once (shell rules) and each placeholder is put into
its argument afterwards: no shell ever reads a model name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from modelyard.cli import output
from modelyard.cli.common import JsonOption, UrlOption, handles_errors, registry
from modelyard.client.registry import same_version
from modelyard.config import DEFAULT_URL
from modelyard.domain.errors import InvalidInput
from modelyard.domain.models import Version
from modelyard.domain.references import parse_reference

PLACEHOLDERS = ("model", "version", "digest", "reference")
MAX_RETRY_DELAY = 60.0


class OnFailure(StrEnum):
    STOP = "stop"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the command went for one version: ``exit_code`` None when it could not start."""

    version: Version
    status: str  # ok, failed (and stopped), skipped (failed, and the watch went on)
    attempts: int
    exit_code: int | None

    def as_dict(self, reference: str) -> dict[str, Any]:
        return {
            "reference": reference,
            "model": self.version.model,
            "version": self.version.version,
            "digest": self.version.manifest_digest,
            "status": self.status,
            "attempts": self.attempts,
            "exit_code": self.exit_code,
        }


def state_dir() -> Path:
    """$MODELYARD_STATE_DIR, else $XDG_STATE_HOME/modelyard (~/.local/state/modelyard)."""
    base = os.environ.get("MODELYARD_STATE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "modelyard"


def default_state_file(url: str, reference: str) -> Path:
    """One file per registry and reference: two watches of one reference on two registries
    (or of two references) never share progress."""
    where = url.rstrip("/") if url.startswith(("http://", "https://")) else str(Path(url).resolve())
    key = hashlib.sha256(f"{where}\n{reference}".encode()).hexdigest()[:32]
    return state_dir() / "watch" / f"{key}.json"


def parse_command(text: str) -> list[str]:
    """The command's arguments, with each placeholder checked now rather than at the
    first change."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise InvalidInput(f"--exec {text!r}: {exc}") from None
    if not argv:
        raise InvalidInput("--exec needs a command, e.g. './deploy.sh {model} {version}'")
    for arg in argv:
        try:
            fields = [f for f in string.Formatter().parse(arg) if f[1] is not None]
        except ValueError as exc:
            raise InvalidInput(f"--exec: {arg!r}: {exc} (write {{{{ for a brace)") from None
        for _, name, spec, conversion in fields:
            if name not in PLACEHOLDERS or spec or conversion:
                raise InvalidInput(
                    f"--exec: {arg!r}: unknown placeholder; the placeholders:"
                    f" {', '.join('{' + p + '}' for p in PLACEHOLDERS)}, as they are"
                    " (write {{ for a brace)"
                )
    return argv


def command_for(argv: list[str], version: Version) -> list[str]:
    values = {
        "model": version.model,
        "version": str(version.version),
        "digest": version.manifest_digest,
        "reference": version.reference,
    }
    return [arg.format_map(values) for arg in argv]


def load_state(path: Path, reference: str) -> Version | None:
    """The version last handled, or None (no file yet). A file of another watch is
    refused: resuming from it would skip or repeat."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError:
        raise InvalidInput(f"the state file {path} is not JSON: remove it to start over") from None
    if data.get("reference") != reference:
        raise InvalidInput(
            f"the state file {path} is {data.get('reference')!r}'s, not {reference!r}'s:"
            " give each watch a --state-file of its own"
        )
    return Version.from_dict(data["handled"])


def save_state(path: Path, url: str, reference: str, version: Version) -> None:
    """Written whole under another name, made durable, then renamed over the old one: a
    crash leaves the old state or the new, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    body = {"registry": url, "reference": reference, "handled": version.as_dict()}
    with staged.open("w", encoding="utf-8") as handle:
        json.dump(body, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staged, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def run_command(
    argv: list[str], version: Version, *, retries: int, delay: float, quiet_stdout: bool
) -> tuple[int, int | None]:
    """Run the command until it succeeds, ``retries`` more times at most, waiting
    ``delay`` seconds and twice as long after each failure; (attempts, last exit code)."""
    command = command_for(argv, version)
    exit_code: int | None = None
    for attempt in range(1, retries + 2):
        try:
            # With --json the command's output goes to stderr: stdout is one line per change.
            done = subprocess.run(command, check=False, stdout=sys.stderr if quiet_stdout else None)
            exit_code = done.returncode
            problem = f"exit status {exit_code}"
        except OSError as exc:
            exit_code, problem = None, f"could not start: {exc.strerror or exc}"
        if exit_code == 0:
            return attempt, 0
        if attempt <= retries:
            wait = min(delay * 2 ** (attempt - 1), MAX_RETRY_DELAY)
            output.errors.print(
                f"{output.escape(shlex.join(command))}: {problem}"
                f" (attempt {attempt} of {retries + 1}); again in {wait:g} s",
                highlight=False,
            )
            time.sleep(wait)
        else:
            output.errors.print(
                f"{output.escape(shlex.join(command))}: {problem}"
                f" (attempt {attempt} of {retries + 1}); giving up on {version.reference}",
                highlight=False,
            )
    return retries + 1, exit_code


def install(app: typer.Typer) -> None:
    app.command(name="watch")(watch)


@handles_errors
def watch(
    reference: Annotated[
        str, typer.Argument(help="What to follow: NAME@STAGE, NAME@ALIAS or NAME (the newest).")
    ],
    exec_: Annotated[
        str,
        typer.Option(
            "--exec",
            help="The command to run for each version. Placeholders: {model} {version}"
            " {digest} {reference}; it runs without a shell (wrap it in sh -c '...' for one).",
        ),
    ],
    state_file: Annotated[
        Path | None,
        typer.Option(
            help="Where progress is kept (default: one file per registry and reference"
            " under $XDG_STATE_HOME/modelyard/watch)."
        ),
    ] = None,
    retries: Annotated[
        int, typer.Option(min=0, max=100, help="Runs again after a failure, at most.")
    ] = 3,
    retry_delay: Annotated[
        float,
        typer.Option(min=0, help="Seconds before the first retry; each next waits twice as long."),
    ] = 1.0,
    on_failure: Annotated[
        OnFailure,
        typer.Option(
            help="When every retry failed: stop (exit 1; a restart tries that version again)"
            " or skip it (recorded as handled) and wait for the next change."
        ),
    ] = OnFailure.STOP,
    once: Annotated[
        bool,
        typer.Option(
            "--once", help="Handle where the reference points now (unless done already), then exit."
        ),
    ] = False,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Run a command once for the version a reference points at, and again each time it
    moves: a deployment that follows a stage, a model server's hot reload.

    Progress is kept in a state file, so after a restart the command runs only if the
    reference moved meanwhile: no change is missed and none repeated (should the watch be
    killed in the instant between the command's success and the state's write, that
    version runs again: at least once). A failing command is reported and retried
    (--retries, --retry-delay), then --on-failure decides. Several moves while the command
    runs, or while the watch is down, count as one: the version the reference points at
    then. --json prints one line per change.

    [bold]Example[/bold]: modelyard watch churn@production
    --exec './deploy.sh {model} {version} {digest}'

    [bold]Example[/bold]: modelyard watch churn@champion --once --json --retries 5
    --on-failure skip --exec 'kubectl rollout restart deployment/churn'
    """
    parse_reference(reference)
    argv = parse_command(exec_)
    path = state_file or default_state_file(url, reference)
    handled = load_state(path, reference)
    with registry(url) as reg:
        if once:
            now = reg.resolve(reference)
            if handled is not None and same_version(now, handled):
                output.errors.print(f"{reference} is {now.reference}, handled already ({path})")
                return
            versions: Iterator[Version] = iter([now])
        else:
            versions = reg.watch(reference, current=handled)
        for version in versions:
            outcome = handle(argv, version, retries, retry_delay, on_failure, json_out)
            if outcome.status != "failed":
                save_state(path, url, reference, version)
            if json_out:
                output.print_json_line(outcome.as_dict(reference))
            else:
                output.console.print(
                    f"{output.escape(reference)} → [bold]{version.reference}[/bold]"
                    f" ({output.abbreviate(version.manifest_digest, 19)}): {outcome.status}"
                    f" after {outcome.attempts} run(s)",
                    highlight=False,
                )
            sys.stdout.flush()  # a line as it happens, to whoever reads the pipe
            if outcome.status == "failed":
                raise typer.Exit(1)


def handle(
    argv: list[str],
    version: Version,
    retries: int,
    delay: float,
    on_failure: OnFailure,
    json_out: bool,
) -> Outcome:
    attempts, exit_code = run_command(
        argv, version, retries=retries, delay=delay, quiet_stdout=json_out
    )
    if exit_code == 0:
        return Outcome(version, "ok", attempts, exit_code)
    status = "skipped" if on_failure is OnFailure.SKIP else "failed"
    return Outcome(version, status, attempts, exit_code)
