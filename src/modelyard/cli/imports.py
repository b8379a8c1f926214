"""modelyard import: bring another registry's models across, with their history."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.table import Table

from modelyard.cli import output
from modelyard.cli.common import JsonOption, UrlOption, handles_errors
from modelyard.client.mlflow_import import ImportReport, import_mlflow
from modelyard.client.registry import connect
from modelyard.config import DEFAULT_URL
from modelyard.mlflow_tracking import TrackingServer

import_app = typer.Typer(
    help="Bring another registry's models across, with their history.\n\n"
    "[bold]Example[/bold]: modelyard import mlflow --tracking-uri http://mlflow:5000",
    no_args_is_help=True,
)


def install(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")


@import_app.command("mlflow")
@handles_errors
def mlflow(
    tracking_uri: Annotated[
        str,
        typer.Option(
            envvar="MLFLOW_TRACKING_URI",
            help="The MLflow tracking server: runs and artifacts (served by its proxy,"
            " mlflow server --serve-artifacts).",
        ),
    ],
    registry_uri: Annotated[
        str | None,
        typer.Option(
            envvar="MLFLOW_REGISTRY_URI",
            show_default="--tracking-uri",
            help="MLflow's model registry, when it is not the tracking server.",
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Only this registered model (repeatable); default all."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    json_out: JsonOption = False,
) -> None:
    """Copy MLflow's registered models into this registry, with their history.

    Each version comes with its files (verified), tags, description, stage and aliases.

    Its run's params, latest metrics and link come too; it keeps its MLflow number.

    MLflow's time and creator are kept as its origin (modelyard show); the import is yours.

    Stages follow the model's policy: a protected stage opens a request instead of moving.

    Run it again at any time: it copies only what changed, and resumes an interrupted run.

    MLflow's credentials: MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and _PASSWORD.

    Exits 1 if anything failed (the notes under the summary say what and why).

    [bold]Examples[/bold]:
      modelyard import mlflow --tracking-uri http://mlflow:5000
      modelyard import mlflow --tracking-uri http://mlflow:5000 --model churn --json
    """
    token = os.environ.get("MLFLOW_TRACKING_TOKEN") or None
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    auth = (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", "")) if user else None
    with (
        connect(url, progress=output.RichProgress()) as reg,
        TrackingServer(tracking_uri, token=token, auth=auth) as tracking,
        TrackingServer(registry_uri or tracking_uri, token=token, auth=auth) as registry,
    ):
        report = import_mlflow(
            reg, tracking, registry=registry, models=model or (), progress=output.CountProgress()
        )
    if json_out:
        output.print_json(report.as_dict())
    else:
        output.console.print(_summary(report))
        for done in report.models:
            for note in done.notes:
                output.console.print(f"{done.name}: {output.escape(note)}", highlight=False)
    if report.failed:
        raise typer.Exit(1)


def _summary(report: ImportReport) -> Table:
    table = Table(
        "model",
        "imported",
        "updated",
        "unchanged",
        "moved",
        "failed",
        title=f"from {report.source}",
    )
    for done in report.models:
        counts = (done.imported, done.updated, done.unchanged, done.moved, done.failed)
        table.add_row(output.escape(done.name), *map(str, counts))
    if not report.models:
        table.caption = "MLflow has no registered models"
    else:
        table.caption = "moved: stage changes and aliases set"
    return table
