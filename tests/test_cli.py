"""The command line's structure: shared run options, the run setup, commands found by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import click.testing
import pytest
import yaml

from qgate.cli import make_cli
from qgate.errors import UsageError
from qgate.hookspecs import hookimpl
from qgate.plugins import Registry, make_plugin_manager
from qgate.runner import Runner
from qgate.setup import RunRequest, RunSetup
from qgate.testing import write_fake_model

SCORING_POLICY = """
name: scoring
backend: {n_ctx: 64}
evaluation: {chunks: 2, top_k: 4, bootstrap: 200}
datasets: [en]
checks:
  - use: perplexity
"""


@click.command("identity")
@click.argument("model")
@click.argument("other")
@click.option("--backend", "-b")
@click.option("--json", "as_json", is_flag=True)
def identity_stand_in(model: str, other: str, backend: str | None, as_json: bool) -> None:
    """Stands in for the identity plugin's command: says what it was asked."""
    click.echo(json.dumps({"model": model, "other": other, "backend": backend, "json": as_json}))


class IdentityPlugin:
    @hookimpl
    def qgate_commands(self) -> list[click.Command]:
        return [identity_stand_in]


def registry_with(*plugins: object, allow: tuple[str, ...] = ("fake",)) -> Registry:
    """Only the fake backend (and ``allow``) of qgate's own plugins, plus ``plugins``."""
    return Registry(make_plugin_manager(allow=list(allow), plugins=list(plugins)))


def invoke(registry: Registry, *args: str) -> Any:
    """``qgate ARGS`` on ``registry``, exceptions raised as the entry point would see them."""
    return make_cli(registry).main(args=list(args), prog_name="qgate", standalone_mode=False)


# -- inspect --identity: an alias of the registered identity command ---------------------------
def test_inspect_identity_runs_the_registered_identity_command(capsys: Any) -> None:
    registry = registry_with(IdentityPlugin())
    invoke(registry, "inspect", "a.gguf", "--identity", "--json", "--json")
    assert json.loads(capsys.readouterr().out) == {
        "model": "a.gguf",
        "other": "--json",  # a file named like an option stays a file
        "backend": None,
        "json": True,
    }
    invoke(registry, "inspect", "a.gguf", "--identity", "b.gguf", "--backend", "gguf")
    said = json.loads(capsys.readouterr().out)
    assert said == {"model": "a.gguf", "other": "b.gguf", "backend": "gguf", "json": False}


def test_inspect_identity_without_the_identity_command_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="'qgate identity', which no installed plugin provides"):
        invoke(registry_with(), "inspect", "a.gguf", "--identity", "b.gguf")


def test_inspect_without_identity_reads_the_header(tmp_path: Path, capsys: Any) -> None:
    model = write_fake_model(tmp_path / "m.fake.json", metadata={"bits_per_weight": 4.5})
    invoke(registry_with(), "inspect", str(model), "--json")
    assert json.loads(capsys.readouterr().out)["bits_per_weight"] == 4.5
    with pytest.raises(UsageError, match="model not found"):
        invoke(registry_with(), "inspect", str(tmp_path / "nope.gguf"))


# -- check and baseline: one set of run options, one run setup --------------------------------
SHARED = {"policy", "datasets", "backend", "n_ctx", "threads", "gpu_layers", "kv_cache"}
SHARED |= {"cache_dir", "quiet"}


def _options(command: click.Command) -> dict[str, click.Option]:
    return {p.name: p for p in command.params if isinstance(p, click.Option) and p.name}


def test_check_and_baseline_share_their_run_options() -> None:
    cli = make_cli(registry_with())
    check, baseline = _options(cli.commands["check"]), _options(cli.commands["baseline"])
    assert set(check) & set(baseline) == SHARED
    for name in SHARED - {"policy", "backend"}:  # the same option, the same words
        assert check[name].opts == baseline[name].opts, name
        assert check[name].help == baseline[name].help, name


