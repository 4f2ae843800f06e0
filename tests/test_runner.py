"""The runner and the `check` command on the fake backend: verdicts, exit codes, sharing, faults."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from qgate.check import Check, CheckContext
from qgate.hookspecs import hookimpl
from qgate.plugins import Registry, make_plugin_manager
from qgate.policy import load_policy
from qgate.results import CheckResult, RunReport, SkipCause, Verdict
from qgate.runner import Runner

POLICY = """
name: unit
backend: {n_ctx: 128}
evaluation: {chunks: 3, top_k: 8, bootstrap: 200}
datasets: [en, code]
checks:
  - use: perplexity
    options: {max_delta: 0.05}
  - use: kl-divergence
    options: {max_mean: 0.05, min_top1_agreement: 0.8}
  - use: quant-floor
    options: {min_bits_per_weight: 4.0}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "unit.yaml"
    path.write_text(POLICY)
    return path


def results_of(path: Path) -> RunReport:
    return RunReport.from_dict(json.loads(path.read_text()))


def by_name(report: RunReport, label: str) -> dict[str, CheckResult]:
    subject = next(s for s in report.subjects if s.label == label)
    return {r.name: r for r in subject.results}


def test_good_quant_passes_and_exit_code_is_zero(qgate, fake, policy_file, tmp_path):
    ref, good = fake("ref"), fake("good", noise=0.02)
    out = tmp_path / "r.json"
    result = qgate("check", good, "--reference", ref, "--policy", policy_file, "--json", out, "-q")
    assert result.code == 0, result
    report = results_of(out)
    assert report.verdict is Verdict.PASS
    results = by_name(report, "good")
    assert results["perplexity.ppl_delta"].verdict is Verdict.PASS
    assert 0 <= results["kl-divergence.kld_mean"].value < 0.05
    assert "good" in result.out and "PASS" in result.out


def test_bad_quant_fails_every_scoring_floor_with_intervals(qgate, fake, policy_file, tmp_path):
    ref, bad = fake("ref"), fake("bad", noise=1.5, metadata={"bits_per_weight": 2.6})
    out = tmp_path / "r.json"
    result = qgate("check", bad, "--reference", ref, "--policy", policy_file, "--json", out, "-q")
    assert result.code == 1, result
    results = by_name(results_of(out), "bad")
    for name in (
        "perplexity.ppl_delta",
        "kl-divergence.kld_mean",
        "kl-divergence.top1_agreement",
        "quant-floor.bits_per_weight",
    ):
        assert results[name].verdict is Verdict.FAIL, name
    ppl = results["perplexity.ppl_delta"]
    assert ppl.interval is not None and ppl.interval.low > 0.05
    assert ppl.value is not None and ppl.interval.low <= ppl.value <= ppl.interval.high


def test_damage_orders_the_metrics(fake, policy_file):
    """More noise, more damage: the measurements are monotone in the fake model's knob."""
    registry = Registry.from_environment()
    policy = load_policy(str(policy_file), registry.check_objects())
    ref = fake("ref")
    subjects = [fake(f"n{i}", noise=n) for i, n in enumerate((0.05, 0.3, 1.0))]
    report = Runner(registry, policy, reference=str(ref)).run([str(s) for s in subjects])
    kld = [by_name(report, f"n{i}")["kl-divergence.kld_mean"].value for i in range(3)]
    ppl = [by_name(report, f"n{i}")["perplexity.ppl_delta"].value for i in range(3)]
    assert kld == sorted(kld) and kld[0] < kld[2] / 10
    assert ppl[0] < ppl[2]


def test_each_model_loads_once_and_checks_share_one_scoring_pass(fake, policy_file):
    registry = Registry.from_environment()
    policy = load_policy(str(policy_file), registry.check_objects())
    ref = fake("ref")
    subjects = [str(fake("a", noise=0.1)), str(fake("b", noise=0.2))]
    report = Runner(registry, policy, reference=str(ref)).run(subjects)
    chunks = 2 * 3  # two datasets of three chunks
    assert report.counters["model_loads"] == 3
    assert report.counters["scoring_passes"] == chunks * 3  # the reference once, each subject once
    assert report.counters["scoring_pass_reuses"] == 2  # kl-divergence reused perplexity's pass


