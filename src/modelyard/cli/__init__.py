"""The ``modelyard`` command."""

from modelyard.cli.main import app, main

__all__ = ["app", "main"]
