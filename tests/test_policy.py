"""Tests for policy files: loading, extends, validation errors people can act on, conditions."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from qgate.errors import PolicyError
from qgate.plugins import Registry
from qgate.policy import load_policy
from qgate.policy.conditions import CONDITION_FIELDS, matches, validate_condition
from qgate.policy.loader import available_policies, builtin_policy_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def checks() -> dict[str, Any]:
    """The real registry's check plugins (built-ins, plus whatever else is installed)."""
    return Registry.from_environment().check_objects()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def policy_error(name_or_path: str | Path, checks: dict[str, Any]) -> PolicyError:
    with pytest.raises(PolicyError) as exc:
        load_policy(str(name_or_path), checks)
    return exc.value


# --------------------------------------------------------------------------------------------
# the shipped policies


def test_builtin_policy_dir_is_the_policies_folder() -> None:
    assert builtin_policy_dir().resolve() == (REPO / "policies").resolve()
    assert set(available_policies()) >= {"production", "permissive"}


def test_production_loads(checks: dict[str, Any]) -> None:
    policy = load_policy("production", checks)
    assert policy.name == "production"
    assert [c.key for c in policy.checks] == [
        "perplexity",
        "kl-divergence",
        "repetition",
        "task-accuracy",
        "long-context",
        "quant-floor",
        "quant-floor-moe",
        "identity",
        "tokenizer-parity",
        "special-tokens",
        "chat-template",
        "config-parity",
        "tensor-integrity",
        "runtime-parity",
    ]
    assert [c.use for c in policy.checks] == [
        "perplexity",
        "kl-divergence",
        "repetition",
        "task-accuracy",
        "long-context",
        "quant-floor",
        "quant-floor",
        "identity",
        "tokenizer-parity",
        "special-tokens",
        "chat-template",
        "config-parity",
        "tensor-integrity",
        "runtime-parity",
    ]
    assert policy.on_inconclusive == "warn"
    assert policy.backend.n_ctx == 512
    assert policy.backend.kv_cache == "f16"
    assert policy.evaluation.chunks == 8
    assert [d.name for d in policy.datasets] == ["en", "code", "pl", "ru", "ja"]
    ppl = policy.check_options["perplexity"]
    assert (ppl.max_delta, ppl.per_domain, ppl.max_domain_delta) == (0.01, True, 0.03)
    kld = policy.check_options["kl-divergence"]
    assert (kld.max_mean, kld.max_p99, kld.min_top1_agreement) == (0.02, 0.25, 0.90)
    assert kld.max_median is None  # a default filled in
    floor = policy.check_options["quant-floor"]
    assert floor.min_bits_per_weight == 4.0
    assert floor.forbidden_tensor_types["output.weight"][0] == "Q2_K"
    assert floor.min_kv_cache == "q8_0"
    moe = next(c for c in policy.checks if c.key == "quant-floor-moe")
    assert moe.when == {"expert_count": "> 0"}
    assert policy.check_options["quant-floor-moe"].min_bits_per_weight == 5.0
    assert policy.files == [str(REPO / "policies" / "production.yaml")]


def test_permissive_loads(checks: dict[str, Any]) -> None:
    policy = load_policy("permissive", checks)
    assert policy.name == "permissive"
    assert [c.key for c in policy.checks] == [
        "perplexity",
        "kl-divergence",
        "kl-tail",
        "repetition",
        "quant-floor",
    ]
    assert policy.on_inconclusive == "pass"
    assert [d.name for d in policy.datasets] == ["en", "code"]
    assert policy.check_options["perplexity"].max_delta == 0.10
    assert policy.check_options["perplexity"].per_domain is False
    tail = next(c for c in policy.checks if c.key == "kl-tail")
    assert tail.severity == "warn"
    assert policy.check_options["kl-tail"].max_mean is None
    assert policy.check_options["kl-tail"].max_p99 == 1.0
    assert policy.check_options["quant-floor"].min_bits_per_weight == 2.5


