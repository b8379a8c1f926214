"""Journal events as sentences people read ("alice promoted churn/3 to production
(approved by bob)"), decoded through the catalogue like every other reader."""

from __future__ import annotations

from modelyard.domain.events import (
    AdvisoriesLoaded,
    AliasDeleted,
    AliasSet,
    CommentAdded,
    GrantRevoked,
    GrantSet,
    JournalEvent,
    ModelCreated,
    ModelDeleted,
    ModelUpdated,
    PasswordSet,
    PolicyApplied,
    PrincipalCreated,
    PrincipalDisabled,
    ProtectedAliasesSet,
    RequestApproved,
    RequestClosed,
    RequestOpened,
    SessionEnded,
    SessionStarted,
    TeamDeleted,
    TeamMemberAdded,
    TeamMemberRemoved,
    TokenCreated,
    TokenRevoked,
    UndecodableEvent,
    VersionAdvisoriesAffected,
    VersionAttached,
    VersionCardEdited,
    VersionCheckReported,
    VersionDeleted,
    VersionRegistered,
    VersionStaged,
    VersionUpdated,
    WebhookCreated,
    WebhookDeleted,
    WebhookDisabled,
    WebhookEnabled,
    WebhookEvent,
    WebhookSecretRotated,
    WebhookUpdated,
    decode,
)
from modelyard.domain.models import Event


def sentence(event: Event) -> str:
    """What happened, in one sentence; a kind this module does not know (or an event that
    does not decode) is still shown, with its kind and subject."""
    try:
        decoded = decode(event)
    except UndecodableEvent as exc:
        return f"{event.actor} {event.kind} {event.subject} ({exc})"
    said = _said(event.actor, decoded)
    if said is None:
        detail = decoded.describe()
        return f"{event.actor}: {event.kind} {event.subject}" + (f" ({detail})" if detail else "")
    return said


def _said(actor: str, event: JournalEvent) -> str | None:
    match event:
        case VersionRegistered(model=m, version=n, after=after):
            return f"{actor} registered {m}/{n} ({after['files']} file(s), in {after['stage']})"
        case VersionStaged():
            return _staged(actor, event)
        case VersionUpdated(model=m, version=n):
            return f"{actor} edited {m}/{n}: {event.describe()}"
        case VersionDeleted(model=m, version=n, hard=hard):
            return f"{actor} {'erased' if hard else 'deleted'} {m}/{n}"
        case VersionAttached(model=m, version=n):
            return f"{actor} {event.describe()} to {m}/{n}"
        case VersionCardEdited(model=m, version=n, revision=revision, source=source):
            origin = _CARD_ORIGINS.get(source, source)
            return f"{actor} set the card of {m}/{n}{origin} (revision {revision})"
        case CommentAdded(model=m, version=n, request=rid):
            on = f"request {rid} for {m}/{n}" if rid is not None else f"{m}/{n}"
            return f"{actor} commented on {on}"
        case VersionCheckReported(model=m, version=n, check=check, after=after):
            return f"{actor} reported check {check} on {m}/{n}: {after['status']}"
        case VersionAdvisoriesAffected(model=m, version=n, stage=stage, severity=severity):
            ids = ", ".join(sorted({f["advisory"] for f in event.findings}))
            return f"known vulnerabilities newly affect {m}/{n} in {stage} ({severity}): {ids}"
        case AdvisoriesLoaded(advisories=count, packages=packages):
            return f"{actor} loaded an OSV dump: {count} advisories naming {packages} packages"
        case AliasSet(model=m, alias=alias, before=before, after=after):
            moved = f" (it was {m}/{before})" if before is not None else ""
            return f"{actor} pointed {m}@{alias} at {m}/{after}{moved}"
        case AliasDeleted(model=m, alias=alias, before=before):
            return f"{actor} removed {m}@{alias} (it was {m}/{before})"
        case RequestOpened(model=m, version=n, request=rid, to_stage=stage, evaluation=ev):
            verdict = "passes" if ev.get("passed") else "fails"
            return (
                f"{actor} asked to promote {m}/{n} to {stage} (request {rid}; the policy {verdict})"
            )
        case RequestApproved(model=m, version=n, request=rid):
            return f"{actor} approved request {rid} for {m}/{n}"
        case RequestClosed(model=m, version=n, request=rid, status=status, comment=comment):
            why = f": {comment}" if comment else ""
            return f"request {rid} for {m}/{n} was {status} by {actor}{why}"
        case PolicyApplied(model=m, version=v):
            return f"{actor} applied version {v} of the policy of {m or 'the registry'}"
        case ModelCreated(model=m):
            return f"{actor} created model {m}"
        case ModelUpdated(model=m):
            return f"{actor} edited model {m}: {event.describe()}"
        case ModelDeleted(model=m):
            return f"{actor} deleted model {m}"
        case ProtectedAliasesSet(model=m):
            return f"{actor} changed the protected aliases of {m}: {event.describe()}"
        case PrincipalCreated(principal=p, after=after):
            return f"{actor} created {after['kind'].replace('_', ' ')} {p}"
        case PrincipalDisabled(principal=p):
            return f"{actor} disabled {p}"
        case TeamDeleted(principal=p):
            return f"{actor} deleted team {p}"
        case TeamMemberAdded(principal=team, member=member):
            return f"{actor} added {member} to team {team}"
        case TeamMemberRemoved(principal=team, member=member):
            return f"{actor} removed {member} from team {team}"
        case TokenCreated(principal=p, after=after):
            return f"{actor} created token {after.get('id')} for {p}"
        case TokenRevoked(principal=p, token=token):
            return f"{actor} revoked token {token} of {p}"
        case GrantSet(model=m, principal=p, after=role):
            return f"{actor} granted {p} {role} {_where(m)}"
        case GrantRevoked(model=m, principal=p, before=role):
            return f"{actor} removed {p}'s {role} role {_where(m)}"
        case PasswordSet(principal=p):
            return f"{actor} set the password of {p}"
        case SessionStarted(principal=p, method=method, client=client):
            return f"{p} signed in with a {method}" + (f" from {client}" if client else "")
        case SessionEnded(principal=p, reason=reason):
            return f"{p}'s session ended ({reason.replace('_', ' ')})"
        case WebhookEvent():
            return _webhook(actor, event)
    return None


