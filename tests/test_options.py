"""Tests for qgate.options: dataclass schemas validated with key paths and did-you-mean hints."""

# option() returns a dataclasses.field(), which is what a dataclass default should be

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from qgate.errors import ExitCode, PolicyError
from qgate.options import NoOptions, describe_schema, option, suggest, validate

# --------------------------------------------------------------------------------------------
# schemas


@dataclass
class Scalars:
    count: int = option(3, "how many", minimum=1, maximum=10)
    ratio: float = option(0.5, "a share", minimum=0, maximum=1)
    flag: bool = option(False, "a switch")
    label: str = option("x", "a name")


@dataclass
class Thresholds:
    max_delta: float | None = option(0.01, "largest allowed rise", minimum=0)
    max_domain_delta: float | None = option(None, "per-domain rise", minimum=0)
    mode: Literal["fast", "exact"] = option("fast", "how to measure")


@dataclass
class Required:
    name: str = option(help="must be given")
    limit: int = option(help="must be given too", minimum=0)


@dataclass
class Inner:
    x: list[int] = option(default_factory=list, help="integers", minimum=0)
    weights: dict[str, float] = option(default_factory=dict, help="named weights")


@dataclass
class Entry:
    use: str = option(help="the plugin")
    options: Inner = option(default_factory=Inner, help="its options")


@dataclass
class Document:
    checks: list[Entry] = option(default_factory=list, help="entries")
    backend: dict[str, Any] = option(default_factory=dict, help="anything")
    ladder: list[float] = option([1.0, 2.0], "bits", minimum=0)


def error_of(schema: type, raw: Any, **kwargs: Any) -> PolicyError:
    with pytest.raises(PolicyError) as exc:
        validate(schema, raw, **kwargs)
    return exc.value


# --------------------------------------------------------------------------------------------
# scalars


def test_defaults_fill_in_when_nothing_is_given() -> None:
    assert validate(Scalars, None) == Scalars(count=3, ratio=0.5, flag=False, label="x")
    assert validate(Scalars, {}) == Scalars()


def test_valid_scalars_are_kept() -> None:
    got = validate(Scalars, {"count": 7, "ratio": 0.25, "flag": True, "label": "hello"})
    assert got == Scalars(count=7, ratio=0.25, flag=True, label="hello")


def test_int_is_accepted_as_float_and_converted() -> None:
    got = validate(Scalars, {"ratio": 1})
    assert got.ratio == 1.0
    assert type(got.ratio) is float


@pytest.mark.parametrize("value", [True, False])
def test_bool_is_not_an_int(value: bool) -> None:
    err = error_of(Scalars, {"count": value})
    assert err.key_path == "count"
    assert "expected an integer" in str(err)
    assert f"boolean {value}" in str(err)


def test_bool_is_not_a_float() -> None:
    err = error_of(Scalars, {"ratio": True})
    assert err.key_path == "ratio"
    assert "expected a number" in str(err)


def test_float_is_not_an_int() -> None:
    err = error_of(Scalars, {"count": 2.5})
    assert "expected an integer, got number 2.5" in str(err)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("ratio", "0.5", "expected a number, got string '0.5'"),
        ("flag", "yes", "expected a boolean, got string 'yes'"),
        ("flag", 1, "expected a boolean, got number 1"),
        ("label", 5, "expected a string, got number 5"),
        ("label", None, "expected a string, got null"),
        ("count", [1], "expected an integer, got a list"),
    ],
)
def test_wrong_scalar_types_name_what_was_expected(key: str, value: Any, expected: str) -> None:
    err = error_of(Scalars, {key: value})
    assert err.key_path == key
    assert str(err) == f"{key}: {expected}"


def test_top_level_must_be_a_mapping() -> None:
    err = error_of(Scalars, [1, 2])
    assert err.key_path == "<top>"
    assert "expected a mapping, got a list" in str(err)


def test_source_is_named_first_in_the_message() -> None:
    err = error_of(Scalars, {"count": "many"}, source="/etc/policy.yaml")
    assert err.source == "/etc/policy.yaml"
    assert str(err).startswith("/etc/policy.yaml: count: expected an integer")
    assert err.exit_code == ExitCode.USAGE_ERROR == 2