def test_reference_cache_skips_the_reference_on_the_second_run(fake, policy_file, tmp_path):
    from qgate.cache import ReferenceCache

    registry = Registry.from_environment()
    policy = load_policy(str(policy_file), registry.check_objects())
    ref, sub = fake("ref"), fake("sub", noise=0.3)
    cache = ReferenceCache(tmp_path / "cache")
    first = Runner(registry, policy, reference=str(ref), cache=cache).run([str(sub)])
    second = Runner(registry, policy, reference=str(ref), cache=cache).run([str(sub)])
    assert first.counters["reference_cache_misses"] == 2
    assert second.counters.get("reference_cache_misses", 0) == 0
    assert second.counters["reference_cache_hits"] == 2
    assert second.counters["model_loads"] == 1  # only the subject: the reference was never loaded
    assert [r.value for r in first.subjects[0].results] == [
        r.value for r in second.subjects[0].results
    ]


def test_a_changed_reference_is_not_read_from_a_stale_cache(fake, policy_file, tmp_path):
    from qgate.cache import ReferenceCache

    registry = Registry.from_environment()
    policy = load_policy(str(policy_file), registry.check_objects())
    cache = ReferenceCache(tmp_path / "cache")
    ref, sub = fake("ref"), fake("sub", noise=0.3)
    Runner(registry, policy, reference=str(ref), cache=cache).run([str(sub)])
    fake("ref", seed=5)  # same path, different model
    again = Runner(registry, policy, reference=str(ref), cache=cache).run([str(sub)])
    assert again.counters["reference_cache_misses"] == 2


def test_same_inputs_give_the_same_results(fake, policy_file):
    registry = Registry.from_environment()
    policy = load_policy(str(policy_file), registry.check_objects())
    ref, sub = fake("ref"), fake("sub", noise=0.4)
    runs = [Runner(registry, policy, reference=str(ref)).run([str(sub)]) for _ in range(2)]
    first, second = ([r.to_dict() for r in run.subjects[0].results] for run in runs)
    for a, b in zip(first, second, strict=True):
        a.pop("duration_s"), b.pop("duration_s")
    assert first == second


def test_nan_logits_are_an_error_never_a_pass(qgate, fake, policy_file, tmp_path):
    ref, broken = fake("ref"), fake("broken", nan_after=100)
    out = tmp_path / "r.json"
    result = qgate(
        "check", broken, "--reference", ref, "--policy", policy_file, "--json", out, "-q"
    )
    assert result.code == 1
    results = by_name(results_of(out), "broken")
    assert results["perplexity"].verdict is Verdict.ERROR
    assert "non-finite logits" in results["perplexity"].message
    assert results["quant-floor.bits_per_weight"].verdict is Verdict.PASS  # static checks still ran


def test_a_subject_that_cannot_load_is_reported_and_the_others_still_run(
    qgate, fake, policy_file, tmp_path
):
    ref, good = fake("ref"), fake("good", noise=0.01)
    broken = fake("broken", fail_load="weights are corrupt")
    out, junit = tmp_path / "r.json", tmp_path / "j.xml"
    result = qgate(
        "check",
        broken,
        good,
        "--reference",
        ref,
        "--policy",
        policy_file,
        "--json",
        out,
        "--junit",
        junit,
        "-q",
    )
    assert result.code == 1
    report = results_of(out)
    assert report.subjects[0].verdict is Verdict.ERROR
    assert "weights are corrupt" in " ".join(r.message for r in report.subjects[0].results)
    assert report.subjects[1].verdict is Verdict.PASS
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert len(suites) == 2 and int(suites[0].get("errors", 0)) >= 1


class Exploding(Check):
    name = "exploding"

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        raise RuntimeError("plugin bug")


class Interrupting(Check):
    name = "interrupting"

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        raise KeyboardInterrupt


class _Plugin:
    @hookimpl
    def qgate_checks(self) -> list[Check]:
        return [Exploding(), Interrupting()]


def _registry_with_faults() -> Registry:
    return Registry(make_plugin_manager(plugins=[_Plugin()]))


