"""Stages, promotion policies and their evaluation: the rules of the lifecycle, pure.

A policy is a document (YAML or JSON) stored and versioned in the registry:

    stages:                          # optional; these are the defaults
      development: {}
      staging: {protected: true}
      production: {exclusive: true, protected: true, demote_to: archived}
    promotion:
      production:
        require:
          - metrics.auc >= 0.85
          - metrics.auc >= current.metrics.auc - 0.005
          - description               # a description, or a model card
          - card                      # a model card (or: card like "%## Evaluation%")
          - dataset
          - source.commit
          - checks.artifact_scan = "pass"   # reported by a checker (or: check: artifact_scan)
        approvals: {count: 1, team: risk}
        signed_by: [release-team]     # a signature by a key of each (a user, or a member)

Each rule is a rule of domain/rules.py: the search language, with ``current.FIELD`` naming
the version now in the target stage and ``checks.NAME`` the checks reported on the
candidate, ``card`` the text of its model card. The bare fields ``description``, ``card``,
``dataset``, ``dataset.digest``, ``source`` and ``source.commit`` mean "present" (a card
satisfies ``description``), and ``{check: NAME}`` means ``checks.NAME = "pass"``: the
policy syntax from before rules were filters, kept so that stored policies still work.

The service evaluates it when a promotion is requested and again when it executes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from modelyard.domain.access import validate_principal_name
from modelyard.domain.errors import InvalidFilter, InvalidInput
from modelyard.domain.filters import Field, Node
from modelyard.domain.models import Version, iso, parse_iso
from modelyard.domain.names import validate_alias_name
from modelyard.domain.rules import Subject, evaluate, parse_rule

ARCHIVED: Final = "archived"
MAX_POLICY_TEXT: Final = 64 * 1024
# The "is present" rules, as the rule each means. A description is what a card is for,
# so a card satisfies it.
REQUIRED_FIELDS: Final = {
    "description": 'description != "" or card != ""',
    "card": 'card != ""',
    "dataset": 'dataset.name != ""',
    "dataset.digest": 'dataset.digest != ""',
    "source": 'source.repo != ""',
    "source.commit": 'source.commit != ""',
}


class PolicyError(InvalidInput):
    default_code = "invalid_policy"
    title = "Invalid policy"


@dataclass(frozen=True, slots=True)
class StageSpec:
    """One stage: exclusive (one occupant; promoting moves the old one to ``demote_to``)
    and protected (getting in takes an approved request)."""

    name: str
    exclusive: bool = False
    protected: bool = False
    demote_to: str = ARCHIVED

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "exclusive": self.exclusive,
            "protected": self.protected,
            "demote_to": self.demote_to,
        }


DEFAULT_STAGES: Final = (
    StageSpec("development"),
    StageSpec("staging", protected=True),
    StageSpec("production", exclusive=True, protected=True),
)


@dataclass(frozen=True, slots=True)
class Approvals:
    """How many distinct approvers a promotion needs, and who counts: members of ``team``,
    or (without a team) maintainers of the model. The requester never counts unless
    ``allow_self`` says so."""

    count: int = 1
    team: str | None = None
    allow_self: bool = False


@dataclass(frozen=True, slots=True)
class RuleResult:
    rule: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "passed": self.passed, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuleResult:
        return cls(data["rule"], bool(data["passed"]), data.get("detail", ""))


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What the policy said about one promotion, kept with the request and in the journal."""

    stage: str
    results: tuple[RuleResult, ...]
    policy_version: int | None = None

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[RuleResult]:
        return [r for r in self.results if not r.passed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "passed": self.passed,
            "policy_version": self.policy_version,
            "results": [r.as_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        return cls(
            stage=data["stage"],
            results=tuple(RuleResult.from_dict(r) for r in data.get("results") or ()),
            policy_version=data.get("policy_version"),
        )


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """A rule as the policy states it (``text``, shown in evaluations) and as parsed."""

    text: str
    node: Node


SCAN_RULE: Final = PolicyRule('checks.scan = "pass"', parse_rule('checks.scan = "pass"'))


@dataclass(frozen=True, slots=True)
class StagePolicy:
    require: tuple[PolicyRule, ...] = ()
    approvals: Approvals = field(default_factory=Approvals)
    # Principals (users, service accounts, teams) each of whom must have signed the
    # candidate: with a key registered to them, or to one of the team's members.
    signed_by: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    stages: tuple[StageSpec, ...] = DEFAULT_STAGES
    promotion: dict[str, StagePolicy] = field(default_factory=dict)

    def stage(self, name: str) -> StageSpec:
        for spec in self.stages:
            if spec.name == name:
                return spec
        names = ", ".join(s.name for s in self.stages)
        raise InvalidInput(
            f"unknown stage {name!r}: this model's stages are {names} (and {ARCHIVED})",
            code="unknown_stage",
        )

    @property
    def stage_names(self) -> tuple[str, ...]:
        return (*(s.name for s in self.stages), ARCHIVED)

    def for_stage(self, name: str) -> StagePolicy:
        return self.promotion.get(name, StagePolicy())

    def evaluate(self, stage: str, candidate: Subject, current: Subject | None) -> Evaluation:
        """Every rule of the stage against the candidate and the stage's current version.

        Beyond the first stage, the registry's own scan must pass whatever the policy says
        (``SCAN_RULE``, listed first): a model file is code, and one that imports what the
        allowlist does not know leaves development only once an admin accepts it."""
        stage_policy = self.for_stage(stage)
        rules = stage_policy.require
        if stage != self.stages[0].name and all(r.text != SCAN_RULE.text for r in rules):
            rules = (SCAN_RULE, *rules)
        results = []
        for rule in rules:
            passed, detail = evaluate(rule.node, candidate, current)
            results.append(RuleResult(rule.text, passed, detail))
        for name in stage_policy.signed_by:
            passed = name in candidate.signers
            detail = "signed" if passed else f"no signature by a key of {name} (or a member)"
            results.append(RuleResult(f"signed_by {name}", passed, detail))
        return Evaluation(stage, tuple(results))


def parse_policy(data: Any) -> Policy:
    """Validate a policy document (the parsed YAML/JSON) into a Policy, naming any mistake."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError("a policy is a mapping with 'stages' and/or 'promotion'")
    unknown = set(data) - {"stages", "promotion"}
    if unknown:
        raise PolicyError(f"unknown policy keys: {', '.join(sorted(unknown))}")
    stages = _parse_stages(data.get("stages"))
    names = {s.name for s in stages} | {ARCHIVED}
    for spec in stages:
        if spec.demote_to not in names or spec.demote_to == spec.name:
            raise PolicyError(f"stage {spec.name}: demote_to {spec.demote_to!r} is not a stage")
    promotion: dict[str, StagePolicy] = {}
    raw = data.get("promotion") or {}
    if not isinstance(raw, dict):
        raise PolicyError("'promotion' maps stage names to {require, approvals}")
    for stage, entry in raw.items():
        if stage not in names or stage == ARCHIVED:
            raise PolicyError(f"promotion: {stage!r} is not one of the stages")
        promotion[stage] = _parse_stage_policy(stage, entry or {})
    return Policy(stages, promotion)


def _parse_stages(raw: Any) -> tuple[StageSpec, ...]:
    if raw is None:
        return DEFAULT_STAGES
    if not isinstance(raw, dict) or not raw:
        raise PolicyError("'stages' maps each stage name, in order, to its settings")
    stages = []
    for name, settings in raw.items():
        validate_alias_name(str(name))
        if name == ARCHIVED:
            raise PolicyError(f"{ARCHIVED!r} is always there; do not list it")
        settings = settings or {}
        if not isinstance(settings, dict) or set(settings) - {
            "exclusive",
            "protected",
            "demote_to",
        }:
            raise PolicyError(f"stage {name}: settings are exclusive, protected, demote_to")
        stages.append(
            StageSpec(
                name=str(name),
                exclusive=_bool(settings.get("exclusive", False), f"stage {name}: exclusive"),
                protected=_bool(settings.get("protected", False), f"stage {name}: protected"),
                demote_to=str(settings.get("demote_to", ARCHIVED)),
            )
        )
    return tuple(stages)


def _parse_stage_policy(stage: str, entry: Any) -> StagePolicy:
    if not isinstance(entry, dict) or set(entry) - {"require", "approvals", "signed_by"}:
        raise PolicyError(
            f"promotion.{stage}: use 'require' (a list), 'approvals' and 'signed_by' (a list)"
        )
    require = entry.get("require") or []
    if not isinstance(require, list):
        raise PolicyError(f"promotion.{stage}.require is a list of rules")
    rules = tuple(
        _parse_rule(item, f"promotion.{stage}.require[{i}]") for i, item in enumerate(require)
    )
    approvals = entry.get("approvals") or {}
    if not isinstance(approvals, dict) or set(approvals) - {"count", "team", "allow_self"}:
        raise PolicyError(f"promotion.{stage}.approvals: use count, team, allow_self")
    count = approvals.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 20:
        raise PolicyError(f"promotion.{stage}.approvals.count must be a number from 0 to 20")
    team = approvals.get("team")
    signed_by = entry.get("signed_by") or []
    if not isinstance(signed_by, list) or not all(isinstance(n, str) for n in signed_by):
        raise PolicyError(
            f"promotion.{stage}.signed_by is a list of users, service accounts or teams,"
            " e.g. [release-team]"
        )
    return StagePolicy(
        signed_by=tuple(validate_principal_name(n) for n in signed_by),
        require=rules,
        approvals=Approvals(
            count=count,
            team=str(team) if team is not None else None,
            allow_self=_bool(approvals.get("allow_self", False), f"{stage}.allow_self"),
        ),
    )


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(f"{what} must be true or false")
    return value


def _parse_rule(item: Any, where: str) -> PolicyRule:
    """A rule of the search language, or one of the older forms, translated into it."""
    if isinstance(item, dict) and set(item) == {"check"} and isinstance(item["check"], str):
        text = f'{Field("checks", item["check"])} = "pass"'
    elif isinstance(item, str) and item.strip():
        text = item.strip()
    else:
        raise PolicyError(
            f"{where}: {item!r} is not a rule; use e.g. 'metrics.auc >= 0.85',"
            " 'metrics.auc >= current.metrics.auc - 0.005', 'checks.scan = \"pass\"'"
        )
    try:
        node = parse_rule(REQUIRED_FIELDS.get(text, text))
    except InvalidFilter as exc:
        raise PolicyError(
            f"{where}: {text!r} is not a rule: {exc}", rule=text, **exc.details
        ) from None
    return PolicyRule(text, node)


# -- requests -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Approval:
    approver: str
    comment: str
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"approver": self.approver, "comment": self.comment, "at": iso(self.at)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Approval:
        return cls(data["approver"], data.get("comment") or "", parse_iso(data["at"]))


@dataclass(frozen=True, slots=True)
class TransitionRequest:
    """A promotion into a protected stage, waiting for approvals (or decided)."""

    id: int
    model: str
    version: int
    to_stage: str
    status: str  # open, executed, rejected, cancelled, invalidated, refused
    requester: str
    comment: str
    created_at: datetime
    updated_at: datetime
    approvals_needed: int
    approvals: tuple[Approval, ...]
    evaluation: Evaluation
    decided_by: str | None = None
    decision: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "to_stage": self.to_stage,
            "status": self.status,
            "requester": self.requester,
            "comment": self.comment,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "approvals_needed": self.approvals_needed,
            "approvals": [a.as_dict() for a in self.approvals],
            "evaluation": self.evaluation.as_dict(),
            "decided_by": self.decided_by,
            "decision": self.decision,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransitionRequest:
        return cls(
            id=int(data["id"]),
            model=data["model"],
            version=int(data["version"]),
            to_stage=data["to_stage"],
            status=data["status"],
            requester=data["requester"],
            comment=data.get("comment") or "",
            created_at=parse_iso(data["created_at"]),
            updated_at=parse_iso(data["updated_at"]),
            approvals_needed=int(data["approvals_needed"]),
            approvals=tuple(Approval.from_dict(a) for a in data.get("approvals") or ()),
            evaluation=Evaluation.from_dict(data["evaluation"]),
            decided_by=data.get("decided_by"),
            decision=data.get("decision") or "",
        )


@dataclass(frozen=True, slots=True)
class Promotion:
    """The outcome of `promote`: executed at once, or a request opened."""

    status: str  # executed or open
    version: Version
    request: TransitionRequest | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "version": self.version.as_dict(),
            "request": self.request.as_dict() if self.request else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Promotion:
        request = data.get("request")
        return cls(
            status=data["status"],
            version=Version.from_dict(data["version"]),
            request=TransitionRequest.from_dict(request) if request else None,
        )


@dataclass(frozen=True, slots=True)
class ModelAsOf:
    """What every stage and alias of a model held at a moment, replayed from the journal:
    an auditor's "what was in production when this prediction was made"."""

    model: str
    at: datetime
    stages: dict[str, tuple[int, ...]]  # each stage's versions, the newest to enter first
    aliases: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "at": iso(self.at),
            "stages": {stage: list(numbers) for stage, numbers in self.stages.items()},
            "aliases": dict(self.aliases),
        }
