"""Queries over the metadata tables, inside transactions the service layer opens.

``Database.read()`` yields a ``Reader``; ``Database.write()`` yields a ``Writer`` that has
already locked the journal head, so every write transaction is serialised with respect to
journal appends and version numbering (gapless, per model) on SQLite and PostgreSQL alike.
Pages of versions load in a fixed number of queries whatever their length (no N+1).
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Dialect,
    Engine,
    Table,
    Text,
    TypeDecorator,
    and_,
    bindparam,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeEngine

from modelyard.domain.access import Caller, Visibility
from modelyard.domain.events import JournalEvent
from modelyard.domain.journal import CHAIN_VERSION, Checkpoint, event_hash
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import (
    DatasetRef,
    Environment,
    Event,
    Model,
    Origin,
    SourceRef,
    Version,
    utc_from_us,
)
from modelyard.domain.references import Reference, RefKind
from modelyard.storage.db.advisories import AdvisoriesReader, AdvisoriesWriter
from modelyard.storage.db.bell import JournalBell
from modelyard.storage.db.blobs import BlobReader, BlobWriter
from modelyard.storage.db.bundles import BundlesReader
from modelyard.storage.db.checks import ChecksReader, ChecksWriter
from modelyard.storage.db.deliveries import Bookkeeper, DeliveriesReader
from modelyard.storage.db.evidence import EvidenceReader, EvidenceWriter
from modelyard.storage.db.identity import IdentityReader, IdentityWriter, protected_aliases
from modelyard.storage.db.lifecycle import LifecycleReader, LifecycleWriter, event_from_row
from modelyard.storage.db.online import OnlineReader, OnlineWriter
from modelyard.storage.db.overview import OverviewReader
from modelyard.storage.db.pending import PendingReader, PendingWriter
from modelyard.storage.db.prebuilt import CHANGES, Prebuilt, count_change
from modelyard.storage.db.signatures import SignaturesReader, SignaturesWriter
from modelyard.storage.db.tables import (
    aliases,
    blobs,
    events,
    journal_head,
    model_tags,
    models,
    pending_versions,
    server_key,
    version_files,
    version_metrics,
    version_params,
    version_tags,
    versions,
)
from modelyard.storage.db.webhooks import WebhooksReader, WebhooksWriter

# Keeps IN (...) lists well under SQLite's bound-parameter limit.
_IN_BATCH = 500


class _IdList(TypeDecorator[list[int]]):
    """A list of ids bound as one parameter: a JSON array on SQLite, an array on PostgreSQL.

    An expanding ``IN :ids`` renders one placeholder per id at every execution, which for a
    page of 100 versions costs SQLAlchemy more than running the query costs SQLite.
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(BigInteger()))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: list[int] | None, dialect: Dialect) -> Any:
        return value if dialect.name == "postgresql" else json.dumps(value)


class _InIds(FunctionElement[bool]):
    """``column IN ids``, with ids an ``_IdList`` parameter: ``_InIds(column, ids)``.

    Untyped on purpose: a Boolean type would make SQLite's compiler append ``= 1``, which
    hides the IN from the planner (a full scan instead of index lookups).
    """

    name = "in_ids"
    inherit_cache = True


@compiles(_InIds)
def _in_ids_sqlite(element: _InIds, compiler: SQLCompiler, **kw: Any) -> str:
    column, ids = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"{column} IN (SELECT value FROM json_each({ids}))"


@compiles(_InIds, "postgresql")
def _in_ids_postgresql(element: _InIds, compiler: SQLCompiler, **kw: Any) -> str:
    column, ids = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"{column} = ANY({ids})"


# Loading a page of versions: six statements, built once, each taking the ids as one list.
_IDS: BindParameter[Any] = bindparam("ids", type_=_IdList())
# Its columns in the order _version_from_row unpacks them.
_LOAD_VERSIONS = Prebuilt(
    select(
        versions.c.id,
        models.c.name,
        versions.c.number,
        versions.c.manifest_digest,
        versions.c.size,
        versions.c.framework,
        versions.c.format,
        versions.c.dataset_name,
        versions.c.dataset_version,
        versions.c.dataset_digest,
        versions.c.source_repo,
        versions.c.source_commit,
        versions.c.source_branch,
        versions.c.source_dirty,
        versions.c.environment,
        versions.c.run,
        versions.c.creator,
        versions.c.created_at,
        versions.c.description,
        versions.c.stage,
        versions.c.origin,
    )
    .join(models, versions.c.model_id == models.c.id)
    .where(_InIds(versions.c.id, _IDS))
)
_LOAD_FILES = Prebuilt(
    select(version_files.c.version_id, version_files.c.path, version_files.c.size)
    .add_columns(version_files.c.sha256)
    .where(_InIds(version_files.c.version_id, _IDS))
    .order_by(version_files.c.path)
)
_LOAD_KEY_VALUES = tuple(
    Prebuilt(
        select(table.c.version_id, table.c.key, table.c.value).where(
            _InIds(table.c.version_id, _IDS)
        )
    )
    for table in (version_tags, version_params, version_metrics)
)
_LOAD_ALIASES = Prebuilt(
    select(aliases.c.version_id, aliases.c.name)
    .where(_InIds(aliases.c.version_id, _IDS))
    .order_by(aliases.c.name)
)

