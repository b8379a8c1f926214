"""MLflow's Model Registry REST API, over the same service as ``/api/v1``.

Served under ``/api/2.0/mlflow`` and ``/ajax-api/2.0/mlflow`` so that an unmodified MLflow
client with ``MLFLOW_REGISTRY_URI`` pointed here works, with ``MLFLOW_TRACKING_TOKEN`` as a
Modelyard token. Each route translates (``api/mlflow_wire.py``) and calls the service:
access, validation, policy and the journal are the service's, as for every adapter.
Errors are MLflow's ``{"error_code", "message"}`` (``problems.py`` picks the format by
path). A version's files are read through an ``mlflow-artifacts``-compatible endpoint,
which ``get-download-uri`` points at. See docs/mlflow.md for the endpoint-by-endpoint
compatibility table.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from modelyard.api import mlflow_wire as wire
from modelyard.api.deps import caller, json_response, needs, service
from modelyard.api.streaming import stream_version_file
from modelyard.domain.errors import Conflict, Forbidden, NotFound
from modelyard.domain.lifecycle import ARCHIVED
from modelyard.domain.models import Model, Page, PendingVersion, Version
from modelyard.domain.names import validate_file_path
from modelyard.domain.pagination import MAX_PAGE_SIZE
from modelyard.service import RegistryService

router = APIRouter(tags=["mlflow"])

# What MLflow's client may ask for in one page (its default for versions is 10,000); pages
# hold at most MAX_PAGE_SIZE, and next_page_token leads on, as the client reads it.
MLFLOW_MAX_RESULTS = 200_000
Text = Annotated[str, Field(max_length=4096)]
# The query parameters of both searches (MLflow's defaults for max_results differ).
SearchFilter = Annotated[str | None, Query(max_length=4096)]
MaxResults = Annotated[int, Query(ge=1, le=MLFLOW_MAX_RESULTS)]
SearchOrder = Annotated[list[str] | None, Query()]
SearchPageToken = Annotated[str | None, Query(max_length=512)]
Tags = list[dict[str, Any]] | None


class _In(BaseModel):
    """MLflow's request messages: fields this server does not use are ignored, as a
    newer client may send some."""

    model_config = ConfigDict(extra="ignore")


class NameIn(_In):
    name: Text


class CreateModelIn(_In):
    name: Text
    description: Text = ""
    tags: Tags = None


class UpdateModelIn(_In):
    name: Text
    description: Text | None = None


class ModelTagIn(_In):
    name: Text
    key: Text
    value: Text = ""


class TagKeyIn(_In):
    name: Text
    key: Text


class AliasIn(_In):
    name: Text
    alias: Text
    version: Text


class AliasNameIn(_In):
    name: Text
    alias: Text


class LatestIn(_In):
    name: Text
    stages: list[Text] | None = None


class VersionIn(_In):
    name: Text
    version: Text


class CreateVersionIn(_In):
    name: Text
    source: Text
    run_id: Text | None = None
    tags: Tags = None
    description: Text = ""


class UpdateVersionIn(VersionIn):
    description: Text | None = None


class VersionTagIn(VersionIn):
    key: Text
    value: Text = ""


class VersionTagKeyIn(VersionIn):
    key: Text


class TransitionIn(VersionIn):
    stage: Text
    archive_existing_versions: bool = False


def _latest(svc: RegistryService, request: Request, name: str, stages: list[str]) -> list[Version]:
    """The newest version in each of MLflow's ``stages`` (all four when none is named)."""
    found = []
    for stage in stages or wire.MLFLOW_STAGES:
        page = svc.list_versions(
            name,
            caller=caller(request),
            filter=wire.stage_filter(stage),
            order_by="version desc",
            limit=1,
        )
        found += page.items
    return sorted(found, key=lambda v: v.version)


def _model(svc: RegistryService, request: Request, model: Model) -> Response:
    """A model with its latest versions (four reads, none for a model without versions)."""
    latest = _latest(svc, request, model.name, []) if model.latest_version else []
    return json_response({"registered_model": wire.registered_model(model, latest)})


