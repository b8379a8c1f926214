"""``modelyard serve-model``: serve the version a reference points at, and follow it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from modelyard.cli import output
from modelyard.cli.common import JsonOption, UrlOption, handles_errors, registry
from modelyard.config import DEFAULT_URL
from modelyard.domain.references import parse_reference


def install(app: typer.Typer) -> None:
    app.command(name="serve-model")(serve_model)
    app.command(name="package")(package)


def print_notice(event: str, fields: dict[str, Any]) -> None:
    """A notice for people, on stderr: what is served, what failed."""
    details = " ".join(f"{key}={value}" for key, value in fields.items())
    sys.stderr.write(f"serve-model: {event} {details}\n")
    sys.stderr.flush()


def print_notice_json(event: str, fields: dict[str, Any]) -> None:
    """With --json: one line of JSON per notice on stdout, for scripts."""
    sys.stdout.write(json.dumps({"event": event, **fields}, default=str) + "\n")
    sys.stdout.flush()


@handles_errors
def serve_model(
    reference: Annotated[
        str,
        typer.Argument(
            help="What to serve: NAME@STAGE or NAME@ALIAS (followed), NAME/N or"
            " NAME@sha256:DIGEST (one version)."
        ),
    ],
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9000,
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0: every one).")] = "127.0.0.1",
    pin: Annotated[
        bool,
        typer.Option(
            "--pin",
            help="Serve the version the reference points at on start and never move"
            " (registry down: the one served last from the cache).",
        ),
    ] = False,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Never reach a registry: serve what --cache-dir holds for the reference"
            " (verified at start), and nothing else, ever. `modelyard package` writes one.",
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1, max=64, help="Processes on the port (SO_REUSEPORT), each following on its own."
        ),
    ] = 1,
    registry_url: Annotated[
        str,
        typer.Option(
            "--registry", envvar="MODELYARD_URL", help="The registry's URL.", show_default=True
        ),
    ] = DEFAULT_URL,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where versions are kept, verified, with the one served last (default:"
            " $XDG_CACHE_HOME/modelyard/serving). A restart serves from it without registry."
        ),
    ] = None,
    poll_interval: Annotated[
        float,
        typer.Option(
            min=0.1, help="Seconds between resolves (ETag: 304) while the stream is down."
        ),
    ] = 5.0,
    report_every: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds between reports of each version's figures (requests, error rate,"
            " latency p50/p99, CPU, memory) to the registry's online metrics; 0: none.",
        ),
    ] = 60.0,
    max_body_mb: Annotated[
        float, typer.Option(min=0.001, help="The largest /predict body, in MiB.")
    ] = 16.0,
    unsafe_pickle: Annotated[
        bool,
        typer.Option(
            "--unsafe-pickle",
            help="Load versions logged with unsafe_pickle=True (a pickle runs code when it is"
            " loaded: only for models whoever logged them you trust). Refused otherwise.",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "warning",
    json_out: JsonOption = False,
) -> None:
    """Serve a model over HTTP and follow its reference: a promotion or a rollback of
    churn@production is served within moments, with no request failing.

    Endpoints: POST /predict with {"records": [{...}]}, {"columns": {"x": [...]}} or
    {"instances": [[...]]} (a batch each); GET /healthz, /readyz (a version loaded and
    warmed), /metadata (model, version, digest, signature, flavor), /metrics (Prometheus).

    A new version is downloaded into a staging directory and verified, loaded, warmed with
    its input example, then swapped in; requests in flight finish on the old one. A version
    that fails is reported (a notice, modelyard_serving_reload_failures) and the old one keeps
    serving. The event stream tells of moves; while it is down, resolve is polled. With the
    registry down it keeps serving, and a restart serves the version served last from the
    cache. --json prints one line of JSON per notice (serving, reload_failed, ...).

    [bold]Example[/bold]: modelyard serve-model churn@production --port 9000
    --registry http://registry:8080

    [bold]Example[/bold]: modelyard serve-model churn/42 --pin --workers 4 --report-every 0

    [bold]Example[/bold]: modelyard serve-model churn@sha256:... --offline --cache-dir ./cache
    """
    from modelyard.serving import ServeOptions, default_cache_dir, serve  # this command's

    parse_reference(reference)
    options = ServeOptions(
        reference,
        registry=registry_url,
        host=host,
        port=port,
        pin=pin,
        offline=offline,
        workers=workers,
        poll_interval=poll_interval,
        report_every=report_every,
        max_body=int(max_body_mb * 1024 * 1024),
        unsafe_pickle=unsafe_pickle,
        log_level=log_level,
        cache_dir=cache_dir or default_cache_dir(),
    )
    code = serve(options, print_notice_json if json_out else print_notice)
    if code:
        raise typer.Exit(code)


@handles_errors
def package(
    reference: Annotated[
        str, typer.Argument(help="The version to package: NAME@STAGE, NAME@ALIAS, NAME/N, ...")
    ],
    out: Annotated[
        Path, typer.Option("--output", "-o", help="A new (or empty) directory to write.")
    ],
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Write a self-contained deployment of one version: serve-model's cache holding its
    verified files, requirements.txt pinned from its descriptor and environment, a
    Dockerfile (non-root, with a healthcheck) that serves it pinned to its digest with no
    registry (serve-model --offline), and a README.

    The reference is resolved once: the directory serves that version for ever. A version
    needs a modelyard.yaml (log_model writes one; else `modelyard describe`).

    [bold]Example[/bold]: modelyard package churn@production -o ./churn-pkg
    && docker build -t churn ./churn-pkg
    """
    from modelyard.serving import package as write_package  # this command's

    with registry(url) as reg:
        made = write_package(reg, reference, out)
    if json_out:
        output.print_json(made.as_dict())
        return
    output.console.print(
        f"packaged {made.version.reference} ({made.version.manifest_digest}) into {out}:"
        f" Dockerfile, requirements.txt ({len(made.requirements)} pins), README.md, cache/",
        highlight=False,
    )
