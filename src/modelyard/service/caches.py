"""The one way the service caches what it read from the database.

Every cached answer is kept under a stamp read from the database just before the answer
was loaded, and served only while that stamp is unchanged. Stamps are journal sequence
numbers (``Database.model_stamp``, ``Database.identity_stamp``): every committed change
appends an event in its own transaction (``Database.write`` refuses to commit one that
does not), and the event moves the stamps of what it changed. So an entry cannot outlive
a change on this replica or on any other sharing the database, whatever the code that
made the change remembered to do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

DEFAULT_SIZE = 4096


class StampedCache(Generic[K, V]):
    """A per-process map from keys to loaded values, each valid while its stamp holds.

    ``stamp(key)`` names the scope a key belongs to by reading its stamp: the cache, not
    each caller, decides which stamp guards which entry. Full, it starts over (the working
    set of a registry is far below the default size).
    """

    def __init__(self, stamp: Callable[[K], int], size: int = DEFAULT_SIZE) -> None:
        self._stamp = stamp
        self._size = size
        self._entries: dict[K, tuple[int, V]] = {}

    def get(self, key: K, load: Callable[[], V], seen: Callable[[], int] | None = None) -> V:
        """The cached value of ``key``, or ``load()`` (then cached) if its stamp moved.

        What ``load`` raises is not cached. ``seen``: for a ``load`` that reads in a
        transaction the caller opened earlier, the stamp as that transaction sees it. The
        value is then cached only if it equals the stamp read here: a SQLite transaction
        reads the snapshot of its first statement, which may predate a change committed
        since by another process, and a write transaction sees its own uncommitted
        changes; cached under the newer stamp, either would be served as current.
        """
        stamp = self._stamp(key)
        hit = self._entries.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = load()
        if seen is not None and seen() != stamp:
            return value  # right for that transaction, not for the next request
        if len(self._entries) >= self._size:
            self._entries.clear()
        # Kept under the stamp read before loading: a change that committed in between
        # makes the next call load again; it is never served stale.
        self._entries[key] = (stamp, value)
        return value
