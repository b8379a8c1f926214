"""modelyard: serve a registry, register, find, alias and download models.

Every command talks to the registry at --url / MODELYARD_URL (default
http://127.0.0.1:8080); a directory path instead of a URL works in-process, no server.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import typer

from modelyard.cli import (
    access,
    advisories,
    bundles,
    checks,
    compare,
    describe,
    evidence,
    gc,
    imports,
    lifecycle,
    online,
    output,
    scan,
    serve_model,
    signing,
    watch,
    webhooks,
)
from modelyard.cli.common import (
    JsonOption,
    UrlOption,
    handles_errors,
    parse_metrics,
    parse_moment,
    parse_pairs,
    reflow_help,
    registry,
)
from modelyard.client.capture import declared_environment, environment_from_file
from modelyard.config import DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT, DEFAULT_URL
from modelyard.domain.access import Reach
from modelyard.domain.errors import InvalidInput, ModelyardError
from modelyard.domain.journal import Checkpoint
from modelyard.domain.models import Environment

app = typer.Typer(
    name="modelyard",
    help=(__doc__ or "")
    + "\n\n[bold]Example[/bold]: modelyard register churn ./model_dir --metric auc=0.87",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
alias_app = typer.Typer(
    help="Manage aliases: named pointers such as churn@champion.\n\n"
    "[bold]Example[/bold]: modelyard alias set churn champion 42",
    no_args_is_help=True,
)
journal_app = typer.Typer(
    help="Read and verify the tamper-evident journal of every change.\n\n"
    "[bold]Example[/bold]: modelyard journal verify",
    no_args_is_help=True,
)
app.add_typer(alias_app, name="alias")
app.add_typer(journal_app, name="journal")


def main() -> None:
    app()


# -- serve ------------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    data_dir: Annotated[
        str | None,
        typer.Option(
            envvar="MODELYARD_DATA_DIR",
            show_default=DEFAULT_DATA_DIR,
            help="Where the SQLite database, secret.key and local blobs live. Required"
            " with --database-url.",
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="MODELYARD_DATABASE_URL",
            help="Use PostgreSQL instead of SQLite, e.g. postgresql://user@host/db.",
        ),
    ] = None,
    blob_url: Annotated[
        str | None,
        typer.Option(
            envvar="MODELYARD_BLOB_URL",
            show_default="DATA_DIR/blobs",
            help="Where blobs live: s3://BUCKET/PREFIX (credentials and region from the"
            " standard AWS environment and ~/.aws) or file:///PATH.",
        ),
    ] = None,
    s3_endpoint: Annotated[
        str | None,
        typer.Option(
            envvar="MODELYARD_S3_ENDPOINT",
            help="An S3-compatible store's URL (MinIO, Ceph...), e.g. http://10.0.0.5:9000.",
        ),
    ] = None,
    proxy_transfers: Annotated[
        bool | None,
        typer.Option(
            "--proxy-transfers/--no-proxy-transfers",
            envvar="MODELYARD_PROXY_TRANSFERS",
            show_default=False,
            help="Send every byte through the server, never a presigned URL of the store.",
        ),
    ] = None,
    s3_store_hashes: Annotated[
        bool | None,
        typer.Option(
            "--s3-store-hashes/--no-s3-store-hashes",
            envvar="MODELYARD_S3_STORE_HASHES",
            show_default=False,
            help="Verify a direct upload by the SHA-256 the store computes as it copies the"
            " object in place (AWS S3 does), instead of reading it back through the server.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    # -- operations: processes, TLS, proxies, logs, metrics (docs/deploy.md) --
    workers: Annotated[
        int,
        typer.Option(
            envvar="MODELYARD_WORKERS",
            min=1,
            max=64,
            help="Processes serving the port (one per core is a good start).",
        ),
    ] = 1,
    tls_cert: Annotated[
        Path | None,
        typer.Option(envvar="MODELYARD_TLS_CERT", help="Serve https: the certificate (PEM)."),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(envvar="MODELYARD_TLS_KEY", help="The private key of --tls-cert (PEM)."),
    ] = None,
    forwarded_allow_ips: Annotated[
        str,
        typer.Option(
            envvar=["MODELYARD_FORWARDED_ALLOW_IPS", "FORWARDED_ALLOW_IPS"],
            help="Comma-separated addresses or CIDRs of reverse proxies whose"
            " X-Forwarded-For/-Proto and X-Request-Id are believed ('*': any).",
        ),
    ] = "127.0.0.1",
    timeout_keep_alive: Annotated[
        int,
        typer.Option(
            envvar="MODELYARD_TIMEOUT_KEEP_ALIVE",
            min=1,
            max=3600,
            help="Seconds an idle kept-alive connection stays open; behind a reverse proxy,"
            " longer than the proxy keeps its idle upstream connections.",
        ),
    ] = 5,
    log_format: Annotated[
        Literal["text", "json"],
        typer.Option(envvar="MODELYARD_LOG_FORMAT", help="json: one object a line."),
    ] = "text",
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            envvar="MODELYARD_ACCESS_LOG",
            help="Log every request: method, route template, status, duration, request id.",
        ),
    ] = False,
    metrics_token: Annotated[
        str | None,
        typer.Option(
            envvar="MODELYARD_METRICS_TOKEN",
            show_default=False,
            help="A secret (32+ characters) a Prometheus scraper presents as a bearer token"
            " for /metrics; admins' tokens work too. Prefer the variable: a flag shows in ps.",
        ),
    ] = None,
    webhook_allow_http: Annotated[
        bool | None,
        typer.Option(
            "--webhook-allow-http/--no-webhook-allow-http",
            envvar="MODELYARD_WEBHOOK_ALLOW_HTTP",
            show_default=False,
            help="Let webhooks send over plain http (default: https only).",
        ),
    ] = None,
    webhook_allow_hosts: Annotated[
        str | None,
        typer.Option(
            envvar="MODELYARD_WEBHOOK_ALLOW_HOSTS",
            help="Comma-separated host names, IPs and CIDRs webhooks may reach although"
            " they are not public addresses, e.g. ci.internal,10.20.0.0/16.",
        ),
    ] = None,
    mlflow_tracking_uri: Annotated[
        str | None,
        typer.Option(
            envvar="MODELYARD_MLFLOW_TRACKING_URI",
            help="The MLflow tracking server that versions created through MLflow's API"
            " (log_model, register_model) are copied from (docs/mlflow.md).",
        ),
    ] = None,
    mlflow_source_bucket: Annotated[
        list[str] | None,
        typer.Option(
            metavar="BUCKET[/PREFIX]",
            show_default="none allowed",
            help="A bucket, or a key prefix in one, that s3:// MLflow sources (and runs whose"
            " artifacts are there) may be read from, with the blob store's credentials and"
            " --s3-endpoint. Repeatable. MODELYARD_MLFLOW_SOURCE_BUCKETS: comma-separated.",
        ),
    ] = None,
    mlflow_source_dir: Annotated[
        list[str] | None,
        typer.Option(
            metavar="DIR",
            show_default="none allowed",
            help="A directory that file:// MLflow sources (and runs whose artifacts are"
            " there) may be read under, links resolved first; a link among the files is"
            " refused. Repeatable. MODELYARD_MLFLOW_SOURCE_DIRS: comma-separated.",
        ),
    ] = None,
) -> None:
    """Run the registry server (REST API under /api/v1, OpenAPI docs at /docs).

    [bold]Example[/bold]: modelyard serve --data-dir ./modelyard-data --port 8080

    [bold]Example[/bold] with an internal webhook receiver:
    modelyard serve --webhook-allow-hosts 10.20.0.0/16

    [bold]Example[/bold], replicas sharing PostgreSQL and a bucket:
    modelyard serve --host 0.0.0.0 --data-dir /srv/modelyard
    --database-url postgresql://modelyard@db/modelyard --blob-url s3://models/registry

    [bold]Example[/bold] as MLflow's registry, copying from its tracking server:
    modelyard serve --mlflow-tracking-uri http://mlflow.internal:5000

    [bold]Example[/bold], also copying MLflow artifacts kept in a bucket or on a shared disk:
    modelyard serve --mlflow-source-bucket ml-artifacts/mlruns --mlflow-source-dir /mnt/mlruns

    [bold]Example[/bold] with MinIO: modelyard serve --blob-url s3://models
    --s3-endpoint http://127.0.0.1:9000

    [bold]Example[/bold] in production (docs/deploy.md), four processes behind a proxy:
    modelyard serve --host 0.0.0.0 --workers 4 --forwarded-allow-ips 10.0.0.5
    --log-format json --access-log
    """
    from modelyard.config import Settings, key_source, open_service, server_side

    try:
        with server_side("modelyard serve"):
            from modelyard.api import logs
            from modelyard.api.server import ServerOptions, serve
        options = ServerOptions(
            host=host,
            port=port,
            log_level=log_level,
            log_format=log_format,
            access_log=access_log,
            workers=workers,
            tls_cert=tls_cert,
            tls_key=tls_key,
            forwarded_allow_ips=forwarded_allow_ips,
            timeout_keep_alive=timeout_keep_alive,
            metrics_token_sha256=_metrics_token_sha256(metrics_token),
        )
        _check_tls(tls_cert, tls_key)
        logs.configure(log_format, log_level)
        settings = Settings.from_env(
            data_dir,
            database_url,
            webhook_allow_http=webhook_allow_http,
            webhook_allow_hosts=webhook_allow_hosts,
            blob_url=blob_url,
            s3_endpoint=s3_endpoint,
            proxy_transfers=proxy_transfers,
            s3_store_hashes=s3_store_hashes,
            mlflow_tracking_uri=mlflow_tracking_uri,
            mlflow_source_buckets=mlflow_source_bucket or (),
            mlflow_source_dirs=mlflow_source_dir or (),
        )
        service = open_service(settings)
    except ModelyardError as exc:
        output.errors.print(f"[red]error:[/red] {output.escape(exc.message)}")
        raise typer.Exit(1) from None
    try:
        service.claim_key(key_source(settings.data_dir))
    except ModelyardError as exc:
        service.close()
        output.errors.print(f"[red]error:[/red] {output.escape(exc.message)}")
        raise typer.Exit(1) from None
    reach = Reach.LOOPBACK if is_loopback(host) else Reach.NETWORK
    note = _notes(log_format)
    try:
        service.access.require_servable(reach)
    except ModelyardError as exc:
        service.close()
        output.errors.print(
            f"[red]error:[/red] {output.escape(exc.message)} (data: {settings.data_dir})"
        )
        raise typer.Exit(1) from None
    cleaned = service.clean_up_at_start()
    if cleaned is not None and (cleaned.blobs or cleaned.uploads):
        note(
            f"start-up clean-up: removed {cleaned.uploads} unfinished upload(s)"
            f" ({output.human_size(cleaned.upload_bytes)}) and {cleaned.blobs} blob(s) no"
            f" version references ({output.human_size(cleaned.blob_bytes)})"
        )
    backend = "postgresql" if settings.database_url else f"sqlite in {settings.data_dir}"
    scheme = "https" if tls_cert else "http"
    note(
        f"Modelyard serving on {scheme}://{host}:{port} (metadata: {backend},"
        f" blobs: {settings.blobs_where}); docs at /docs"
    )
    mode = (
        "single-user local mode until a user exists"
        if service.access.local_mode(reach)
        else "tokens required"
    )
    note(f"access: {mode}" + (f"; {workers} worker processes" if workers > 1 else ""))
    raise typer.Exit(serve(service, options, reach))


def _notes(log_format: str) -> Callable[[str], None]:
    """How ``serve`` says what it is doing: a line on stderr, or a log record (json)."""
    if log_format == "json":
        return logging.getLogger("modelyard.serve").info
    return lambda text: output.errors.print(output.escape(text))


def _metrics_token_sha256(token: str | None) -> str | None:
    """Only the token's SHA-256 is kept (and passed to the workers)."""
    if not token:
        return None
    if len(token) < 32 or not token.isprintable() or " " in token:
        raise InvalidInput("--metrics-token: give 32 or more printable characters, no spaces")
    return hashlib.sha256(token.encode()).hexdigest()


