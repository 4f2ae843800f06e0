"""Sequential evaluation (``evaluation.looks``) on the fake backend: early stops, equal verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qgate.engine.evaluation import Look
from qgate.policy.model import EvaluationSettings
from qgate.results import RunReport, Verdict
from qgate.sequential import looks

POLICY = """
name: sequential
backend: {{n_ctx: 128}}
evaluation: {{chunks: 8, top_k: 8, bootstrap: 300, looks: {looks}}}
datasets: [en, code]
checks:
  - use: perplexity
    options: {{max_delta: 0.05}}
  - use: kl-divergence
    options: {{max_mean: 0.05, min_top1_agreement: 0.8}}
  - use: quant-floor
    options: {{min_bits_per_weight: 4.0}}
"""


def policy(tmp_path: Path, n: int) -> Path:
    path = tmp_path / f"looks-{n}.yaml"
    path.write_text(POLICY.format(looks=n))
    return path


def run(qgate, tmp_path: Path, subject: Path, ref: Path, n: int, *extra: str) -> RunReport:
    out = tmp_path / f"r-{n}-{subject.name}.json"
    qgate(
        "check", subject, "--reference", ref, "--policy", policy(tmp_path, n), "--json", out, *extra
    )
    return RunReport.from_dict(json.loads(out.read_text()))


def verdicts(report: RunReport) -> dict[str, Verdict]:
    return {r.name: r.verdict for r in report.subjects[0].results}


def test_looks_split_the_budget_and_share_the_error_rate():
    assert looks(EvaluationSettings(chunks=8, looks=1)) == [Look()]
    plan = looks(EvaluationSettings(chunks=8, looks=4, confidence=0.95))
    assert [look.chunks for look in plan] == [2, 4, 6, None]
    assert all(look.confidence == pytest.approx(1 - 0.05 / 4) for look in plan)
    # never fewer than two chunks (a bootstrap needs two), never a look twice
    assert [look.chunks for look in looks(EvaluationSettings(chunks=3, looks=4))] == [2, None]


@pytest.mark.parametrize(
    ("name", "noise", "gate"),
    [("clear-pass", 0.01, Verdict.PASS), ("clear-fail", 2.0, Verdict.FAIL)],
)
def test_a_clear_quant_stops_at_the_first_look_with_the_fixed_budget_verdicts(
    qgate, fake, tmp_path, name, noise, gate
):
    ref, subject = fake("ref"), fake(name, noise=noise)
    fixed = run(qgate, tmp_path, subject, ref, 1, "--no-cache")
    early = run(qgate, tmp_path, subject, ref, 4, "--no-cache")
    assert verdicts(early) == verdicts(fixed)
    assert early.verdict is fixed.verdict is gate
    ppl = next(r for r in early.subjects[0].results if r.name == "perplexity.ppl_delta")
    assert ppl.details["sequential"] == {
        "look": 1,
        "looks": 4,
        "chunks": 2,
        "budget": 8,
        "confidence": pytest.approx(0.9875),
    }
    assert ppl.interval is not None and ppl.interval.level == pytest.approx(0.9875)
    assert ppl.details["chunks"] == 2 * 2  # two datasets, two chunks each
    # a quarter of the tokens, for the reference and the subject alike
    assert early.counters["tokens_scored"] * 4 == fixed.counters["tokens_scored"]
    assert early.counters["sequential_looks"] == 1


def test_a_borderline_quant_is_scored_to_the_end(qgate, fake, tmp_path):
    ref, subject = fake("ref"), fake("borderline", noise=0.35)
    fixed = run(qgate, tmp_path, subject, ref, 1, "--no-cache")
    late = run(qgate, tmp_path, subject, ref, 4, "--no-cache")
    assert late.counters["sequential_looks"] > 1
    assert late.counters["tokens_scored"] > fixed.counters["tokens_scored"] // 4
    last = {r.name: r for r in late.subjects[0].results}
    if late.counters["sequential_looks"] == 4:  # the whole budget: the same figures as fixed
        assert late.counters["tokens_scored"] == fixed.counters["tokens_scored"]
        for result in fixed.subjects[0].results:
            assert last[result.name].value == pytest.approx(result.value)
            assert "sequential" not in last[result.name].details


def test_a_partial_reference_entry_is_resumed_not_rescored(qgate, fake, tmp_path):
    ref, subject = fake("ref"), fake("clear", noise=2.0)
    early = run(qgate, tmp_path, subject, ref, 4)  # caches two chunks of the reference
    assert early.counters["reference_cache_misses"] == 2
    full = run(qgate, tmp_path, subject, ref, 1)  # needs all eight: scores only the other six
    assert full.counters["reference_cache_misses"] == 2
    fresh = run(qgate, tmp_path, subject, ref, 1, "--no-cache")
    assert full.counters["tokens_scored"] == fresh.counters["tokens_scored"] * 7 // 8
    for a, b in zip(full.subjects[0].results, fresh.subjects[0].results, strict=True):
        assert a.name == b.name and a.verdict is b.verdict
        assert a.value == pytest.approx(b.value)
