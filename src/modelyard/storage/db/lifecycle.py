"""Queries of the lifecycle: stage occupants, policies, transition requests, approvals.

Mixed into ``Reader`` and ``Writer`` (store.py) like the identity queries.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, or_, select, update

from modelyard.domain.lifecycle import Approval, Evaluation, TransitionRequest
from modelyard.domain.models import Event, utc_from_us
from modelyard.storage.db.prebuilt import Prebuilt
from modelyard.storage.db.tables import (
    events,
    models,
    policies,
    request_approvals,
    transition_requests,
    versions,
)

_REQUESTS = (
    select(transition_requests, models.c.name.label("model"), versions.c.number)
    .join(models, transition_requests.c.model_id == models.c.id)
    .join(versions, transition_requests.c.version_id == versions.c.id)
)

# Built once: registration runs it on every call, and building a select costs more than
# running this one.
_POLICY_IN_FORCE = Prebuilt(
    select(policies.c.id, policies.c.version)
    .where(or_(policies.c.model == bindparam("model"), policies.c.model.is_(None)))
    .order_by(policies.c.model.is_(None), policies.c.version.desc())
    .limit(1)
)
_POLICY_DOCUMENT = select(policies.c.document).where(policies.c.id == bindparam("id"))


class LifecycleReader:
    conn: Connection

    def latest_policy(self, model: str | None) -> Any:
        """(version, text, document) of the policy in force for a model or the registry."""
        key = policies.c.model.is_(None) if model is None else policies.c.model == model
        return self.conn.execute(
            select(policies.c.version, policies.c.text, policies.c.document)
            .where(key)
            .order_by(policies.c.version.desc())
            .limit(1)
        ).first()

    def policy_in_force(self, model: str) -> tuple[int, int] | None:
        """(id, version) of the model's newest policy, else the registry's; None if neither."""
        rows = _POLICY_IN_FORCE.rows(self.conn, {"model": model})
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    def policy_document(self, policy_id: int) -> str:
        return str(self.conn.execute(_POLICY_DOCUMENT, {"id": policy_id}).scalar_one())

    def stage_occupants(self, model_id: int, stage: str) -> list[Any]:
        """(id, number) of the versions in a stage, most recently promoted first."""
        recency = func.coalesce(versions.c.stage_updated_at, versions.c.created_at)
        return list(
            self.conn.execute(
                select(versions.c.id, versions.c.number)
                .where(
                    versions.c.model_id == model_id,
                    versions.c.stage == stage,
                    versions.c.deleted_at.is_(None),
                )
                .order_by(recency.desc(), versions.c.number.desc())
            )
        )

    def requests(
        self,
        *,
        request_id: int | None = None,
        model_id: int | None = None,
        status: str | None = None,
        visible: Sequence[str] | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[TransitionRequest]:
        stmt = _REQUESTS
        if request_id is not None:
            stmt = stmt.where(transition_requests.c.id == request_id)
        if model_id is not None:
            stmt = stmt.where(transition_requests.c.model_id == model_id)
        if status is not None:
            stmt = stmt.where(transition_requests.c.status == status)
        if visible is not None:
            stmt = stmt.where(models.c.name.in_(list(visible)))
        order = transition_requests.c.id.desc() if newest_first else transition_requests.c.id
        rows = list(self.conn.execute(stmt.order_by(order).limit(limit)))
        approvals: dict[int, list[Approval]] = defaultdict(list)
        if rows:
            found = self.conn.execute(
                select(request_approvals)
                .where(request_approvals.c.request_id.in_([r.id for r in rows]))
                .order_by(request_approvals.c.at)
            )
            for a in found:
                approvals[a.request_id].append(Approval(a.approver, a.comment, utc_from_us(a.at)))
        return [
            TransitionRequest(
                id=r.id,
                model=r.model,
                version=r.number,
                to_stage=r.to_stage,
                status=r.status,
                requester=r.requester,
                comment=r.comment,
                created_at=utc_from_us(r.created_at),
                updated_at=utc_from_us(r.updated_at),
                approvals_needed=r.approvals_needed,
                approvals=tuple(approvals[r.id]),
                evaluation=Evaluation.from_dict(json.loads(r.evaluation)),
                decided_by=r.decided_by,
                decision=r.decision,
            )
            for r in rows
        ]

    def request_basis(self, request_id: int) -> tuple[int, dict[str, Any]]:
        """The version a request promotes and the snapshot it was made against."""
        row = self.conn.execute(
            select(transition_requests.c.version_id, transition_requests.c.snapshot).where(
                transition_requests.c.id == request_id
            )
        ).one()
        return int(row.version_id), json.loads(row.snapshot)

    def version_stage(self, version_id: int) -> str:
        stage: str = self.conn.execute(
            select(versions.c.stage).where(versions.c.id == version_id)
        ).scalar_one()
        return stage

    def model_events(self, model: str, kinds: Sequence[str], until_us: int | None) -> list[Event]:
        """The events of one model of these kinds, in order, up to a moment (None: now)."""
        stmt = select(events).where(events.c.model == model, events.c.kind.in_(list(kinds)))
        if until_us is not None:
            stmt = stmt.where(events.c.time_us <= until_us)
        return [event_from_row(r) for r in self.conn.execute(stmt.order_by(events.c.seq))]

    def latest_model_events(
        self, model: str, kinds: Sequence[str], limit: int, before: int | None = None
    ) -> list[Event]:
        """The newest ``limit`` events of one model of these kinds (before seq ``before``),
        in order: read backwards on the ``(model, seq)`` index, so a long history costs
        no more than a short one."""
        stmt = select(events).where(events.c.model == model, events.c.kind.in_(list(kinds)))
        if before is not None:
            stmt = stmt.where(events.c.seq < before)
        rows = self.conn.execute(stmt.order_by(events.c.seq.desc()).limit(limit))
        return [event_from_row(r) for r in rows][::-1]


def event_from_row(r: Any) -> Event:
    return Event(
        seq=r.seq,
        time=utc_from_us(r.time_us),
        actor=r.actor,
        kind=r.kind,
        subject=r.subject,
        payload=json.loads(r.payload),
        prev_hash=r.prev_hash,
        hash=r.hash,
        token_id=r.token_id,
        model=r.model,
        chain=r.chain,
    )


class LifecycleWriter(LifecycleReader):
    def insert_policy(
        self, model: str | None, version: int, text: str, document: Any, by: str, now: int
    ) -> None:
        self.conn.execute(
            insert(policies).values(
                model=model,
                version=version,
                text=text,
                document=json.dumps(document, sort_keys=True),
                created_at=now,
                created_by=by,
            )
        )

    def set_stage(self, version_id: int, stage: str, now: int) -> None:
        self.conn.execute(
            update(versions)
            .where(versions.c.id == version_id)
            .values(stage=stage, stage_updated_at=now)
        )

    def insert_request(self, values: dict[str, Any]) -> int:
        return int(
            self.conn.execute(
                insert(transition_requests).values(**values).returning(transition_requests.c.id)
            ).scalar_one()
        )

    def update_request(self, request_id: int, **values: Any) -> None:
        self.conn.execute(
            update(transition_requests)
            .where(transition_requests.c.id == request_id)
            .values(**values)
        )

    def add_approval(self, request_id: int, approver: str, comment: str, now: int) -> None:
        self.conn.execute(
            insert(request_approvals).values(
                request_id=request_id, approver=approver, comment=comment, at=now
            )
        )

    def mark_deleted(self, version_id: int, now: int) -> None:
        self.conn.execute(
            update(versions).where(versions.c.id == version_id).values(deleted_at=now)
        )

    def purge_version(self, version_id: int) -> None:
        """Hard delete: the row and (by cascade) its files, tags, params, metrics, aliases."""
        self.conn.execute(delete(versions).where(versions.c.id == version_id))