# A model's columns, in the order _load_models unpacks them, and what it loads with them.
_MODEL_COLUMNS = (
    models.c.id,
    models.c.name,
    models.c.description,
    models.c.created_at,
    models.c.updated_at,
    models.c.latest_version,
    models.c.protected_aliases,
    models.c.origin,
)
_GET_MODEL = Prebuilt(select(*_MODEL_COLUMNS).where(models.c.name == bindparam("name")))
_LOAD_MODEL_TAGS = Prebuilt(
    select(model_tags.c.model_id, model_tags.c.key, model_tags.c.value).where(
        _InIds(model_tags.c.model_id, _IDS)
    )
)
_LOAD_MODEL_ALIASES = Prebuilt(
    select(aliases.c.model_id, aliases.c.name, versions.c.number)
    .join(versions, aliases.c.version_id == versions.c.id)
    .where(_InIds(aliases.c.model_id, _IDS))
)
_RESOLVE_NUMBER = Prebuilt(
    select(versions.c.id)
    .join(models, versions.c.model_id == models.c.id)
    .where(
        models.c.name == bindparam("model"),
        versions.c.number == bindparam("number"),
        versions.c.deleted_at.is_(None),
    )
)

# The statements of the hot paths (registration, resolve), built once: constructing a
# statement costs more in SQLAlchemy than running it on SQLite.
_IDENTITY_STAMP_SQL = "SELECT identity_seq FROM journal_head WHERE id = 1"
_HEAD_SEQ_SQL = "SELECT seq FROM journal_head WHERE id = 1"
# max() over the (model, seq) index: one seek, however many events the model has.
_MODEL_STAMP_SQL = "SELECT max(seq) FROM events WHERE model = {}"
_HAS_PRINCIPALS_SQL = "SELECT EXISTS (SELECT 1 FROM principals)"
_LOCK_HEAD = (
    select(journal_head.c.seq, journal_head.c.hash, journal_head.c.identity_seq)
    .where(journal_head.c.id == 1)
    .with_for_update()
)
_MODEL_ID = Prebuilt(select(models.c.id).where(models.c.name == bindparam("name")))
# The highest number given: to a version, or to one whose files are still being copied.
_LOCK_MODEL = Prebuilt(
    select(
        models.c.id,
        models.c.latest_version,
        select(func.max(pending_versions.c.number))
        .where(pending_versions.c.model_id == models.c.id)
        .scalar_subquery(),
    )
    .where(models.c.name == bindparam("name"))
    .with_for_update()
)
_BLOB_SIZES = select(blobs.c.digest, blobs.c.size).where(
    blobs.c.digest.in_(bindparam("digests", expanding=True))
)
_BLOB_CONTENT = select(blobs.c.content).where(blobs.c.digest == bindparam("digest"))
_INSERT_VERSION = Prebuilt(insert(versions).returning(versions.c.id))
_BUMP_MODEL = Prebuilt(
    update(models)
    .where(models.c.id == bindparam("model"))
    .values(latest_version=bindparam("number"), updated_at=bindparam("now"))
)
_INSERT_EVENT = Prebuilt(insert(events))
_MOVE_HEAD = Prebuilt(
    update(journal_head)
    .where(journal_head.c.id == 1)
    .values(
        seq=bindparam("new_seq"),
        hash=bindparam("new_hash"),
        identity_seq=bindparam("identity_seq"),
    )
)
# The write transactions that append no event, each by name with the reason. The caches
# trust that every other committed change moved a stamp; see Database.write.
NON_JOURNALED: dict[str, str] = {
    "blob.recorded": "the blob store holds these bytes, uploaded by this caller: a blob is"
    " content-addressed and belongs to no model until a journaled registration names it",
    "blob.collected": "garbage collection forgets blobs no version names, batch by batch;"
    " the run is journaled once, as registry.gc with its counts",
    "version.pending": "a number given to a version whose files are still being copied, and"
    " how the copy goes: the version is journaled when it registers, and no cache reads these"
    " rows",
    "advisories.progress": "how far the evaluation of the live versions against a newly"
    " loaded OSV dump has come (a column of its row, which no cache reads): the load is"
    " journaled as advisories.loaded, and each verdict it changes as version.check_reported",
}


class UnjournaledWrite(RuntimeError):
    """A write transaction changed rows but appended no event and declared none."""


def now_us() -> int:
    return time.time_ns() // 1000