def test_a_check_that_raises_becomes_an_error_and_the_rest_still_run(fake, tmp_path):
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(
        POLICY
        + "  - use: exploding\n  - use: quant-floor\n    id: again\n    options: {min_bits_per_weight: 1}\n"
    )
    registry = _registry_with_faults()
    policy = load_policy(str(policy_file), registry.check_objects())
    report = Runner(registry, policy, reference=str(fake("ref"))).run(
        [str(fake("sub", noise=0.01))]
    )
    results = {r.check_id: r for r in report.subjects[0].results}
    assert results["exploding"].verdict is Verdict.ERROR
    assert "RuntimeError: plugin bug" in results["exploding"].message
    assert "Traceback" in results["exploding"].details["traceback"]
    assert results["again"].verdict is Verdict.PASS
    assert report.verdict is Verdict.ERROR and not report.incomplete


def test_an_interrupt_keeps_what_was_measured_and_marks_the_run_incomplete(fake, tmp_path):
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(POLICY + "  - use: interrupting\n")
    registry = _registry_with_faults()
    policy = load_policy(str(policy_file), registry.check_objects())
    report = Runner(registry, policy, reference=str(fake("ref"))).run(
        [str(fake("a")), str(fake("b"))]
    )
    assert report.incomplete
    assert len(report.subjects) == 1  # the second subject never started
    assert {r.check_id for r in report.subjects[0].results} == {
        "perplexity",
        "kl-divergence",
        "quant-floor",
    }
    assert report.verdict is Verdict.ERROR


def test_checks_needing_a_reference_block_the_gate_without_one(qgate, fake, policy_file, tmp_path):
    """A forgotten --reference (a typo in a workflow variable) must not pass on the quant floor
    alone: the fail-severity checks that could not measure are errors."""
    out = tmp_path / "r.json"
    result = qgate("check", fake("solo"), "--policy", policy_file, "--json", out, "-q")
    assert result.code == 1
    results = by_name(results_of(out), "solo")
    for name in ("perplexity", "kl-divergence"):
        assert results[name].verdict is Verdict.ERROR
        assert results[name].skip_cause is SkipCause.UNAVAILABLE
        assert "could not measure: needs a reference model (--reference)" in results[name].message
    assert results["quant-floor.bits_per_weight"].verdict is Verdict.PASS
    assert "1 of 3 fail-severity checks measured" in result.out


def test_on_skip_skip_lets_a_check_without_its_reference_stand_as_a_skip(qgate, fake, tmp_path):
    policy_file = tmp_path / "lenient.yaml"
    policy_file.write_text(POLICY.replace("checks:", "on_skip: skip\nchecks:", 1))
    out = tmp_path / "r.json"
    result = qgate("check", fake("solo"), "--policy", policy_file, "--json", out, "-q")
    assert result.code == 0
    results = by_name(results_of(out), "solo")
    assert results["perplexity"].verdict is Verdict.SKIP
    assert results["perplexity"].on_skip == "skip"
    assert results["quant-floor.bits_per_weight"].verdict is Verdict.PASS


def test_when_conditions_select_checks_by_metadata(qgate, fake, tmp_path):
    policy_file = tmp_path / "moe.yaml"
    policy_file.write_text(
        "checks:\n"
        "  - use: quant-floor\n    options: {min_bits_per_weight: 3}\n"
        "  - use: quant-floor\n    id: moe-floor\n    when: {expert_count: '> 0'}\n    options: {min_bits_per_weight: 5}\n"
    )
    dense, moe = (
        fake("dense", metadata={"bits_per_weight": 4.5}),
        fake("moe", metadata={"bits_per_weight": 4.5, "expert_count": 8}),
    )
    out = tmp_path / "r.json"
    result = qgate("check", dense, moe, "--policy", policy_file, "--json", out, "-q")
    assert result.code == 1
    report = results_of(out)
    assert set(by_name(report, "dense")) == {"quant-floor.bits_per_weight"}
    assert by_name(report, "moe")["moe-floor.bits_per_weight"].verdict is Verdict.FAIL


