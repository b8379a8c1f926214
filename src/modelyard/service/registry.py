"""The registry's use cases: register, resolve, search, aliases, the journal.

Every mutation runs in one write transaction together with the journal event that
describes it; adapters (REST, CLI, in-process SDK) only translate to and from these calls.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

from modelyard.config import Settings
from modelyard.domain.access import Caller, Permission, Role, Visibility
from modelyard.domain.advisories import check_status
from modelyard.domain.errors import (
    Conflict,
    InvalidInput,
    NotFound,
)
from modelyard.domain.events import (
    CATALOGUE,
    AliasDeleted,
    AliasSet,
    ModelChange,
    ModelCreated,
    ModelDeleted,
    ModelState,
    ModelUpdated,
    VersionRegistered,
    VersionUpdated,
    version_state,
)
from modelyard.domain.evidence import AttachmentIn
from modelyard.domain.filters import parse_filter, parse_order_by
from modelyard.domain.frameworks import detect_framework
from modelyard.domain.journal import Checkpoint, JournalReport, verify_chain
from modelyard.domain.keys import ServerKey
from modelyard.domain.manifest import FileEntry, manifest_digest
from modelyard.domain.models import (
    Event,
    EventFilter,
    Model,
    Origin,
    Page,
    PendingVersion,
    T,
    Version,
    to_us,
    utc_from_us,
)
from modelyard.domain.names import (
    validate_alias_name,
    validate_file_path,
    validate_key,
    validate_model_name,
)
from modelyard.domain.overview import MetricPoint, ModelSummary, key_metric, owner, tracked_stages
from modelyard.domain.pagination import PageTokens, validate_page_size
from modelyard.domain.references import Reference, RefKind, parse_reference
from modelyard.domain.scanning import ScanReport
from modelyard.domain.versions import (
    NewVersion,
    next_number,
    validate_description,
    validate_new_version,
    validate_origin,
    validate_tags,
)
from modelyard.service.access import AccessControl, Action
from modelyard.service.advisories import AdvisoryService
from modelyard.service.blobs import BlobService, check_inline
from modelyard.service.bundles import BundleService
from modelyard.service.caches import StampedCache
from modelyard.service.checks import ChecksService
from modelyard.service.comparison import Comparisons
from modelyard.service.delivery import DeliveryService
from modelyard.service.evidence import EvidenceService, NewEvidence
from modelyard.service.feed import EventFeed
from modelyard.service.identity import IdentityService
from modelyard.service.lifecycle import LifecycleService
from modelyard.service.mlflow_source import MlflowSources
from modelyard.service.online import OnlineMetricsService
from modelyard.service.outbound import OutboundPolicy
from modelyard.service.scans import ScanService
from modelyard.service.sessions import SessionService
from modelyard.service.webhooks import WebhookService
from modelyard.storage.blobs import BlobStore
from modelyard.storage.db.filters import (
    model_condition,
    model_order_by,
    version_condition,
    version_order_by,
)
from modelyard.storage.db.store import Database, Reader, Writer, now_us


@dataclass(frozen=True, slots=True)
class Registration:
    """A registration checked and scanned, before its transaction (``write_registration``):
    the spec validated, its inline bytes and evidence, the framework, the scan's report."""

    name: str
    spec: NewVersion
    inline: Mapping[str, bytes]
    evidence: NewEvidence
    framework: str | None
    format: str | None
    digest: str
    size: int
    scanned: ScanReport


