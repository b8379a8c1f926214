"""The registry's state replayed from its journal, and compared with the tables.

The models, versions and aliases tables are a projection of the journal: every change
to them appends the event that describes it. ``Projection`` replays events into the state
they imply (as-of answers replay a prefix of one model's events; ``journal verify
--state`` the whole journal), and ``compare`` names every row where the tables say
otherwise: a row edited behind the registry's back, which the hash chain alone cannot see.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from modelyard.domain.events import (
    AliasDeleted,
    AliasSet,
    JournalEvent,
    ModelCreated,
    ModelDeleted,
    ModelState,
    ModelUpdated,
    VersionDeleted,
    VersionRegistered,
    VersionStaged,
    VersionUpdated,
    decode,
    version_state,
)
from modelyard.domain.manifest import manifest_digest
from modelyard.domain.models import Event, Model, Version


@dataclass
class ReplayedVersion:
    """A version as the journal tells it: what its events recorded, and when it entered
    its current stage (the seq), which decides ``MODEL@STAGE``."""

    state: dict[str, Any]
    entered: int
    deleted: bool = False


@dataclass
class Projection:
    models: dict[str, ModelState] = field(default_factory=dict)
    versions: dict[tuple[str, int], ReplayedVersion] = field(default_factory=dict)
    aliases: dict[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def replay(cls, events: Iterable[Event]) -> Projection:
        projection = cls()
        for event in events:
            projection.apply(event.seq, decode(event))
        return projection

    def apply(self, seq: int, event: JournalEvent) -> None:
        """One event's effect; kinds that change none of this state change nothing."""
        match event:
            case ModelCreated(model=model, after=after):
                self.models[model] = {"description": after["description"], "tags": after["tags"]}
            case ModelUpdated(model=model, after=after):
                self.models.setdefault(model, {"description": "", "tags": {}}).update(after)
            case ModelDeleted(model=model):
                self.models.pop(model, None)
            case VersionRegistered(model=model, version=number, after=after):
                self.versions[model, number] = ReplayedVersion(dict(after), seq)
            case VersionUpdated(model=model, version=number, after=after):
                if (model, number) in self.versions:
                    self.versions[model, number].state.update(after)
            case VersionStaged(model=model, version=number, after=stage):
                if (model, number) in self.versions:
                    replayed = self.versions[model, number]
                    replayed.state["stage"], replayed.entered = stage, seq
            case VersionDeleted(model=model, version=number, hard=hard):
                if hard:
                    self.versions.pop((model, number), None)
                    # Erasing a version erases the aliases that point at it.
                    gone = [k for k, n in self.aliases.items() if k[0] == model and n == number]
                    for key in gone:
                        del self.aliases[key]
                elif (model, number) in self.versions:
                    self.versions[model, number].deleted = True
            case AliasSet(model=model, alias=alias, after=number):
                self.aliases[model, alias] = number
            case AliasDeleted(model=model, alias=alias):
                self.aliases.pop((model, alias), None)

    def in_stage(self, model: str, stage: str) -> int | None:
        """The version of ``model`` that entered ``stage`` last, as ``MODEL@STAGE`` means."""
        entered = [
            (v.entered, number)
            for (name, number), v in self.versions.items()
            if name == model and v.state["stage"] == stage
        ]
        return max(entered)[1] if entered else None


@dataclass(frozen=True, slots=True)
class Difference:
    """A row where the tables and the journal disagree (None: the row does not exist)."""

    row: str
    field: str
    journal: Any
    tables: Any

    def __str__(self) -> str:
        return (
            f"{self.row} {self.field}: the journal says {_shown(self.journal)},"
            f" the tables say {_shown(self.tables)}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "field": self.field,
            "journal": self.journal,
            "tables": self.tables,
        }


def compare(
    projection: Projection, models: Iterable[Model], versions: Iterable[Version]
) -> list[Difference]:
    """Every difference between the replayed state and the tables' models and (visible)
    versions, ordered by row. Only what the journal recorded is compared: registrations
    journaled before a field was recorded leave that field unchecked."""
    found: list[Difference] = []
    tables = {m.name: m for m in models}
    for name in sorted(projection.models.keys() | tables.keys()):
        expected, actual = projection.models.get(name), tables.get(name)
        if expected is None or actual is None:
            found.append(Difference(name, "model", _exists(expected), _exists(actual)))
            continue
        state: dict[str, Any] = {"description": actual.description, "tags": actual.tags}
        found += _fields(name, dict(expected), state)
        journaled = {a: n for (m, a), n in projection.aliases.items() if m == name}
        for alias in sorted(journaled.keys() | actual.aliases.keys()):
            says, holds = journaled.get(alias), actual.aliases.get(alias)
            if says != holds:
                found.append(Difference(f"{name}@{alias}", "version", says, holds))
    listed = {(v.model, v.version): v for v in versions}
    visible = {k: v for k, v in projection.versions.items() if not v.deleted}
    for key in sorted(visible.keys() | listed.keys()):
        row = f"{key[0]}/{key[1]}"
        replayed, version = visible.get(key), listed.get(key)
        if replayed is None or version is None:
            found.append(Difference(row, "version", _exists(replayed), _exists(version)))
            continue
        found += _fields(row, replayed.state, dict(version_state(version)))
        files = manifest_digest(version.files)
        if files != replayed.state["manifest_digest"]:
            found.append(Difference(row, "files", replayed.state["manifest_digest"], files))
    return sorted(found, key=lambda d: (d.row, d.field))


# Compared key by key, so that a difference names the metric, param or tag.
_KEYED = frozenset({"metrics", "params", "tags"})


def _fields(row: str, expected: dict[str, Any], actual: dict[str, Any]) -> list[Difference]:
    """The fields (and, in metrics, params and tags, the keys) that differ."""
    found = []
    for name, value in expected.items():
        other = actual.get(name)
        if name in _KEYED and isinstance(value, dict) and isinstance(other, dict):
            for key in sorted(value.keys() | other.keys()):
                if value.get(key) != other.get(key):
                    found.append(Difference(row, f"{name}.{key}", value.get(key), other.get(key)))
        elif value != other:
            found.append(Difference(row, name, value, other))
    return found


def _exists(thing: object) -> str | None:
    return None if thing is None else "present"


def _shown(value: Any) -> str:
    return "nothing" if value is None else repr(value)