def _version(version: Version | PendingVersion) -> Response:
    if isinstance(version, PendingVersion):
        return json_response({"model_version": wire.pending_model_version(version)})
    return json_response({"model_version": wire.model_version(version)})


def _search_args(
    filter: str | None, order_by: list[str] | None, page_token: str | None, max_results: int
) -> dict[str, Any]:
    """MLflow's search parameters as the service's: a page holds at most MAX_PAGE_SIZE,
    and its next_page_token leads on, as MLflow's client reads it."""
    return {
        "filter": wire.translate_filter(filter),
        "order_by": wire.translate_order(order_by),
        "page_token": page_token or None,
        "limit": min(max_results, MAX_PAGE_SIZE),
    }


def _page_answer(key: str, items: list[dict[str, Any]], page: Page[Any]) -> Response:
    answer: dict[str, Any] = {key: items}
    if page.next_page_token:
        answer["next_page_token"] = page.next_page_token
    return json_response(answer)


def _promote(svc: RegistryService, request: Request, name: str, number: int, stage: str) -> Version:
    """Promote under the policy; a protected stage opens a request, which MLflow's client
    is told of as a refusal naming it (nothing moved: it must not think otherwise)."""
    promotion = svc.lifecycle.promote(caller(request), f"{name}/{number}", stage)
    if promotion.request is not None and promotion.status == "open":
        raise Forbidden(
            f"{name}/{number} was not moved: {stage} is protected, and request"
            f" #{promotion.request.id} now waits for approval"
            f" (modelyard requests show {promotion.request.id})",
            code="request_opened",
            request=promotion.request.id,
        )
    return promotion.version


def search_registered_models(
    request: Request,
    filter: SearchFilter = None,
    max_results: MaxResults = 100,
    order_by: SearchOrder = None,
    page_token: SearchPageToken = None,
) -> Response:
    page = service(request).list_models(
        caller=caller(request), **_search_args(filter, order_by, page_token, max_results)
    )
    return _page_answer("registered_models", [wire.registered_model(m) for m in page.items], page)


async def get_model_version_by_alias(
    request: Request, name: Annotated[str, Query()], alias: Annotated[str, Query()]
) -> Response:
    """On the event loop, as ``/api/v1/resolve`` is: a cache hit is one indexed read."""
    return _version(service(request).resolve(f"{name}@{alias}", caller=caller(request)))


def get_model_version(
    request: Request, name: Annotated[str, Query()], version: Annotated[str, Query()]
) -> Response:
    """A version, or one whose files are still being copied (or failed to be)."""
    number = wire.version_number(version)
    return _version(service(request).version_or_pending(name, number, caller=caller(request)))


def search_model_versions(
    request: Request,
    filter: SearchFilter = None,
    max_results: MaxResults = 10_000,
    order_by: SearchOrder = None,
    page_token: SearchPageToken = None,
) -> Response:
    page = service(request).list_versions(
        caller=caller(request), **_search_args(filter, order_by, page_token, max_results)
    )
    return _page_answer("model_versions", [wire.model_version(v) for v in page.items], page)


# MLflow's read routes its client calls most (a poll, a load by alias, searches), which
# ``FastRoutes`` answers without FastAPI's router, by path under each prefix.
FAST_GETS: dict[str, Callable[..., Any]] = {
    "registered-models/search": search_registered_models,
    "registered-models/alias": get_model_version_by_alias,
    "model-versions/get": get_model_version,
    "model-versions/search": search_model_versions,
}


