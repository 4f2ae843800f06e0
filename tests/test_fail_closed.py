"""The gate is never green when something went wrong (issue: fail closed).

Each test here would pass the gate (exit 0) on a qgate that failed open: a check ending the
process, a policy or run that measured nothing, a results file whose verdicts were edited.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from qgate.integrity import read_results, verdict_problems
from qgate.results import RunReport, Verdict

FAULTS = "tests.fault_plugin"

MEASURING_POLICY = """\
name: unit
backend: {n_ctx: 128}
evaluation: {chunks: 3, top_k: 8, bootstrap: 200}
datasets: [en]
checks:
  - use: kl-divergence
    options: {max_mean: 0.05}
  - use: quant-floor
    options: {min_bits_per_weight: 4.0}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def results_of(path: Path) -> RunReport:
    return RunReport.from_dict(json.loads(path.read_text()))


# -- class 1: a plugin cannot end the process ------------------------------------------------


@pytest.mark.parametrize("how", ["sys-exit-0", "argparse-help", "generator-exit"])
def test_a_check_that_ends_the_process_is_an_error_and_the_run_goes_on(
    qgate: Any, fake: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setenv("QGATE_PLUGINS", FAULTS)
    policy = write(
        tmp_path / "exit.yaml",
        f"checks:\n  - use: ends-the-process\n    options: {{how: {how}}}\n"
        "  - use: quant-floor\n    options: {min_bits_per_weight: 2}\n",
    )
    out, junit = tmp_path / "r.json", tmp_path / "junit.xml"
    result = qgate("check", fake("sub"), "--policy", policy, "--json", out, "--junit", junit)
    assert result.code == 1, result
    results = {r.check_id: r for r in results_of(out).subjects[0].results}
    assert results["ends-the-process"].verdict is Verdict.ERROR
    assert "tried to end the process" in results["ends-the-process"].message
    assert "never decides qgate's exit code" in results["ends-the-process"].message
    assert results["quant-floor"].verdict is Verdict.PASS  # the next check still ran
    assert junit.stat().st_size > 0


def test_ctrl_c_inside_a_check_stays_an_interrupted_run(
    qgate: Any, fake: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QGATE_PLUGINS", FAULTS)
    policy = write(
        tmp_path / "ctrl-c.yaml",
        "checks:\n  - use: quant-floor\n    options: {min_bits_per_weight: 2}\n"
        "  - use: ends-the-process\n    options: {how: keyboard-interrupt}\n",
    )
    out = tmp_path / "r.json"
    result = qgate("check", fake("sub"), "--policy", policy, "--json", out, "-q")
    assert result.code == 3, result
    report = results_of(out)
    assert report.incomplete
    assert report.verdict is Verdict.ERROR
    assert [r.check_id for r in report.subjects[0].results] == ["quant-floor"]


def test_a_plugin_that_exits_at_import_does_not_end_qgate_with_0(
    qgate: Any, fake: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = write(tmp_path / "exits_at_import.py", "import sys\nsys.exit(0)\n")
    monkeypatch.syspath_prepend(str(module.parent))
    monkeypatch.setenv("QGATE_PLUGINS", "exits_at_import")
    result = qgate("check", fake("sub"), "--policy", "production")
    assert result.code == 2, result
    assert "exits_at_import" in result.err
    sys.modules.pop("exits_at_import", None)


def test_a_reporter_that_exits_cannot_turn_the_run_green(
    qgate: Any, fake: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QGATE_PLUGINS", FAULTS)
    policy = write(
        tmp_path / "p.yaml",
        "checks:\n  - use: quant-floor\n    options: {min_bits_per_weight: 2}\n",
    )
    out = tmp_path / "r.json"
    result = qgate(
        "check", fake("sub"), "--policy", policy, "--json", out, "--exits", tmp_path / "x", "-q"
    )
    assert result.code == 3, result
    assert "could not write reports: exits: SystemExit: 0" in result.err
    assert results_of(out).verdict is Verdict.PASS  # the other reports were still written


# -- class 2: nothing measured is not a pass -------------------------------------------------


def test_a_policy_without_checks_is_a_policy_error(qgate: Any, fake: Any, tmp_path: Path) -> None:
    policy = write(tmp_path / "empty.yaml", "name: nothing\nchecks: []\n")
    result = qgate("check", fake("sub"), "--policy", policy)
    assert result.code == 2, result
    assert "the policy runs no checks" in result.err


def test_a_subject_on_which_nothing_was_measured_is_an_error(
    qgate: Any, fake: Any, tmp_path: Path
) -> None:
    # The fake reference answers no task: every tier carries no signal and stands as a skip,
    # which may be right for that tier, but a gate that measured nothing has judged nothing.
    policy = write(
        tmp_path / "signal.yaml",
        "checks:\n  - use: task-accuracy\n    options: {tasks_per_tier: 3, max_tokens: 8}\n",
    )
    out = tmp_path / "r.json"
    result = qgate(
        "check", fake("sub"), "--reference", fake("ref"), "--policy", policy, "--json", out, "-q"
    )
    assert result.code == 1, result
    results = results_of(out).subjects[0].results
    skipped = [r for r in results if r.check == "task-accuracy"]
    assert skipped and all(r.verdict is Verdict.SKIP for r in skipped)
    (gate,) = [r for r in results if r.check == "gate"]
    assert gate.verdict is Verdict.ERROR
    assert gate.message.startswith("nothing was measured on this subject, so it cannot pass")


def test_a_subject_that_no_check_applies_to_is_an_error(
    qgate: Any, fake: Any, tmp_path: Path
) -> None:
    policy = write(
        tmp_path / "moe-only.yaml",
        "checks:\n  - use: quant-floor\n    when: {expert_count: '> 0'}\n",
    )
    out = tmp_path / "r.json"
    result = qgate("check", fake("dense"), "--policy", policy, "--json", out, "-q")
    assert result.code == 1, result
    (gate,) = results_of(out).subjects[0].results
    assert "no check of the policy applies" in gate.message
    assert "0 of 0 fail-severity checks measured" in result.out


# -- class 7: edited results are refused -----------------------------------------------------


@pytest.fixture
def failed_run(qgate: Any, fake: Any, tmp_path: Path) -> Path:
    """A run in which the quant fails kl-divergence by far: its results file."""
    policy = write(tmp_path / "unit.yaml", MEASURING_POLICY)
    out = tmp_path / "results.json"
    result = qgate(
        "check", fake("bad", noise=3.0), "--reference", fake("ref"), "--policy", policy,
        "--json", out, "-q",
    )  # fmt: skip
    assert result.code == 1, result
    return out


def edit_results(path: Path, change: Any) -> Path:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def test_flipping_every_verdict_to_pass_is_refused_by_report_and_merge(
    qgate: Any, failed_run: Path, tmp_path: Path
) -> None:
    def flip(data: dict[str, Any]) -> None:
        data["verdict"] = "pass"
        for subject in data["subjects"]:
            subject["verdict"] = "pass"
            for result in subject["results"]:
                result["verdict"] = "pass"

    edited = edit_results(failed_run, flip)
    for command in (["report", edited], ["merge", edited]):
        result = qgate(*command, "--markdown", tmp_path / "summary.md")
        assert result.code == 2, result
        assert "the recorded verdicts disagree with the recorded numbers" in result.err
        assert "recorded pass, but value" in result.err
        assert "gives fail" in result.err
    assert not (tmp_path / "summary.md").exists()


def test_deleting_a_failed_result_is_refused(qgate: Any, failed_run: Path) -> None:
    def drop(data: dict[str, Any]) -> None:
        subject = data["subjects"][0]
        subject["results"] = [r for r in subject["results"] if r["check"] != "kl-divergence"]

    result = qgate("report", edit_results(failed_run, drop))
    assert result.code == 2, result
    assert "kl-divergence: the policy applied this check, but it has no result" in result.err


def test_turning_an_error_into_a_skip_is_refused(qgate: Any, fake: Any, tmp_path: Path) -> None:
    policy = write(tmp_path / "unit.yaml", MEASURING_POLICY)
    out = tmp_path / "r.json"
    assert qgate("check", fake("solo"), "--policy", policy, "--json", out, "-q").code == 1

    def to_skip(data: dict[str, Any]) -> None:
        for result in data["subjects"][0]["results"]:
            if result["verdict"] == "error":
                result["verdict"] = "skip"

    result = qgate("report", edit_results(out, to_skip))
    assert result.code == 2, result
    assert "a fail-severity check that could not measure (unavailable) is an error" in result.err


def test_an_untouched_file_reads_back_with_no_problem(failed_run: Path) -> None:
    report = read_results(failed_run)
    assert verdict_problems(report) == []
    assert report.verdict is Verdict.FAIL


def test_every_test_the_fail_closed_table_names_exists() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md").read_text()
    section = doc.split("## Fail closed", 1)[1]
    named = set(re.findall(r"`(test_\w+)`", section))
    assert len(named) >= 10
    defined = {
        match
        for path in Path(__file__).parent.glob("test_*.py")
        for match in re.findall(r"^def (test_\w+)", path.read_text(), flags=re.M)
    }
    assert named <= defined, sorted(named - defined)


def test_an_attestation_names_a_file_whose_name_is_not_utf8(
    qgate: Any, fake: Any, tmp_path: Path
) -> None:
    """A quant named with invalid UTF-8 bytes arrives as lone surrogates: the statement is still
    written (U+FFFD in the name), not a crash with exit 3."""
    model = tmp_path / "quant-\udcff.fake.json"  # the byte 0xff, as Python decodes it
    fake("plain").rename(model)
    policy = write(
        tmp_path / "p.yaml",
        "checks:\n  - use: quant-floor\n    options: {min_bits_per_weight: 2}\n",
    )
    att = tmp_path / "statement.json"
    result = qgate("check", model, "--policy", policy, "--attestation", att, "-q")
    assert result.code == 0, result
    (subject,) = json.loads(att.read_text(encoding="utf-8"))["subject"]
    assert subject["name"] == "quant-\ufffd.fake.json"


def test_an_interrupted_run_reads_back_without_its_missing_results(
    failed_run: Path, tmp_path: Path
) -> None:
    """Checks an interrupt stopped have no result: the file is incomplete, not edited."""

    def interrupt(data: dict[str, Any]) -> None:
        data["incomplete"] = True
        subject = data["subjects"][0]
        subject["results"] = [r for r in subject["results"] if r["check"] != "kl-divergence"]

    report = read_results(edit_results(failed_run, interrupt))
    assert report.incomplete and report.verdict is Verdict.ERROR
