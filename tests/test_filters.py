"""The filter language: parsing and its errors, then real queries on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, select

from modelyard.domain.errors import InvalidFilter
from modelyard.domain.filters import (
    MAX_DEPTH,
    MAX_FILTER_LENGTH,
    And,
    Comparison,
    Field,
    Not,
    Or,
    OrderTerm,
    parse_filter,
    parse_order_by,
)
from modelyard.domain.rules import Subject, evaluate, parse_rule
from modelyard.storage.db.filters import (
    model_condition,
    model_order_by,
    version_condition,
    version_order_by,
    version_sort_key,
)
from modelyard.storage.db.store import Reader
from modelyard.storage.db.tables import (
    metadata,
    model_tags,
    models,
    online_metrics_latest,
    version_metrics,
    version_params,
    version_tags,
    versions,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An engine on an empty database with the Modelyard schema, on each backend."""
    if request.param == "sqlite":
        engine = create_engine("sqlite://")
        metadata.create_all(engine)
    else:  # conftest's per-process PostgreSQL database, migrated and emptied for this test
        engine = create_engine(request.getfixturevalue("pg_url"))
    try:
        yield engine
    finally:
        engine.dispose()


def field(name: str) -> Field:
    namespace, dot, key = name.partition(".")
    return Field(namespace, key) if dot else Field(None, name)


def cmp(name: str, op: Any, value: Any) -> Comparison:
    return Comparison(field(name), op, value)


def micros(year: int, month: int, day: int, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp()) * 1_000_000


# -- parser ---------------------------------------------------------------------------------


def test_example_filter_parses_to_the_expected_ast() -> None:
    node = parse_filter(
        'metrics.auc >= 0.85 and tags.team = "growth"'
        ' and (stage = "production" or name like "churn%")'
    )
    assert node == And(
        (
            cmp("metrics.auc", ">=", 0.85),
            cmp("tags.team", "=", "growth"),
            Or((cmp("stage", "=", "production"), cmp("name", "like", "churn%"))),
        )
    )


def test_blank_filter_is_none() -> None:
    assert parse_filter("") is None
    assert parse_filter("  \n\t ") is None


def test_precedence_is_not_then_and_then_or() -> None:
    a, b, c = cmp("stage", "=", "a"), cmp("stage", "=", "b"), cmp("stage", "=", "c")
    assert parse_filter('stage = "a" or stage = "b" and not stage = "c"') == Or(
        (a, And((b, Not(c))))
    )
    assert parse_filter('(stage = "a" or stage = "b") and stage = "c"') == And((Or((a, b)), c))
    assert parse_filter('not (stage = "a" or stage = "b")') == Not(Or((a, b)))
    assert parse_filter('not not stage = "a"') == Not(Not(a))
    assert parse_filter('stage = "a" and stage = "b" and stage = "c"') == And((a, b, c))


def test_keywords_are_case_insensitive() -> None:
    node = parse_filter('stage = "a" AND NOT name LIKE "b%" Or version Not In (1, 2)')
    assert node == Or(
        (
            And((cmp("stage", "=", "a"), Not(cmp("name", "like", "b%")))),
            cmp("version", "not in", (1, 2)),
        )
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('name = "churn"', cmp("name", "=", "churn")),
        ("name = 'it\\'s'", cmp("name", "=", "it's")),
        ('name = "a\\"b\\\\c\\n"', cmp("name", "=", 'a"b\\c\n')),
        ('name like "100\\%"', cmp("name", "like", "100\\%")),
        ("version != 3", cmp("version", "!=", 3)),
        ("metrics.loss < -0.5", cmp("metrics.loss", "<", -0.5)),
        ("metrics.loss <= 1e-3", cmp("metrics.loss", "<=", 0.001)),
        ("metrics.n > -2E+3", cmp("metrics.n", ">", -2000.0)),
        ("metrics.n>=.5", cmp("metrics.n", ">=", 0.5)),
        ("source.dirty = TRUE", cmp("source.dirty", "=", True)),
        ("source.dirty != false", cmp("source.dirty", "!=", False)),
        ('params.max_depth in (5, "auto")', cmp("params.max_depth", "in", (5, "auto"))),
        ('stage not in ("a")', cmp("stage", "not in", ("a",))),
        ('dataset.digest = "sha256:ab"', cmp("dataset.digest", "=", "sha256:ab")),
        ('tags.k8s/ns:x-y_z.w = "v"', Comparison(Field("tags", "k8s/ns:x-y_z.w"), "=", "v")),
        ("metrics.val.auc > 0", Comparison(Field("metrics", "val.auc"), ">", 0)),
        ("metrics.`my key` > 0", Comparison(Field("metrics", "my key"), ">", 0)),
        ('created >= "2024-09-01"', cmp("created", ">=", micros(2024, 9, 1))),
        ('created < "2024-09-01T12:00:00Z"', cmp("created", "<", micros(2024, 9, 1, 12))),
        ('created < "2024-09-01T12:00:00"', cmp("created", "<", micros(2024, 9, 1, 12))),
        ('created = "2024-09-01T14:00:00+02:00"', cmp("created", "=", micros(2024, 9, 1, 12))),
        (
            'created = "2024-09-01T12:00:00.000001Z"',
            cmp("created", "=", micros(2024, 9, 1, 12) + 1),
        ),
    ],
)
def test_values_and_fields(source: str, expected: Comparison) -> None:
    assert parse_filter(source) == expected