class _ThreadConnection:
    """A thread's quick-read connection, closed when the thread ends: ``threading.local``
    drops it then, and its finalizer closes it. Worker threads come and go (anyio retires
    idle ones, a test client makes its own), and each new one would otherwise leave a
    connection open until the server stopped (on PostgreSQL, until "too many clients")."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: Any) -> None:
        self.conn = conn


def _close_quick(conn: Any, open_conns: set[Any], lock: threading.Lock) -> None:
    with lock:
        open_conns.discard(conn)
    with contextlib.suppress(Exception):
        conn.close()


class Database:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._local = threading.local()
        self._head_lock = threading.Lock()
        self._head_conns: set[Any] = set()
        self._model_stamp_sql = _MODEL_STAMP_SQL.format("?" if self.is_sqlite else "%s")
        if not self.is_sqlite:
            event.listen(engine, "after_cursor_execute", _count_changes)
        self.bell = JournalBell(self.head_seq)

    @contextmanager
    def read(self) -> Iterator[Reader]:
        with self.engine.connect() as conn, conn.begin():
            yield Reader(conn)

    @contextmanager
    def write(self, unjournaled: str | None = None) -> Iterator[Writer]:
        """A write transaction holding the journal head lock: the one way the service writes.

        It commits only if it appended an event, or changed no row, or is ``unjournaled``
        by a name in ``NON_JOURNALED``. Anything else raises ``UnjournaledWrite`` and rolls
        back: every cache is stamped by the journal, so a change without an event would be
        served stale from every replica's caches.
        """
        if unjournaled is not None and unjournaled not in NON_JOURNALED:
            raise ValueError(f"{unjournaled!r} is not declared in NON_JOURNALED")
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                head = conn.execute(_LOCK_HEAD).one()
                changes = self._changes(conn)
                writer = Writer(conn, head.seq, head.hash, head.identity_seq)
                yield writer
                if not writer.journaled and unjournaled is None and self._changes(conn) != changes:
                    raise UnjournaledWrite(
                        "a write transaction changed rows without appending an event;"
                        " append one, or declare the write in NON_JOURNALED; rolled back"
                    )
        if writer.journaled:
            self.bell.ring(writer.head_seq)

    @contextmanager
    def bookkeeping(self) -> Iterator[Bookkeeper]:
        """A write transaction for webhook delivery's state only (cursors, leases,
        deliveries, attempts: storage/db/deliveries.py), outside the journal.

        It does not lock the journal head (on PostgreSQL delivering does not queue behind
        registrations) and appends no event: that state says what the server did with the
        journal, not what anyone changed, and no cache is stamped by it. SQLite takes its
        one write lock (BEGIN IMMEDIATE) as for any write.

        Its commit does not wait for the disk (SQLite synchronous=NORMAL, PostgreSQL
        synchronous_commit off): a crash of the process loses nothing, and a power cut
        may lose the last deliveries' records, which only means sending those events
        again (delivery is at least once). An fsync per commit would take the write lock
        from registrations for milliseconds each time.
        """
        with self._outside_journal(durable=False) as conn:
            yield Bookkeeper(conn)

    @contextmanager
    def telemetry(self) -> Iterator[Telemetry]:
        """A write transaction for online metrics only (storage/db/online.py), outside the
        journal: observations of versions in production, at a rate of their own, not
        decisions. Like ``bookkeeping`` it takes no journal head lock and appends no event
        (nothing cached is stamped by these rows); unlike it, its commit is durable: a
        report acknowledged to a pipeline is not sent again."""
        with self._outside_journal(durable=True) as conn:
            yield Telemetry(conn)

    def recorded_key(self, fingerprint: str) -> str:
        """The fingerprint of the registry's secret key: ``fingerprint`` when none was
        recorded yet (now it is), else the one the first server recorded. Outside the
        journal: it is the servers' configuration, which no answer depends on."""
        dialect = sqlite if self.is_sqlite else postgresql
        row = {"id": 1, "fingerprint": fingerprint, "created_at": now_us()}
        with self._outside_journal(durable=True) as conn:
            conn.execute(dialect.insert(server_key).values(row).on_conflict_do_nothing())
            return str(conn.execute(select(server_key.c.fingerprint)).scalar_one())

    @contextmanager
    def _outside_journal(self, *, durable: bool) -> Iterator[Connection]:
        """A write transaction that leaves the journal head alone (see ``bookkeeping``)."""
        with self.engine.connect() as conn:
            raw: Any = conn.connection.dbapi_connection
            relaxed = self.is_sqlite and not durable
            if relaxed:
                raw.execute("PRAGMA synchronous=NORMAL")
            if self.is_sqlite:
                conn = conn.execution_options(sqlite_immediate=True)
            try:
                with conn.begin():
                    if not self.is_sqlite and not durable:
                        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                    yield conn
            finally:
                if relaxed:
                    raw.execute("PRAGMA synchronous=FULL")

    def _changes(self, conn: Connection) -> int:
        """A counter of the rows this connection has changed (inserted, updated, deleted)."""
        if self.is_sqlite:
            return int(conn.connection.dbapi_connection.total_changes)  # type: ignore[union-attr]
        return int(conn.info.get(CHANGES, 0))

    def model_stamp(self, model: str) -> int:
        """The stamp of a model's cached answers: the seq of its newest event (0: none).

        Read outside any transaction on every cached resolve, so it bypasses the pool and
        the ORM machinery (200 µs) with a connection of its own per thread, in autocommit
        (10 µs).
        """
        return int(self._quick_scalar(self._model_stamp_sql, (model,)) or 0)

    def head_seq(self) -> int:
        """The seq of the newest committed event (0: none), read like ``model_stamp``."""
        return int(self._quick_scalar(_HEAD_SEQ_SQL))

    def identity_stamp(self) -> int:
        """The stamp of cached authentication and authorization answers (tokens, grants,
        local mode), read like ``model_stamp``: the seq of the newest event that may change
        who may do what."""
        return int(self._quick_scalar(_IDENTITY_STAMP_SQL))

    def has_principals(self) -> bool:
        """Whether any user, team or service account exists, read like ``model_stamp``: in
        local mode every request asks, after any change to identities."""
        return bool(self._quick_scalar(_HAS_PRINCIPALS_SQL))

    def _quick_scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        held: _ThreadConnection | None = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = self._open_quick()
        try:
            cursor = held.conn.cursor()
            cursor.execute(sql, params)
            row: Any = cursor.fetchone()
        except Exception:
            self._local.held = None  # a broken connection (closed now): the next opens another
            raise
        return row[0]

    def _open_quick(self) -> _ThreadConnection:
        """A connection of this thread's own for the quick reads, outside the pool."""
        proxied = self.engine.raw_connection()
        proxied.detach()  # ours for good, not the pool's
        conn: Any = proxied.dbapi_connection
        if not self.is_sqlite:
            conn.autocommit = True
        held = _ThreadConnection(conn)
        with self._head_lock:
            self._head_conns.add(conn)
        weakref.finalize(held, _close_quick, conn, self._head_conns, self._head_lock)
        return held

    def close(self) -> None:
        """Close every connection, pooled or not."""
        with self._head_lock:
            conns = list(self._head_conns)
            self._head_conns.clear()
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(journal_head.c.seq)).one()