def test_policy_validate_shipped(qgate: Callable[..., Any]) -> None:
    result = qgate("policy", "validate", "production", "permissive")
    assert result.code == 0, result
    assert "production: ok (14 checks, policy 'production')" in result.out
    assert "permissive: ok (5 checks, policy 'permissive')" in result.out


def test_policy_list(qgate: Callable[..., Any]) -> None:
    result = qgate("policy", "list")
    assert result.code == 0, result
    files = [line.split()[-1] for line in result.out.splitlines() if "file:" in line]
    assert sorted(Path(f).name for f in files) == ["permissive.yaml", "production.yaml"]
    assert "production: Strict release gate" in result.out  # each policy says what it is


def test_unknown_shipped_name_suggests(qgate: Callable[..., Any]) -> None:
    result = qgate("policy", "validate", "prodution")
    assert result.code == 2, result
    assert "no policy named 'prodution' (did you mean 'production'?)" in result.err


def test_missing_policy_file(qgate: Callable[..., Any], tmp_path: Path) -> None:
    result = qgate("policy", "validate", tmp_path / "nope.yaml")
    assert result.code == 2, result
    assert "policy file not found" in result.err
    assert "nope.yaml" in result.err


# --------------------------------------------------------------------------------------------
# qgate policy show


def test_policy_show_yaml_has_defaults_filled_in(qgate: Callable[..., Any]) -> None:
    result = qgate("policy", "show", "production")
    assert result.code == 0, result
    data = yaml.safe_load(result.out)
    assert data["name"] == "production"
    checks = {c["id"] or c["use"]: c for c in data["checks"]}
    assert checks["perplexity"]["options"]["max_domain_delta"] == 0.03
    assert checks["perplexity"]["options"]["domains"] is None  # not in the file: a default
    assert checks["kl-divergence"]["options"]["max_median"] is None
    moe = checks["quant-floor-moe"]["options"]
    assert moe["forbidden_tensor_types"] == {}
    assert moe["kv_cache_from_context"] == 0
    assert data["backend"]["seed"] == 1234  # backend defaults too
    assert data["evaluation"]["bootstrap"] == 2000


def test_policy_show_json(qgate: Callable[..., Any]) -> None:
    result = qgate("policy", "show", "permissive", "--json")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert data["name"] == "permissive"
    perplexity = next(c for c in data["checks"] if c["use"] == "perplexity")
    assert "max_domain_delta" in perplexity["options"]
    assert perplexity["options"]["max_domain_delta"] is None
    assert perplexity["options"]["max_delta"] == 0.10
    assert [d["name"] for d in data["datasets"]] == ["en", "code"]
    assert data["files"] == [str(REPO / "policies" / "permissive.yaml")]


# --------------------------------------------------------------------------------------------
# misspelt keys, through both commands


@pytest.mark.parametrize(
    ("text", "key_path", "suggestion"),
    [
        (
            """
            chekcs:
              - use: perplexity
            """,
            "chekcs",
            "did you mean 'checks'",
        ),
        (
            """
            checks:
              - use: perplexity
                options:
                  max_delt: 0.02
            """,
            "checks[0].options.max_delt",
            "did you mean 'max_delta'",
        ),
        (
            """
            checks:
              - use: quant-floor
              - use: kl-divergence
                options: {max_p99: 0.3, min_top1_agreemnt: 0.9}
            """,
            "checks[1].options.min_top1_agreemnt",
            "did you mean 'min_top1_agreement'",
        ),
        (
            """
            checks:
              - use: perplexty
            """,
            "checks[0].use",
            "did you mean 'perplexity'",
        ),
        (
            """
            evaluation:
              chunk: 4
            """,
            "evaluation.chunk",
            "did you mean 'chunks'",
        ),
    ],
    ids=["top-level", "check-option", "second-check-option", "check-name", "evaluation"],
)
@pytest.mark.parametrize("command", ["validate", "check"])
def test_misspelt_key_is_a_usage_error(
    qgate: Callable[..., Any],
    fake: Callable[..., Path],
    tmp_path: Path,
    text: str,
    key_path: str,
    suggestion: str,
    command: str,
) -> None:
    policy = write(tmp_path / "my policy.yaml", text)
    if command == "validate":
        result = qgate("policy", "validate", policy)
    else:
        result = qgate("check", fake("m"), "--policy", policy, "--quiet")
    assert result.code == 2, result
    assert f"{policy}: {key_path}:" in result.err
    assert suggestion in result.err
    assert "Traceback" not in result.err
    assert result.out == ""