class RegistryService(Comparisons, BlobService):
    def __init__(self, db: Database, blobs: BlobStore, key: ServerKey | None = None) -> None:
        """``key`` signs page tokens and the UI's cookies; without one, a random key for
        this process."""
        self.db = db
        self.blobs = blobs
        self.key = key or ServerKey.random()
        self.page_tokens = PageTokens(self.key.derive("page-tokens"))
        self.access = AccessControl(db)
        self.identity = IdentityService(db, self.access)
        self.lifecycle = LifecycleService(db, self.access)
        self.signing = self.lifecycle.signing
        self.checks = ChecksService(db, self.access)
        self.scans = ScanService(db, self.access, self)
        self.advisories = AdvisoryService(db, self.access, self.lifecycle)
        self.online = OnlineMetricsService(db, self.access, self.page_tokens)
        self.evidence = EvidenceService(db, self.access, self, self.scans)
        self.sessions = SessionService(db, self.access, self.identity, self.key)
        self.feed = EventFeed(self)
        # Where webhooks may send: https to global addresses unless configured otherwise.
        self.outbound = OutboundPolicy()
        self.deliveries: DeliveryService = DeliveryService(self)
        # Versions from MLflow sources: open_service names the tracking server.
        self.mlflow_sources = MlflowSources(self, None)
        # Versions to and from another registry, in one signed file.
        self.bundles = BundleService(self)
        # The policy is read at each check: open_service and tests replace it.
        self.webhooks = WebhookService(
            db, self.access, self.key, lambda url: self.outbound.check_url(url), self.deliveries
        )
        # What open_service made it from (None when built directly): the server's delivery
        # process opens its own service from the same settings.
        self.settings: Settings | None = None
        self._resolved: StampedCache[Reference, Version] = StampedCache(
            lambda ref: db.model_stamp(ref.model)
        )
        self._series: StampedCache[tuple[str, str], tuple[MetricPoint, ...]] = StampedCache(
            lambda key: db.model_stamp(key[0])
        )

    # -- models ---------------------------------------------------------------------------

    def create_model(
        self,
        name: str,
        *,
        caller: Caller,
        description: str = "",
        tags: dict[str, str] | None = None,
        origin: Origin | None = None,
    ) -> Model:
        """``origin``: where an import found the model, recorded as that registry says."""
        validate_model_name(name)
        self.access.require(caller, Permission.REGISTER, name)
        validate_description(description)
        tags = dict(tags or {})
        validate_tags(tags)
        if origin is not None:
            validate_origin(origin)
        with self.db.write() as tx:
            if tx.model_id(name) is not None:
                raise Conflict(f"model {name!r} already exists", code="model_exists")
            self._create_model(tx, name, caller, description, tags, origin)
            return self._model(tx, name)

    def _create_model(
        self,
        tx: Writer,
        name: str,
        caller: Caller,
        description: str,
        tags: dict[str, str],
        origin: Origin | None = None,
    ) -> int:
        now = now_us()
        model_id = tx.insert_model(name, description, tags, now, origin)
        created = ModelCreated(
            name,
            {"description": description, "tags": tags},
            origin.as_dict() if origin is not None else None,
        )
        tx.append_event(caller, created, now=now)
        return model_id

    def get_model(self, name: str, *, caller: Caller) -> Model:
        validate_model_name(name)
        self.access.require(caller, Permission.VIEW, name)
        with self.db.read() as tx:
            return self._model(tx, name)

    def update_model(
        self,
        name: str,
        *,
        caller: Caller,
        description: str | None = None,
        tags: dict[str, str | None] | None = None,
    ) -> Model:
        """Edit a model's description and tags (``tags`` is a patch, as for versions)."""
        validate_model_name(name)
        self.access.require(caller, Permission.EDIT, name)
        if description is not None:
            validate_description(description)
        with self.db.write() as tx:
            before = self._model(tx, name)
            model_id = _require(tx.model_id(name), name)
            new_tags = _patched(before.tags, tags)
            changes = _changes(before.description, before.tags, description, new_tags)
            if changes:
                now = now_us()
                tx.update_model(model_id, description, new_tags, now)
                tx.append_event(caller, ModelUpdated(name, *changes), now=now)
            return self._model(tx, name)

    def delete_model(self, name: str, *, caller: Caller) -> None:
        validate_model_name(name)
        self.access.require(caller, Permission.DELETE_MODEL, name)
        with self.db.write() as tx:
            before = self._model(tx, name)
            model_id = _require(tx.model_id(name), name)
            count = tx.count_versions(model_id)
            if count:
                raise Conflict(
                    f"model {name!r} has {count} version(s); versions are immutable and a model"
                    " with versions cannot be deleted",
                    code="model_not_empty",
                )
            tx.delete_model(model_id)
            state: ModelState = {"description": before.description, "tags": before.tags}
            tx.append_event(caller, ModelDeleted(name, state), now=now_us())

    def list_models(
        self,
        *,
        caller: Caller,
        filter: str | None = None,
        order_by: str | None = None,
        page_token: str | None = None,
        limit: int | None = None,
    ) -> Page[Model]:
        limit = validate_page_size(limit)
        node = parse_filter(filter or "", target="models")
        order = model_order_by(parse_order_by(order_by or "name", target="models"))
        query = f"models|{filter}|{order_by}"
        offset = self.page_tokens.decode(page_token, query)
        with self.db.read() as tx:
            condition = model_condition(node) if node is not None else None
            visible = self.access.visibility(caller)
            items = tx.list_models(condition, order, limit + 1, offset, visible)
        return self._page(items, limit, offset, query)

    def list_model_summaries(
        self,
        *,
        caller: Caller,
        filter: str | None = None,
        order_by: str | None = None,
        page_token: str | None = None,
        limit: int | None = None,
    ) -> Page[ModelSummary]:
        """``list_models`` with what a row of the UI's list shows besides (owner, stage
        occupants, key metric): four more queries for the whole page."""
        page = self.list_models(
            caller=caller, filter=filter, order_by=order_by, page_token=page_token, limit=limit
        )
        names = [m.name for m in page.items]
        with self.db.read() as tx:
            policies = self.lifecycle.policies_in_force(tx, names)
            stages = {name: tracked_stages(policy) for name, policy in policies.items()}
            members = tx.stage_members(names, sorted({s for v in stages.values() for s in v}))
            creators = tx.model_creators(names)
            metrics = tx.latest_metrics(names)
        rows = []
        for model in page.items:
            held = members.get(model.name, {})
            latest = metrics.get(model.name, {})
            key = key_metric(model.tags, latest)
            rows.append(
                ModelSummary(
                    model=model,
                    owner=owner(model.tags, creators.get(model.name)),
                    stages=tuple((s, tuple(held.get(s, ()))) for s in stages[model.name]),
                    key_metric=key,
                    key_value=latest.get(key) if key else None,
                )
            )
        return Page(rows, page.next_page_token)

    def metric_series(self, name: str, metric: str, *, caller: Caller) -> tuple[MetricPoint, ...]:
        """One metric of every version of a model that has it, oldest first (a chart).
        Cached under the model's stamp: thousands of rows, read again only after a change."""
        validate_model_name(name)
        validate_key(metric, "metric name")
        self.access.require(caller, Permission.VIEW, name)

        def load() -> tuple[MetricPoint, ...]:
            with self.db.read() as tx:
                return tuple(tx.metric_series(_require(tx.model_id(name), name), metric))

        return self._series.get((name, metric), load)

    def _page(self, items: list[T], limit: int, offset: int, query: str) -> Page[T]:
        """``items`` holds one more than a page when a next page exists."""
        return self.page_tokens.page(items, limit, offset, query)

    def _model(self, tx: Reader, name: str) -> Model:
        model = tx.get_model(name)
        if model is None:
            raise _model_not_found(name)
        return model

    # -- versions -------------------------------------------------------------------------

    def register_version(
        self,
        name: str,
        spec: NewVersion,
        *,
        caller: Caller,
        inline: Mapping[str, bytes] | None = None,
        attachments: Sequence[AttachmentIn] = (),
        card: str | None = None,
        card_from_previous: bool = False,
        pending: int | None = None,
    ) -> Version:
        """Create the next version of ``name`` (and the model on first registration).

        ``pending``: the number ``reserve_version`` gave it, while its files were copied.

        With its evidence, in the same transaction: ``attachments``, and a first card (the
        ``card`` text, else MODEL_CARD.md among the files or attachments, else, with
        ``card_from_previous``, the previous version's).

        Every blob the manifest names must come ``inline`` (digest -> bytes, for small
        files: one request instead of three) or be held already, and the caller may name
        it (``BlobService._nameable``). Inline blobs are verified,
        then kept in the database by the very transaction that creates the version: one
        commit makes both durable. The number is assigned under the journal lock, so
        numbers are gapless under concurrency.
        """
        registration = self.prepare_registration(
            name,
            spec,
            caller=caller,
            inline=inline,
            attachments=attachments,
            card=card,
            card_from_previous=card_from_previous,
        )
        with self.db.write() as tx:
            return self.write_registration(tx, caller, registration, pending=pending)[0]

    def prepare_registration(
        self,
        name: str,
        spec: NewVersion,
        *,
        caller: Caller,
        inline: Mapping[str, bytes] | None = None,
        attachments: Sequence[AttachmentIn] = (),
        card: str | None = None,
        card_from_previous: bool = False,
    ) -> Registration:
        """What a registration checks and scans before its transaction opens: a bundle's
        import prepares each of its versions so, then writes them all in one."""
        validate_model_name(name)
        self.access.require(caller, Permission.REGISTER, name)
        spec = validate_new_version(spec)
        inline = check_inline(spec.files, inline or {})
        evidence = self.evidence.prepare(
            attachments, card, card_from_previous, sum(map(len, inline.values()))
        )
        framework, fmt = spec.framework, spec.format
        if framework is None and fmt is None:
            framework, fmt = detect_framework(f.path for f in spec.files)
        scanned = self.scans.scan(
            spec.files, [a.entry for a in evidence.attachments], {**inline, **evidence.inline}
        )
        digest = manifest_digest(spec.files)
        size = sum(f.size for f in spec.files)
        return Registration(name, spec, inline, evidence, framework, fmt, digest, size, scanned)

    def write_registration(
        self, tx: Writer, caller: Caller, registration: Registration, *, pending: int | None = None
    ) -> tuple[Version, int]:
        """Write a prepared registration in ``tx``, journaled: the version and its id."""
        name, spec, inline = registration.name, registration.spec, registration.inline
        framework, fmt = registration.framework, registration.format
        digest, size = registration.digest, registration.size
        self._require_blobs(tx, caller, spec.files, inline)
        model = tx.lock_model(name)
        stage = self.lifecycle.policy_in_force(tx, name)[0].stages[0].name
        model_id = self._create_model(tx, name, caller, "", {}) if model is None else model[0]
        latest = 0 if model is None else model[1]
        if pending is not None and not tx.take_pending(model_id, pending):
            raise Conflict(f"{name}/{pending} is no longer pending", code="not_pending")
        number = pending or next_number(name, latest, spec.number)
        now = now_us()
        version_id = tx.insert_version(
            model_id=model_id,
            number=number,
            values={
                "manifest_digest": digest,
                "size": size,
                "framework": framework,
                "format": fmt,
                "dataset_name": spec.dataset.name if spec.dataset else None,
                "dataset_version": spec.dataset.version if spec.dataset else None,
                "dataset_digest": spec.dataset.digest if spec.dataset else None,
                "source_repo": spec.source.repo if spec.source else None,
                "source_commit": spec.source.commit if spec.source else None,
                "source_branch": spec.source.branch if spec.source else None,
                "source_dirty": spec.source.dirty if spec.source else None,
                "environment": (
                    json.dumps(spec.environment.as_dict(), sort_keys=True)
                    if spec.environment
                    else None
                ),
                "run": spec.run,
                "creator": caller.name,
                "description": spec.description,
                "stage": stage,
                "origin": spec.origin.to_json() if spec.origin else None,
            },
            files=spec.files,
            tags=spec.tags,
            params=spec.params,
            metrics=spec.metrics,
            now=now,
        )
        # Built from what was written rather than read back: six queries saved on the
        # registration path, and a test compares it with what resolve reads.
        version = Version(
            model=name,
            version=number,
            manifest_digest=digest,
            files=tuple(spec.files),
            size=size,
            framework=framework,
            format=fmt,
            params=spec.params,
            metrics=spec.metrics,
            dataset=spec.dataset,
            source=spec.source,
            environment=spec.environment,
            run=spec.run,
            creator=caller.name,
            created_at=utc_from_us(now),
            tags=spec.tags,
            description=spec.description,
            stage=stage,
            aliases=(),
            origin=spec.origin,
        )
        details = self.scans.details(registration.scanned)
        verdict = self.scans.record(tx, version_id, details, now, new=True)
        advised = self.advisories.check_new(tx, version_id, spec.environment, now)
        registered = VersionRegistered(
            name,
            number,
            version_state(version),
            scan=verdict,
            advisories=None if advised is None else check_status(advised),
        )
        tx.append_event(caller, registered, now=now)
        if advised is not None:
            self.advisories.announce(tx, name, number, stage, None, advised, now)
        evidence = registration.evidence
        self.evidence.record_new(tx, caller, version, version_id, model_id, evidence, inline)
        return version, version_id

    # -- versions whose files are still being copied -------------------------------------

    def reserve_version(self, name: str, source: str, *, caller: Caller, run: str | None) -> int:
        """Give the next number of ``name`` to a version whose files ``source`` is still
        to copy (and create the model, on its first): no other registration takes it, and
        ``pending_version`` says how the copy goes until ``register_version(pending=)``."""
        validate_model_name(name)
        self.access.require(caller, Permission.REGISTER, name)
        with self.db.write("version.pending") as tx:
            model = tx.lock_model(name)
            model_id = self._create_model(tx, name, caller, "", {}) if model is None else model[0]
            number = (0 if model is None else model[1]) + 1
            tx.insert_pending(model_id, number, source, run, caller.name, now_us())
        return number

    def version_or_pending(
        self, name: str, number: int, *, caller: Caller
    ) -> Version | PendingVersion:
        """A version, or the number of one whose files are still being copied (or failed
        to be): how the copy goes, to whoever may see the model."""
        try:
            return self.get_version(name, number, caller=caller)
        except NotFound:
            with self.db.read() as tx:
                model_id = tx.model_id(name)
                found = None if model_id is None else tx.pending_version(name, model_id, number)
            if found is None:  # none pending, or its registration committed since: read again
                return self.get_version(name, number, caller=caller)
            return found.seen_at(utc_from_us(now_us()))

    def copy_alive(self, name: str, number: int) -> None:
        """The copy of a pending version is still under way (its heartbeat)."""
        with self.db.write("version.pending") as tx:
            tx.touch_pending(_require(tx.model_id(name), name), number, now_us())

    def copy_failed(self, name: str, number: int, message: str) -> None:
        """The copy of a pending version failed: the number stays unused, and says why."""
        with self.db.write("version.pending") as tx:
            tx.fail_pending(_require(tx.model_id(name), name), number, message, now_us())

    def get_version(self, name: str, number: int, *, caller: Caller) -> Version:
        return self.resolve(
            Reference(validate_model_name(name), RefKind.NUMBER, number), caller=caller
        )

    def resolve(self, reference: str | Reference, *, caller: Caller) -> Version:
        """The version a reference points at: the hot path of every downstream service.

        Answers come from a per-process cache, each valid while its model has no newer
        event: every change appends one, so one indexed read tells whether the model
        changed, here or on any other replica sharing the database, and changes to other
        models leave the answer warm.
        """
        ref = parse_reference(reference) if isinstance(reference, str) else reference
        self.access.require(caller, Permission.VIEW, ref.model)
        return self._resolved.get(ref, lambda: self._load_resolved(ref))

    def _load_resolved(self, ref: Reference) -> Version:
        with self.db.read() as tx:
            version_id = tx.resolve_id(ref)
            if version_id is None:
                raise self._unresolved(tx, ref)
            return tx.load_versions([version_id])[0]

    def _unresolved(self, tx: Reader, ref: Reference) -> NotFound:
        if tx.model_id(ref.model) is None:
            return _model_not_found(ref.model)
        if ref.kind is RefKind.ALIAS:
            return NotFound(
                f"model {ref.model!r} has no alias {ref.value!r}", code="alias_not_found"
            )
        if ref.kind is RefKind.LATEST:
            return NotFound(f"model {ref.model!r} has no versions yet", code="version_not_found")
        return NotFound(f"{ref} does not exist", code="version_not_found")

    def update_version(
        self,
        name: str,
        number: int,
        *,
        caller: Caller,
        description: str | None = None,
        tags: dict[str, str | None] | None = None,
    ) -> Version:
        """Edit the mutable part of a version: its description and tags. Files never change.

        ``tags`` is a patch: a key set to None is removed, other keys are set.
        """
        validate_model_name(name)
        self.access.require(caller, Permission.EDIT, name)
        if description is not None:
            validate_description(description)
        ref = Reference(name, RefKind.NUMBER, number)
        with self.db.write() as tx:
            version_id = tx.resolve_id(ref)
            if version_id is None:
                raise self._unresolved(tx, ref)
            before = tx.load_versions([version_id])[0]
            new_tags = _patched(before.tags, tags)
            changes = _changes(before.description, before.tags, description, new_tags)
            if changes:
                tx.update_version(version_id, description, new_tags)
                tx.append_event(caller, VersionUpdated(name, number, *changes), now=now_us())
            return tx.load_versions([version_id])[0]

    def list_versions(
        self,
        name: str | None = None,
        *,
        caller: Caller,
        filter: str | None = None,
        order_by: str | None = None,
        page_token: str | None = None,
        limit: int | None = None,
    ) -> Page[Version]:
        """Versions of one model (``name``) or of all models, filtered and ordered."""
        limit = validate_page_size(limit)
        node = parse_filter(filter or "", target="versions")
        terms = parse_order_by(order_by or "", target="versions")
        query = f"versions|{name}|{filter}|{order_by}"
        offset = self.page_tokens.decode(page_token, query)
        with self.db.read() as tx:
            model_id = None
            visible = None
            if name is not None:
                self.access.require(caller, Permission.VIEW, validate_model_name(name), tx)
                model_id = tx.model_id(name)
                if model_id is None:
                    raise _model_not_found(name)
            else:
                visible = self.access.visibility(caller)
            condition = version_condition(node) if node is not None else None
            if terms and terms[0].field.namespace == "metrics":
                ids = tx.search_version_ids_by_metric(
                    terms[0].field.key,
                    terms[0].descending,
                    condition,
                    version_order_by(terms[1:]),
                    limit + 1,
                    offset,
                    model_id,
                    visible,
                )
            else:
                order = version_order_by(terms)
                ids = tx.search_version_ids(condition, order, limit + 1, offset, model_id, visible)
            items = tx.load_versions(ids)
        return self._page(items, limit, offset, query)

    def version_files(self, name: str, number: int, *, caller: Caller) -> tuple[FileEntry, ...]:
        """A version's files, for a caller who may download them (a listing of paths is
        the first step of reading the bytes, as MLflow's artifact client does)."""
        self.access.require(caller, Permission.DOWNLOAD, validate_model_name(name))
        return self.get_version(name, number, caller=caller).files

    def file_entry(self, name: str, number: int, path: str, *, caller: Caller) -> FileEntry:
        validate_file_path(path)
        ref = Reference(validate_model_name(name), RefKind.NUMBER, number)
        self.access.require(caller, Permission.DOWNLOAD, name)
        with self.db.read() as tx:
            version_id = tx.resolve_id(ref)
            if version_id is None:
                raise self._unresolved(tx, ref)
            entry = tx.file_entry(version_id, path)
        if entry is None:
            raise NotFound(f"{ref} has no file {path!r}", code="file_not_found")
        return entry

    # -- aliases --------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, number: int, *, caller: Caller) -> Version:
        validate_model_name(name)
        validate_alias_name(alias)
        with self.db.write() as tx:
            self.access.check(tx, caller, Action(Permission.SET_ALIAS, name, alias))
            model_id = _require(tx.model_id(name), name)
            if alias in self.lifecycle.policy_in_force(tx, name)[0].stage_names:
                raise Conflict(
                    f"{alias!r} is a stage of {name}: stages and aliases share one namespace;"
                    f" use 'modelyard promote {name}/{number} --to {alias}'",
                    code="alias_is_stage",
                )
            ref = Reference(name, RefKind.NUMBER, number)
            version_id = tx.resolve_id(ref)
            if version_id is None:
                raise self._unresolved(tx, ref)
            before = tx.alias_target(model_id, alias)
            if before != number:
                now = now_us()
                tx.set_alias(model_id, alias, version_id, now)
                tx.append_event(caller, AliasSet(name, alias, before, number), now=now)
            return tx.load_versions([version_id])[0]

    def delete_alias(self, name: str, alias: str, *, caller: Caller) -> None:
        validate_model_name(name)
        validate_alias_name(alias)
        with self.db.write() as tx:
            self.access.check(tx, caller, Action(Permission.SET_ALIAS, name, alias))
            model_id = _require(tx.model_id(name), name)
            before = tx.alias_target(model_id, alias)
            if before is None:
                raise NotFound(f"model {name!r} has no alias {alias!r}", code="alias_not_found")
            tx.delete_alias(model_id, alias)
            tx.append_event(caller, AliasDeleted(name, alias, before), now=now_us())

    # -- journal --------------------------------------------------------------------------

    def events(
        self,
        *,
        caller: Caller,
        after: int = 0,
        limit: int | None = None,
        subject: str | None = None,
        kind: str | None = None,
        filters: EventFilter | None = None,
        before: int | None = None,
        kinds: Collection[str] | None = None,
    ) -> list[Event]:
        """The journal in order after ``after``; or, with ``before``, the newest events
        before that seq, newest first (the UI's journal reads backwards from the head).
        ``kinds``: only events of those kinds (exact kinds of the catalogue)."""
        if after < 0 or (before is not None and before < 0):
            raise InvalidInput("'after' and 'before' must be 0 or a sequence number")
        if kind is not None and kind not in CATALOGUE:
            raise InvalidInput(f"unknown event kind {kind!r}; the kinds: {', '.join(CATALOGUE)}")
        limit = validate_page_size(limit)
        where = filters or EventFilter()
        with self.db.read() as tx:
            return tx.events_after(
                after,
                limit,
                subject,
                kind,
                self.event_visibility(caller),
                actor=where.actor,
                model=where.model,
                since_us=to_us(where.since) if where.since else None,
                until_us=to_us(where.until) if where.until else None,
                before=before,
                kinds=kinds,
            )

    def verify_journal(
        self, *, caller: Caller, checkpoint: Checkpoint | None = None
    ) -> JournalReport:
        """Recompute the whole hash chain here, up to the head the registry recorded (read
        first: events appended since only extend it), and hold ``checkpoint`` exactly.

        For the UI's "verify" button (admins). It trusts this server's reading of the
        database; ``modelyard journal verify`` recomputes on the client instead, and the
        checkpoint kept elsewhere is what a rewritten database cannot forge.
        """
        self.access.require(caller, Permission.ADMIN)
        with self.db.read() as tx:
            head = tx.journal_head()
            return verify_chain(_every_event(tx), head=head, checkpoint=checkpoint)

    def journal_head(self, *, caller: Caller) -> Checkpoint:
        """The newest event as the registry records it: ``journal verify`` checks that the
        chain reaches it, and an auditor keeps it outside the registry as a checkpoint."""
        self.access.require(caller, Permission.ADMIN)
        with self.db.read() as tx:
            return tx.journal_head()

    def event_visibility(self, caller: Caller) -> Visibility | None:
        """Admins read the whole journal; others the events of the models they may see."""
        if caller.local or self.access.role(caller, None) is Role.ADMIN:
            return None
        return self.access.visibility(caller) or Visibility(all_models=True)

    def claim_key(self, source: str) -> None:
        """Record this server's secret key for the database, or refuse to serve with a key
        other than the one recorded: replicas sharing a database share the key, or the page
        tokens, sign-ins and webhook secrets one signed or sealed the others cannot read
        (a webhook's deliveries would fail on whichever replica holds its lease).

        ``source`` says where this key came from, for the error.
        """
        if self.db.recorded_key(self.key.fingerprint()) != self.key.fingerprint():
            raise Conflict(
                f"this server's secret key ({source}) is not the one this registry's database"
                " was first served with: servers sharing a database need the same key, so"
                " set MODELYARD_SECRET_KEY to one value on every replica (to change the key"
                " on purpose, stop them all and empty the table server_key)",
                code="secret_key_mismatch",
            )

    def close(self) -> None:
        self.mlflow_sources.close()
        self.db.close()
        self.blobs.close()

    def check_ready(self) -> None:
        self.db.ping()
        self.blobs.check()


