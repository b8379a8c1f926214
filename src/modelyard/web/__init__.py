"""The web UI: server-rendered pages over the service, on the API's port at ``/``.

An adapter like the REST routes: each page takes its caller from the session (or local
mode), calls the service, and renders a template. No rule lives here.
"""

from modelyard.web.app import install

__all__ = ["install"]
