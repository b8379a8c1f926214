"""Serving the app with uvicorn (``modelyard serve``)."""

from __future__ import annotations

from types import FrameType

import uvicorn
from fastapi import FastAPI

from modelyard.api.rawbody import RawBodyProtocol
from modelyard.service import RegistryService


def run_server(
    app: FastAPI, service: RegistryService, *, host: str, port: int, log_level: str
) -> None:
    """Serve until told to stop (SIGINT, SIGTERM)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        http=RawBodyProtocol,  # big uploads read from the socket (api/rawbody.py)
    )
    _StreamEndingServer(config, service).run()


class _StreamEndingServer(uvicorn.Server):
    """uvicorn, ending the event streams when told to stop: it waits for the responses in
    progress before it shuts down, and a stream lasts up to an hour. Their clients resume
    with Last-Event-ID on the next server."""

    def __init__(self, config: uvicorn.Config, service: RegistryService) -> None:
        super().__init__(config)
        self._service = service

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._service.feed.close()
        super().handle_exit(sig, frame)