def test_warn_severity_and_inconclusive_intervals_do_not_block(qgate, fake, tmp_path):
    policy_file = tmp_path / "warn.yaml"
    policy_file.write_text(
        "backend: {n_ctx: 128}\nevaluation: {chunks: 3, bootstrap: 200}\n"
        "checks:\n  - use: kl-divergence\n    severity: warn\n    options: {max_mean: 0.001}\n"
    )
    out = tmp_path / "r.json"
    result = qgate(
        "check",
        fake("sub", noise=0.5),
        "--reference",
        fake("ref"),
        "--policy",
        policy_file,
        "--json",
        out,
        "-q",
    )
    assert result.code == 0
    assert by_name(results_of(out), "sub")["kl-divergence.kld_mean"].verdict is Verdict.WARN


def test_missing_and_unrecognised_models_are_usage_errors(qgate, fake, tmp_path):
    missing = qgate("check", tmp_path / "nope.gguf", "--reference", fake("ref"))
    assert missing.code == 2 and "model not found" in missing.err and "Traceback" not in missing.err
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    unknown = qgate("check", text, "--reference", fake("ref"))
    assert unknown.code == 2 and "no installed backend recognises" in unknown.err


def test_every_report_format_is_written_and_report_rerenders_without_measuring(
    qgate, fake, policy_file, tmp_path
):
    paths = {name: tmp_path / f"r.{name}" for name in ("json", "junit", "html", "markdown")}
    args = [a for name, p in paths.items() for a in (f"--{name}", p)]
    first = qgate(
        "check",
        fake("bad", noise=2.0),
        "--reference",
        fake("ref"),
        "--policy",
        policy_file,
        *args,
        "-q",
    )
    assert first.code == 1
    assert all(p.stat().st_size > 0 for p in paths.values())
    assert ET.parse(paths["junit"]).getroot().find("testsuite/testcase/failure") is not None
    html2 = tmp_path / "again.html"
    again = qgate("report", paths["json"], "--html", html2, "-q")
    assert again.code == 1
    assert "ppl_delta" in html2.read_text()


def test_report_rejects_a_file_that_is_not_results(qgate, tmp_path):
    bogus = tmp_path / "r.json"
    bogus.write_text('{"schema_version": 99}')
    result = qgate("report", bogus)
    assert result.code == 2 and "not a qgate results file" in result.err


def test_cli_basics(qgate):
    assert qgate("--version").out.startswith("qgate, version")
    helptext = qgate("check", "--help").out
    for flag in (
        "--junit",
        "--html",
        "--json",
        "--markdown",
        "--reference",
        "--policy",
        "--dataset",
    ):
        assert flag in helptext
    assert qgate("check").code == 2  # MODELS is required


def test_user_dataset_adds_a_domain(qgate, fake, policy_file, tmp_path):
    text = tmp_path / "legal.jsonl"
    text.write_text(
        "\n".join(
            json.dumps({"text": f"Clause {i}: the licensee shall keep records of each sale."})
            for i in range(40)
        )
    )
    out = tmp_path / "r.json"
    result = qgate(
        "check",
        fake("sub", noise=0.05),
        "--reference",
        fake("ref"),
        "--policy",
        policy_file,
        "--dataset",
        f"legal={text}",
        "--json",
        out,
        "-q",
    )
    assert result.code == 0, result
    assert "perplexity.ppl_delta[legal]" in by_name(results_of(out), "sub")


class Sleepy(Check):
    name = "sleepy"

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        import time

        time.sleep(30)
        return [ctx.result("slept", 1.0)]


class _SleepyPlugin:
    @hookimpl
    def qgate_checks(self) -> list[Check]:
        return [Sleepy()]


def test_a_check_past_its_timeout_becomes_an_error_and_the_run_goes_on(fake, tmp_path):
    import time

    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(
        "checks:\n  - use: sleepy\n    timeout: 0.5\n  - use: quant-floor\n    options: {min_bits_per_weight: 1}\n"
    )
    registry = Registry(make_plugin_manager(plugins=[_SleepyPlugin()]))
    policy = load_policy(str(policy_file), registry.check_objects())
    started = time.monotonic()
    report = Runner(registry, policy).run([str(fake("sub"))])
    assert time.monotonic() - started < 10
    results = {r.check_id: r for r in report.subjects[0].results}
    assert results["sleepy"].verdict is Verdict.ERROR
    assert "timeout of 0.5s" in results["sleepy"].message
    assert results["quant-floor"].verdict is Verdict.PASS