def test_the_run_setup_applies_the_command_line_over_the_policy(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(SCORING_POLICY)
    text = tmp_path / "legal.txt"
    text.write_text("Clause one. " * 200)
    request = RunRequest(
        policy=str(policy), datasets=(f"legal={text}",), n_ctx=128, kv_cache="q8_0", no_cache=True
    )
    setup = RunSetup.build(registry_with(allow=("fake", "perplexity")), request)
    assert (setup.options.n_ctx, setup.options.kv_cache) == (128, "q8_0")
    assert [d.domain for d in setup.datasets] == ["en", "legal"]
    assert setup.cache.directory is None
    runner = Runner.from_setup(setup, reference="ref", run_id="r1")
    assert runner.setup is setup and runner.datasets is setup.datasets
    assert runner.instruments is setup.instruments and runner.options == setup.options


def test_baseline_scores_the_reference_without_a_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qgate.runner
    from qgate.baseline import compute_baseline

    def no_runner(*args: object, **kwargs: object) -> None:
        raise AssertionError("qgate baseline built a Runner")

    monkeypatch.setattr(qgate.runner.Runner, "__init__", no_runner)
    policy = tmp_path / "p.yaml"
    policy.write_text(SCORING_POLICY)
    reference = write_fake_model(tmp_path / "ref.fake.json")
    request = RunRequest(policy=str(policy), cache_dir=tmp_path / "cache", quiet=True)
    setup = RunSetup.build(registry_with(allow=("fake", "perplexity")), request)
    outcome = compute_baseline(setup, str(reference))
    assert [(e.domain, e.from_cache) for e in outcome.entries] == [("en", False)]
    assert outcome.counters["model_loads"] == setup.instruments.counters["model_loads"] == 1
    again = compute_baseline(RunSetup.build(setup.registry, request), str(reference))
    assert [(e.domain, e.from_cache) for e in again.entries] == [("en", True)]


# -- the GitHub Action's steps: a plugin's command ---------------------------------------------
def test_the_github_steps_are_a_command_registered_by_their_plugin() -> None:
    registry = Registry(make_plugin_manager(allow=["fake"], modules=["qgate_github"]))
    assert registry.commands["github"].provider == "module qgate_github"
    result = click.testing.CliRunner().invoke(make_cli(registry), ["github", "--help"])
    assert result.exit_code == 0, result.output
    assert "cache-key|run|outputs|summary|annotate|comment" in result.output
    result = click.testing.CliRunner().invoke(make_cli(registry), ["github", "deploy"])
    assert result.exit_code == 2 and "'deploy' is not one of" in result.output


# -- what a person reads: --json -, -v/-q, inspect, plugins, policy list ------------------------
QUICK_POLICY = """
name: quick
description: one metadata floor, for the command line's tests
checks:
  - use: quant-floor
    options: {min_bits_per_weight: 4}
"""


def _quick(tmp_path: Path) -> tuple[Path, Path, Path]:
    policy = tmp_path / "quick.yaml"
    policy.write_text(QUICK_POLICY)
    good = write_fake_model(tmp_path / "good.fake.json", metadata={"bits_per_weight": 8.5})
    bad = write_fake_model(tmp_path / "bad.fake.json", metadata={"bits_per_weight": 2.5})
    return policy, good, bad


def test_json_dash_writes_the_results_to_stdout_and_the_summary_to_stderr(
    tmp_path: Path, qgate: Any
) -> None:
    policy, good, bad = _quick(tmp_path)
    result = qgate("check", good, bad, "--policy", policy, "--json", "-", "-q")
    assert result.code == 1
    data = json.loads(result.out)  # stdout is the JSON and nothing else
    assert data["verdict"] == "fail" and len(data["subjects"]) == 2
    assert "qgate: FAIL (2 subjects" in result.err


def test_two_reports_on_stdout_are_refused_before_measuring(tmp_path: Path, qgate: Any) -> None:
    policy, good, _ = _quick(tmp_path)
    result = qgate("check", good, "--policy", policy, "--json", "-", "--markdown", "-")
    assert result.code == 2
    assert "only one report can go to stdout, not --json -, --markdown -" in result.err
    assert "checking" not in result.err  # nothing was measured


def test_report_verbosity_lists_passes_with_v_and_only_failures_with_q(
    tmp_path: Path, qgate: Any
) -> None:
    policy, good, bad = _quick(tmp_path)
    results = tmp_path / "r.json"
    assert qgate("check", good, bad, "--policy", policy, "--json", results, "-q").code == 1
    normal = qgate("report", results).out
    verbose = qgate("report", results, "-v").out
    quiet = qgate("report", results, "-q").out
    assert normal.index("FAIL    bad") < normal.index("PASS    good")  # failures first
    assert "… and 1 pass (-v lists them)" in normal
    assert "8.5000 (limit >= 4.0000)" in verbose and "-v lists" not in verbose
    assert "PASS    good" in quiet and "8.5000" not in quiet  # a header line, no rows
    assert "2.5000 (limit >= 4.0000)" in quiet
    assert quiet.splitlines()[-1].startswith("qgate: FAIL")


def test_no_color_and_force_color(
    tmp_path: Path, qgate: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy, good, bad = _quick(tmp_path)
    results = tmp_path / "r.json"
    qgate("check", good, bad, "--policy", policy, "--json", results, "-q")
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert "\x1b[31mFAIL" in qgate("report", results).out
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in qgate("report", results).out


def test_inspect_prints_yaml_like_text_without_python_reprs(tmp_path: Path, qgate: Any) -> None:
    model = write_fake_model(
        tmp_path / "m.fake.json",
        metadata={"identity": {"name": "evil\x1b[2J\u202e", "tags": ["a", "b"]}},
    )
    out = qgate("inspect", model).out
    data = yaml.safe_load(out)
    assert data["identity"] == {"name": "evil", "tags": ["a", "b"]}
    assert "{'" not in out and "['" not in out and "None" not in out
    assert "\x1b" not in out and "\u202e" not in out


def test_plugins_lists_each_checks_options(qgate: Any) -> None:
    out = qgate("plugins").out
    floor = out[out.index("  quant-floor") :]
    assert "min_bits_per_weight: a number or null = " in floor.split("\n  ")[1]
    assert "qgate-llm" in out.splitlines()[1]  # the distribution's name
    data = json.loads(qgate("plugins", "--json").out)
    options = {o["name"] for c in data["checks"] if c["name"] == "perplexity" for o in c["options"]}
    assert "max_delta" in options


def test_policy_list_says_what_each_policy_is_for_and_which_checks_it_runs(qgate: Any) -> None:
    out = qgate("policy", "list").out
    production = out[out.index("production:") :]
    assert "Strict release gate" in production.splitlines()[0]
    checks = production[production.index("checks:") : production.index("datasets:")]
    for check in ("perplexity", "kl-divergence", "repetition", "task-accuracy", "long-context"):
        assert check in checks
    assert "quant-floor-moe (quant-floor, when expert_count > 0)" in " ".join(checks.split())
    permissive = out[out.index("permissive:") : out.index("production:")]
    assert "long-context" not in permissive and "identity" not in permissive
    assert "datasets: en, code; inconclusive: pass" in permissive