# --------------------------------------------------------------------------------------------
# Optional and Literal


def test_optional_accepts_null_and_the_type() -> None:
    assert validate(Thresholds, {"max_delta": None}).max_delta is None
    assert validate(Thresholds, {"max_delta": 0}).max_delta == 0.0
    err = error_of(Thresholds, {"max_delta": "0.01"})
    assert err.key_path == "max_delta"
    assert "expected a number or null, got string '0.01'" in str(err)


def test_literal_accepts_its_choices() -> None:
    assert validate(Thresholds, {"mode": "exact"}).mode == "exact"


def test_literal_rejects_others_with_did_you_mean() -> None:
    err = error_of(Thresholds, {"mode": "exakt"})
    assert err.key_path == "mode"
    assert "expected one of 'fast', 'exact', got 'exakt'" in str(err)
    assert "(did you mean 'exact'?)" in str(err)


def test_literal_without_a_close_choice_has_no_hint() -> None:
    err = error_of(Thresholds, {"mode": "zzzzzz"})
    assert "did you mean" not in str(err)


def test_literal_of_ints_rejects_a_bool() -> None:
    @dataclass
    class Level:
        level: Literal[0, 1, 2] = 0

    with pytest.raises(PolicyError):
        validate(Level, {"level": True})


# --------------------------------------------------------------------------------------------
# unknown and missing keys


def test_unknown_key_names_the_path_and_suggests_the_nearest() -> None:
    err = error_of(Thresholds, {"max_delt": 0.02})
    assert err.key_path == "max_delt"
    message = str(err)
    assert "unknown key 'max_delt'" in message
    assert "did you mean 'max_delta'" in message
    assert "known keys: max_delta, max_domain_delta, mode" in message


def test_unknown_key_without_a_close_match_lists_the_known_ones() -> None:
    err = error_of(Thresholds, {"colour": "blue"})
    assert "did you mean" not in str(err)
    assert "known keys: max_delta, max_domain_delta, mode" in str(err)


def test_unknown_key_in_an_empty_schema() -> None:
    err = error_of(NoOptions, {"anything": 1})
    assert "known keys: none" in str(err)
    assert validate(NoOptions, None) == NoOptions()


def test_dashes_in_keys_mean_underscores() -> None:
    assert validate(Thresholds, {"max-delta": 0.2}).max_delta == 0.2


def test_missing_required_key() -> None:
    err = error_of(Required, {"name": "a"})
    assert err.key_path == "limit"
    assert "required key is missing (an integer)" in str(err)


def test_missing_required_key_under_a_path() -> None:
    err = error_of(Entry, {}, path="checks[4]")
    assert err.key_path == "checks[4].use"
    assert "required key is missing (a string)" in str(err)


# --------------------------------------------------------------------------------------------
# containers and nesting


def test_nested_dataclasses_lists_and_dicts_are_built() -> None:
    got = validate(
        Document,
        {
            "checks": [
                {"use": "a"},
                {"use": "b", "options": {"x": [1, 2, 3], "weights": {"en": 1, "code": 0.5}}},
            ],
            "backend": {"anything": [1, {"goes": None}]},
        },
    )
    assert got.checks[0] == Entry(use="a", options=Inner())
    assert got.checks[1].options.x == [1, 2, 3]
    assert got.checks[1].options.weights == {"en": 1.0, "code": 0.5}
    assert isinstance(got.checks[1].options.weights["en"], float)
    assert got.backend == {"anything": [1, {"goes": None}]}
    assert got.ladder == [1.0, 2.0]


def test_list_item_path_inside_nested_dataclasses() -> None:
    raw = {"checks": [{"use": "a"}, {"use": "b", "options": {"x": [1, 2, "three"]}}]}
    err = error_of(Document, raw, source="p.yaml")
    assert err.key_path == "checks[1].options.x[2]"
    assert str(err) == "p.yaml: checks[1].options.x[2]: expected an integer, got string 'three'"


def test_dict_value_path() -> None:
    err = error_of(Document, {"checks": [{"use": "a", "options": {"weights": {"en": "heavy"}}}]})
    assert err.key_path == "checks[0].options.weights.en"
    assert "expected a number" in str(err)


