"""The ``payoff`` check (speed, memory and size vs the reference) and the quant-ladder view.

The fake backend's ``delay`` (seconds per token) stands in for compute: a subject with half the
reference's delay generates about twice as fast. Every run is a real child process
(``python -m qgate_checks.payoff.probe``), so these tests exercise the isolation too; the
budgets are small (64-token prompt, 32-token generations, 2 ms per token) to keep them quick.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qgate.figures import GENERATION_SPEEDUP, GENERATION_TOK_S, KLD_MEAN, PPL_DELTA
from qgate.results import CheckResult, Comparison, RunReport, Severity, SubjectReport, Verdict
from qgate_reporters import console, html, markdown
from qgate_reporters.ladder import quant_ladder

DELAY = 0.002


def write_policy(path: Path, payoff: dict[str, Any], *, kld: bool = False) -> Path:
    options = {"prompt_tokens": 64, "generation_tokens": 32, **payoff}
    checks = [{"use": "kl-divergence", "options": {"max_mean": 1.0}}] if kld else []
    checks.append({"use": "payoff", "options": options})
    policy = {
        "name": "payoff-test",
        "on_inconclusive": "warn",
        "datasets": ["en"],
        "evaluation": {"chunks": 2},
        "checks": checks,
    }
    path.write_text(json.dumps(policy))  # JSON is YAML
    return path


def results_of(data: dict[str, Any], label: str) -> dict[str, dict[str, Any]]:
    subject = next(s for s in data["subjects"] if s["info"]["label"] == label)
    return {r["metric"] or r["check"]: r for r in subject["results"]}


def test_half_the_delay_passes_a_speedup_floor_and_equal_speed_fails(
    qgate: Callable[..., Any], fake: Callable[..., Path], tmp_path: Path
) -> None:
    ref = fake("ref", delay=DELAY)
    fast = fake("fast", delay=DELAY / 2, noise=0.3)
    same = fake("same", delay=DELAY, noise=0.3)
    policy = write_policy(
        tmp_path / "p.yaml",
        {"min_generation_speedup": 1.3, "min_prompt_speedup": 1.3, "repetitions": 3},
        kld=True,
    )
    out = tmp_path / "r.json"
    result = qgate("check", fast, same, "--reference", ref, "--policy", policy, "--json", out)
    assert result.code == 1, result  # "same" is no faster: the floor fails it
    data = json.loads(out.read_text())

    fast_results = results_of(data, "fast")
    speedup = fast_results["generation_speedup"]
    assert speedup["verdict"] == "pass", speedup["message"]
    assert speedup["value"] == pytest.approx(2.0, abs=0.4)
    assert speedup["interval"]["low"] >= 1.3
    assert fast_results["prompt_speedup"]["verdict"] == "pass"
    assert fast_results["prompt_speedup"]["value"] == pytest.approx(2.0, abs=0.4)
    # memory and size are reported (no floor set): a pass that says "reported only"
    for metric in ("memory_ratio", "size_ratio"):
        assert fast_results[metric]["verdict"] == "pass"
        assert "reported only" in fast_results[metric]["message"]
    details = speedup["details"]
    assert len(details["runs"]["subject"]) == len(details["runs"]["reference"]) == 3
    assert details["subject"]["tg_tok_s"] > details["reference"]["tg_tok_s"]
    assert details["subject"]["peak_rss"] > 0 and details["subject"]["file_size"] > 0
    # kl-divergence ran first: its shared scoring pass gives the quality-adjusted figures free
    assert details["kld_mean"] > 0
    assert details["size_saving_per_kld"] == pytest.approx(
        (1 - details["ratios"]["size_ratio"]) / details["kld_mean"]
    )
    assert data["counters"]["scoring_pass_reuses"] == 2  # one per subject, no extra pass
    figures = speedup["figures"]
    titles = [t["title"] for t in figures["tables"]]
    assert any(t.startswith("Subject vs reference") for t in titles)
    assert any(t.startswith("Gain per unit of quality") for t in titles)
    assert figures["charts"][0]["title"] == "Generation speed per run"

    same_results = results_of(data, "same")
    assert same_results["generation_speedup"]["verdict"] == "fail"
    assert 0.8 < same_results["generation_speedup"]["value"] < 1.2
    assert same_results["generation_speedup"]["interval"]["high"] < 1.3
    assert same_results["prompt_speedup"]["verdict"] == "fail"

    # two subjects: the console names the smallest quant that passes ("same" fails on speed)
    assert "Quant ladder: Smallest quant that passes every fail-severity check: fast" in result.out


def test_jittered_timings_straddle_the_floor_and_are_inconclusive(
    qgate: Callable[..., Any], fake: Callable[..., Path], tmp_path: Path
) -> None:
    # the subject is truly 1.3x faster, right at the floor; +-50 % jitter on every timing, drawn
    # per run from the seeds (deterministic); 5 repetitions, the default
    ref = fake("ref", delay=DELAY, jitter=0.5, jitter_seed=1)
    sub = fake("sub", delay=DELAY / 1.3, jitter=0.5, jitter_seed=2)
    policy = write_policy(tmp_path / "p.yaml", {"min_generation_speedup": 1.3, "warmup": 0})
    out = tmp_path / "r.json"
    result = qgate("check", sub, "--reference", ref, "--policy", policy, "--json", out)
    assert result.code == 0, result  # on_inconclusive: warn does not block
    data = json.loads(out.read_text())
    speedup = results_of(data, "sub")["generation_speedup"]
    assert speedup["verdict"] == "warn", speedup["message"]
    assert "inconclusive" in speedup["message"]
    assert speedup["interval"]["low"] < 1.3 < speedup["interval"]["high"]
    # without kl-divergence no scoring pass runs just for the quality figure (quality: if-scored)
    assert "scoring_passes" not in data["counters"]
    assert "kld_mean" not in speedup["details"]
    # one subject: no ladder line
    assert "Quant ladder" not in result.out


def test_a_model_that_cannot_load_in_the_measuring_process_is_an_error(
    qgate: Callable[..., Any], fake: Callable[..., Path], tmp_path: Path
) -> None:
    ref = fake("ref", delay=DELAY)
    broken = fake("broken", fail_load="weights are corrupt")
    policy = write_policy(tmp_path / "p.yaml", {"repetitions": 3, "warmup": 0})
    out = tmp_path / "r.json"
    result = qgate("check", broken, "--reference", ref, "--policy", policy, "--json", out)
    assert result.code == 1
    (error,) = json.loads(out.read_text())["subjects"][0]["results"]
    assert error["verdict"] == "error"
    assert "the process measuring broken failed" in error["message"]
    assert "weights are corrupt" in error["message"]


def test_payoff_options_are_validated(qgate: Callable[..., Any], tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "p.yaml", {"repetitions": 2})
    result = qgate("policy", "validate", policy)
    assert result.code == 2
    assert "repetitions" in result.err and ">= 3" in result.err


# --------------------------------------------------------------------------------------------
# the quant ladder (a pure function of the results) and its place in the reports

MIB = 2**20


def _result(
    check: str,
    metric: str,
    verdict: Verdict,
    value: float | None = None,
    *,
    severity: Severity = Severity.FAIL,
    details: dict[str, Any] | None = None,
    headlines: dict[str, float] | None = None,
) -> CheckResult:
    return CheckResult(
        check=check,
        check_id=check,
        metric=metric,
        verdict=verdict,
        message=f"{metric} {verdict.value}",
        value=value,
        threshold=None,
        comparison=Comparison.LE,
        severity=severity,
        details=details or {},
        headlines=headlines or {},
    )


def rung(
    label: str,
    size_mib: float | None,
    *,
    kld: float,
    ppl: float,
    tok_s: float,
    verdicts: tuple[Verdict, ...] = (Verdict.PASS,),
) -> SubjectReport:
    results = [
        _result("kl-divergence", "kld_mean", verdicts[0], kld, headlines={KLD_MEAN.key: kld}),
        _result("perplexity", "ppl_delta", Verdict.PASS, ppl, headlines={PPL_DELTA.key: ppl}),
        _result(
            "payoff",
            "generation_speedup",
            Verdict.PASS,
            tok_s / 10.0,
            headlines={GENERATION_SPEEDUP.key: tok_s / 10.0, GENERATION_TOK_S.key: tok_s},
        ),
    ]
    results += [_result("extra", f"m{i}", v) for i, v in enumerate(verdicts[1:])]
    info: dict[str, Any] = {"label": label, "bits_per_weight": 4.5}
    if size_mib is not None:
        info["file_size"] = int(size_mib * MIB)
    return SubjectReport(path=f"/m/{label}.gguf", backend="gguf", info=info, results=results)


def ladder_report(*subjects: SubjectReport, incomplete: bool = False) -> RunReport:
    return RunReport(policy="p", subjects=list(subjects), incomplete=incomplete)


def test_ladder_names_the_smallest_quant_that_passes() -> None:
    report = ladder_report(
        rung("Q8_0", 291, kld=0.004, ppl=0.007, tok_s=20),
        rung("Q4_K_M", 253, kld=0.01, ppl=0.02, tok_s=24, verdicts=(Verdict.PASS, Verdict.WARN)),
        rung("Q2_K", 237, kld=0.6, ppl=1.3, tok_s=26, verdicts=(Verdict.FAIL,)),
    )
    ladder = quant_ladder(report)
    assert ladder is not None
    assert [r.label for r in ladder.rungs] == ["Q8_0", "Q4_K_M", "Q2_K"]  # largest first
    assert [r.passes for r in ladder.rungs] == [True, True, False]  # a warn still passes
    assert ladder.smallest is not None and ladder.smallest.label == "Q4_K_M"
    assert ladder.sentence == (
        "Smallest quant that passes every fail-severity check: Q4_K_M (253.0 MiB)"
    )
    q4 = ladder.rungs[1]
    assert (q4.kld_mean, q4.ppl_delta, q4.generation_tok_s) == (0.01, 0.02, 24)
    # 2 quality figures x 2 axes, one dot (line) per quant
    series = ladder.series()
    assert [s.title for s in series] == [
        "mean KLD vs file size",
        "mean KLD vs generation speed",
        "PPL delta vs file size",
        "PPL delta vs generation speed",
    ]
    assert all(len(s.lines) == 3 for s in series)


def test_ladder_when_nothing_passes_or_the_run_is_cut_short() -> None:
    failing = ladder_report(
        rung("a", 300, kld=0.5, ppl=0.5, tok_s=10, verdicts=(Verdict.FAIL,)),
        rung("b", 200, kld=0.1, ppl=0.1, tok_s=12, verdicts=(Verdict.PASS, Verdict.ERROR)),
    )
    ladder = quant_ladder(failing)
    assert ladder is not None and ladder.smallest is None
    assert ladder.sentence == "No quant passes every fail-severity check."
    # a subject with only skips has passed nothing
    skipped = SubjectReport(
        path="/m/s.gguf", backend="gguf", info={}, results=[_result("x", "", Verdict.SKIP)]
    )
    passing = rung("p", 300, kld=0.01, ppl=0.01, tok_s=10)
    ladder = quant_ladder(ladder_report(skipped, passing))
    assert ladder is not None and ladder.smallest is not None and ladder.smallest.label == "p"
    # sizes unknown: the passing quant is still named
    ladder = quant_ladder(ladder_report(rung("x", None, kld=0.01, ppl=0.0, tok_s=1), skipped))
    assert ladder is not None and ladder.sentence.endswith(": x (size unknown)")
    # an interrupted run names nothing; one subject makes no ladder
    cut = quant_ladder(ladder_report(passing, passing, incomplete=True))
    assert cut is not None and cut.sentence.startswith("Run incomplete")
    assert quant_ladder(ladder_report(passing)) is None


def test_reports_show_the_ladder_for_three_subjects() -> None:
    report = ladder_report(
        rung("gemma-q8_0", 278, kld=0.0048, ppl=0.0075, tok_s=21.5),
        rung("gemma-q4_k_m", 241, kld=0.02, ppl=0.03, tok_s=23.0, verdicts=(Verdict.FAIL,)),
        rung("gemma-q2_k <b>", 226, kld=0.685, ppl=1.32, tok_s=25.0, verdicts=(Verdict.FAIL,)),
    )
    page = html.HtmlReporter().render(report)
    assert '<section id="ladder">' in page and "<h2>Quant ladder</h2>" in page
    sentence = "Smallest quant that passes every fail-severity check: gemma-q8_0 (278.0 MiB)"
    assert sentence in page
    ladder_html = page[
        page.index('<section id="ladder">') : page.index(
            "</section>", page.index('<section id="ladder">')
        )
    ]
    assert ladder_html.count("<svg") == 4 and ladder_html.count("<circle") >= 12
    assert "gemma-q2_k &lt;b&gt;" in ladder_html and "<b>" not in ladder_html
    assert "mean KLD vs file size" in ladder_html and "+132.00%" in ladder_html
    assert (
        f"**Quant ladder:** {markdown.md_escape(sentence)}"
        in markdown.MarkdownReporter().render(report)
    )
    assert f"Quant ladder: {sentence}" in console.ConsoleReporter().render(report)

    single = html.HtmlReporter().render(ladder_report(report.subjects[0]))
    assert 'id="ladder"' not in single


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_measuring_process_reports_its_own_peak_memory_not_its_parents() -> None:
    """Linux carries ``ru_maxrss`` over from the parent through fork and exec: a child of a
    2 GiB qgate process would report 2 GiB for any model. The probe reads ``VmHWM`` instead."""
    import subprocess
    import sys

    import numpy as np

    ballast = np.ones(256 * 2**20 // 8)  # 256 MiB resident in this (the parent) process
    code = (
        "import resource; from qgate_checks.payoff.probe import peak_rss_bytes; "
        "print(peak_rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    own, max_rss = (int(x) for x in done.stdout.split())
    assert ballast.sum() > 0
    assert own < 128 * 2**20  # ru_maxrss said max_rss, >= 256 MiB on the kernels we ran on
    assert own <= max_rss
