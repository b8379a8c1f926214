"""The REST API (v1): a thin FastAPI adapter over the service layer."""

from modelyard.api.app import create_app

__all__ = ["create_app"]