def test_unknown_check_lists_installed(checks: dict[str, Any], tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "checks:\n  - use: perplexty\n")
    err = policy_error(path, checks)
    assert err.source == str(path)
    assert err.key_path == "checks[0].use"
    assert "no check plugin named 'perplexty' (did you mean 'perplexity'?)" in str(err)
    listed = str(err).split("installed checks: ", 1)[1].split(" (see")[0].split(", ")
    assert listed == sorted(listed)  # every installed check, in order (more join over time)
    assert {"identity", "kl-divergence", "perplexity", "quant-floor"} <= set(listed)


# --------------------------------------------------------------------------------------------
# wrong types and bounds


@pytest.mark.parametrize(
    ("options", "key_path", "expected"),
    [
        ({"max_delta": "0.01"}, "max_delta", "expected a number or null, got string '0.01'"),
        ({"max_delta": -0.01}, "max_delta", "must be >= 0, got -0.01"),
        ({"per_domain": "yes"}, "per_domain", "expected a boolean, got string 'yes'"),
        ({"domains": "en"}, "domains", "expected a list of a string or null"),
        ({"domains": ["en", 3]}, "domains", "expected a list of a string or null"),
    ],
)
def test_wrong_option_types(
    checks: dict[str, Any], tmp_path: Path, options: dict[str, Any], key_path: str, expected: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"checks": [{"use": "perplexity", "options": options}]}))
    err = policy_error(path, checks)
    assert err.source == str(path)
    assert err.key_path == f"checks[0].options.{key_path}"
    assert expected in str(err)


def test_agreement_above_one_is_rejected(checks: dict[str, Any], tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        """
        checks:
          - use: quant-floor
          - use: kl-divergence
            options: {min_top1_agreement: 90}
        """,
    )
    err = policy_error(path, checks)
    assert err.key_path == "checks[1].options.min_top1_agreement"
    assert "must be <= 1, got 90" in str(err)


@pytest.mark.parametrize(
    ("text", "key_path", "expected"),
    [
        ("on_inconclusive: maybe\n", "on_inconclusive", "expected one of 'fail', 'warn', 'pass'"),
        ("backend: {n_ctx: 8}\n", "backend.n_ctx", "must be >= 16, got 8"),
        ("backend: {kv_cache: q9}\n", "backend.kv_cache", "expected one of"),
        ("evaluation: {confidence: 1.5}\n", "evaluation.confidence", "must be <= 0.999"),
        ("checks: [{use: perplexity, severity: fatal}]\n", "checks[0].severity", "one of 'fail'"),
        ("checks: [{use: perplexity, timeout: -1}]\n", "checks[0].timeout", "must be >= 0"),
        ("checks: perplexity\n", "checks", "expected a list"),
        ("datasets: [en, klingon]\n", "datasets[1]", "no built-in corpus 'klingon'"),
        ("datasets: [{name: en, path: x.txt}]\n", "datasets[0]", "exactly one of 'name'"),
    ],
)
def test_policy_level_errors(
    checks: dict[str, Any], tmp_path: Path, text: str, key_path: str, expected: str
) -> None:
    path = write(tmp_path / "p.yaml", text)
    err = policy_error(path, checks)
    assert err.source == str(path)
    assert err.key_path == key_path
    assert expected in str(err)


def test_duplicate_check_id(checks: dict[str, Any], tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        """
        checks:
          - use: kl-divergence
          - use: quant-floor
            id: floor
          - use: perplexity
            id: floor
        """,
    )
    err = policy_error(path, checks)
    assert err.key_path == "checks[2]"
    assert "duplicate check id 'floor'" in str(err)


