"""The server's logs: text for a terminal (uvicorn's look), or one JSON object a line.

``--log-format json`` writes every record (uvicorn's, the registry's, the request logs of
``--access-log``) as ``{"time", "level", "logger", "message", ...}`` to stderr, with the
request fields (method, route, status, duration_ms, request_id) where a record has them.
No secret reaches a record: request logs carry the route's template, not the path, query,
headers or body (``api/telemetry.py``), and nothing else logs a request.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.config
import os
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
LOG_FORMAT_VARIABLE = "MODELYARD_LOG_FORMAT"
# The extra fields of a record that a JSON line carries (telemetry's request logs).
REQUEST_FIELDS = ("method", "route", "status", "duration_ms", "request_id")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in REQUEST_FIELDS:
            if name in record.__dict__:
                entry[name] = record.__dict__[name]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def logging_config(log_format: str, level: str = "info") -> dict[str, Any]:
    """The dictConfig of a server process (uvicorn's ``log_config``)."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r}: text or json")
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["plain"] = {"format": _TEXT}
    config["formatters"]["json"] = {"()": JsonFormatter}
    config["handlers"]["records"] = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "formatter": "json" if log_format == "json" else "plain",
    }
    config["root"] = {"handlers": ["records"], "level": level.upper()}
    # Request logs are switched by --access-log, whatever the level of the rest.
    config["loggers"]["modelyard.access"] = {"level": "INFO"}
    config["loggers"]["alembic"] = {"level": "WARNING"}  # each migration step is no news
    if log_format == "json":
        for name in ("default", "access"):
            config["handlers"][name]["formatter"] = "json"
            config["handlers"][name]["stream"] = "ext://sys.stderr"
    return config


def configure(log_format: str | None = None, level: str = "info") -> None:
    """Set this process's logging up; the format from ``MODELYARD_LOG_FORMAT`` when not
    given (how the server's delivery process inherits it)."""
    chosen = log_format or os.environ.get(LOG_FORMAT_VARIABLE) or "text"
    logging.config.dictConfig(logging_config(chosen, level))
