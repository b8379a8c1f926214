"""Stages, promotion with approvals and policy gates, rollback, history and time travel.

Every stage change goes through ``_move`` in the write transaction that journals it: the
journal is the history (and the source of as-of answers), and the journal-head lock that
every write takes means two promotions into one exclusive stage are decided one after the
other: the second finds the stage changed under its request and is invalidated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import yaml

from modelyard.domain.access import Caller, Permission, Role
from modelyard.domain.checks import ADVISORIES_CHECK
from modelyard.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    ModelyardError,
    NotFound,
    PolicyFailed,
)
from modelyard.domain.events import (
    AliasDeleted,
    AliasSet,
    CommentAdded,
    PolicyApplied,
    RequestApproved,
    RequestClosed,
    RequestOpened,
    VersionAttached,
    VersionCardEdited,
    VersionDeleted,
    VersionRegistered,
    VersionSigned,
    VersionStaged,
    decode,
    of_kind,
)
from modelyard.domain.lifecycle import (
    ARCHIVED,
    MAX_POLICY_TEXT,
    Evaluation,
    ModelAsOf,
    Policy,
    PolicyError,
    Promotion,
    TransitionRequest,
    parse_policy,
)
from modelyard.domain.models import Event, Version, to_us
from modelyard.domain.names import validate_model_name
from modelyard.domain.overview import StagePeriod, stage_periods, tracked_stages
from modelyard.domain.projection import Projection
from modelyard.domain.references import Reference, RefKind, parse_reference
from modelyard.domain.rules import Subject
from modelyard.service.access import AccessControl
from modelyard.service.caches import StampedCache
from modelyard.service.signing import SigningService
from modelyard.storage.db.store import Database, Reader, Writer, now_us

# Whoever may not see the model is told what reviewing takes, whether the request exists or
# not: a member of the team a policy names still needs viewer, to read the evidence.
_REVIEWING = (
    "; reviewing a request takes at least viewer on its model (to read its evidence),"
    " besides what the stage's policy asks"
)
# What as-of answers replay, and what a model's history shows besides.
HISTORY_KINDS = tuple(e.kind for e in (VersionRegistered, VersionStaged, AliasSet, AliasDeleted))
REQUEST_KINDS = tuple(e.kind for e in (RequestOpened, RequestApproved, RequestClosed))
EVIDENCE_KINDS = tuple(e.kind for e in (VersionAttached, VersionCardEdited, CommentAdded))


class LifecycleService:
    def __init__(self, db: Database, access: AccessControl) -> None:
        self.db = db
        self.access = access
        self._policies: dict[int, Policy] = {}
        self._periods: StampedCache[tuple[str, tuple[str, ...]], tuple[StagePeriod, ...]] = (
            StampedCache(lambda key: db.model_stamp(key[0]))
        )
        # What enters a protected stage is signed in the move's transaction (_move).
        self.signing = SigningService(db, access, self.policy_in_force)

    # -- policies -----------------------------------------------------------------------------

    def policy_in_force(self, tx: Reader, model: str) -> tuple[Policy, int | None]:
        """The model's newest policy, else the registry's, else the defaults; and its version.

        Registration asks this for a new version's first stage, so it is one small indexed
        query: a stored policy never changes (applying one adds a row), so each is parsed
        once per process and kept by id.
        """
        row = tx.policy_in_force(model)
        if row is None:
            return Policy(), None
        policy_id, version = row
        policy = self._policies.get(policy_id)
        if policy is None:
            policy = self._parsed(policy_id, tx.policy_document(policy_id))
        return policy, version

    def policies_in_force(self, tx: Reader, models: Sequence[str]) -> dict[str, Policy]:
        """``policy_in_force`` for a page of models, in one query."""
        own, registry = tx.policies_in_force(models)
        fallback = self._parsed(registry.id, registry.document) if registry else Policy()
        return {
            model: self._parsed(own[model].id, own[model].document) if model in own else fallback
            for model in models
        }

    def _parsed(self, policy_id: int, document: str) -> Policy:
        """A stored policy never changes (applying one adds a row): parsed once, by id."""
        policy = self._policies.get(policy_id)
        if policy is None:
            policy = parse_policy(json.loads(document))
            if len(self._policies) >= 4096:
                self._policies.clear()
            self._policies[policy_id] = policy
        return policy

    def policy(self, caller: Caller, model: str) -> tuple[Policy, int | None, bool]:
        """The policy in force for a model, parsed (its viewers may read it): the policy,
        its version (None: the defaults) and whether it is the model's own."""
        validate_model_name(model)
        self.access.require(caller, Permission.VIEW, model)
        with self.db.read() as tx:
            _model_id(tx, model)
            policy, version = self.policy_in_force(tx, model)
            own = tx.latest_policy(model) is not None
        return policy, version, own

    def get_policy(self, caller: Caller, model: str | None) -> dict[str, Any]:
        """The policy document in force (with its text and version) and the stages."""
        self._require_model_or_registry(caller, Permission.VIEW, model)
        with self.db.read() as tx:
            if model is not None and tx.model_id(model) is None:
                raise NotFound(f"model {model!r} not found", code="model_not_found")
            row = tx.latest_policy(model)
            policy, version = self.policy_in_force(tx, model) if model else (Policy(), None)
            if model is None and row is not None:
                policy, version = parse_policy(json.loads(row.document)), row.version
        return {
            "model": model,
            "version": version,
            "own": row is not None,
            "text": row.text if row is not None else "",
            "stages": [s.as_dict() for s in policy.stages],
        }

    def apply_policy(self, caller: Caller, model: str | None, text: str) -> dict[str, Any]:
        """Store a new version of a model's (maintainers) or the registry's (admins) policy."""
        if len(text) > MAX_POLICY_TEXT:
            raise PolicyError(f"a policy may be at most {MAX_POLICY_TEXT} bytes")
        try:
            document = yaml.safe_load(text) if text.strip() else {}
        except yaml.YAMLError as exc:
            raise PolicyError(f"the policy is not valid YAML: {exc}") from None
        parse_policy(document)
        self._require_model_or_registry(caller, Permission.MANAGE_MODEL, model)
        with self.db.write() as tx:
            if model is not None and tx.model_id(model) is None:
                raise NotFound(f"model {model!r} not found", code="model_not_found")
            row = tx.latest_policy(model)
            version = (row.version if row else 0) + 1
            now = now_us()
            tx.insert_policy(model, version, text, document, caller.name, now)
            tx.append_event(caller, PolicyApplied(model, version, document), now=now)
        return self.get_policy(caller, model)

    def _require_model_or_registry(
        self, caller: Caller, permission: Permission, model: str | None
    ) -> None:
        """A model's policy: its viewers read it, maintainers change it. The registry's:
        every caller reads it, admins change it."""
        if model is not None:
            validate_model_name(model)
            self.access.require(caller, permission, model)
        elif permission is not Permission.VIEW:
            self.access.require(caller, Permission.ADMIN)

    # -- promotion ----------------------------------------------------------------------------

    def promote(
        self,
        caller: Caller,
        reference: str,
        to_stage: str,
        *,
        comment: str = "",
        override: str | None = None,
    ) -> Promotion:
        """Promote a version: at once into an unprotected stage, else by opening a request.

        The policy is evaluated now; a failing evaluation refuses the promotion with every
        failed rule. An admin may ``override`` (with a reason): it executes at once.
        """
        ref = parse_reference(reference)
        _check_comment(comment)
        self.access.require(caller, Permission.PROMOTE, ref.model)
        if override is not None:
            if not override.strip():
                raise InvalidInput("an override needs a reason")
            self.access.require(caller, Permission.ADMIN)
        with self.db.write() as tx:
            policy, policy_version = self.policy_in_force(tx, ref.model)
            spec = policy.stage(to_stage)
            version, version_id = self._version(tx, ref)
            if version.stage == ARCHIVED:
                raise Conflict(
                    f"{version.reference} is archived: restore it before promoting it",
                    code="version_archived",
                )
            if version.stage == to_stage:
                raise Conflict(f"{version.reference} is already in {to_stage}", code="no_change")
            candidate = self._subject(tx, version, version_id)
            current = self._current(tx, ref.model, to_stage)
            evaluation = _with_version(
                policy.evaluate(to_stage, candidate, current), policy_version
            )
            now = now_us()
            if override is None and not evaluation.passed:
                raise _refused(version, to_stage, evaluation)
            if override is not None or not spec.protected:
                self._move(
                    tx,
                    caller,
                    version_id,
                    version,
                    to_stage,
                    policy,
                    now,
                    reason="promotion" if override is None else "override",
                    comment=comment,
                    evaluation=evaluation.as_dict(),
                    override=override,
                )
                return Promotion("executed", self._load(tx, version_id))
            model_id = _model_id(tx, ref.model)
            request_id = tx.insert_request(
                {
                    "model_id": model_id,
                    "version_id": version_id,
                    "to_stage": to_stage,
                    "status": "open",
                    "requester": caller.name,
                    "comment": comment,
                    "created_at": now,
                    "updated_at": now,
                    "approvals_needed": policy.for_stage(to_stage).approvals.count,
                    "snapshot": json.dumps(self._snapshot(tx, model_id, version_id, to_stage)),
                    "evaluation": json.dumps(evaluation.as_dict()),
                    "decision": "",
                }
            )
            opened = RequestOpened(
                version.model, version.version, request_id, to_stage, comment, evaluation.as_dict()
            )
            tx.append_event(caller, opened, now=now)
            request = self._request(tx, request_id)
            if request.approvals_needed == 0:
                request = self._execute(tx, caller, request, policy, now)
            return Promotion(
                "executed" if request.status == "executed" else "open",
                self._load(tx, version_id),
                request,
            )

    def requests(
        self,
        caller: Caller,
        *,
        model: str | None = None,
        status: str | None = "open",
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[TransitionRequest]:
        """The queue (open requests by default) of the models the caller may see, oldest
        first (or ``newest_first``), at most ``limit`` of them."""
        with self.db.read() as tx:
            model_id = None
            if model is not None:
                self.access.require(caller, Permission.VIEW, model)
                model_id = _model_id(tx, model)
            visibility = self.access.visibility(caller)
            visible = None
            if visibility is not None and not visibility.all_models:
                visible = sorted(visibility.models)
            return tx.requests(
                model_id=model_id,
                status=status,
                visible=visible,
                limit=limit,
                newest_first=newest_first,
            )

    def request(self, caller: Caller, request_id: int) -> TransitionRequest:
        with self.db.read() as tx:
            return self._visible_request(tx, caller, request_id)

    def approve(self, caller: Caller, request_id: int, *, comment: str = "") -> TransitionRequest:
        """Approve; with enough distinct approvals the promotion executes (policy re-checked)."""
        _check_comment(comment)
        with self.db.write() as tx:
            request = self._visible_request(tx, caller, request_id, _REVIEWING)
            policy, policy_version = self.policy_in_force(tx, request.model)
            refusal = self._refusal(tx, caller, request, policy, approving=True)
            if refusal is not None:
                raise refusal
            now = now_us()
            tx.add_approval(request_id, caller.name, comment, now)
            tx.update_request(request_id, updated_at=now)
            approved = RequestApproved(request.model, request.version, request_id, comment)
            tx.append_event(caller, approved, now=now)
            request = self._request(tx, request_id)
            if len(request.approvals) >= request.approvals_needed:
                request = self._execute(tx, caller, request, policy, now, policy_version)
            return request

    def reject(self, caller: Caller, request_id: int, *, comment: str = "") -> TransitionRequest:
        _check_comment(comment)
        with self.db.write() as tx:
            request = self._visible_request(tx, caller, request_id, _REVIEWING)
            policy = self.policy_in_force(tx, request.model)[0]
            refusal = self._refusal(tx, caller, request, policy, approving=False)
            if refusal is not None:
                raise refusal
            return self._close(tx, caller, request, "rejected", comment)

    def can_decide(self, caller: Caller, request_id: int) -> tuple[bool, str]:
        """Whether the caller may approve the request now, and if not why, in a sentence.

        Read-only, for pages that show approve buttons only to reviewers: ``approve``
        refuses by the very same rule (``_refusal``), so the page cannot disagree with it.
        """
        with self.db.read() as tx:
            request = self._visible_request(tx, caller, request_id, _REVIEWING)
            policy = self.policy_in_force(tx, request.model)[0]
            refusal = self._refusal(tx, caller, request, policy, approving=True)
        return (True, "") if refusal is None else (False, refusal.message)

    def evaluate_request(self, caller: Caller, request_id: int) -> Evaluation:
        """The request's policy evaluated again against the registry as it is now (the
        request keeps the one made when it was opened; execution makes a third)."""
        with self.db.read() as tx:
            request = self._visible_request(tx, caller, request_id, _REVIEWING)
            policy, policy_version = self.policy_in_force(tx, request.model)
            ref = Reference(request.model, RefKind.NUMBER, request.version)
            version, version_id = self._version(tx, ref)
            candidate = self._subject(tx, version, version_id)
            current = self._current(tx, request.model, request.to_stage)
            return _with_version(
                policy.evaluate(request.to_stage, candidate, current), policy_version
            )

    def cancel(self, caller: Caller, request_id: int, *, comment: str = "") -> TransitionRequest:
        """The requester, or a maintainer of the model, withdraws a request."""
        with self.db.write() as tx:
            request = self._open_request(tx, caller, request_id, Permission.VIEW)
            if request.requester != caller.name:
                self.access.require(caller, Permission.MANAGE_MODEL, request.model, tx)
            return self._close(tx, caller, request, "cancelled", comment)

    # -- rollback, archive, restore, delete -------------------------------------------------

    def rollback(self, caller: Caller, model: str, stage: str, *, comment: str = "") -> Version:
        """Put back the version that held ``stage`` before the current one: no approval, it
        is the emergency exit (maintainers only), journaled as a rollback."""
        _check_comment(comment)
        self.access.require(caller, Permission.ROLLBACK, model)
        with self.db.write() as tx:
            policy, _ = self.policy_in_force(tx, model)
            policy.stage(stage)
            model_id = _model_id(tx, model)
            occupants = tx.stage_occupants(model_id, stage)
            if not occupants:
                raise Conflict(f"{model}@{stage} is empty: nothing to roll back", code="no_change")
            current = occupants[0].number
            moves = of_kind(tx.model_events(model, (VersionStaged.kind,), None), VersionStaged)
            previous = _previous_occupant(moves, stage, current)
            if previous is None:
                raise Conflict(
                    f"no version held {model}@{stage} before {model}/{current}",
                    code="nothing_to_roll_back",
                )
            version, version_id = self._version(tx, Reference(model, RefKind.NUMBER, previous))
            now = now_us()
            target = policy.stage(stage)
            if not target.exclusive:  # an exclusive stage moves the current one out itself
                current_version, current_id = self._version(
                    tx, Reference(model, RefKind.NUMBER, current)
                )
                self._move(
                    tx,
                    caller,
                    current_id,
                    current_version,
                    target.demote_to,
                    policy,
                    now,
                    reason="rollback",
                    comment=comment,
                )
            self._move(
                tx,
                caller,
                version_id,
                version,
                stage,
                policy,
                now,
                reason="rollback",
                comment=comment,
                replaces=current,
            )
            return self._load(tx, version_id)

    def archive(self, caller: Caller, reference: str, *, restore: bool = False) -> Version:
        """Archive a version (it cannot be promoted), or restore it to the first stage."""
        ref = parse_reference(reference)
        self.access.require(caller, Permission.ARCHIVE, ref.model)
        with self.db.write() as tx:
            policy, _ = self.policy_in_force(tx, ref.model)
            version, version_id = self._version(tx, ref)
            if restore and version.stage != ARCHIVED:
                raise Conflict(f"{version.reference} is not archived", code="no_change")
            if not restore and version.stage == ARCHIVED:
                raise Conflict(f"{version.reference} is already archived", code="no_change")
            target = policy.stages[0].name if restore else ARCHIVED
            self._move(
                tx,
                caller,
                version_id,
                version,
                target,
                policy,
                now_us(),
                reason="restore" if restore else "archive",
            )
            return self._load(tx, version_id)

    def delete_version(self, caller: Caller, model: str, number: int, *, hard: bool) -> None:
        """Soft delete (maintainers): hidden everywhere, kept. Hard delete (admins): gone,
        refused for any version that was ever in a protected stage."""
        self.access.require(caller, Permission.DELETE_VERSION, model)
        if hard:
            self.access.require(caller, Permission.ADMIN)
        with self.db.write() as tx:
            version, version_id = self._version(tx, Reference(model, RefKind.NUMBER, number))
            if hard:
                moves = of_kind(tx.model_events(model, (VersionStaged.kind,), None), VersionStaged)
                if any(m.version == number and m.protected for m in moves):
                    raise Conflict(
                        f"{version.reference} was in a protected stage: what ran in"
                        " production is kept (a soft delete hides it)",
                        code="version_protected",
                    )
                evidence = [a.sha256 for a in tx.attachments(version_id)]
                tx.purge_version(version_id)
                # Its bytes must not outlive it: what no version names now, gc takes at once.
                tx.release_blobs([f.sha256 for f in version.files] + evidence, now_us())
            else:
                tx.mark_deleted(version_id, now_us())
            tx.append_event(
                caller, VersionDeleted(model, number, hard, version.stage), now=now_us()
            )

    # -- history and time travel -----------------------------------------------------------

    def history(
        self, caller: Caller, model: str, *, limit: int = 1000, before: int | None = None
    ) -> list[Event]:
        """Every stage move, alias change, request and approval of a model, and its evidence
        (attachments, card edits, comments, signatures), oldest first: the newest ``limit``
        of them (before seq ``before``, to page back)."""
        self.access.require(caller, Permission.VIEW, model)
        kinds = (
            *HISTORY_KINDS,
            *REQUEST_KINDS,
            *EVIDENCE_KINDS,
            VersionSigned.kind,
            VersionDeleted.kind,
            PolicyApplied.kind,
        )
        with self.db.read() as tx:
            _model_id(tx, model)
            return tx.latest_model_events(model, kinds, limit, before)

    def stage_periods(self, caller: Caller, model: str) -> tuple[StagePeriod, ...]:
        """Which version held each stage (but the first and archived) when, replayed from
        the model's stage moves; cached under the model's stamp (and the stages, which the
        registry's policy may change without a model event)."""
        self.access.require(caller, Permission.VIEW, validate_model_name(model))
        with self.db.read() as tx:
            _model_id(tx, model)
            stages = tracked_stages(self.policy_in_force(tx, model)[0])

        def load() -> tuple[StagePeriod, ...]:
            with self.db.read() as tx:
                moves = tx.model_events(model, (VersionStaged.kind, VersionDeleted.kind), None)
            return tuple(stage_periods(((e.time, decode(e)) for e in moves), stages))

        return self._periods.get((model, stages), load)

    def resolve_as_of(self, caller: Caller, reference: str, at: datetime) -> Version:
        """What ``reference`` pointed to at ``at``, replayed from the journal."""
        if at.tzinfo is None:
            raise InvalidInput("an as-of time needs a time zone, e.g. 2026-03-03T12:00Z")
        ref = parse_reference(reference)
        self.access.require(caller, Permission.VIEW, ref.model)
        until = to_us(at)
        with self.db.read() as tx:
            _model_id(tx, ref.model)
            past = tx.model_events(ref.model, HISTORY_KINDS, until)
            number = _replay(past, ref)
            if number is None:
                raise NotFound(
                    f"{ref} did not point at any version at {at.isoformat()}",
                    code="version_not_found",
                )
            return self._version(tx, Reference(ref.model, RefKind.NUMBER, number))[0]

    def model_as_of(self, caller: Caller, model: str, at: datetime) -> ModelAsOf:
        """Every stage's and alias's versions of ``model`` at ``at``, replayed from the
        journal like ``resolve_as_of`` (versions deleted by then are left out)."""
        if at.tzinfo is None:
            raise InvalidInput("an as-of time needs a time zone, e.g. 2026-03-03T12:00Z")
        validate_model_name(model)
        self.access.require(caller, Permission.VIEW, model)
        with self.db.read() as tx:
            _model_id(tx, model)
            stages = self.policy_in_force(tx, model)[0].stage_names
            past = tx.model_events(model, (*HISTORY_KINDS, VersionDeleted.kind), to_us(at))
        state = Projection.replay(past)
        entered: dict[str, list[tuple[int, int]]] = {stage: [] for stage in (*stages, ARCHIVED)}
        for (name, number), replayed in state.versions.items():
            if name == model and not replayed.deleted:
                stage = replayed.state["stage"]
                entered.setdefault(stage, []).append((replayed.entered, number))
        return ModelAsOf(
            model=model,
            at=at,
            stages={
                stage: tuple(number for _, number in sorted(held, reverse=True))
                for stage, held in entered.items()
            },
            aliases={
                alias: n for (name, alias), n in sorted(state.aliases.items()) if name == model
            },
        )

    # -- internals ------------------------------------------------------------------------------

    def _version(self, tx: Reader, ref: Reference) -> tuple[Version, int]:
        version_id = tx.resolve_id(ref)
        if version_id is None:
            if tx.model_id(ref.model) is None:
                raise NotFound(f"model {ref.model!r} not found", code="model_not_found")
            raise NotFound(f"{ref} does not exist", code="version_not_found")
        return tx.load_versions([version_id])[0], version_id

    def _load(self, tx: Reader, version_id: int) -> Version:
        return tx.load_versions([version_id])[0]

    def _current(self, tx: Reader, model: str, stage: str) -> Subject | None:
        """The version now in ``stage`` (what ``current.`` names in rules), with its checks."""
        occupants = tx.stage_occupants(_model_id(tx, model), stage)
        if not occupants:
            return None
        return self._subject(tx, self._load(tx, occupants[0].id), occupants[0].id)

    def _subject(self, tx: Reader, version: Version, version_id: int) -> Subject:
        """What a policy reads of a version: its fields, its checks, its card, the newest
        value of each of its online metrics, and who signed it."""
        card = tx.card(version_id)
        advised = tx.checks(version_id, ADVISORIES_CHECK)
        return Subject(
            version,
            tx.check_statuses(version_id),
            card.text if card else None,
            tx.online_latest(version_id),
            self.signing.signers(tx, version_id, version.files),
            advised[0].details.get("severity") if advised and advised[0].details else None,
        )

    def _snapshot(self, tx: Reader, model_id: int, version_id: int, stage: str) -> dict[str, Any]:
        return {
            "version_stage": tx.version_stage(version_id),
            "occupants": sorted(o.number for o in tx.stage_occupants(model_id, stage)),
        }

    def _move(
        self,
        tx: Writer,
        caller: Caller,
        version_id: int,
        version: Version,
        to_stage: str,
        policy: Policy,
        now: int,
        *,
        reason: str,
        **context: Any,
    ) -> None:
        """Change a version's stage (signing it on entering a protected one), demote the
        occupant of an exclusive target, journal both, and invalidate the model's open
        requests that this change overtakes.

        ``context``: the other fields of the ``VersionStaged`` event (comment, request...).
        """
        target = policy.stage(to_stage) if to_stage != ARCHIVED else None
        model_id = _model_id(tx, version.model)
        displaced = (
            [o for o in tx.stage_occupants(model_id, to_stage) if o.id != version_id]
            if target is not None and target.exclusive
            else []
        )
        tx.set_stage(version_id, to_stage, now)
        moved = VersionStaged(
            version.model,
            version.version,
            version.stage,
            to_stage,
            reason,
            protected=bool(target and target.protected),
            **context,
        )
        tx.append_event(caller, moved, now=now)
        if target is not None and target.protected:
            self.signing.sign_on_entry(tx, caller, version_id, version, to_stage, now)
        for occupant in displaced:
            assert target is not None
            tx.set_stage(occupant.id, target.demote_to, now)
            demoted = VersionStaged(
                version.model,
                occupant.number,
                to_stage,
                target.demote_to,
                "demotion",
                replaced_by=version.version,
            )
            tx.append_event(caller, demoted, now=now)
        for request in tx.requests(model_id=model_id, status="open"):
            version_id, snapshot = tx.request_basis(request.id)
            if snapshot != self._snapshot(tx, model_id, version_id, request.to_stage):
                self._close(tx, caller, request, "invalidated", "the stage or version changed")

    def _execute(
        self,
        tx: Writer,
        caller: Caller,
        request: TransitionRequest,
        policy: Policy,
        now: int,
        policy_version: int | None = None,
    ) -> TransitionRequest:
        """Carry out an approved request, evaluating the policy once more."""
        ref = Reference(request.model, RefKind.NUMBER, request.version)
        version, version_id = self._version(tx, ref)
        candidate = self._subject(tx, version, version_id)
        current = self._current(tx, request.model, request.to_stage)
        evaluation = _with_version(
            policy.evaluate(request.to_stage, candidate, current), policy_version
        )
        tx.update_request(request.id, evaluation=json.dumps(evaluation.as_dict()))
        if not evaluation.passed:
            return self._close(tx, caller, request, "refused", "the policy fails at execution")
        tx.update_request(request.id, status="executed", updated_at=now)
        self._move(
            tx,
            caller,
            version_id,
            version,
            request.to_stage,
            policy,
            now,
            reason="promotion",
            request=request.id,
            requester=request.requester,
            approvals=[a.approver for a in self._request(tx, request.id).approvals],
            evaluation=evaluation.as_dict(),
        )
        return self._request(tx, request.id)

    def _close(
        self, tx: Writer, caller: Caller, request: TransitionRequest, status: str, comment: str
    ) -> TransitionRequest:
        now = now_us()
        tx.update_request(
            request.id, status=status, updated_at=now, decided_by=caller.name, decision=comment
        )
        closed = RequestClosed(request.model, request.version, request.id, status, comment)
        tx.append_event(caller, closed, now=now)
        return self._request(tx, request.id)

    def _request(self, tx: Reader, request_id: int, hint: str = "") -> TransitionRequest:
        found = tx.requests(request_id=request_id)
        if not found:
            raise _request_not_found(request_id, hint)
        return found[0]

    def _visible_request(
        self, tx: Reader, caller: Caller, request_id: int, hint: str = ""
    ) -> TransitionRequest:
        request = self._request(tx, request_id, hint)
        if self.access.role(caller, request.model, tx) is None:
            raise _request_not_found(request_id, hint)
        return request

    def _open_request(
        self, tx: Reader, caller: Caller, request_id: int, permission: Permission
    ) -> TransitionRequest:
        request = self._visible_request(tx, caller, request_id)
        self.access.require(caller, permission, request.model, tx)
        if request.status != "open":
            raise Conflict(f"request {request_id} is {request.status}", code="request_closed")
        return request

    def _refusal(
        self,
        tx: Reader,
        caller: Caller,
        request: TransitionRequest,
        policy: Policy,
        *,
        approving: bool,
    ) -> ModelyardError | None:
        """Why the caller may not approve (or reject) the request, or None.

        Who decides: the stage policy's team, else the model's maintainers; not the
        requester when approving (single-user local mode excepted: there is nobody else).
        """
        try:
            self.access.require(caller, Permission.APPROVE, request.model, tx)
        except Forbidden as exc:
            return exc
        if request.status != "open":
            return Conflict(f"request {request.id} is {request.status}", code="request_closed")
        if caller.local:
            return None
        rule = policy.for_stage(request.to_stage).approvals
        if approving and request.requester == caller.name and not rule.allow_self:
            return Forbidden(
                "the requester cannot approve their own request", permission="model.approve"
            )
        if rule.team is not None:
            assert caller.principal_id is not None
            if rule.team not in {t.name for t in tx.teams_of(caller.principal_id)}:
                return Forbidden(
                    f"approvals for {request.to_stage} come from team {rule.team!r}",
                    permission="model.approve",
                )
        else:
            role = self.access.role(caller, request.model, tx)
            if role is None or role < Role.MAINTAINER:
                return Forbidden(
                    f"approvals for {request.to_stage} come from maintainers of {request.model}",
                    permission="model.approve",
                )
        if approving and any(a.approver == caller.name for a in request.approvals):
            return Conflict(f"{caller.name} already approved request {request.id}")
        return None


def _model_id(tx: Reader, model: str) -> int:
    model_id = tx.model_id(model)
    if model_id is None:
        raise NotFound(f"model {model!r} not found", code="model_not_found")
    return model_id


def _request_not_found(request_id: int, hint: str = "") -> NotFound:
    return NotFound(f"request {request_id} not found{hint}", code="request_not_found")


def _check_comment(comment: str) -> None:
    if len(comment) > 4096:
        raise InvalidInput("a comment may be at most 4096 characters")


def _with_version(evaluation: Evaluation, policy_version: int | None) -> Evaluation:
    return Evaluation(evaluation.stage, evaluation.results, policy_version)


def _refused(version: Version, stage: str, evaluation: Evaluation) -> PolicyFailed:
    failed = "; ".join(f"{r.rule} ({r.detail})" for r in evaluation.failures)
    return PolicyFailed(
        f"promoting {version.reference} to {stage} is refused by the policy: {failed}",
        failures=[r.as_dict() for r in evaluation.failures],
        evaluation=evaluation.as_dict(),
    )


def _previous_occupant(moves: list[VersionStaged], stage: str, current: int) -> int | None:
    """The version that entered ``stage`` last before ``current`` did."""
    entered = [m.version for m in moves if m.after == stage]
    while entered and entered[-1] == current:
        entered.pop()
    return entered[-1] if entered else None


def _replay(events: list[Event], ref: Reference) -> int | None:
    """The version number ``ref`` meant once ``events`` (in order) had happened."""
    state = Projection.replay(events)
    numbers = [number for model, number in state.versions if model == ref.model]
    if ref.kind is RefKind.NUMBER:
        return int(str(ref.value)) if int(str(ref.value)) in numbers else None
    if ref.kind is RefKind.LATEST:
        return max(numbers, default=None)
    if ref.kind is RefKind.ALIAS:
        alias = state.aliases.get((ref.model, str(ref.value)))
        return alias if alias is not None else state.in_stage(ref.model, str(ref.value))
    raise InvalidInput("an as-of query takes NAME, NAME/N or NAME@ALIAS (not a digest)")