def _every_event(tx: Reader, batch: int = 1000) -> Iterator[Event]:
    """The whole journal in order, read a batch at a time."""
    after = 0
    while True:
        page = tx.events_after(after, batch)
        yield from page
        if len(page) < batch:
            return
        after = page[-1].seq


def _require(model_id: int | None, name: str) -> int:
    if model_id is None:
        raise _model_not_found(name)
    return model_id


def _model_not_found(name: str) -> NotFound:
    return NotFound(f"model {name!r} not found", code="model_not_found")


def _patched(current: dict[str, str], patch: dict[str, str | None] | None) -> dict[str, str] | None:
    """Apply a tag patch (None removes a key) and validate the result; None if no patch."""
    if patch is None:
        return None
    result = dict(current)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    validate_tags(result, kept=current)
    return result


def _changes(
    old_description: str,
    old_tags: dict[str, str],
    description: str | None,
    tags: dict[str, str] | None,
) -> tuple[ModelChange, ModelChange] | None:
    """(before, after) of what an edit changes, or None when nothing actually changes."""
    before: ModelChange = {}
    after: ModelChange = {}
    if description is not None and description != old_description:
        before["description"], after["description"] = old_description, description
    if tags is not None and tags != old_tags:
        before["tags"], after["tags"] = old_tags, tags
    return (before, after) if after else None