def _check_tls(cert: Path | None, key: Path | None) -> None:
    """Both or neither, and a pair that loads: a clear error now, not a worker's traceback."""
    if cert is None and key is None:
        return
    if cert is None or key is None:
        raise InvalidInput("--tls-cert and --tls-key go together")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(f"--tls-cert {cert} / --tls-key {key}: {exc}") from None


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- register and read ------------------------------------------------------------------------


@app.command()
@handles_errors
def register(
    name: Annotated[str, typer.Argument(help="Model name (created on first registration).")],
    path: Annotated[Path, typer.Argument(help="A model file or a directory of files.")],
    metric: Annotated[
        list[str] | None, typer.Option("--metric", "-m", help="KEY=NUMBER, repeatable.")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="KEY=VALUE, repeatable.")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="KEY=VALUE, repeatable.")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Training data: NAME\\[@VERSION] or a URI.")
    ] = None,
    description: Annotated[str, typer.Option(help="A Markdown description.")] = "",
    description_file: Annotated[
        Path | None, typer.Option(help="Read the Markdown description from this file.")
    ] = None,
    attach: Annotated[
        list[Path] | None,
        typer.Option(
            "--attach", "-a", help="Evidence beside the files (a file or directory), repeatable."
        ),
    ] = None,
    card: Annotated[
        Path | None,
        typer.Option(help="The model card, a Markdown file (default: MODEL_CARD.md if any)."),
    ] = None,
    card_from_previous: Annotated[
        bool,
        typer.Option(
            "--card-from-previous", help="Without a card of its own, start from the last one's."
        ),
    ] = False,
    run: Annotated[str | None, typer.Option(help="Experiment run id or URL.")] = None,
    framework: Annotated[str | None, typer.Option(help="Override the detected framework.")] = None,
    environment: Annotated[
        str | None,
        typer.Option(
            help="The model's environment: auto (this Python's packages), none, or a"
            " requirements.txt / conda.yaml to read. Default: what PATH declares (its"
            " requirements.txt, conda.yaml or modelyard.yaml), else none.",
        ),
    ] = None,
    no_capture: Annotated[
        bool, typer.Option("--no-capture", help="Do not record git source and environment.")
    ] = False,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Register a file or directory as the next version of a model.

    Only files the registry lacks are uploaded; the git source is recorded automatically,
    and the environment the model declares (not this CLI's own: see --environment).
    Evaluation evidence (plots, reports, metric tables) goes with --attach: kept beside
    the model's files, never part of its digest, readable by viewers. The model card is
    --card FILE, else MODEL_CARD.md among the files or attachments, else (with
    --card-from-previous) the previous version's. Everything is registered in one
    transaction: nothing half-written.

    [bold]Example[/bold]: modelyard register churn ./model_dir --metric auc=0.87
    --param max_depth=5 --tag team=growth --dataset customers@2024-w36

    [bold]Example[/bold]: modelyard register churn ./model --attach ./eval/ --card MODEL_CARD.md
    """
    if description_file is not None:
        description = description_file.read_text(encoding="utf-8")
    with registry(url) as reg:
        version = reg.register(
            name,
            path,
            metrics=parse_metrics(metric),
            params=parse_pairs(param, "--param"),
            tags=parse_pairs(tag, "--tag"),
            dataset=dataset,
            description=description,
            run=run,
            framework=framework,
            source=None if no_capture else "auto",
            environment=None if no_capture else model_environment(environment, path),
            attachments=attach or (),
            card=card,
            card_from_previous=card_from_previous,
        )
    if json_out:
        output.print_json(version.as_dict())
    else:
        output.console.print(
            f"registered [bold]{version.reference}[/bold] ({len(version.files)} files,"
            f" {output.human_size(version.size)}, {output.abbreviate(version.manifest_digest, 19)})"
        )


def model_environment(option: str | None, path: Path) -> Environment | Literal["auto"] | None:
    """--environment: auto, none, a file to read, or (unset) what the model declares."""
    if option == "auto":
        return "auto"
    if option == "none":
        return None
    if option is not None:
        return environment_from_file(Path(option))
    return declared_environment(path)


@app.command()
@handles_errors
def show(
    reference: Annotated[str, typer.Argument(help="NAME, NAME/N, NAME@ALIAS or NAME@sha256:…")],
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Show one version: metrics (offline, and the newest online value of each), params,
    lineage, files. --json: the version, and its online metrics under online_metrics.

    [bold]Example[/bold]: modelyard show churn@champion
    """
    with registry(url) as reg:
        version = reg.resolve(reference)
        online = reg.online_metrics(version.reference, limit=1).latest
    if json_out:
        output.print_json({**version.as_dict(), "online_metrics": online})
        return
    output.console.print(output.version_details(version))
    if online:
        output.console.print(output.online_table(version.metrics, online))
    table = output.Table("path", "size", "sha256")
    for f in version.files:
        table.add_row(
            output.escape(f.path), output.human_size(f.size), output.abbreviate(f.sha256, 16)
        )
    output.console.print(table)


@app.command()
@handles_errors
def resolve(
    reference: Annotated[str, typer.Argument(help="NAME, NAME/N, NAME@ALIAS or NAME@sha256:…")],
    as_of: Annotated[
        str | None,
        typer.Option(help="What it pointed to then: an ISO time, e.g. 2026-03-03T12:00Z."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Print the version a reference points at: NAME/N and its manifest digest, on one
    line, so that a script can read both (--json: the whole version).

    [bold]Example[/bold]: modelyard resolve churn@production --as-of 2026-03-03T12:00Z

    [bold]Example[/bold]: modelyard resolve churn@production | read REF DIGEST
    """
    with registry(url) as reg:
        version = reg.resolve(reference, as_of=parse_moment(as_of) if as_of else None)
    output.emit(json_out, version.as_dict(), f"{version.reference} {version.manifest_digest}")


@app.command()
@handles_errors
def download(
    reference: Annotated[str, typer.Argument(help="NAME, NAME/N, NAME@ALIAS or NAME@sha256:…")],
    out: Annotated[Path, typer.Option("--output", "-o", help="Directory to write the files to.")],
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="First check the version's signatures against the registry's published keys"
            " (or the PEM file $MODELYARD_TRUSTED_KEYS names): nothing is written unless a"
            " trusted key signed exactly these files.",
        ),
    ] = False,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Download a version's files, verifying every sha256 and writing atomically.

    With --verify the sha256s are first checked against a signature: the registry signs
    every version that enters a protected stage (staging, production), and a file whose
    bytes differ from what was signed is refused by name.

    [bold]Example[/bold]: modelyard download churn@production --verify -o ./deploy
    """
    with registry(url) as reg:
        version = reg.resolve(reference)
        verified = reg.verify(version) if verify else None
        reg.download(version, out)
    signed = f", signed by {', '.join(verified.signers)}" if verified else ""
    output.emit(
        json_out,
        {
            "directory": str(out),
            "version": version.as_dict(),
            "verified": verified.as_dict() if verified else None,
        },
        f"downloaded [bold]{version.reference}[/bold] ({len(version.files)} files,"
        f" {output.human_size(version.size)}{signed}) to {output.escape(str(out))}",
    )


@app.command()
@handles_errors
def search(
    filter: Annotated[
        str | None,
        typer.Argument(help="Filter, e.g. 'metrics.auc >= 0.85 and tags.team = \"growth\"'"),
    ] = None,
    order_by: Annotated[
        str | None, typer.Option("--order-by", "-o", help="e.g. 'metrics.auc desc'")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many versions to show.")] = 50,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Search versions across all models with the filter language.

    Fields: name, version, stage, creator, created, framework, format, run, tags.K,
    params.K, metrics.K, dataset.name|version|digest, source.repo|commit|branch|dirty.
    Operators: = != < <= > >= like in, and/or/not, parentheses.

    [bold]Example[/bold]: modelyard search 'metrics.auc >= 0.85 and tags.team = "growth"'
    --order-by 'metrics.auc desc'
    """
    with registry(url) as reg:
        page = reg.versions(filter=filter, order_by=order_by, limit=limit)
    if json_out:
        output.print_json({"items": [v.as_dict() for v in page.items]})
        return
    output.console.print(output.versions_table(page.items))
    more = " (more match: raise --limit or narrow the filter)" if page.next_page_token else ""
    output.errors.print(f"{len(page.items)} version(s){more}")


@app.command()
@handles_errors
def versions(
    name: Annotated[str, typer.Argument(help="Model name.")],
    filter: Annotated[str | None, typer.Argument(help="Optional filter.")] = None,
    limit: Annotated[int, typer.Option(help="How many versions to show.")] = 50,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """List a model's versions, newest first.

    [bold]Example[/bold]: modelyard versions churn 'metrics.auc > 0.8'
    """
    with registry(url) as reg:
        page = reg.versions(name, filter=filter, limit=limit)
    if json_out:
        output.print_json({"items": [v.as_dict() for v in page.items]})
    else:
        output.console.print(output.versions_table(page.items, title=name))


@app.command()
@handles_errors
def models(
    filter: Annotated[
        str | None, typer.Argument(help="Optional filter, e.g. 'name like \"churn%\"'")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many models to show.")] = 100,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """List models.

    [bold]Example[/bold]: modelyard models 'tags.team = "growth"'
    """
    with registry(url) as reg:
        page = reg.models(filter=filter, limit=limit)
    if json_out:
        output.print_json({"items": [m.as_dict() for m in page.items]})
    else:
        output.console.print(output.models_table(page.items))


@app.command()
@handles_errors
def edit(
    reference: Annotated[str, typer.Argument(help="The version to edit, e.g. churn/3.")],
    description: Annotated[str | None, typer.Option(help="New Markdown description.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="KEY=VALUE to set.")] = None,
    untag: Annotated[list[str] | None, typer.Option("--untag", help="KEY to remove.")] = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Edit a version's description or tags (its files never change). Journaled.

    [bold]Example[/bold]: modelyard edit churn/3 --tag reviewed=yes --untag wip
    """
    patch: dict[str, str | None] = dict(parse_pairs(tag, "--tag"))
    patch.update({key: None for key in untag or []})
    with registry(url) as reg:
        version = reg.update_version(reference, description=description, tags=patch or None)
    output.emit(json_out, version.as_dict(), f"updated [bold]{version.reference}[/bold]")


# -- aliases ----------------------------------------------------------------------------------


@alias_app.command("set")
@handles_errors
def alias_set(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias, e.g. champion.")],
    version: Annotated[int, typer.Argument(help="Version number to point at.")],
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Point NAME@ALIAS at a version (creates or moves it).

    [bold]Example[/bold]: modelyard alias set churn champion 42
    """
    with registry(url) as reg:
        target = reg.set_alias(name, alias, version)
    output.emit(json_out, target.as_dict(), f"{name}@{alias} → {target.reference}")


@alias_app.command("delete")
@handles_errors
def alias_delete(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias to delete.")],
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Delete an alias (the version itself stays).

    [bold]Example[/bold]: modelyard alias delete churn challenger
    """
    with registry(url) as reg:
        reg.delete_alias(name, alias)
    output.emit(
        json_out, {"model": name, "alias": alias, "deleted": True}, f"deleted {name}@{alias}"
    )


@alias_app.command("list")
@handles_errors
def alias_list(
    name: Annotated[str, typer.Argument(help="Model name.")],
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """List a model's aliases.

    [bold]Example[/bold]: modelyard alias list churn
    """
    with registry(url) as reg:
        model = reg.model(name)
    table = output.Table("alias", "version")
    for alias, number in model.aliases.items():
        table.add_row(output.escape(alias), f"{name}/{number}")
    items = [
        {"alias": alias, "version": number, "reference": f"{name}/{number}"}
        for alias, number in model.aliases.items()
    ]
    output.emit(json_out, {"items": items}, table)


# -- journal ----------------------------------------------------------------------------------


@journal_app.command("list")
@handles_errors
def journal_list(
    after: Annotated[int, typer.Option(help="Show events after this sequence number.")] = 0,
    limit: Annotated[int, typer.Option(help="How many events to show.")] = 50,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Show journal events in order.

    [bold]Example[/bold]: modelyard journal list --after 100
    """
    with registry(url) as reg:
        events = reg.events(after=after, limit=limit)
    if json_out:
        output.print_json({"items": [e.as_dict() for e in events]})
    else:
        output.console.print(output.events_table(events))


@journal_app.command("head")
@handles_errors
def journal_head(url: UrlOption = DEFAULT_URL, json_out: JsonOption = False) -> None:
    """Print the journal's newest event as a checkpoint, SEQ:HASH (admins).

    Keep it outside the registry (an audit log, a ticket, another machine).
    Later, 'modelyard journal verify --checkpoint SEQ:HASH' proves that the
    journal still holds that exact event and extends it: deleting the newest
    events is caught even if the registry's own head was moved back too.

    [bold]Example[/bold]: modelyard journal head >> audit/registry.checkpoints
    """
    with registry(url) as reg:
        head = reg.journal_head()
    if json_out:
        output.print_json(head.as_dict())
    else:
        output.console.print(str(head), highlight=False)


Checkpoint_ = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        metavar="SEQ:HASH",
        help="A checkpoint printed earlier by 'journal head': the journal must still hold"
        " that exact event.",
    ),
]
StateOption = Annotated[
    bool,
    typer.Option(
        "--state",
        help="Also replay the journal and compare the models, versions (stage, metadata)"
        " and aliases it implies with the tables, naming every row that differs.",
    ),
]


@journal_app.command("verify")
@handles_errors
def journal_verify(
    checkpoint: Checkpoint_ = None,
    state: StateOption = False,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Recompute the journal's hash chain here and name the first broken link, if any.

    Reads every event (admins) and trusts nothing else: each hash is
    recomputed from the genesis, the chain must end at the head the registry
    recorded (so deleted newest events are caught) and hold the checkpoint you
    give. Exits 2 when the journal, or with --state the tables, do not hold.

    [bold]Examples[/bold]: modelyard journal verify
      modelyard journal verify --checkpoint 1042:3f2a... --state
    """
    mark = Checkpoint.parse(checkpoint) if checkpoint is not None else None
    with registry(url) as reg:
        report = reg.verify_journal(checkpoint=mark, state=state)
    if json_out:
        output.print_json(report.as_dict())
    elif report.ok:
        checked = [f"chain verified up to its head {report.head}"]
        if mark is not None:
            checked.append(f"checkpoint {mark.seq} found")
        if state:
            checked.append("tables match the journal")
        output.console.print(f"journal intact: {report.events} events, {', '.join(checked)}")
    elif report.differences:
        output.errors.print(
            f"[red]tables differ from the journal[/red] in {len(report.differences)} place(s):"
        )
        for difference in report.differences:
            output.errors.print(f"  {output.escape(str(difference))}", highlight=False)
    else:
        output.errors.print(
            f"[red]journal broken[/red] at event {report.first_broken_seq}: {report.reason}"
        )
    if not report.ok:
        raise typer.Exit(2)


# After the core commands, so that --help lists those first.
lifecycle.install(app)
access.install(app, alias_app)
compare.install(app)
describe.install(app)
checks.install(app)
online.install(app)
evidence.install(app)
gc.install(app)
webhooks.install(app)
imports.install(app)
watch.install(app)
serve_model.install(app)
scan.install(app)
advisories.install(app)
signing.install(app)
bundles.install(app)
reflow_help(app)

if __name__ == "__main__":  # pragma: no cover
    main()