def _add(prefix: str) -> None:
    """The API's routes under one prefix (MLflow's tools use both)."""
    models = f"{prefix}/registered-models"
    versions = f"{prefix}/model-versions"
    for path, endpoint in FAST_GETS.items():
        router.get(f"{prefix}/{path}", openapi_extra=needs("model.view"))(endpoint)

    @router.post(f"{models}/create", openapi_extra=needs("model.register"))
    def create_registered_model(body: CreateModelIn, request: Request) -> Response:
        svc = service(request)
        model = svc.create_model(
            body.name,
            caller=caller(request),
            description=body.description,
            tags=wire.tags_dict(body.tags),
        )
        return _model(svc, request, model)

    @router.get(f"{models}/get", openapi_extra=needs("model.view"))
    def get_registered_model(request: Request, name: Annotated[str, Query()]) -> Response:
        svc = service(request)
        return _model(svc, request, svc.get_model(name, caller=caller(request)))

    @router.patch(f"{models}/update", openapi_extra=needs("model.edit"))
    def update_registered_model(body: UpdateModelIn, request: Request) -> Response:
        svc = service(request)
        model = svc.update_model(body.name, caller=caller(request), description=body.description)
        return _model(svc, request, model)

    @router.delete(f"{models}/delete", openapi_extra=needs("model.delete"))
    def delete_registered_model(body: NameIn, request: Request) -> Response:
        service(request).delete_model(body.name, caller=caller(request))
        return json_response({})

    @router.post(f"{models}/get-latest-versions", openapi_extra=needs("model.view"))
    def get_latest_versions(body: LatestIn, request: Request) -> Response:
        found = _latest(service(request), request, body.name, body.stages or [])
        return json_response({"model_versions": [wire.model_version(v) for v in found]})

    @router.post(f"{models}/set-tag", openapi_extra=needs("model.edit"))
    def set_registered_model_tag(body: ModelTagIn, request: Request) -> Response:
        service(request).update_model(
            body.name, caller=caller(request), tags={body.key: body.value}
        )
        return json_response({})

    @router.delete(f"{models}/delete-tag", openapi_extra=needs("model.edit"))
    def delete_registered_model_tag(body: TagKeyIn, request: Request) -> Response:
        service(request).update_model(body.name, caller=caller(request), tags={body.key: None})
        return json_response({})

    @router.post(f"{models}/alias", openapi_extra=needs("alias.set"))
    def set_registered_model_alias(body: AliasIn, request: Request) -> Response:
        """An alias; one named as a stage of the model's policy (``production``: stages and
        aliases share one namespace) is a promotion into that stage, under the policy."""
        number = wire.version_number(body.version)
        svc = service(request)
        try:
            svc.set_alias(body.name, body.alias, number, caller=caller(request))
        except Conflict as exc:
            if exc.code != "alias_is_stage":
                raise
            _promote(svc, request, body.name, number, body.alias)
        return json_response({})

    @router.delete(f"{models}/alias", openapi_extra=needs("alias.set"))
    def delete_registered_model_alias(body: AliasNameIn, request: Request) -> Response:
        service(request).delete_alias(body.name, body.alias, caller=caller(request))
        return json_response({})

    @router.post(f"{versions}/create", openapi_extra=needs("model.register"))
    def create_model_version(body: CreateVersionIn, request: Request) -> Response:
        """A version whose files are copied from its source (``service/mlflow_source.py``):
        the configured MLflow tracking server, or a bucket or directory an admin allowed.
        READY when the copy ends within seconds, else PENDING_REGISTRATION while it goes
        on, which MLflow's client polls ``get`` for (then READY or FAILED_REGISTRATION)."""
        made = service(request).mlflow_sources.register(
            caller(request),
            body.name,
            body.source,
            run_id=body.run_id or None,
            tags=wire.tags_dict(body.tags),
            description=body.description,
        )
        return _version(made)

    @router.patch(f"{versions}/update", openapi_extra=needs("model.edit"))
    def update_model_version(body: UpdateVersionIn, request: Request) -> Response:
        updated = service(request).update_version(
            body.name,
            wire.version_number(body.version),
            caller=caller(request),
            description=body.description,
        )
        return _version(updated)

    @router.delete(f"{versions}/delete", openapi_extra=needs("version.delete"))
    def delete_model_version(body: VersionIn, request: Request) -> Response:
        """A soft delete: the version is hidden everywhere and kept, as ``/api/v1`` does."""
        number = wire.version_number(body.version)
        service(request).lifecycle.delete_version(caller(request), body.name, number, hard=False)
        return json_response({})

    @router.post(f"{versions}/set-tag", openapi_extra=needs("model.edit"))
    def set_model_version_tag(body: VersionTagIn, request: Request) -> Response:
        service(request).update_version(
            body.name,
            wire.version_number(body.version),
            caller=caller(request),
            tags={body.key: body.value},
        )
        return json_response({})

    @router.delete(f"{versions}/delete-tag", openapi_extra=needs("model.edit"))
    def delete_model_version_tag(body: VersionTagKeyIn, request: Request) -> Response:
        service(request).update_version(
            body.name,
            wire.version_number(body.version),
            caller=caller(request),
            tags={body.key: None},
        )
        return json_response({})

    @router.post(f"{versions}/transition-stage", openapi_extra=needs("model.promote"))
    def transition_model_version_stage(body: TransitionIn, request: Request) -> Response:
        """Archived archives; Staging and Production promote under the model's policy, and
        a protected stage opens a request, which the error names: nothing moved yet.
        ``archive_existing_versions`` is what an exclusive stage (production) does."""
        svc = service(request)
        who = caller(request)
        number = wire.version_number(body.version)
        stage = wire.stage_name(body.stage)
        if stage == ARCHIVED:
            return _version(svc.lifecycle.archive(who, f"{body.name}/{number}"))
        return _version(_promote(svc, request, body.name, number, stage))

    @router.get(f"{versions}/get-download-uri", openapi_extra=needs("model.view"))
    def get_model_version_download_uri(
        request: Request, name: Annotated[str, Query()], version: Annotated[str, Query()]
    ) -> Response:
        number = wire.version_number(version)
        found = service(request).get_version(name, number, caller=caller(request))
        uri = wire.download_uri(str(request.base_url), found.model, found.version)
        return json_response({"artifact_uri": uri})


