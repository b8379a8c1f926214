"""A registry in a local directory, opened in-process: the server's app, with no server."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from modelyard.config import Settings, open_service, server_side
from modelyard.domain.access import Reach

if TYPE_CHECKING:
    from modelyard.client.asgi import AsgiTransport


def open_local(data_dir: Path, database_url: str | None = None) -> AsgiTransport:
    """The registry in ``data_dir`` (or ``database_url``), reached as ``Reach.PROCESS``.

    Imported only for a directory, so that HTTP-only users never load the server side.
    """
    with server_side("a registry in a directory"):
        from modelyard.api import create_app
        from modelyard.client.asgi import AsgiTransport

    service = open_service(Settings(data_dir=data_dir, database_url=database_url))
    try:
        app = create_app(service, reach=Reach.PROCESS, ui=False)  # no browser in here
        return AsgiTransport(app, on_close=service.close)
    except BaseException:
        service.close()
        raise