def test_fields_depend_on_the_target() -> None:
    assert parse_filter("latest_version > 2", target="models") == cmp("latest_version", ">", 2)
    assert parse_filter('updated < "2024-01-01"', "models") == cmp(
        "updated", "<", micros(2024, 1, 1)
    )
    with pytest.raises(InvalidFilter, match="unknown field 'version' for models"):
        parse_filter("version > 2", target="models")
    with pytest.raises(InvalidFilter, match=r"unknown field 'metrics\.auc' for models"):
        parse_filter("metrics.auc > 2", target="models")
    with pytest.raises(InvalidFilter, match="unknown field 'latest_version' for versions"):
        parse_filter("latest_version > 2")


@pytest.mark.parametrize(
    ("source", "position", "message"),
    [
        ("metrics.auc >=", 14, "expected a value after '>=' at position 14"),
        ("metrics.auc >= and", 15, "expected a value after '>=' at position 15 (found 'and')"),
        ('name = "abc', 7, 'unterminated string: no closing "'),
        ("name = 'abc\\'", 7, "unterminated string: no closing '"),
        ('(name = "a"', 11, "expected ')' at position 11 to close the '(' at position 0"),
        ('name = "a")', 10, "expected 'and', 'or' or the end of the filter"),
        ('name = "a" and', 14, "expected a field such as 'name' or 'metrics.auc'"),
        ('= "a"', 0, "expected a field"),
        ('name ~ "a"', 5, "unexpected character '~'"),
        ('name "a"', 5, "expected an operator (= != < <= > >= like in, not like, not in)"),
        ('name not = "a"', 9, "expected 'like' or 'in' after 'not'"),
        ('stage in "a"', 9, "expected '(' after 'in'"),
        ('stage in ("a" "b")', 14, "expected ',' or ')' in the 'in' list"),
        ("stage in ()", 10, "expected a value after '('"),
        ('stage in ("a",)', 14, "expected a value after ','"),
        ("metrics.auc > 1x", 14, "malformed number"),
        ("metrics.auc > 1.2.3", 14, "malformed number"),
        ("version > 99999999999999999999", 10, "integer out of range"),
        ("metrics.auc > 1e999", 14, "number out of range"),
        ('name = "a\\q"', 9, "unknown escape '\\q'"),
        ('name = "a\x00"', 9, "NUL is not allowed"),
        ('name like "abc\\\\"', 10, "must not end with a lone '\\'"),
        ('tags. = "a"', 0, "'tags' needs a key, as in tags.<key>"),
        ("metrics.`my key > 1", 8, "unterminated `quoted key`"),
        ("metrics.`` > 1", 8, "must be non-empty"),
        ("metrics.a.`b` > 1", 0, "must follow the namespace"),
        ("foo = 1", 0, "unknown field 'foo' for versions at position 0; valid fields: name, "),
        ("Name = 'x'", 0, "unknown field 'Name'"),
    ],
)
def test_syntax_errors_point_at_the_mistake(source: str, position: int, message: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse_filter(source)
    error = caught.value
    assert error.details["position"] == position
    assert error.code == "invalid_filter"
    assert message in error.message


@pytest.mark.parametrize(
    ("source", "position", "message"),
    [
        ('metrics.auc = "x"', 14, "'metrics.auc' takes a number, not a string"),
        ('version = "2"', 10, "'version' takes a number, not a string"),
        ("metrics.auc = true", 14, "'metrics.auc' takes a number, not true"),
        ("tags.team = 5", 12, "'tags.team' takes a string, not the number 5 (quote it"),
        ("params.shuffle = true", 17, "'params.shuffle' takes a string or a number, not true"),
        ('created >= "yesterday"', 11, "'created' takes an ISO date or datetime in quotes"),
        ("created >= 5", 11, "'created' takes an ISO date or datetime"),
        ('metrics.auc like "0.8%"', 12, "'like' needs a text field; 'metrics.auc' takes a number"),
        ('created not like "2024%"', 12, "'like' needs a text field"),
        ("name like 5", 10, "'like' needs a quoted pattern"),
        ('source.dirty = "yes"', 15, "'source.dirty' takes true or false, not a string"),
        ("source.dirty < true", 13, "'source.dirty' takes only = or !="),
        ("source.dirty in (true)", 13, "'source.dirty' takes only = or !="),
        ('stage in ("a", 2)', 15, "'stage' takes a string, not the number 2"),
    ],
)
def test_type_errors_point_at_the_value(source: str, position: int, message: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse_filter(source)
    assert caught.value.details["position"] == position
    assert message in caught.value.message


def test_error_message_shows_a_caret_under_the_position() -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse_filter("metrics.auc >=")
    assert caught.value.message.splitlines() == [
        "expected a value after '>=' at position 14",
        "  metrics.auc >=",
        "                ^",
    ]


def test_caret_stays_aligned_in_long_and_multiline_filters() -> None:
    source = " or ".join(f'tags.k{i} = "v{i}"' for i in range(40)) + " or\nbad"
    with pytest.raises(InvalidFilter) as caught:
        parse_filter(source)
    position = caught.value.details["position"]
    assert position == source.index("bad")
    _, line, caret = caught.value.message.splitlines()
    assert line.startswith("  ...")
    assert len(line) < 100
    assert line[caret.index("^") :].startswith("bad")


def test_unknown_field_lists_the_valid_fields() -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse_filter("foo = 1", target="models")
    first_line = caught.value.message.splitlines()[0]
    assert first_line.endswith(
        "valid fields: name, description, created, updated, latest_version, tags.<key>"
    )


def test_too_long_filter_is_rejected() -> None:
    ok = 'name = "' + "a" * (MAX_FILTER_LENGTH - 9) + '"'
    assert len(ok) == MAX_FILTER_LENGTH
    assert parse_filter(ok) == cmp("name", "=", "a" * (MAX_FILTER_LENGTH - 9))
    with pytest.raises(InvalidFilter, match="longer than 4096 characters") as caught:
        parse_filter(ok + " ")
    assert caught.value.details["position"] == MAX_FILTER_LENGTH


def test_too_deep_filter_is_rejected() -> None:
    deepest = "(" * MAX_DEPTH + 'name = "a"' + ")" * MAX_DEPTH
    assert parse_filter(deepest) == cmp("name", "=", "a")
    with pytest.raises(InvalidFilter, match="nests deeper than 32 levels") as caught:
        parse_filter("(" + deepest + ")")
    assert caught.value.details["position"] == MAX_DEPTH
    with pytest.raises(InvalidFilter, match="nests deeper") as caught:
        parse_filter("not " * (MAX_DEPTH + 1) + 'name = "a"')
    assert caught.value.details["position"] == 4 * MAX_DEPTH


def test_parse_order_by() -> None:
    assert parse_order_by("metrics.auc DESC, name, version asc") == [
        OrderTerm(field("metrics.auc"), descending=True),
        OrderTerm(field("name")),
        OrderTerm(field("version")),
    ]
    assert parse_order_by("  ") == []
    assert parse_order_by("updated desc", target="models") == [OrderTerm(field("updated"), True)]


@pytest.mark.parametrize(
    ("source", "position", "message"),
    [
        ("name,", 5, "expected a field"),
        ("name up", 5, "expected 'asc', 'desc', ',' or the end"),
        ("metrics.auc desc desc", 17, "expected 'asc', 'desc', ',' or the end"),
        ("name, foo", 6, "unknown field 'foo'"),
        ("desc", 0, "expected a field"),
    ],
)
def test_order_by_errors(source: str, position: int, message: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse_order_by(source)
    assert caught.value.details["position"] == position
    assert message in caught.value.message


# -- SQL on SQLite and PostgreSQL ------------------------------------------------------------


@pytest.fixture
def registry_db(db_engine: Engine) -> Engine:
    """Two models, five versions with tags, params and metrics, inserted row by row."""
    version_rows: list[dict[str, Any]] = [
        # id, model_id, number, stage, creator, created, framework, description, run, dataset, dirty
        dict(
            id=1, model_id=1, number=1, stage="development", creator="alice",
            created_at=micros(2024, 8, 15), framework="sklearn", description="baseline",
            run="exp_1-a", dataset_name="customers", source_dirty=False,
        ),
        dict(
            id=2, model_id=1, number=2, stage="production", creator="bob",
            created_at=micros(2024, 9, 2), framework="xgboost", description="Élan tuned",
            run="exp_2", dataset_name="customers", source_dirty=True,
        ),
        dict(
            id=3, model_id=1, number=3, stage="staging", creator="alice",
            created_at=micros(2024, 9, 10, 12), framework=None, description="Churn Model",
            run="expX1", dataset_name=None, source_dirty=None,
        ),
        dict(
            id=4, model_id=2, number=1, stage="production", creator="carol",
            created_at=micros(2024, 7, 1), framework="PyTorch", description="first",
            run=None, dataset_name="transactions", source_dirty=False,
        ),
        dict(
            id=5, model_id=2, number=2, stage="archived", creator="bob",
            created_at=micros(2024, 10, 1), framework=None, description="",
            run=None, dataset_name=None, source_dirty=None,
        ),
    ]  # fmt: skip
    with db_engine.begin() as conn:
        conn.execute(
            insert(models),
            [
                dict(
                    id=1, name="churn", description="Predicts churn", latest_version=3,
                    created_at=micros(2024, 8, 1), updated_at=micros(2024, 9, 10),
                ),
                dict(
                    id=2, name="fraud", description="Fraud detector", latest_version=2,
                    created_at=micros(2024, 6, 1), updated_at=micros(2024, 10, 1),
                ),
            ],
        )  # fmt: skip
        conn.execute(
            insert(model_tags),
            [
                {"model_id": 1, "key": "team", "value": "growth"},
                {"model_id": 2, "key": "team", "value": "risk"},
            ],
        )
        conn.execute(
            insert(versions),
            [{"manifest_digest": "sha256:x", "size": 1} | row for row in version_rows],
        )
        conn.execute(
            insert(online_metrics_latest),
            [
                {"version_id": v, "key": "auc", "value": value, "end_at": micros(2024, 10, 2)}
                for v, value in [(1, 0.79), (2, 0.88), (4, 0.95)]
            ],
        )
        conn.execute(
            insert(version_tags),
            [
                {"version_id": v, "key": k, "value": value}
                for v, k, value in [
                    (1, "team", "growth"), (1, "fruit", "apple"),
                    (2, "team", "growth"), (2, "pii", "yes"), (2, "fruit", "Banana"),
                    (3, "team", "growth"),
                    (4, "team", "risk"), (4, "fruit", "cherry"),
                ]
            ],
        )  # fmt: skip
        conn.execute(
            insert(version_params),
            [
                {"version_id": v, "key": k, "value": value}
                for v, k, value in [
                    (1, "max_depth", "5"), (1, "criterion", "gini"),
                    (2, "max_depth", "12"), (2, "lr", "0.1"),
                    (3, "max_depth", "none"),
                    (4, "max_depth", "5.0"),
                    (5, "n_estimators", "300"),
                ]
            ],
        )  # fmt: skip
        conn.execute(
            insert(version_metrics),
            [
                {"version_id": v, "key": k, "value": value}
                for v, k, value in [
                    (1, "auc", 0.81), (2, "auc", 0.87), (3, "auc", 0.90), (4, "auc", 0.95),
                    (2, "val/loss", 0.3),
                ]
            ],
        )  # fmt: skip
    return db_engine


def matching(engine: Engine, source: str) -> list[str]:
    """The versions (as model/number, in id order) that the filter selects."""
    node = parse_filter(source)
    assert node is not None
    query = (
        select(models.c.name, versions.c.number)
        .select_from(versions.join(models, versions.c.model_id == models.c.id))
        .where(version_condition(node))
        .order_by(versions.c.id)
    )
    with engine.connect() as conn:
        return [f"{name}/{number}" for name, number in conn.execute(query)]


def ordered(engine: Engine, order_by: str) -> list[str]:
    query = (
        select(models.c.name, versions.c.number)
        .select_from(versions.join(models, versions.c.model_id == models.c.id))
        .order_by(*version_order_by(parse_order_by(order_by)), versions.c.id)
    )
    with engine.connect() as conn:
        return [f"{name}/{number}" for name, number in conn.execute(query)]


def matching_models(engine: Engine, source: str, order_by: str = "") -> list[str]:
    node = parse_filter(source, target="models")
    query = select(models.c.name).order_by(
        *model_order_by(parse_order_by(order_by, target="models")), models.c.id
    )
    if node is not None:
        query = query.where(model_condition(node))
    with engine.connect() as conn:
        return list(conn.scalars(query))


def test_numeric_metric_comparisons(registry_db: Engine) -> None:
    assert matching(registry_db, "metrics.auc >= 0.87") == ["churn/2", "churn/3", "fraud/1"]
    assert matching(registry_db, "metrics.auc < 0.9") == ["churn/1", "churn/2"]
    assert matching(registry_db, "metrics.auc = 0.9") == ["churn/3"]
    assert matching(registry_db, "metrics.auc in (0.81, 0.95)") == ["churn/1", "fraud/1"]
    assert matching(registry_db, "metrics.auc != 0.81") == ["churn/2", "churn/3", "fraud/1"]
    assert matching(registry_db, "not metrics.auc = 0.81") == [
        "churn/2", "churn/3", "fraud/1", "fraud/2"
    ]  # fmt: skip
    assert matching(registry_db, "metrics.auc > 1") == []
    assert matching(registry_db, "metrics.`val/loss` < 1") == ["churn/2"]
    assert matching(registry_db, "metrics.val/loss < 1") == ["churn/2"]


def test_tag_equality(registry_db: Engine) -> None:
    assert matching(registry_db, 'tags.team = "growth"') == ["churn/1", "churn/2", "churn/3"]
    assert matching(registry_db, 'tags.team = "Growth"') == []
    # != means "has the tag, with another value"; not ... also matches versions without it
    assert matching(registry_db, 'tags.team != "growth"') == ["fraud/1"]
    assert matching(registry_db, 'not tags.team = "growth"') == ["fraud/1", "fraud/2"]
    assert matching(registry_db, 'tags.pii = "yes" and tags.team = "growth"') == ["churn/2"]


def test_params_compare_numerically_with_numbers_and_as_text_with_strings(
    registry_db: Engine,
) -> None:
    # numerically: "12" > 6 although "12" < "6" as text; "none" is skipped, not an error
    assert matching(registry_db, "params.max_depth > 6") == ["churn/2"]
    assert matching(registry_db, "params.max_depth <= 5") == ["churn/1", "fraud/1"]
    assert matching(registry_db, "params.max_depth >= -1e2") == ["churn/1", "churn/2", "fraud/1"]
    # = against a number matches its text forms, "5" and "5.0"
    assert matching(registry_db, "params.max_depth = 5") == ["churn/1", "fraud/1"]
    assert matching(registry_db, "params.max_depth = 5.0") == ["churn/1", "fraud/1"]
    assert matching(registry_db, "params.lr = 0.1") == ["churn/2"]
    assert matching(registry_db, "params.max_depth != 5") == ["churn/2", "churn/3"]
    assert matching(registry_db, "not params.max_depth = 5") == ["churn/2", "churn/3", "fraud/2"]
    assert matching(registry_db, 'params.max_depth in (12, "none")') == ["churn/2", "churn/3"]
    assert matching(registry_db, "params.max_depth not in (5, 12)") == ["churn/3"]
    # strings compare as text, by code point
    assert matching(registry_db, 'params.max_depth = "5"') == ["churn/1"]
    assert matching(registry_db, 'params.max_depth < "6"') == ["churn/1", "churn/2", "fraud/1"]
    assert matching(registry_db, 'params.criterion like "G%"') == ["churn/1"]


def test_like_is_ascii_case_insensitive_on_both_backends(registry_db: Engine) -> None:
    assert matching(registry_db, 'name like "CH%"') == ["churn/1", "churn/2", "churn/3"]
    assert matching(registry_db, 'framework like "pyt%"') == ["fraud/1"]
    assert matching(registry_db, 'description like "%model"') == ["churn/3"]
    # only A-Z fold: SQLite cannot fold other letters, so PostgreSQL must not either
    assert matching(registry_db, 'description like "élan%"') == []
    assert matching(registry_db, 'description like "Élan%"') == ["churn/2"]
    # _ is a wildcard unless escaped
    assert matching(registry_db, 'run like "exp_1%"') == ["churn/1", "churn/3"]
    assert matching(registry_db, 'run like "exp\\_1%"') == ["churn/1"]


def test_not_like_and_nulls(registry_db: Engine) -> None:
    # a missing framework matches no comparison, but `not` is the exact complement
    assert matching(registry_db, 'framework not like "%boost"') == ["churn/1", "fraud/1"]
    assert matching(registry_db, 'not framework like "%boost"') == [
        "churn/1", "churn/3", "fraud/1", "fraud/2"
    ]  # fmt: skip
    assert matching(registry_db, 'framework != "sklearn"') == ["churn/2", "fraud/1"]


def test_in_and_not_in(registry_db: Engine) -> None:
    assert matching(registry_db, 'stage in ("production", "staging")') == [
        "churn/2", "churn/3", "fraud/1"
    ]  # fmt: skip
    assert matching(registry_db, 'stage not in ("production")') == [
        "churn/1", "churn/3", "fraud/2"
    ]  # fmt: skip
    assert matching(registry_db, "version in (1, 3)") == ["churn/1", "churn/3", "fraud/1"]


def test_boolean_operators_and_parentheses(registry_db: Engine) -> None:
    example = (
        'metrics.auc >= 0.85 and tags.team = "growth"'
        ' and (stage = "production" or name like "churn%")'
    )
    assert matching(registry_db, example) == ["churn/2", "churn/3"]
    or_and = 'stage = "production" or stage = "staging" and name = "fraud"'
    assert matching(registry_db, or_and) == ["churn/2", "fraud/1"]
    grouped = '(stage = "production" or stage = "staging") and name = "fraud"'
    assert matching(registry_db, grouped) == ["fraud/1"]
    assert matching(registry_db, 'creator = "alice" and not (stage = "staging")') == ["churn/1"]
    assert matching(registry_db, 'not (name = "churn" or metrics.auc > 0.9)') == ["fraud/2"]


def test_other_fields(registry_db: Engine) -> None:
    assert matching(registry_db, "version >= 2") == ["churn/2", "churn/3", "fraud/2"]
    assert matching(registry_db, 'dataset.name = "customers"') == ["churn/1", "churn/2"]
    assert matching(registry_db, "source.dirty = true") == ["churn/2"]
    assert matching(registry_db, "source.dirty != true") == ["churn/1", "fraud/1"]
    assert matching(registry_db, "not source.dirty = true") == [
        "churn/1", "churn/3", "fraud/1", "fraud/2"
    ]  # fmt: skip
    assert matching(registry_db, 'framework > "a"') == ["churn/1", "churn/2"]  # "P" < "a"


def test_created_dates(registry_db: Engine) -> None:
    assert matching(registry_db, 'created >= "2024-09-01"') == ["churn/2", "churn/3", "fraud/2"]
    assert matching(registry_db, 'created < "2024-09-10T12:00:00Z"') == [
        "churn/1", "churn/2", "fraud/1"
    ]  # fmt: skip
    assert matching(registry_db, 'created >= "2024-09-10T13:00:00+01:00"') == ["churn/3", "fraud/2"]
    assert matching(registry_db, 'created = "2024-09-10T12:00:00Z"') == ["churn/3"]


def test_order_by_metric_and_columns(registry_db: Engine) -> None:
    # a missing metric sorts last in both directions on both backends
    assert ordered(registry_db, "metrics.auc desc") == [
        "fraud/1", "churn/3", "churn/2", "churn/1", "fraud/2"
    ]  # fmt: skip
    assert ordered(registry_db, "metrics.auc") == [
        "churn/1", "churn/2", "churn/3", "fraud/1", "fraud/2"
    ]  # fmt: skip
    assert ordered(registry_db, "name desc, version asc") == [
        "fraud/1", "fraud/2", "churn/1", "churn/2", "churn/3"
    ]  # fmt: skip
    assert ordered(registry_db, "created desc") == [
        "fraud/2", "churn/3", "churn/2", "churn/1", "fraud/1"
    ]  # fmt: skip


def test_order_by_text_is_by_code_point(registry_db: Engine) -> None:
    # "Banana" < "apple" by code point, whatever PostgreSQL's locale says
    assert ordered(registry_db, "tags.fruit") == [
        "churn/2", "churn/1", "fraud/1", "churn/3", "fraud/2"
    ]  # fmt: skip
    assert ordered(registry_db, "params.max_depth desc") == [
        "churn/3", "fraud/1", "churn/1", "churn/2", "fraud/2"
    ]  # fmt: skip


def test_sort_key_as_a_column(registry_db: Engine) -> None:
    query = (
        select(versions.c.id, version_sort_key(field("metrics.auc")))
        .select_from(versions.join(models, versions.c.model_id == models.c.id))
        .order_by(versions.c.id)
    )
    with registry_db.connect() as conn:
        assert [tuple(row) for row in conn.execute(query)] == [
            (1, 0.81), (2, 0.87), (3, 0.90), (4, 0.95), (5, None)
        ]  # fmt: skip


def test_model_search(registry_db: Engine) -> None:
    assert matching_models(registry_db, 'tags.team = "growth"') == ["churn"]
    assert matching_models(registry_db, "latest_version >= 3") == ["churn"]
    assert matching_models(registry_db, 'updated >= "2024-10-01"') == ["fraud"]
    assert matching_models(registry_db, 'created < "2024-07-01T00:00:00Z"') == ["fraud"]
    assert matching_models(registry_db, 'name like "FR%" or description like "%CHURN"') == [
        "churn", "fraud"
    ]  # fmt: skip
    assert matching_models(registry_db, 'not tags.team in ("risk")') == ["churn"]
    assert matching_models(registry_db, "", order_by="name desc") == ["fraud", "churn"]
    assert matching_models(registry_db, "", order_by="tags.team desc") == ["fraud", "churn"]


def test_compiling_a_field_of_the_other_target_is_a_bug(registry_db: Engine) -> None:
    node = parse_filter("version > 1")
    assert node is not None
    with pytest.raises(ValueError, match="'version' is not a field of this search"):
        model_condition(node)


def test_rules_judge_a_version_as_the_search_does(registry_db: Engine) -> None:
    """domain/rules.py evaluates in Python what storage compiles to SQL: on both backends,
    a rule holds for exactly the versions the same text finds."""
    sources = [
        "metrics.auc >= 0.87", "metrics.auc = 0.9", "metrics.auc != 0.81",
        "not metrics.auc = 0.81", "metrics.`val/loss` < 1", 'tags.team != "growth"',
        'not tags.team = "growth"', "params.max_depth > 6", "params.max_depth = 5",
        "params.max_depth != 5", 'params.max_depth in (12, "none")',
        "params.max_depth not in (5, 12)", 'params.max_depth < "6"',
        'params.criterion like "G%"', 'name like "CH%"', 'description like "élan%"',
        'description like "Élan%"', 'run like "exp_1%"', 'run like "exp\\_1%"',
        'framework not like "%boost"', 'not framework like "%boost"', 'framework != "sklearn"',
        'stage not in ("production")', "version in (1, 3)",
        'not (name = "churn" or metrics.auc > 0.9)', 'framework > "a"',
        'created >= "2024-09-01"', 'dataset.name = "customers" and creator = "alice"',
        'description != ""', "online.metrics.auc >= 0.88", "online.metrics.auc != 0.79",
        "not online.metrics.auc > 0.8", "online.metrics.`auc` in (0.79, 0.95)",
    ]  # fmt: skip
    with registry_db.connect() as conn:
        reader = Reader(conn)
        loaded = reader.load_versions([1, 2, 3, 4, 5])
        subjects = [Subject(v, online=reader.online_latest(i + 1)) for i, v in enumerate(loaded)]
    for source in sources:
        node = parse_rule(source)
        judged = [s.version.reference for s in subjects if evaluate(node, s, None)[0]]
        assert judged == matching(registry_db, source), source
