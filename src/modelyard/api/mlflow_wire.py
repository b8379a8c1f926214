"""MLflow's Model Registry wire format: Modelyard's models and versions as MLflow's client
reads them, MLflow's filters and orderings as Modelyard's, and MLflow's error codes.

Pure translation, no rules: what may be done, and by whom, is the service's to say. The
field names are those of MLflow's ``model_registry.proto`` (snake_case, int64 times in
milliseconds, version numbers as strings).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final

from modelyard.domain.errors import InvalidFilter, InvalidInput
from modelyard.domain.models import Model, PendingVersion, Version
from modelyard.domain.references import MAX_VERSION_NUMBER
from modelyard.mlflow_tracking import STAGES

PREFIXES: Final = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
ARTIFACT_PREFIXES: Final = ("/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts")
# Where get-download-uri points: the version's files, listed and read as MLflow's
# HttpArtifactRepository does through a tracking server that serves artifacts.
ARTIFACT_ROOT: Final = "/api/2.0/mlflow-artifacts/artifacts"
MODELS_DIR: Final = "modelyard-models"

# MLflow's stages, by Modelyard stage name; any other stage reads as "None".
_STAGES: Final = {ours: theirs for theirs, ours in STAGES.items()}
MLFLOW_STAGES: Final = ("None", *STAGES)

# MLflow's error codes by HTTP status (a 409 is RESOURCE_ALREADY_EXISTS when the thing
# exists, else INVALID_STATE); the client raises MlflowException with the code it reads.
_CODES: Final = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "ENDPOINT_NOT_FOUND",
    409: "INVALID_STATE",
    413: "INVALID_PARAMETER_VALUE",
    415: "INVALID_PARAMETER_VALUE",
    429: "REQUEST_LIMIT_EXCEEDED",
    503: "TEMPORARILY_UNAVAILABLE",
}
# Codes of routes that do not exist (rather than of a thing they did not find): MLflow's
# client then tries the next endpoint it knows for the call.
_NO_ENDPOINT: Final = frozenset({"not_found", "method_not_allowed"})
# MLflow endpoints this server does not serve, and why (docs/mlflow.md has the table).
UNSUPPORTED: Final = {
    "registered-models/rename": "Modelyard model names are permanent: references such as"
    " churn@production, the journal and downstream services name them",
}


def is_mlflow_path(path: str) -> bool:
    """Whether an answer to ``path`` must be in MLflow's format (errors included)."""
    return any(path == p or path.startswith(p + "/") for p in PREFIXES + ARTIFACT_PREFIXES)


def error_body(
    status: int, code: str, message: str, extra: dict[str, Any], path: str
) -> dict[str, Any]:
    """An error as MLflow's client reads it (``error_code``, ``message``), keeping
    Modelyard's own ``code`` and details beside for people and scripts."""
    if code in _NO_ENDPOINT:
        mlflow_code = "ENDPOINT_NOT_FOUND"
        endpoint = path.split("/2.0/mlflow/", 1)[-1]
        if endpoint in UNSUPPORTED:
            message = f"{endpoint} is not supported by Modelyard: {UNSUPPORTED[endpoint]}"
    elif status == 409 and code.endswith("_exists"):
        mlflow_code = "RESOURCE_ALREADY_EXISTS"
    else:
        mlflow_code = _CODES.get(status, "INTERNAL_ERROR")
    return {"error_code": mlflow_code, "message": message, "code": code, **extra}


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def stage_of(version: Version) -> str:
    """The version's stage as one of MLflow's four."""
    return _STAGES.get(version.stage, "None")


def stage_filter(mlflow_stage: str) -> str:
    """The filter for the versions MLflow would place in ``mlflow_stage`` (of its four)."""
    if mlflow_stage == "None":
        return f"stage not in ({', '.join(repr(s) for s in _STAGES)})"
    named = STAGES.get(mlflow_stage)
    if named is None:
        raise InvalidInput(
            f"unknown stage {mlflow_stage!r}; one of {', '.join(MLFLOW_STAGES)}",
            code="invalid_stage",
        )
    return f"stage = {named!r}"


def stage_name(mlflow_stage: str) -> str:
    """Modelyard's stage for an MLflow stage name (any case), as transition-stage takes it."""
    lowered = mlflow_stage.strip().lower()
    if lowered not in _STAGES:
        raise InvalidInput(
            f"stage must be one of Staging, Production, Archived; not {mlflow_stage!r}",
            code="invalid_stage",
        )
    return lowered


def version_number(text: str | int | None) -> int:
    """MLflow sends version numbers as strings; they must be positive integers."""
    value = str(text if text is not None else "").strip()
    if not value.isdigit() or not 1 <= int(value) <= MAX_VERSION_NUMBER:
        raise InvalidInput(f"version must be a positive integer; not {text!r}", code="bad_version")
    return int(value)


def download_uri(base_url: str, name: str, number: int) -> str:
    """Where MLflow's client reads a version's files: this server's artifact endpoint."""
    return f"{base_url.rstrip('/')}{ARTIFACT_ROOT}/{MODELS_DIR}/{name}/{number}"


