"""``modelyard import mlflow``: a whole MLflow registry brought across, with its history.

Each registered model and version is copied with its files (verified, into the
content-addressed store), tags, description, stage, aliases, and its run's params, latest
metrics and link; the time and creator MLflow recorded are kept as the version's
``origin``, beside the import's own (which the journal records as the importer's).

It works from the client's side: it reads MLflow over its REST API with the importer's
credentials and writes through the SDK under the importer's token, so every write is
checked, journaled and gated like any other. A version keeps its MLflow number, so
``models:/churn/3`` names the same model after the switch.

Idempotent: a version already imported (its origin names the same MLflow model and
number) is not copied again; only its tags and description, and the model's stages and
aliases, are brought up to date. An interrupted run, run again, continues where it
stopped: each version is registered in one transaction, whole or not at all.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from modelyard.client.progress import NoProgress, Progress
from modelyard.client.registry import Registry
from modelyard.client.transport import Advance
from modelyard.domain.errors import Conflict, ModelyardError, NotFound
from modelyard.domain.models import Model, Origin, Version
from modelyard.mlflow_tracking import (
    STAGES,
    TrackingServer,
    latest_metrics,
    params_of,
    tags_of,
    walk,
)

SYSTEM: Final = "mlflow"
ARCHIVED: Final = STAGES["Archived"]


@dataclass
class ModelImport:
    """What the import did to one model."""

    name: str
    imported: int = 0  # versions copied
    updated: int = 0  # versions imported before whose tags or description changed since
    unchanged: int = 0  # versions imported before, as they were
    moved: int = 0  # stage changes and aliases set
    failed: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "imported": self.imported,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "moved": self.moved,
            "failed": self.failed,
            "notes": list(self.notes),
        }

    def fail(self, what: str, why: str) -> None:
        self.failed += 1
        self.notes.append(f"{what}: {why}")


@dataclass
class ImportReport:
    source: str
    models: list[ModelImport] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(m.failed for m in self.models)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "models": [m.as_dict() for m in self.models]}


def import_mlflow(
    reg: Registry,
    tracking: TrackingServer,
    *,
    registry: TrackingServer | None = None,
    models: Sequence[str] = (),
    progress: Progress | None = None,
) -> ImportReport:
    """Copy MLflow's registered models (``models``, or all of them) into ``reg``.

    ``tracking`` serves runs and artifacts; ``registry`` the registered models, when
    MLflow keeps them apart (``MLFLOW_REGISTRY_URI``). The progress counts versions.
    """
    source = registry or tracking
    wanted = [source.registered_model(name) for name in models] or list(source.registered_models())
    plan = [(model, source.model_versions(model["name"])) for model in wanted]
    report = ImportReport(source.url)
    total = sum(len(versions) for _, versions in plan)
    with (progress or NoProgress()).task("importing", total) as advance:
        for model, versions in plan:
            done = ModelImport(model["name"])
            report.models.append(done)
            _Importer(reg, tracking, source.url, done).model(model, versions, advance)
    return report


class _Importer:
    """One model's import: the model, each version, then stages and aliases."""

    def __init__(self, reg: Registry, tracking: TrackingServer, uri: str, done: ModelImport):
        self.reg, self.tracking, self.uri, self.done = reg, tracking, uri, done

    def model(
        self, found: dict[str, Any], versions: list[dict[str, Any]], advance: Advance
    ) -> None:
        name = found["name"]
        try:
            here = self._model(found)
        except ModelyardError as exc:
            self.done.fail(name, exc.message)
            advance(len(versions))
            return
        imported: dict[str, Version] = {}
        for version in versions:
            try:
                copied = self._version(here, version)
                if copied is not None:
                    imported[version["version"]] = copied
            except ModelyardError as exc:
                self.done.fail(f"version {version['version']}", exc.message)
            advance(1)
        self._stages(name, versions, imported)
        self._aliases(name, found.get("aliases") or [], imported)

    # -- the model -------------------------------------------------------------------------

    def _model(self, found: dict[str, Any]) -> Model:
        name, description = found["name"], found.get("description") or ""
        tags = tags_of(found.get("tags"))
        try:
            here = self.reg.model(name)
        except NotFound:
            origin = Origin(
                SYSTEM, self.uri, name, created_at=_time(found.get("creation_timestamp"))
            )
            return self.reg.create_model(name, description=description, tags=tags, origin=origin)
        new_description, new_tags = _edits(here.description, here.tags, found)
        if new_description is None and new_tags is None:
            return here
        return self.reg.update_model(name, description=new_description, tags=new_tags)

    # -- versions --------------------------------------------------------------------------

    def _version(self, model: Model, found: dict[str, Any]) -> Version | None:
        """The version imported (or already imported), or None when MLflow's is not ready."""
        number = found["version"]
        if found.get("status", "READY") != "READY":
            self.done.fail(f"version {number}", f"MLflow has it {found['status']}; not copied")
            return None
        try:
            here = self.reg.resolve(f"{model.name}/{number}")
        except NotFound:
            here = None
        if here is not None:
            return self._existing(here, found)
        return self._copy(model.name, found)

    def _existing(self, here: Version, found: dict[str, Any]) -> Version:
        origin = here.origin
        if origin is None or origin.system != SYSTEM or origin.name != found["name"]:
            raise Conflict(
                f"{here.reference} was registered here, not imported from MLflow; left as it is",
                code="number_taken",
            )
        description, tags = _edits(here.description, here.tags, found)
        if description is None and tags is None:
            self.done.unchanged += 1
            return here
        self.done.updated += 1
        return self.reg.update_version(here.reference, description=description, tags=tags)

    def _copy(self, name: str, found: dict[str, Any]) -> Version:
        number = found["version"]
        what = f"{name} version {number}"
        root = self.tracking.artifact_path(self.tracking.download_uri(name, number), what)
        run = self._run(found.get("run_id") or "")
        link = found.get("run_link") or (self.tracking.run_link(run) if run else None)
        origin = Origin(
            SYSTEM,
            self.uri,
            name,
            version=number,
            created_at=_time(found.get("creation_timestamp")),
            created_by=found.get("user_id") or (run or {}).get("info", {}).get("user_id") or None,
            run_link=link,
        )
        files = self.tracking.artifacts(root)
        with tempfile.TemporaryDirectory(prefix="modelyard-import-") as scratch:
            for relative in walk(files):
                target = Path(scratch, relative)
                target.parent.mkdir(parents=True, exist_ok=True)
                with files.reading(relative) as chunks, target.open("wb") as out:
                    for chunk in chunks:
                        out.write(chunk)
            version = self.reg.register(
                name,
                scratch,
                params=params_of(run),
                metrics=latest_metrics(run),
                tags=tags_of(found.get("tags")),
                description=found.get("description") or "",
                run=found.get("run_id") or None,
                source=None,
                environment=None,
                origin=origin,
                number=int(number),
            )
        self.done.imported += 1
        return version

    def _run(self, run_id: str) -> dict[str, Any] | None:
        """The version's run, for its lineage; a run MLflow no longer has is noted."""
        if not run_id:
            return None
        try:
            return self.tracking.run(run_id)
        except NotFound:
            self.done.notes.append(f"run {run_id} is gone from MLflow: no params or metrics")
            return None

    # -- stages and aliases ----------------------------------------------------------------

    def _stages(
        self, name: str, versions: Iterable[dict[str, Any]], imported: dict[str, Version]
    ) -> None:
        """MLflow's stages as Modelyard's: Archived archives; Staging and Production
        promote under the model's policy (a protected stage opens a request, once), and an
        exclusive stage gets the newest version MLflow had there."""
        exclusive = {s["name"] for s in self.reg.policy(name)["stages"] if s.get("exclusive")}
        wanted: dict[str, list[Version]] = {}
        for found in versions:
            version = imported.get(found["version"])
            stage = STAGES.get(str(found.get("current_stage")))
            if version is None or stage is None:
                continue
            if stage != ARCHIVED:
                wanted.setdefault(stage, []).append(version)
            elif version.stage != ARCHIVED:
                self._archive(version)
        for stage, holders in wanted.items():
            for version in holders[-1:] if stage in exclusive else holders:
                self._promote(version, stage)

    def _promote(self, version: Version, stage: str) -> None:
        if version.stage == stage:
            return
        waiting = [
            request
            for request in self.reg.requests(version.model)
            if request.version == version.version and request.to_stage == stage
        ]
        if waiting:
            self.done.notes.append(
                f"{version.reference} -> {stage}: request #{waiting[0].id} still waits"
            )
            return
        try:
            promotion = self.reg.promote(version.reference, stage)
        except ModelyardError as exc:
            self.done.fail(f"{version.reference} -> {stage}", exc.message)
            return
        if promotion.request is not None and promotion.status == "open":
            self.done.notes.append(
                f"{version.reference} -> {stage}: request #{promotion.request.id} opened"
                " (the stage is protected)"
            )
        else:
            self.done.moved += 1

    def _archive(self, version: Version) -> None:
        try:
            self.reg.archive(version.reference)
        except ModelyardError as exc:
            self.done.fail(f"{version.reference} -> {ARCHIVED}", exc.message)
            return
        self.done.moved += 1

    def _aliases(
        self, name: str, aliases: list[dict[str, Any]], imported: dict[str, Version]
    ) -> None:
        """Each alias MLflow has; one named as a stage (``production``: Modelyard's stages
        and aliases share a namespace) is a promotion into it, as the MLflow API does."""
        current = self.reg.model(name).aliases
        for alias in aliases:
            version = imported.get(str(alias.get("version")))
            if version is None or current.get(alias["alias"]) == version.version:
                continue
            try:
                self.reg.set_alias(name, alias["alias"], version.version)
                self.done.moved += 1
            except Conflict as exc:
                if exc.code != "alias_is_stage":
                    self.done.fail(f"alias {alias['alias']}", exc.message)
                    continue
                self._promote(self.reg.resolve(version.reference), alias["alias"])
            except ModelyardError as exc:
                self.done.fail(f"alias {alias['alias']}", exc.message)


def _edits(
    description: str, tags: dict[str, str], found: dict[str, Any]
) -> tuple[str | None, dict[str, str | None] | None]:
    """What MLflow's model or version (``found``) changed since: its description, if it has
    one and it differs, and the tags it set (None for each that did not change). Tags set
    only here are kept: the import adds, it does not take away."""
    theirs = found.get("description") or ""
    changed = {k: v for k, v in tags_of(found.get("tags")).items() if tags.get(k) != v}
    return (theirs if theirs and theirs != description else None), (
        dict[str, str | None](changed) or None
    )


def _time(millis: Any) -> datetime | None:
    return datetime.fromtimestamp(int(millis) / 1000, UTC) if millis else None
