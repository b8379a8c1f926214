"""Rules: the search language judged against one version, as policies and the gate use it.

Pure: no database. That rules and searches agree on every field is shown on SQLite and
PostgreSQL in test_filters.py; policies with checks, end to end, in test_checks.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from modelyard.domain.comparison import evaluate_gate
from modelyard.domain.errors import InvalidFilter
from modelyard.domain.filters import Comparison, Field, parse_filter
from modelyard.domain.lifecycle import PolicyError, parse_policy
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import DatasetRef, Version
from modelyard.domain.rules import Subject, evaluate, parse_rule


def version(number: int, auc: float | None, **extra: object) -> Version:
    fields: dict[str, object] = {
        "model": "churn",
        "version": number,
        "manifest_digest": "sha256:" + "0" * 64,
        "files": (FileEntry("model.bin", 1, "0" * 64),),
        "size": 1,
        "framework": None,
        "format": None,
        "params": {},
        "metrics": {} if auc is None else {"auc": auc},
        "dataset": None,
        "source": None,
        "environment": None,
        "run": None,
        "creator": "dana",
        "created_at": datetime(2026, 3, 2, tzinfo=UTC),
        "tags": {},
        "description": "",
        "stage": "development",
        "aliases": (),
    }
    fields.update(extra)
    return Version(**fields)  # type: ignore[arg-type]


def holds(rule: str, candidate: Subject, current: Subject | None = None) -> bool:
    return evaluate(parse_rule(rule), candidate, current)[0]


def test_current_names_the_version_in_the_target_stage() -> None:
    assert parse_rule("metrics.auc >= current.metrics.auc - 0.005") == Comparison(
        Field("metrics", "auc"), ">=", -0.005, Field("metrics", "auc")
    )
    for text, offset in (
        ("metrics.auc >= current.metrics.auc + 0.01", 0.01),
        ("metrics.auc >= current.metrics.auc -0.01", -0.01),
        ("metrics.auc >= current.metrics.auc - -0.01", 0.01),
        ("metrics.auc >= current.metrics.`auc`", 0),
        ("metrics.auc >= CURRENT.metrics.auc", 0),
    ):
        node = parse_rule(text)
        assert isinstance(node, Comparison) and node.value == offset, text
    champion = Subject(version(3, 0.87))
    passed, detail = evaluate(
        parse_rule("metrics.auc >= current.metrics.auc - 0.005"),
        Subject(version(4, 0.84)),
        champion,
    )
    assert not passed
    assert detail == "metrics.auc = 0.84, current.metrics.auc = 0.87 (churn/3); needs >= 0.865"
    assert holds("metrics.auc >= current.metrics.auc - 0.005", Subject(version(4, 0.866)), champion)
    # Nothing in the stage: nothing to be worse than.
    assert holds("metrics.auc >= current.metrics.auc", Subject(version(1, 0.5)))
    # Missing on either side: the rule fails, saying where.
    passed, detail = evaluate(
        parse_rule("metrics.auc >= current.metrics.auc"),
        Subject(version(4, 0.9)),
        Subject(version(3, None)),
    )
    assert (passed, detail) == (False, "current.metrics.auc is missing (churn/3)")
    assert not holds("metrics.auc >= current.metrics.auc", Subject(version(4, None)), champion)
    # Text fields compare with the current version's too.
    same = Subject(version(3, 0.8, dataset=DatasetRef("customers", "w10")))
    assert holds(
        "dataset.name = current.dataset.name",
        Subject(version(4, 0.8, dataset=DatasetRef("customers", "w11"))),
        same,
    )


def test_computed_comparisons_tolerate_binary_noise() -> None:
    # 0.3 - 0.1 is 0.19999999999999998: "at least 0.2 better" must still hold.
    assert holds(
        "metrics.auc >= current.metrics.auc + 0.2",
        Subject(version(2, 0.3)),
        Subject(version(1, 0.1)),
    )
    assert not holds(
        "metrics.auc > current.metrics.auc + 0.2",
        Subject(version(2, 0.3)),
        Subject(version(1, 0.1)),
    )
    assert not holds(
        "metrics.auc != current.metrics.auc", Subject(version(2, 0.3)), Subject(version(1, 0.3))
    )


def test_checks_are_read_from_reported_results_not_tags() -> None:
    tagged = version(4, 0.9, tags={"check.scan": "pass"})
    assert not holds('checks.scan = "pass"', Subject(tagged))
    passed, detail = evaluate(parse_rule('checks.scan = "pass"'), Subject(tagged), None)
    assert (passed, detail) == (False, "checks.scan is missing")
    assert holds('checks.scan = "pass"', Subject(tagged, {"scan": "pass"}))
    passed, detail = evaluate(
        parse_rule('checks.scan = "pass"'), Subject(tagged, {"scan": "fail"}), None
    )
    assert (passed, detail) == (False, 'checks.scan = "fail"; needs = "pass"')
    assert holds(
        'checks.scan in ("pass", "pending") or checks.bias = "pass"',
        Subject(tagged, {"scan": "pending"}),
    )


@pytest.mark.parametrize(
    ("source", "position", "message"),
    [
        ("metrics.auc >= current.metrics.auc -", 36, "expected a number after '-'"),
        ("metrics.auc >= current.name", 15, "takes a number, and 'current.name' is a string"),
        ("name = current.name + 1", 20, "only numbers take '\\+ N' or '- N'"),
        ("metrics.auc >= current.colour", 15, "unknown field 'colour' for rules"),
        ("metrics.auc >= current.metrics.auc and", 38, "expected a field"),
        ("", 0, "a rule cannot be empty"),
    ],
)
def test_rule_errors_point_at_the_mistake(source: str, position: int, message: str) -> None:
    with pytest.raises(InvalidFilter, match=message) as caught:
        parse_rule(source)
    assert caught.value.details["position"] == position


def test_searches_take_neither_current_nor_checks_nor_double_equals() -> None:
    with pytest.raises(InvalidFilter, match="expected a value after '>='"):
        parse_filter("metrics.auc >= current.metrics.auc")
    with pytest.raises(InvalidFilter, match=r"unknown field 'checks\.scan'"):
        parse_filter('checks.scan = "pass"')
    with pytest.raises(InvalidFilter, match="'==' is written '='") as caught:
        parse_filter("metrics.auc == 0.9")
    assert caught.value.details["position"] == 12


def test_old_policy_rules_parse_into_the_new_language() -> None:
    policy = parse_policy(
        {
            "promotion": {
                "production": {
                    "require": [
                        "metrics.auc == 0.9",
                        "description",
                        "dataset",
                        "source.commit",
                        {"check": "artifact_scan"},
                        'tags.team = "growth" and params.depth > 3',
                    ]
                }
            }
        }
    )
    rules = policy.for_stage("production").require
    assert [r.text for r in rules] == [
        "metrics.auc == 0.9",
        "description",
        "dataset",
        "source.commit",
        'checks.artifact_scan = "pass"',
        'tags.team = "growth" and params.depth > 3',
    ]
    assert rules[0].node == parse_rule("metrics.auc = 0.9")
    # A description is what a model card is for: either satisfies it.
    assert rules[1].node == parse_rule('description != "" or card != ""')
    good = version(
        5,
        0.9,
        description="A model card.",
        dataset=DatasetRef("customers", "w10"),
        tags={"team": "growth"},
        params={"depth": "6"},
    )
    checked = {"artifact_scan": "pass", "scan": "pass"}  # scan: the registry's own, always
    evaluation = policy.evaluate("production", Subject(good, checked), None)
    assert [r.rule for r in evaluation.failures] == ["source.commit"]
    unscanned = policy.evaluate("production", Subject(good, {"artifact_scan": "pass"}), None)
    assert [r.rule for r in unscanned.failures] == ['checks.scan = "pass"', "source.commit"]
    carded = Subject(version(5, 0.9), checked, card="# Churn")
    assert "description" not in [
        r.rule for r in policy.evaluate("production", carded, None).failures
    ]
    bare = policy.evaluate("production", Subject(version(6, 0.9)), None)
    assert {r.rule: r.detail for r in bare.failures}["dataset"] == "dataset.name is missing"


def test_a_bad_rule_in_a_policy_is_refused_with_its_position() -> None:
    document = {"promotion": {"production": {"require": ["metrics.auc >= 0.8", "metrics.auc >= "]}}}
    with pytest.raises(PolicyError) as caught:
        parse_policy(document)
    error = caught.value
    assert str(error).startswith("promotion.production.require[1]: 'metrics.auc >=' is not a rule")
    assert error.details["position"] == 14 and error.details["rule"] == "metrics.auc >="
    assert "\n  metrics.auc >=\n                ^" in str(error)
    with pytest.raises(PolicyError, match=r"require\[0\]: 42 is not a rule"):
        parse_policy({"promotion": {"production": {"require": [42]}}})


def test_the_gate_is_the_rule_metric_against_current_plus_min_delta() -> None:
    challenger, champion = version(2, 0.3), version(1, 0.1)
    assert evaluate_gate(challenger, champion, ["auc"], min_delta=0.2).passed
    assert not evaluate_gate(challenger, champion, ["auc"], min_delta=0.21).passed
    assert evaluate_gate(champion, challenger, ["auc:lower"], min_delta=0.2).passed


def test_a_rule_compares_two_fields_of_the_candidate_online_with_offline() -> None:
    """``online.metrics.auc >= metrics.auc - 0.02``: production as good as the evaluation."""
    rule = "online.metrics.auc >= metrics.auc - 0.02"
    assert parse_rule(rule) == Comparison(
        Field("online.metrics", "auc"), ">=", -0.02, Field("metrics", "auc"), current=False
    )
    assert str(Field("online.metrics", "val auc")) == "online.metrics.`val auc`"
    served = Subject(version(1, 0.86), online={"auc": 0.85})
    assert holds(rule, served)  # no current version needed: both sides are the candidate's
    assert holds("online.metrics.`auc` >= metrics.auc - 0.01", served)  # 0.85 vs 0.85: noise
    passed, detail = evaluate(
        parse_rule(rule), Subject(version(1, 0.86), online={"auc": 0.8}), None
    )
    assert (passed, detail) == (
        False,
        "online.metrics.auc = 0.8, metrics.auc = 0.86; needs >= 0.84",
    )
    _, missing = evaluate(parse_rule(rule), Subject(version(1, 0.86)), None)
    assert missing == "online.metrics.auc is missing"
    _, offline_missing = evaluate(
        parse_rule(rule), Subject(version(1, None), online={"auc": 1.0}), None
    )
    assert offline_missing == "metrics.auc is missing"
    with pytest.raises(InvalidFilter, match=r"'online\.metrics\.auc' takes a number, and 'stage'"):
        parse_rule("online.metrics.auc >= stage")
    with pytest.raises(InvalidFilter, match="unknown field 'production'"):
        parse_rule("stage = production")  # a bare word is a field: quote a value


def test_advisories_severity_orders_on_its_scale_with_unknown_above_all() -> None:
    def holds(value: str | None, rule: str, current: str | None = "high") -> bool:
        candidate = Subject(version(2, None), advisories=value)
        occupant = Subject(version(1, None), advisories=current)
        return evaluate(parse_rule(rule), candidate, occupant)[0]

    assert holds("medium", "advisories.severity < high")  # bare or quoted, any case
    assert holds("medium", 'advisories.severity <= "MEDIUM"')
    assert not holds("critical", "advisories.severity < high")
    assert not holds("unknown", "advisories.severity <= critical")  # nothing shows it lower
    assert holds("none", "advisories.severity in (none, low)")
    assert holds("medium", "advisories.severity <= current.advisories.severity")
    assert not holds("critical", "advisories.severity <= current.advisories.severity")
    assert not holds(None, "advisories.severity < critical")  # no check: missing
    limit = parse_rule("advisories.severity < high")
    assert evaluate(limit, Subject(version(1, None)), None) == (
        False,
        "advisories.severity is missing",
    )
    assert evaluate(limit, Subject(version(1, None), advisories="high"), None) == (
        False,
        'advisories.severity = "high"; needs < "high"',  # the value, as every rule names it
    )
    for bad, message in (
        ('advisories.severity < "severe"', "takes a severity"),
        ("advisories.severity < 3", "takes a severity"),
        ('advisories.severity like "h%"', "'like' needs a text field"),
        ("advisories.severity < current.advisories.severity + 1", "only numbers take"),
    ):
        with pytest.raises(InvalidFilter, match=message):
            parse_rule(bad)
    with pytest.raises(InvalidFilter, match=r"unknown field 'advisories\.severity'"):
        parse_filter("advisories.severity < high")  # a rule's field, not a search's