for _prefix in wire.PREFIXES:
    _add(_prefix)


# -- the version's files, as an mlflow-artifacts server serves a run's ------------------------


def _artifact_path(path: str) -> tuple[str, int, str]:
    """``modelyard-models/NAME/NUMBER[/PATH]`` as its parts; anything else is not here."""
    parts = path.strip("/").split("/", 3)
    if len(parts) < 3 or parts[0] != wire.MODELS_DIR:
        raise NotFound(
            f"no artifacts at {path!r}: this server serves a model version's files"
            f" under {wire.MODELS_DIR}/NAME/VERSION",
            code="file_not_found",
        )
    rest = parts[3] if len(parts) == 4 else ""
    if rest:
        validate_file_path(rest)
    return parts[1], wire.version_number(parts[2]), rest


def _add_artifacts(prefix: str) -> None:
    root = f"{prefix}/artifacts"

    @router.get(root, openapi_extra=needs("model.download"))
    def list_artifacts(
        request: Request, path: Annotated[str, Query(max_length=4096)] = ""
    ) -> Response:
        """The entries directly under ``path`` (basenames, as MLflow's client expects)."""
        name, number, under = _artifact_path(path)
        files = service(request).version_files(name, number, caller=caller(request))
        entries: dict[str, dict[str, Any]] = {}
        for entry in files:
            if under and not entry.path.startswith(under + "/"):
                if entry.path == under:
                    base = posixpath.basename(entry.path)
                    entries[base] = {"path": base, "is_dir": False, "file_size": entry.size}
                continue
            rest = entry.path[len(under) + 1 :] if under else entry.path
            head, sep, _ = rest.partition("/")
            if sep:
                entries.setdefault(head, {"path": head, "is_dir": True})
            else:
                entries[head] = {"path": head, "is_dir": False, "file_size": entry.size}
        return json_response({"files": [entries[k] for k in sorted(entries)]})

    @router.get(f"{root}/{{path:path}}", openapi_extra=needs("model.download"))
    def download_artifact(path: str, request: Request) -> Response:
        name, number, file_path = _artifact_path(path)
        if not file_path:
            raise NotFound(f"{name}/{number} is a directory; list it", code="file_not_found")
        return stream_version_file(
            service(request),
            caller(request),
            name,
            number,
            file_path,
            request.headers.get("range"),
            instance=request.url.path,
        )


for _prefix in wire.ARTIFACT_PREFIXES:
    _add_artifacts(_prefix)