class Reader(
    IdentityReader,
    LifecycleReader,
    BlobReader,
    ChecksReader,
    EvidenceReader,
    OverviewReader,
    OnlineReader,
    WebhooksReader,
    DeliveriesReader,
    PendingReader,
    SignaturesReader,
    AdvisoriesReader,
    BundlesReader,
):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # -- models ---------------------------------------------------------------------------

    def model_id(self, name: str) -> int | None:
        found: int | None = _MODEL_ID.scalar(self.conn, {"name": name})
        return found

    def get_model(self, name: str) -> Model | None:
        rows = _GET_MODEL.rows(self.conn, {"name": name})
        return self._load_models(rows)[0] if rows else None

    def list_models(
        self,
        condition: ColumnElement[bool] | None,
        order: Sequence[ColumnElement[Any]],
        limit: int,
        offset: int,
        visible: Visibility | None = None,
    ) -> list[Model]:
        stmt = select(*_MODEL_COLUMNS)
        if condition is not None:
            stmt = stmt.where(condition)
        if visible is not None:
            stmt = stmt.where(visible_condition(models.c.name, visible))
        stmt = stmt.order_by(*order, models.c.id).limit(limit).offset(offset)
        return self._load_models(list(self.conn.execute(stmt)))

    def _load_models(self, rows: Sequence[Sequence[Any]]) -> list[Model]:
        """Rows of ``_MODEL_COLUMNS`` as models, with their tags and aliases."""
        ids = [r[0] for r in rows]
        tags: dict[int, dict[str, str]] = defaultdict(dict)
        for model_id, key, value in self._by_ids(_LOAD_MODEL_TAGS, ids):
            tags[model_id][key] = value
        alias_map: dict[int, dict[str, int]] = defaultdict(dict)
        for model_id, alias, number in self._by_ids(_LOAD_MODEL_ALIASES, ids):
            alias_map[model_id][alias] = number
        return [
            Model(
                name=name,
                description=description,
                tags=tags[model_id],
                created_at=utc_from_us(created_at),
                updated_at=utc_from_us(updated_at),
                latest_version=latest_version or None,
                aliases=dict(sorted(alias_map[model_id].items())),
                protected_aliases=protected_aliases(protected),
                origin=Origin.from_json(origin),
            )
            for (
                model_id,
                name,
                description,
                created_at,
                updated_at,
                latest_version,
                protected,
                origin,
            ) in rows
        ]

    # -- versions -------------------------------------------------------------------------

    def resolve_id(self, ref: Reference) -> int | None:
        """The id of the version a reference points at, or None.

        ``NAME@X`` is the alias X, else the version most recently promoted to stage X:
        aliases and stages share one namespace per model. Deleted versions are not found.
        """
        if ref.kind is RefKind.NUMBER:
            found: int | None = _RESOLVE_NUMBER.scalar(
                self.conn, {"model": ref.model, "number": ref.value}
            )
            return found
        base = select(versions.c.id).join(models, versions.c.model_id == models.c.id)
        base = base.where(models.c.name == ref.model, versions.c.deleted_at.is_(None))
        if ref.kind is RefKind.DIGEST:
            stmt = (
                base.where(versions.c.manifest_digest == ref.value)
                .order_by(versions.c.number.desc())
                .limit(1)
            )
        elif ref.kind is RefKind.ALIAS:
            alias = (
                select(aliases.c.version_id)
                .join(models, aliases.c.model_id == models.c.id)
                .join(versions, aliases.c.version_id == versions.c.id)
                .where(
                    models.c.name == ref.model,
                    aliases.c.name == ref.value,
                    versions.c.deleted_at.is_(None),
                )
            )
            found = self.conn.execute(alias).scalar()
            if found is not None:
                return int(found)
            recency = func.coalesce(versions.c.stage_updated_at, versions.c.created_at)
            stmt = (
                base.where(versions.c.stage == ref.value)
                .order_by(recency.desc(), versions.c.number.desc())
                .limit(1)
            )
        else:
            stmt = base.order_by(versions.c.number.desc()).limit(1)
        return self.conn.execute(stmt).scalar()

    def load_versions(self, ids: Sequence[int]) -> list[Version]:
        """Versions by id, in the order given, in six queries."""
        if not ids:
            return []
        rows = {row[0]: row for row in self._by_ids(_LOAD_VERSIONS, ids)}
        files: dict[int, list[FileEntry]] = defaultdict(list)
        for version_id, path, size, sha256 in self._by_ids(_LOAD_FILES, ids):
            files[version_id].append(FileEntry(path, size, sha256))
        tags, params, metrics = (self._key_values(stmt, ids) for stmt in _LOAD_KEY_VALUES)
        alias_names: dict[int, list[str]] = defaultdict(list)
        for version_id, name in self._by_ids(_LOAD_ALIASES, ids):
            alias_names[version_id].append(name)
        return [
            _version_from_row(
                rows[i], files[i], tags[i], params[i], metrics[i], tuple(alias_names[i])
            )
            for i in ids
            if i in rows
        ]

    def _key_values(self, stmt: Prebuilt, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        result: dict[int, dict[str, Any]] = defaultdict(dict)
        for version_id, key, value in self._by_ids(stmt, ids):
            result[version_id][key] = value
        return result

    def _by_ids(self, stmt: Prebuilt, ids: Sequence[int]) -> list[tuple[Any, ...]]:
        """Run a prebuilt statement taking ``_IDS``."""
        return stmt.rows(self.conn, {"ids": list(ids)})

    def search_version_ids(
        self,
        condition: ColumnElement[bool] | None,
        order: Sequence[ColumnElement[Any]],
        limit: int,
        offset: int,
        model_id: int | None = None,
        visible: Visibility | None = None,
    ) -> list[int]:
        stmt = self._version_search(condition, model_id, visible)
        stmt = stmt.order_by(*order, versions.c.id.desc()).limit(limit).offset(offset)
        return list(self.conn.execute(stmt).scalars().all())

    def search_version_ids_by_metric(
        self,
        metric: str,
        descending: bool,
        condition: ColumnElement[bool] | None,
        then: Sequence[ColumnElement[Any]],
        limit: int,
        offset: int,
        model_id: int | None = None,
        visible: Visibility | None = None,
    ) -> list[int]:
        """Like search_version_ids ordered by ``metrics.<metric>`` first, missing values last.

        A correlated subquery as sort key makes the database compute it for every row and
        sort them all (seconds at 200k versions). Instead: walk the (key, value) index in
        order through the versions that have the metric, and only past their end continue
        with the versions that lack it.
        """
        # An alias of its own, so that a metric filter's EXISTS on version_metrics stays
        # correlated to its own table and not to this join.
        m = version_metrics.alias("order_metric")
        has_metric = and_(m.c.version_id == versions.c.id, m.c.key == metric)
        value = m.c.value.desc() if descending else m.c.value.asc()
        with_metric = self._version_search(condition, model_id, visible).join(m, has_metric)
        ids = list(
            self.conn.execute(
                with_metric.order_by(value, *then, versions.c.id.desc()).limit(limit).offset(offset)
            )
            .scalars()
            .all()
        )
        if len(ids) == limit:
            return ids
        counted = with_metric.with_only_columns(func.count()).order_by(None)
        before = int(self.conn.execute(counted).scalar_one())
        without = self._version_search(condition, model_id, visible).where(
            ~select(m.c.version_id).where(has_metric).exists()
        )
        rest = without.order_by(*then, versions.c.id.desc())
        rest = rest.limit(limit - len(ids)).offset(max(0, offset - before))
        return ids + list(self.conn.execute(rest).scalars().all())

    def _version_search(
        self,
        condition: ColumnElement[bool] | None,
        model_id: int | None,
        visible: Visibility | None,
    ) -> Any:
        stmt = select(versions.c.id).join(models, versions.c.model_id == models.c.id)
        stmt = stmt.where(versions.c.deleted_at.is_(None))
        if model_id is not None:
            stmt = stmt.where(versions.c.model_id == model_id)
        if visible is not None:
            stmt = stmt.where(visible_condition(models.c.name, visible))
        if condition is not None:
            stmt = stmt.where(condition)
        return stmt

    def file_entry(self, version_id: int, path: str) -> FileEntry | None:
        r = self.conn.execute(
            select(version_files).where(
                version_files.c.version_id == version_id, version_files.c.path == path
            )
        ).first()
        return FileEntry(r.path, r.size, r.sha256) if r else None

    # -- blobs ----------------------------------------------------------------------------

    def blob_sizes(self, digests: Sequence[str]) -> dict[str, int]:
        """The size of each of ``digests`` the store holds; absent ones are left out."""
        unique = list(set(digests))
        sizes: dict[str, int] = {}
        for start in range(0, len(unique), _IN_BATCH):
            batch = unique[start : start + _IN_BATCH]
            for digest, size in self.conn.execute(_BLOB_SIZES, {"digests": batch}):
                sizes[digest] = size
        return sizes

    def blob_content(self, digest: str) -> bytes | None:
        """The bytes of a blob kept in the database; None for one in the blob store."""
        content = self.conn.execute(_BLOB_CONTENT, {"digest": digest}).scalar()
        return None if content is None else bytes(content)

    # -- journal --------------------------------------------------------------------------

    def journal_head(self) -> Checkpoint:
        """The newest event as ``journal_head`` records it (0 and the genesis: none)."""
        row = self.conn.execute(select(journal_head.c.seq, journal_head.c.hash)).one()
        return Checkpoint(int(row.seq), str(row.hash))

    def identity_seq(self) -> int:
        """The identity stamp as this transaction sees it (``Database.identity_stamp`` reads
        the committed one outside any transaction)."""
        return int(self.conn.exec_driver_sql(_IDENTITY_STAMP_SQL).scalar_one())

    def events_after(
        self,
        after: int,
        limit: int,
        subject: str | None = None,
        kind: str | None = None,
        visible: Visibility | None = None,
        *,
        actor: str | None = None,
        model: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        before: int | None = None,
        kinds: Collection[str] | None = None,
    ) -> list[Event]:
        """Events after ``after`` in order; ``visible`` limits them to those models (None:
        all), ``kinds`` to those kinds. With ``before``, the newest ``limit`` events before
        that seq, newest first."""
        stmt = select(events).where(events.c.seq > after)
        if visible is not None:
            stmt = stmt.where(visible_condition(events.c.model, visible))
        if kinds is not None:
            stmt = stmt.where(events.c.kind.in_(sorted(kinds)))
        for column, value in (
            (events.c.subject, subject),
            (events.c.kind, kind),
            (events.c.actor, actor),
            (events.c.model, model),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if since_us is not None:
            stmt = stmt.where(events.c.time_us >= since_us)
        if until_us is not None:
            stmt = stmt.where(events.c.time_us <= until_us)
        if before is not None:
            stmt = stmt.where(events.c.seq < before).order_by(events.c.seq.desc())
        else:
            stmt = stmt.order_by(events.c.seq)
        rows = self.conn.execute(stmt.limit(limit))
        return [event_from_row(r) for r in rows]


class Telemetry(Reader, OnlineWriter):
    """The write transaction of online metrics (``Database.telemetry()``): it reads as any
    reader does (resolving the version) and writes nothing but them."""


class Writer(
    Reader,
    IdentityWriter,
    LifecycleWriter,
    BlobWriter,
    ChecksWriter,
    EvidenceWriter,
    WebhooksWriter,
    PendingWriter,
    SignaturesWriter,
    AdvisoriesWriter,
):
    """A write transaction holding the journal head lock."""

    def __init__(self, conn: Connection, head_seq: int, head_hash: str, identity_seq: int) -> None:
        super().__init__(conn)
        self._seq = head_seq
        self._hash = head_hash
        self._identity_seq = identity_seq
        self._first_seq = head_seq

    @property
    def head_seq(self) -> int:
        """The seq of the newest event this transaction sees, its own included."""
        return self._seq

    @property
    def journaled(self) -> bool:
        """Whether this transaction appended an event."""
        return self._seq != self._first_seq

    def record_inline_blobs(self, contents: Mapping[str, bytes]) -> None:
        """Keep the bytes of a registration's inline files, in its own transaction; a blob
        the registry already holds is left as it is."""
        _record_blobs(self.conn, [(d, len(content), content) for d, content in contents.items()])

    def lock_model(self, name: str) -> tuple[int, int] | None:
        """(id, the highest number given) of a model, locked for the transaction; None if
        none."""
        rows = _LOCK_MODEL.rows(self.conn, {"name": name})
        return (int(rows[0][0]), max(int(rows[0][1]), int(rows[0][2] or 0))) if rows else None

    def insert_model(
        self,
        name: str,
        description: str,
        tags: Mapping[str, str],
        now: int,
        origin: Origin | None = None,
    ) -> int:
        model_id = self.conn.execute(
            insert(models)
            .values(
                name=name,
                description=description,
                latest_version=0,
                created_at=now,
                updated_at=now,
                origin=origin.to_json() if origin else None,
            )
            .returning(models.c.id)
        ).scalar_one()
        self._insert_kv(model_tags, "model_id", model_id, tags)
        return int(model_id)

    def update_model(
        self, model_id: int, description: str | None, tags: Mapping[str, str] | None, now: int
    ) -> None:
        values: dict[str, Any] = {"updated_at": now}
        if description is not None:
            values["description"] = description
        self.conn.execute(update(models).where(models.c.id == model_id).values(**values))
        if tags is not None:
            self.conn.execute(delete(model_tags).where(model_tags.c.model_id == model_id))
            self._insert_kv(model_tags, "model_id", model_id, tags)

    def delete_model(self, model_id: int) -> None:
        self.conn.execute(delete(models).where(models.c.id == model_id))

    def count_versions(self, model_id: int) -> int:
        stmt = select(func.count()).select_from(versions).where(versions.c.model_id == model_id)
        return int(self.conn.execute(stmt).scalar_one())

    def insert_version(
        self,
        *,
        model_id: int,
        number: int,
        values: Mapping[str, Any],
        files: Sequence[FileEntry],
        tags: Mapping[str, str],
        params: Mapping[str, str],
        metrics: Mapping[str, float],
        now: int,
    ) -> int:
        row = {"model_id": model_id, "number": number, "created_at": now, **values}
        version_id = int(_INSERT_VERSION.scalar(self.conn, row))
        _insert_into(version_files).many(
            self.conn,
            [
                {"version_id": version_id, "path": f.path, "size": f.size, "sha256": f.sha256}
                for f in files
            ],
        )
        self._insert_kv(version_tags, "version_id", version_id, tags)
        self._insert_kv(version_params, "version_id", version_id, params)
        self._insert_kv(version_metrics, "version_id", version_id, metrics)
        _BUMP_MODEL.rows(self.conn, {"model": model_id, "number": number, "now": now})
        return version_id

    def update_version(
        self, version_id: int, description: str | None, tags: Mapping[str, str] | None
    ) -> None:
        if description is not None:
            self.conn.execute(
                update(versions).where(versions.c.id == version_id).values(description=description)
            )
        if tags is not None:
            self.conn.execute(delete(version_tags).where(version_tags.c.version_id == version_id))
            self._insert_kv(version_tags, "version_id", version_id, tags)

    def alias_target(self, model_id: int, alias: str) -> int | None:
        """The version number an alias points at, or None."""
        stmt = (
            select(versions.c.number)
            .join(aliases, aliases.c.version_id == versions.c.id)
            .where(aliases.c.model_id == model_id, aliases.c.name == alias)
        )
        return self.conn.execute(stmt).scalar()

    def set_alias(self, model_id: int, alias: str, version_id: int, now: int) -> None:
        where = and_(aliases.c.model_id == model_id, aliases.c.name == alias)
        updated = self.conn.execute(
            update(aliases).where(where).values(version_id=version_id, updated_at=now)
        )
        if updated.rowcount == 0:
            self.conn.execute(
                insert(aliases).values(
                    model_id=model_id, name=alias, version_id=version_id, updated_at=now
                )
            )

    def delete_alias(self, model_id: int, alias: str) -> None:
        self.conn.execute(
            delete(aliases).where(aliases.c.model_id == model_id, aliases.c.name == alias)
        )

    def append_event(self, caller: Caller, event: JournalEvent, *, now: int) -> Event:
        """Append a catalogue event to the hash chain: the one way into the journal. It
        commits or rolls back with the change it describes.

        Its model (None for identity events) is kept beside it: readers are shown the
        events of the models they may see.
        """
        seq = self._seq + 1
        actor, token_id = caller.name, caller.token_id
        kind, subject, payload, model = (
            event.kind,
            event.subject(),
            event.payload(),
            event.model_name(),
        )
        digest = event_hash(
            self._hash,
            seq=seq,
            time_us=now,
            actor=actor,
            kind=kind,
            subject=subject,
            payload=payload,
            token_id=token_id,
            model=model,
        )
        _INSERT_EVENT.rows(
            self.conn,
            {
                "seq": seq,
                "time_us": now,
                "actor": actor,
                "kind": kind,
                "subject": subject,
                "payload": json.dumps(payload, sort_keys=True, separators=(",", ":")),
                "prev_hash": self._hash,
                "hash": digest,
                "token_id": token_id,
                "model": model,
                "chain": CHAIN_VERSION,
            },
        )
        # The event is its model's new cache stamp by itself (model_stamp); the identity
        # stamp moves with the head when the catalogue says the kind may change access.
        if event.changes_access:
            self._identity_seq = seq
        _MOVE_HEAD.rows(
            self.conn, {"new_seq": seq, "new_hash": digest, "identity_seq": self._identity_seq}
        )
        appended = Event(
            seq,
            utc_from_us(now),
            actor,
            kind,
            subject,
            payload,
            self._hash,
            digest,
            token_id,
            model,
            CHAIN_VERSION,
        )
        self._seq, self._hash = seq, digest
        return appended

    def _insert_kv(
        self, table: Any, owner_column: str, owner_id: int, values: Mapping[str, Any]
    ) -> None:
        if values:
            _insert_into(table).many(
                self.conn,
                [{owner_column: owner_id, "key": k, "value": v} for k, v in values.items()],
            )


def _count_changes(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    """Count the PostgreSQL statements run through SQLAlchemy that changed rows, for
    Database.write (``Prebuilt`` counts its own; on SQLite the connection does)."""
    dml = context is not None and (context.isinsert or context.isupdate or context.isdelete)
    if dml:
        count_change(conn, cursor)


def visible_condition(column: Any, visible: Visibility) -> ColumnElement[bool]:
    """Rows whose model ``column`` names a model the caller may see (``Visibility.admits``
    in SQL)."""
    if visible.all_models:
        return column.is_not(None)  # type: ignore[no-any-return]
    return column.in_(sorted(visible.models))  # type: ignore[no-any-return]


def _record_blobs(conn: Connection, rows: Sequence[tuple[str, int, bytes | None]]) -> int:
    """Insert the (digest, size, content) blobs not yet recorded; returns how many were new.

    ``content`` is None for a blob in the blob store, the bytes for one kept in the database.
    """
    stmt = _insert_new_blobs(conn.dialect.name)
    now = now_us()
    new = 0
    for digest, size, content in rows:
        row = {"digest": digest, "size": size, "created_at": now, "content": content}
        new += len(stmt.rows(conn, row))
    return new


# Statements on the registration path are built once: building one costs about as much
# as running it.
@functools.cache
def _insert_into(table: Table) -> Prebuilt:
    return Prebuilt(insert(table))


@functools.cache
def _insert_new_blobs(dialect_name: str) -> Prebuilt:
    dialect = sqlite if dialect_name == "sqlite" else postgresql
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT here.
    return Prebuilt(dialect.insert(blobs).on_conflict_do_nothing().returning(blobs.c.digest))


@functools.lru_cache(maxsize=256)
def _environment(text: str) -> Environment:
    """Parsed once per distinct environment: the versions of one pipeline share theirs."""
    return Environment.from_dict(json.loads(text))


def _version_from_row(
    row: Sequence[Any],
    files: Iterable[FileEntry],
    tags: dict[str, str],
    params: dict[str, str],
    metrics: dict[str, float],
    alias_names: tuple[str, ...],
) -> Version:
    """A row of ``_LOAD_VERSIONS``, unpacked by position: a page of versions reads ~20
    columns each, and a Row's attribute lookup costs ~25 times a tuple unpacking."""
    (
        _,
        model,
        number,
        manifest_digest,
        size,
        framework,
        fmt,
        dataset_name,
        dataset_version,
        dataset_digest,
        source_repo,
        source_commit,
        source_branch,
        source_dirty,
        environment,
        run,
        creator,
        created_at,
        description,
        stage,
        origin,
    ) = row
    has_source = source_repo or source_commit or source_branch
    return Version(
        model=model,
        version=number,
        manifest_digest=manifest_digest,
        files=tuple(files),
        size=size,
        framework=framework,
        format=fmt,
        params=params,
        metrics=metrics,
        dataset=(
            DatasetRef(dataset_name, dataset_version, dataset_digest) if dataset_name else None
        ),
        source=(
            SourceRef(
                source_repo,
                source_commit,
                source_branch,
                None if source_dirty is None else bool(source_dirty),  # SQLite: 0 or 1
            )
            if has_source
            else None
        ),
        environment=_environment(environment) if environment else None,
        run=run,
        creator=creator,
        created_at=utc_from_us(created_at),
        tags=tags,
        description=description,
        stage=stage,
        aliases=alias_names,
        origin=Origin.from_json(origin),
    )