def tags_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in sorted(tags.items())]


def tags_dict(tags: Iterable[Any] | None) -> dict[str, str]:
    """MLflow's ``[{"key", "value"}]`` as a dict (checked by the service, as any tags)."""
    found: dict[str, str] = {}
    for tag in tags or ():
        if not isinstance(tag, dict) or not isinstance(tag.get("key"), str):
            raise InvalidInput("tags must be a list of {key, value} objects", code="bad_tags")
        found[tag["key"]] = str(tag.get("value", ""))
    return found


def registered_model(model: Model, latest: Sequence[Version] = ()) -> dict[str, Any]:
    """An imported model reports its original creation time, as MLflow did."""
    origin = model.origin
    return {
        "name": model.name,
        "creation_timestamp": millis(
            origin.created_at if origin and origin.created_at else model.created_at
        ),
        "last_updated_timestamp": millis(model.updated_at),
        "description": model.description,
        "latest_versions": [model_version(v) for v in latest],
        "tags": tags_list(model.tags),
        "aliases": [{"alias": a, "version": str(n)} for a, n in sorted(model.aliases.items())],
    }


def model_version(version: Version) -> dict[str, Any]:
    """An imported version reports its original time, creator and run link, as MLflow did."""
    origin = version.origin
    created = origin.created_at if origin and origin.created_at else version.created_at
    answer = {
        "name": version.model,
        "version": str(version.version),
        "creation_timestamp": millis(created),
        "last_updated_timestamp": millis(created),
        "user_id": (origin.created_by or "") if origin else version.creator,
        "current_stage": stage_of(version),
        "description": version.description,
        "source": f"models:/{version.model}/{version.version}",
        "run_id": version.run or "",
        "status": "READY",
        "tags": tags_list(version.tags),
        "aliases": sorted(version.aliases),
    }
    if origin and origin.run_link:
        answer["run_link"] = origin.run_link
    return answer


_PENDING_STATUS: Final = {"pending": "PENDING_REGISTRATION", "failed": "FAILED_REGISTRATION"}


def pending_model_version(pending: PendingVersion) -> dict[str, Any]:
    """A version whose files are still being copied, or whose copy failed, as MLflow's
    client polls for it (``status``, and ``status_message`` saying why it failed)."""
    return {
        "name": pending.model,
        "version": str(pending.version),
        "creation_timestamp": millis(pending.created_at),
        "last_updated_timestamp": millis(pending.updated_at),
        "user_id": pending.creator,
        "current_stage": "None",
        "description": "",
        "source": pending.source,
        "run_id": pending.run or "",
        "status": _PENDING_STATUS[pending.status],
        "status_message": pending.message,
        "tags": [],
        "aliases": [],
    }


# -- filters and orderings ---------------------------------------------------------------

# MLflow's names for the fields Modelyard calls otherwise; timestamps are refused (MLflow
# compares milliseconds, Modelyard's filter times), as are ILIKE and unknown fields.
_FIELD_NAMES: Final = {"run_id": "run", "version_number": "version"}
_ORDER_NAMES: Final = {
    "name": "name",
    "creation_timestamp": "created",
    "last_updated_timestamp": "updated",
    "version_number": "version",
}
_TOKEN = re.compile(r"""("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`|[A-Za-z_][\w.]*|.)""", re.S)


# MLflow's client adds this to every model search, to leave its prompts out; Modelyard
# keeps no prompts, so every model passes it.
_NOT_A_PROMPT = re.compile(r"(\s+AND\s+)?tags?\.`mlflow\.prompt\.is_prompt`\s*!=\s*'true'", re.I)


def translate_filter(text: str | None) -> str | None:
    """An MLflow filter (``name LIKE 'churn%' AND tags.team = 'growth'``) in Modelyard's
    language, which has the same shape: field names are renamed outside quotes."""
    text = _NOT_A_PROMPT.sub("", text or "").strip()
    if text.upper().startswith("AND "):
        text = text[4:]
    if not text:
        return None
    out = []
    for token in _TOKEN.findall(text):
        if token.lower() == "ilike":
            raise InvalidFilter("ILIKE is not supported; use LIKE (case-sensitive)")
        if token.startswith("tag."):
            token = "tags." + token[4:]
        out.append(_FIELD_NAMES.get(token, token))
    return "".join(out)


def translate_order(terms: Sequence[str] | None) -> str | None:
    """MLflow's ``["name ASC", "last_updated_timestamp DESC"]`` as ``name, updated desc``."""
    out = []
    for term in terms or ():
        field, _, direction = term.strip().partition(" ")
        if field not in _ORDER_NAMES:
            known = ", ".join(_ORDER_NAMES)
            raise InvalidFilter(f"cannot order by {field!r}; order by one of {known}")
        direction = direction.strip().lower()
        if direction not in ("", "asc", "desc"):
            raise InvalidFilter(f"order direction is ASC or DESC; not {direction!r}")
        out.append(f"{_ORDER_NAMES[field]}{' desc' if direction == 'desc' else ''}")
    return ", ".join(out) or None