def test_unknown_key_inside_a_list_item() -> None:
    err = error_of(Document, {"checks": [{"use": "a"}, {"use": "b", "optoins": {}}]})
    assert err.key_path == "checks[1].optoins"
    assert "did you mean 'options'" in str(err)


def test_list_expected_but_scalar_given() -> None:
    err = error_of(Document, {"checks": {"use": "a"}})
    assert err.key_path == "checks"
    assert "expected a list, got a mapping" in str(err)


def test_mapping_expected_but_list_given() -> None:
    err = error_of(Document, {"checks": [{"use": "a", "options": [1]}]})
    assert err.key_path == "checks[0].options"
    assert "expected a mapping, got a list" in str(err)


def test_option_with_a_mutable_default_is_not_shared() -> None:
    first, second = validate(Document, {}), validate(Document, {})
    first.ladder.append(3.0)
    assert second.ladder == [1.0, 2.0]


# --------------------------------------------------------------------------------------------
# bounds


@pytest.mark.parametrize(
    ("raw", "path", "expected"),
    [
        ({"count": 0}, "count", "must be >= 1, got 0"),
        ({"count": 11}, "count", "must be <= 10, got 11"),
        ({"ratio": -0.1}, "ratio", "must be >= 0, got -0.1"),
        ({"ratio": 1.5}, "ratio", "must be <= 1, got 1.5"),
    ],
)
def test_bounds(raw: dict[str, Any], path: str, expected: str) -> None:
    err = error_of(Scalars, raw)
    assert err.key_path == path
    assert expected in str(err)


def test_bounds_are_inclusive() -> None:
    assert validate(Scalars, {"count": 1, "ratio": 0}).count == 1
    assert validate(Scalars, {"count": 10, "ratio": 1}).ratio == 1.0


def test_negative_threshold_is_rejected() -> None:
    err = error_of(Thresholds, {"max_delta": -0.01}, path="checks[0].options", source="p.yaml")
    assert err.key_path == "checks[0].options.max_delta"
    assert "must be >= 0, got -0.01" in str(err)


def test_bounds_apply_to_every_item_of_a_list() -> None:
    err = error_of(Document, {"ladder": [4.0, -2.0]})
    assert err.key_path == "ladder"
    assert "must be >= 0, got -2.0" in str(err)


def test_bounds_skip_null() -> None:
    assert validate(Thresholds, {"max_domain_delta": None}).max_domain_delta is None


def test_nan_threshold_is_rejected() -> None:
    with pytest.raises(PolicyError):
        validate(Thresholds, {"max_delta": math.nan})


# --------------------------------------------------------------------------------------------
# describe_schema and suggest


def test_describe_schema() -> None:
    rows = {row["name"]: row for row in describe_schema(Thresholds)}
    assert list(rows) == ["max_delta", "max_domain_delta", "mode"]
    assert rows["max_delta"] == {
        "name": "max_delta",
        "type": "a number or null",
        "default": 0.01,
        "help": "largest allowed rise",
        "required": False,
    }
    assert rows["max_domain_delta"]["default"] is None
    assert rows["mode"]["type"] == "one of 'fast', 'exact'"


def test_describe_schema_required_and_containers() -> None:
    required = {row["name"]: row for row in describe_schema(Required)}
    assert required["name"]["required"] is True
    assert required["name"]["default"] is None
    assert required["limit"]["type"] == "an integer"
    doc = {row["name"]: row for row in describe_schema(Document)}
    assert doc["checks"]["type"] == "a list of a mapping"
    assert doc["checks"]["default"] == []
    assert doc["ladder"]["type"] == "a list of a number"
    assert doc["ladder"]["default"] == [1.0, 2.0]
    assert doc["ladder"]["required"] is False
    inner = {row["name"]: row for row in describe_schema(Inner)}
    assert inner["weights"]["type"] == "a mapping of a number"
    assert describe_schema(NoOptions) == []


def test_suggest() -> None:
    assert suggest("perplexty", ["perplexity", "kl-divergence"]) == " (did you mean 'perplexity'?)"
    assert suggest("zzz", ["perplexity"]) == ""
    assert suggest("x", []) == ""