def test_same_check_twice_with_distinct_ids_is_fine(checks: dict[str, Any], tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        """
        checks:
          - use: kl-divergence
          - use: kl-divergence
            id: kl-tail
            options: {max_mean: null, max_p99: 0.5}
        """,
    )
    policy = load_policy(str(path), checks)
    assert [c.key for c in policy.checks] == ["kl-divergence", "kl-tail"]
    assert policy.check_options["kl-divergence"].max_mean == 0.02
    assert policy.check_options["kl-tail"].max_mean is None


# --------------------------------------------------------------------------------------------
# YAML problems


def test_invalid_yaml_reports_a_line(qgate: Callable[..., Any], tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        """
        name: broken
        checks:
          - use: perplexity
            options: {max_delta: 0.1
          - use: quant-floor
        """,
    )
    result = qgate("policy", "validate", path)
    assert result.code == 2, result
    assert f"{path}: invalid YAML at line" in result.err
    assert "Traceback" not in result.err


def test_invalid_yaml_line_number_is_right(checks: dict[str, Any], tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "name: x\ndescription: ok\nchecks: [\n  - a\n")
    err = policy_error(path, checks)
    assert "invalid YAML at line 4" in str(err)


def test_python_object_tag_is_rejected(qgate: Callable[..., Any], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write(
        tmp_path / "evil.yaml",
        f"""
        name: evil
        description: !!python/object/apply:os.system ["touch {marker}"]
        checks:
          - use: quant-floor
        """,
    )
    result = qgate("policy", "validate", path)
    assert result.code == 2, result
    assert "python/object/apply:os.system" in result.err
    assert not marker.exists(), "the YAML tag was executed: the loader is not safe_load"


def test_python_object_tag_echo(qgate: Callable[..., Any], tmp_path: Path) -> None:
    path = write(tmp_path / "evil.yaml", 'checks: !!python/object/apply:os.system ["echo hi"]\n')
    result = qgate("policy", "validate", path)
    assert result.code == 2, result
    assert "could not determine a constructor" in result.err


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_policy_must_be_a_mapping(checks: dict[str, Any], tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "p.yaml", text)
    err = policy_error(path, checks)
    assert str(err) == f"{path}: a policy must be a mapping at the top level"


@pytest.mark.parametrize(
    "text",
    [
        "",  # an empty file
        "checks: []\n",
        "extends: production\nchecks:\n"
        + "".join(
            f"  - {{use: {use}, enabled: false}}\n"
            for use in (
                "perplexity",
                "kl-divergence",
                "repetition",
                "task-accuracy",
                "long-context",
                "quant-floor",
                "identity",
                "tokenizer-parity",
                "special-tokens",
                "chat-template",
                "config-parity",
                "tensor-integrity",
                "runtime-parity",
            )
        )
        + "  - {use: quant-floor, id: quant-floor-moe, enabled: false}\n",
    ],
    ids=["empty-file", "empty-list", "all-disabled"],
)
def test_a_policy_that_runs_no_check_is_an_error(
    checks: dict[str, Any], tmp_path: Path, text: str
) -> None:
    """A gate with no checks would pass any model: refused when the policy is loaded."""
    with pytest.raises(PolicyError, match=r"empty.yaml: checks: the policy runs no checks"):
        load_policy(str(write(tmp_path / "empty.yaml", text)), checks)


# --------------------------------------------------------------------------------------------
# extends


def test_circular_extends(
    qgate: Callable[..., Any], checks: dict[str, Any], tmp_path: Path
) -> None:
    a = write(tmp_path / "a.yaml", "extends: b.yaml\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    err = policy_error(a, checks)
    assert "circular extends" in str(err)
    assert "a.yaml -> " in str(err) and "b.yaml -> " in str(err)
    assert err.key_path == "extends"
    result = qgate("policy", "validate", a)
    assert result.code == 2, result
    assert "circular" in result.err


def test_self_extends_is_circular(checks: dict[str, Any], tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", "extends: a.yaml\n")
    assert "circular extends" in str(policy_error(a, checks))


def test_extends_missing_file(checks: dict[str, Any], tmp_path: Path) -> None:
    child = write(tmp_path / "child.yaml", "extends: ./nowhere.yaml\n")
    err = policy_error(child, checks)
    assert err.source == str(child)
    assert err.key_path == "extends"
    assert "policy file not found" in str(err)


def test_extends_shipped_name(checks: dict[str, Any], tmp_path: Path) -> None:
    child = write(
        tmp_path / "mine.yaml",
        """
        extends: production
        description: production, with a looser PPL floor and no KLD
        checks:
          - use: perplexity
            options:
              max_delta: 0.05
          - use: kl-divergence
            enabled: false
        """,
    )
    policy = load_policy(str(child), checks)
    assert policy.name == "mine"  # the child's own name, not the parent's
    assert policy.description.startswith("production, with a looser")
    assert [c.key for c in policy.checks] == [
        "perplexity",
        "repetition",
        "task-accuracy",
        "long-context",
        "quant-floor",
        "quant-floor-moe",
        "identity",
        "tokenizer-parity",
        "special-tokens",
        "chat-template",
        "config-parity",
        "tensor-integrity",
        "runtime-parity",
    ]
    ppl = policy.check_options["perplexity"]
    assert ppl.max_delta == 0.05  # overridden
    assert ppl.max_domain_delta == 0.03  # inherited
    assert ppl.per_domain is True  # inherited
    assert "kl-divergence" not in policy.check_options
    assert policy.on_inconclusive == "warn"
    assert [d.name for d in policy.datasets] == ["en", "code", "pl", "ru", "ja"]
    assert policy.files == [str(child), str(REPO / "policies" / "production.yaml")]


def test_extends_relative_path_and_datasets_relative_to_their_file(
    checks: dict[str, Any], tmp_path: Path
) -> None:
    write(tmp_path / "base" / "data" / "parent.txt", "parent text " * 50)
    write(
        tmp_path / "base" / "parent.yaml",
        """
        name: parent
        on_inconclusive: fail
        backend: {n_ctx: 256, threads: 2}
        datasets:
          - path: data/parent.txt
            domain: parents
        checks:
          - use: perplexity
            options: {max_delta: 0.02, per_domain: false}
          - use: kl-divergence
          - use: quant-floor
            options: {min_bits_per_weight: 3.0}
        """,
    )
    child = write(
        tmp_path / "team" / "child.yaml",
        """
        extends: ../base/parent.yaml
        backend: {n_ctx: 1024}
        checks:
          - use: perplexity
            options: {max_delta: 0.04}
          - use: kl-divergence
            enabled: false
          - use: quant-floor
            id: strict-floor
            severity: warn
            options: {min_bits_per_weight: 6}
        """,
    )
    policy = load_policy(str(child), checks)
    assert policy.name == "child"
    assert [c.key for c in policy.checks] == ["perplexity", "quant-floor", "strict-floor"]
    assert policy.check_options["perplexity"].max_delta == 0.04
    assert policy.check_options["perplexity"].per_domain is False
    assert policy.check_options["quant-floor"].min_bits_per_weight == 3.0
    assert policy.check_options["strict-floor"].min_bits_per_weight == 6.0
    assert policy.on_inconclusive == "fail"
    assert (policy.backend.n_ctx, policy.backend.threads) == (1024, 2)  # deep-merged
    (dataset,) = policy.datasets
    assert Path(dataset.path).resolve() == (tmp_path / "base" / "data" / "parent.txt").resolve()
    assert dataset.domain == "parents"
    assert [Path(f).name for f in policy.files] == ["child.yaml", "parent.yaml"]

    # the child's own datasets are relative to the child
    write(tmp_path / "team" / "mine.txt", "child text " * 50)
    child.write_text(child.read_text() + "datasets:\n  - path: mine.txt\n  - en\n")
    policy = load_policy(str(child), checks)
    assert Path(policy.datasets[0].path).resolve() == (tmp_path / "team" / "mine.txt").resolve()
    assert policy.datasets[1].name == "en"


def test_missing_dataset_file_names_the_file(checks: dict[str, Any], tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "datasets:\n  - path: missing.txt\n")
    err = policy_error(path, checks)
    assert err.key_path == "datasets[0].path"
    assert f"dataset file not found: {tmp_path / 'missing.txt'}" in str(err)


def test_dataset_path_with_a_relative_policy_path(
    checks: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "cfg" / "data.txt", "some text " * 50)
    write(
        tmp_path / "cfg" / "p.yaml", "datasets:\n  - path: data.txt\nchecks: [{use: perplexity}]\n"
    )
    monkeypatch.chdir(tmp_path)
    policy = load_policy("cfg/p.yaml", checks)
    assert Path(policy.datasets[0].path).resolve() == (tmp_path / "cfg" / "data.txt").resolve()


def test_error_in_parent_names_the_parent(checks: dict[str, Any], tmp_path: Path) -> None:
    parent = write(
        tmp_path / "parent.yaml",
        """
        checks:
          - use: quant-floor
          - use: perplexity
            options: {max_delt: 0.1}
        """,
    )
    child = write(tmp_path / "child.yaml", "extends: parent.yaml\n")
    err = policy_error(child, checks)
    assert err.source == str(parent)
    assert err.key_path == "checks[1].options.max_delt"
    assert "did you mean 'max_delta'" in str(err)


def test_error_in_child_override_names_the_child(checks: dict[str, Any], tmp_path: Path) -> None:
    child = write(
        tmp_path / "child.yaml",
        """
        extends: production
        checks:
          - use: quant-floor
            options: {min_bits_per_weight: -1}
        """,
    )
    err = policy_error(child, checks)
    assert err.source == str(child)
    assert err.key_path == "checks[0].options.min_bits_per_weight"
    assert "must be >= 0, got -1" in str(err)


# --------------------------------------------------------------------------------------------
# when: conditions


def test_when_unknown_field(checks: dict[str, Any], tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        """
        checks:
          - use: quant-floor
            when: {bit_per_weight: "< 4"}
        """,
    )
    err = policy_error(path, checks)
    assert err.key_path == "checks[0].when.bit_per_weight"
    assert "unknown condition field 'bit_per_weight' (did you mean 'bits_per_weight'?)" in str(err)


@pytest.mark.parametrize("comparison", ["<< 4", "< four", ">=", "=< 4", "! 3"])
def test_when_malformed_comparison(checks: dict[str, Any], tmp_path: Path, comparison: str) -> None:
    path = tmp_path / "p.yaml"
    when = {"bits_per_weight": comparison}
    path.write_text(yaml.safe_dump({"checks": [{"use": "quant-floor", "when": when}]}))
    err = policy_error(path, checks)
    assert err.key_path == "checks[0].when.bits_per_weight"
    assert f"malformed comparison {comparison!r}" in str(err)


def test_when_valid_conditions_load(checks: dict[str, Any], tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        """
        checks:
          - use: quant-floor
            when:
              format: gguf
              architecture: [llama, qwen2]
              bits_per_weight: "< 4.5"
              context_length: ">= 8192"
              expert_count: 0
        """,
    )
    policy = load_policy(str(path), checks)
    assert policy.checks[0].when["architecture"] == ["llama", "qwen2"]


def test_condition_fields_cover_the_subject_metadata() -> None:
    from qgate.backend import ModelInfo

    fields = set(ModelInfo(path="x", format="fake").condition_fields())
    assert fields | {"n_ctx"} == set(CONDITION_FIELDS)


BOTH = {"format": "gguf", "bits_per_weight": "< 4"}


@pytest.mark.parametrize(
    ("when", "fields", "expected"),
    [
        ({}, {}, True),
        ({"format": "GGUF"}, {"format": "gguf"}, True),
        ({"format": "gguf"}, {"format": "GGUF"}, True),
        ({"format": "gguf"}, {"format": "exl2"}, False),
        ({"file_type": "q4_k_m"}, {"file_type": "Q4_K_M"}, True),
        ({"architecture": ["llama", "Qwen2"]}, {"architecture": "qwen2"}, True),
        ({"architecture": ["llama", "qwen2"]}, {"architecture": "gemma3"}, False),
        ({"expert_count": 0}, {"expert_count": 0}, True),
        ({"expert_count": 0}, {"expert_count": 8}, False),
        ({"expert_count": "8"}, {"expert_count": 8}, True),
        ({"bits_per_weight": "< 4.5"}, {"bits_per_weight": 4.0}, True),
        ({"bits_per_weight": "< 4.5"}, {"bits_per_weight": 4.5}, False),
        ({"bits_per_weight": "<= 4.5"}, {"bits_per_weight": 4.5}, True),
        ({"bits_per_weight": "  <4.5  "}, {"bits_per_weight": 2}, True),
        ({"context_length": ">= 8192"}, {"context_length": 8192}, True),
        ({"context_length": ">= 8192"}, {"context_length": 4096}, False),
        ({"context_length": "> 8192"}, {"context_length": 8192}, False),
        ({"n_ctx": "== 512"}, {"n_ctx": 512}, True),
        ({"n_ctx": "!= 512"}, {"n_ctx": 512}, False),
        ({"expert_count": "> 0"}, {"expert_count": 8}, True),
        ({"parameter_count": "> 1e9"}, {"parameter_count": 7_000_000_000}, True),
        ({"bits_per_weight": "> -1"}, {"bits_per_weight": 0.0}, True),
        # a field the subject does not report fails every comparison, != included
        ({"bits_per_weight": "< 4.5"}, {"bits_per_weight": None}, False),
        ({"bits_per_weight": "!= 4.5"}, {"bits_per_weight": None}, False),
        ({"bits_per_weight": ">= 0"}, {}, False),
        ({"architecture": "llama"}, {"architecture": None}, False),
        ({"architecture": ["llama", "< 3"]}, {"architecture": None}, False),
        # a comparison against a text field never holds
        ({"file_type": "> 3"}, {"file_type": "Q4_K"}, False),
        # every key must hold
        (BOTH, {"format": "GGUF", "bits_per_weight": 5}, False),
        (BOTH, {"format": "GGUF", "bits_per_weight": 3}, True),
        (BOTH, {"format": "exl2", "bits_per_weight": 3}, False),
        # a list of comparisons is "any of"
        ({"bits_per_weight": ["< 3", "> 8"]}, {"bits_per_weight": 16.0}, True),
        ({"bits_per_weight": ["< 3", "> 8"]}, {"bits_per_weight": 4.0}, False),
    ],
)
def test_matches(when: dict[str, Any], fields: dict[str, Any], expected: bool) -> None:
    validate_condition(when, source=None, path="when")  # every case above is a valid condition
    assert matches(when, fields) is expected


@pytest.mark.parametrize("comparison", ["< 1.2.3", "> e", "<= ."])
def test_comparison_with_a_bad_number_is_rejected(comparison: str) -> None:
    with pytest.raises(PolicyError):
        validate_condition({"bits_per_weight": comparison}, source=None, path="when")


def test_malformed_comparison_inside_a_list_is_rejected() -> None:
    with pytest.raises(PolicyError):
        validate_condition({"bits_per_weight": ["< 4", "<< 3"]}, source=None, path="when")


def test_bad_number_in_when_is_a_policy_error_not_a_crash(
    qgate: Callable[..., Any], fake: Callable[..., Path], tmp_path: Path
) -> None:
    path = tmp_path / "p.yaml"
    when = {"bits_per_weight": "< 1.2.3"}
    path.write_text(yaml.safe_dump({"checks": [{"use": "quant-floor", "when": when}]}))
    result = qgate("check", fake("m"), "--policy", path, "--quiet")
    assert result.code == 2, result
