"""Progress reporting for long transfers, pluggable so the SDK stays silent by default."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from modelyard.client.transport import Advance


class Progress(Protocol):
    def task(self, description: str, total: int) -> AbstractContextManager[Advance]:
        """A context whose value is called with the number of bytes just done."""
        ...


class NoProgress:
    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        yield _ignore


def _ignore(_: int) -> None:
    return None
