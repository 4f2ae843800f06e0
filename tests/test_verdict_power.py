"""Verdict power: every fail-severity verdict of `production` rests on an interval (or on a fact
that has no sampling error), states the smallest effect its sample could detect, and the
statistics behind that (Wilson intervals, simultaneous intervals, sample sizing) are right."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qgate.results import CheckResult, Comparison, Interval, RunReport, Severity, Verdict
from qgate.stats import (
    TARGET_RESOLUTION,
    bonferroni,
    decide,
    evidence_of,
    exact_evidence,
    largest_of,
    rests_on_evidence,
    trials_for_resolution,
    wilson_half_width,
    wilson_interval,
)
from qgate_checks.long_context.judging import Judged, retrieval
from qgate_checks.long_context.measure import Measured
from qgate_checks.long_context.options import LongContextOptions
from qgate_checks.tasks import make_tasks

#: the checks of production whose results state their resolution (``details["evidence"]``)
STATES_EVIDENCE = {"perplexity", "kl-divergence", "long-context", "repetition"}


def _answers(share: float, per_tier: int) -> dict[str, str]:
    answers = {}
    for tier in ("one_step", "multi_step", "symbolic", "long_chain"):
        for task in make_tasks(tier, per_tier, 0)[: round(share * per_tier)]:
            answers[task.question] = task.answer
    return answers


def _production(qgate: Any, tmp_path: Path, subject: Path, reference: Path) -> list[CheckResult]:
    out = tmp_path / f"{subject.stem}.json"
    result = qgate(
        "check", subject, "--reference", reference, "--policy", "production", "--json", out, "-q"
    )
    assert result.code in (0, 1), result
    return RunReport.from_dict(json.loads(out.read_text())).subjects[0].results


@pytest.mark.parametrize("damaged", [False, True], ids=["clean", "damaged"])
def test_no_fail_severity_verdict_of_production_rests_on_a_metric_without_an_interval(
    qgate: Any, fake: Any, tmp_path: Path, damaged: bool
) -> None:
    """Walk every result production gives, on a clean and on a damaged quant (weights, a
    quantized KV cache, lost task answers): each fail-severity verdict with a floor has an
    interval or is exact, and the sampled ones say how finely their sample could judge."""
    reference = fake("ref", answers=_answers(1.0, 15))
    knobs = {"noise": 1.0, "kv_noise": 1.0, "answers": _answers(0.5, 15)} if damaged else {}
    subject = fake("sub", **knobs)
    results = _production(qgate, tmp_path, subject, reference)
    judged = [
        r
        for r in results
        if r.severity is Severity.FAIL and r.threshold is not None and r.verdict is not Verdict.SKIP
    ]
    walked = {r.check_id for r in judged}
    assert {"perplexity", "kl-divergence", "long-context", "quant-floor"} <= walked
    assert {"repetition", "task-accuracy"} <= walked
    for result in judged:
        assert rests_on_evidence(result), f"{result.check_id}.{result.metric}: {result.message}"
        if result.check_id in STATES_EVIDENCE:
            evidence = result.details.get("evidence")
            assert evidence is not None, f"{result.check_id}.{result.metric} states no resolution"
            assert evidence["resolution"] >= 0
            assert evidence["target"] == pytest.approx(TARGET_RESOLUTION * abs(result.threshold))
            assert "resolution ±" in result.message
    if damaged:
        failed = {f"{r.check_id}.{r.metric}" for r in judged if r.verdict is Verdict.FAIL}
        assert {"perplexity.ppl_delta", "long-context.max_bucket_kld[q8_0]"} <= failed


def test_a_metric_without_an_interval_is_not_evidence() -> None:
    def result(value: float, threshold: float | None, **extra: Any) -> CheckResult:
        return CheckResult(
            "x",
            "x",
            "m",
            Verdict.FAIL,
            "",
            value=value,
            threshold=threshold,
            comparison=Comparison.LE,
            **extra,
        )

    assert not rests_on_evidence(result(0.5, 0.34))  # a share from a handful of trials
    assert rests_on_evidence(result(0.5, 0.34, interval=Interval(0.3, 0.7)))
    assert rests_on_evidence(result(3.0, 4.0, details=exact_evidence()))
    assert rests_on_evidence(result(2.0, 0.0))  # a zero-tolerance count: any difference is one
    assert not rests_on_evidence(result(0.5, 0.0))  # a rate is not a count
    assert rests_on_evidence(result(0.5, None))  # reported, not judged


def test_wilson_interval_matches_the_textbook() -> None:
    ten = wilson_interval(10, 20)
    assert ten is not None
    assert (ten.low, ten.high) == pytest.approx((0.2993, 0.7007), abs=1e-4)
    none = wilson_interval(0, 20)  # a percentile bootstrap collapses to [0, 0] here
    assert none is not None and none.low == 0
    assert none.high == pytest.approx(3.8415 / 23.8415, abs=1e-4)
    assert wilson_interval(0, 0) is None
    # one missed key out of two is no evidence: the interval spans nearly everything
    coin = wilson_interval(1, 2)
    assert coin is not None and coin.low < 0.1 and coin.high > 0.9


def test_trials_for_resolution_is_the_smallest_sufficient_sample() -> None:
    floor = 0.34
    target = TARGET_RESOLUTION * floor
    n = trials_for_resolution(floor, target)
    assert wilson_half_width(floor, n) <= target < wilson_half_width(floor, n - 1)
    assert 60 <= n <= 75  # ~ z^2 p (1 - p) / r^2 = 67
    assert wilson_half_width(floor, 20) > target  # twenty keys alone resolve a third of it...
    assert wilson_half_width(floor, 20) < floor  # ...but they can separate 0 lost from the floor


def test_the_largest_of_several_intervals_holds_for_all_at_once() -> None:
    level = 0.95
    each = bonferroni(level, 4)
    assert each == pytest.approx(0.9875)
    worst = largest_of([Interval(0.0, 0.1, each), Interval(0.05, 0.3, each)], level)
    assert (worst.low, worst.high, worst.level) == (0.05, 0.3, level)


def test_evidence_is_a_third_of_the_floor() -> None:
    stated = evidence_of(Interval(0.01, 0.02, 0.95), 0.02, sample=40, sample_unit="chunks")
    assert stated is not None
    assert stated.resolution == pytest.approx(0.005) and stated.target == pytest.approx(0.02 / 3)
    assert stated.met and "over 40 chunks" in stated.describe()
    coarse = evidence_of(Interval(0.0, 0.04, 0.95), 0.02)
    assert coarse is not None and not coarse.met
    assert evidence_of(Interval(0.0, 0.04, 0.95), None) is None
    assert evidence_of(None, 0.02, resolution=math.inf) is None


class _Context:
    """What ``long_context.judging.retrieval`` reads of a check context."""

    def __init__(self, **options: Any) -> None:
        self.options = LongContextOptions(**options)
        self.confidence = 0.95

    def result(
        self,
        metric: str,
        value: float,
        *,
        threshold: float | None,
        interval: Interval | None,
        unit: str,
        message: str,
    ) -> CheckResult:
        verdict, _ = decide(value, threshold, Comparison.LE, interval=interval)
        return CheckResult(
            "long-context",
            "long-context",
            metric,
            verdict,
            message,
            value=value,
            threshold=threshold,
            comparison=Comparison.LE,
            interval=interval,
            unit=unit,
        )

    def skip(self, message: str, metric: str = "", **_: Any) -> CheckResult:
        return CheckResult("long-context", "long-context", metric, Verdict.SKIP, message)


def _keys(found: int, lost: int) -> Measured:
    ref = np.ones(found, dtype=bool)
    sub = ref.copy()
    sub[:lost] = False
    empty = np.zeros(0)
    return Measured(
        empty, empty.astype(int), empty, empty, empty, ref, sub, np.linspace(0, 1, found)
    )


def test_one_missed_pass_key_of_two_cannot_fail_a_quant() -> None:
    """The issue's coin flip: 1 of 2 keys lost was a fail; now its Wilson interval spans almost
    everything, and under min_retrieval_trials keys it only warns, and asks for more keys."""
    judged = Judged([])
    ctx = _Context()
    retrieval(ctx, judged, "q4_0", _keys(2, 1), 0.95)  # type: ignore[arg-type]
    (result,) = judged.results
    assert result.verdict is not Verdict.FAIL and result.severity is Severity.WARN
    assert result.interval is not None and result.interval.low < 0.34 < result.interval.high
    assert "warn only" in result.message and "retrieval_drop[q4_0]" in judged.undecided
    assert result.details["evidence"]["sample_needed"] >= 60


def test_enough_lost_pass_keys_fail_on_an_interval_beyond_the_floor() -> None:
    judged = Judged([])
    retrieval(_Context(), judged, "q4_0", _keys(40, 30), 0.95)  # type: ignore[arg-type]
    (result,) = judged.results
    assert result.verdict is Verdict.FAIL and result.severity is Severity.FAIL
    assert result.interval is not None and result.interval.low > 0.34
    assert result.details["evidence"]["resolution"] == pytest.approx(
        wilson_half_width(0.34, 40, 0.95)
    )