def _webhook(actor: str, e: WebhookEvent) -> str | None:
    hook = f"webhook {e.webhook}" + (f" of {e.model}" if e.model else " (registry-wide)")
    match e:
        case WebhookCreated():
            return f"{actor} added {hook}: {e.url} for {', '.join(e.events)}"
        case WebhookUpdated(after=after):
            return f"{actor} changed the {', '.join(sorted(after))} of {hook}"
        case WebhookDeleted():
            return f"{actor} deleted {hook} ({e.url})"
        case WebhookSecretRotated():
            return f"{actor} rotated the signing secret of {hook}"
        case WebhookDisabled(reason=reason):
            return f"{actor} disabled {hook}" + (f": {reason}" if reason else "")
        case WebhookEnabled():
            return f"{actor} enabled {hook}"
    return None


_CARD_ORIGINS = {
    "edited": "",
    "file": " from MODEL_CARD.md among its files",
    "attachment": " from MODEL_CARD.md among its attachments",
    "previous": " from the previous version's card",
}


def _staged(actor: str, e: VersionStaged) -> str:
    subject = f"{e.model}/{e.version}"
    if e.reason == "demotion":
        by = f" (replaced by {e.model}/{e.replaced_by})" if e.replaced_by else ""
        return f"{subject} left {e.before} for {e.after}{by}"
    if e.reason == "rollback":
        if e.replaces is not None:
            was = f"{e.model}/{e.replaces}"
            return f"{actor} rolled {e.model}@{e.after} back to {subject} (from {was})"
        return f"{actor} moved {subject} out of {e.before} to {e.after} (rollback)"
    if e.reason == "archive":
        return f"{actor} archived {subject} (it was in {e.before})"
    if e.reason == "restore":
        return f"{actor} restored {subject} to {e.after}"
    if e.reason == "override":
        return f"{actor} promoted {subject} to {e.after}, overriding the policy: {e.override}"
    if e.request is not None:
        approvers = ", ".join(e.approvals or []) or "nobody"
        by = e.requester or actor
        how = f"approved by {approvers}, request {e.request}"
        return f"{by} promoted {subject} to {e.after} ({how})"
    return f"{actor} promoted {subject} to {e.after}"


def _where(model: str | None) -> str:
    return f"on {model}" if model else "registry-wide"
