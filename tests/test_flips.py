"""Answer flips: the exact statistics, and task-accuracy's item-by-item comparison."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from qgate.results import RunReport, SkipCause, Verdict
from qgate_checks.flips import Flips, binomial_cdf, clopper_pearson, flip_table, mcnemar_exact
from qgate_checks.tasks import make_tasks


def brute_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize("n, p", [(1, 0.5), (9, 0.5), (40, 0.1), (60, 0.93)])
def test_the_binomial_cdf_matches_the_direct_sum(n, p):
    for k in range(-1, n + 1):
        assert binomial_cdf(k, n, p) == pytest.approx(brute_cdf(k, n, p), abs=1e-12)


def test_mcnemar_is_the_exact_two_sided_binomial_test_on_the_discordant_items():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(7, 2) == pytest.approx(2 * brute_cdf(2, 9, 0.5))
    assert mcnemar_exact(2, 7) == mcnemar_exact(7, 2)  # two-sided
    assert mcnemar_exact(10, 0) == pytest.approx(2 * 0.5**10)
    assert mcnemar_exact(5, 5) == 1.0


def test_clopper_pearson_bounds_are_the_exact_tail_crossings():
    interval = clopper_pearson(7, 60, 0.95)
    assert interval is not None
    # at the bounds, seeing 7 or more (7 or fewer) has probability alpha / 2
    assert 1 - brute_cdf(6, 60, interval.low) == pytest.approx(0.025, abs=1e-9)
    assert brute_cdf(7, 60, interval.high) == pytest.approx(0.025, abs=1e-9)
    none = clopper_pearson(0, 60, 0.95)
    assert none is not None and none.low == 0 and none.high == pytest.approx(1 - 0.025 ** (1 / 60))
    every = clopper_pearson(60, 60, 0.95)
    assert every is not None and every.high == 1 and every.low == pytest.approx(0.025 ** (1 / 60))
    assert clopper_pearson(0, 0, 0.95) is None


def test_flips_count_each_cell_of_the_paired_table():
    flips = Flips.of([1, 1, 1, 0, 0, 1], [1, 0, 0, 1, 0, 1])
    assert (flips.both_right, flips.right_to_wrong, flips.wrong_to_right, flips.both_wrong) == (
        2,
        2,
        1,
        1,
    )
    assert flips.right_to_wrong_share == pytest.approx(2 / 6)
    assert flips.lost_share == pytest.approx(2 / 4)
    record = flips.record(0.95)
    assert record["mcnemar_p"] == pytest.approx(mcnemar_exact(2, 1))
    low, high = record["right_to_wrong_interval"]
    assert low < 2 / 6 < high
    table = flip_table("t", [("all", flips)], 0.95, group="tier")
    assert table.columns[0] == "tier" and table.rows[0][:6] == ["all", 6, 2, 2, 1, 1]
    with pytest.raises(ValueError):
        Flips.of([True], [True, False])


# --------------------------------------------------------------------------------------------
# task-accuracy on the fake backend

PER_TIER = 40


def answers_for(indices: range | list[int]) -> dict[str, str]:
    """Canned right answers to the multi-step tasks at ``indices`` (others get word salad)."""
    tasks = make_tasks("multi_step", PER_TIER, 0)
    return {tasks[i].question: tasks[i].answer for i in indices}


def run_tasks(qgate, tmp_path: Path, subject: Path, reference: Path, extra: str = "") -> RunReport:
    policy = tmp_path / "flips.yaml"
    policy.write_text(
        "checks:\n  - use: task-accuracy\n    options:\n"
        f"      tiers: [multi_step]\n      tasks_per_tier: {PER_TIER}\n"
        f"      max_drop: {{multi_step: 0.2}}\n{extra}"
    )
    out = tmp_path / "r.json"
    result = qgate(
        "check", subject, "--reference", reference, "--policy", policy, "--json", out,
        "--html", tmp_path / "r.html", "-q",
    )  # fmt: skip
    assert result.code in (0, 1), result
    return RunReport.from_dict(json.loads(out.read_text()))


def test_same_accuracy_with_many_flips_is_told_apart_from_one_without(qgate, fake, tmp_path):
    reference = fake("ref", answers=answers_for(range(0, 28)))
    steady = fake("steady", answers=answers_for(range(0, 28)))
    flipper = fake("flipper", answers=answers_for(range(12, 40)))  # 28 right too, 12 of them new
    limit = "      max_right_to_wrong: 0.12\n"

    def results(subject: Path) -> dict[str, object]:
        report = run_tasks(qgate, tmp_path, subject, reference, limit)
        return {r.metric: r for r in report.subjects[0].results}

    quiet, loud = results(steady), results(flipper)
    for found in (quiet, loud):  # the accuracy drop sees nothing in either
        assert found["accuracy_drop[multi_step]"].value == pytest.approx(0.0)
    assert quiet["right_to_wrong"].value == 0 and quiet["right_to_wrong"].verdict is Verdict.PASS
    flips = loud["right_to_wrong"]
    assert flips.value == pytest.approx(12 / PER_TIER)
    assert flips.verdict is Verdict.FAIL  # the exact interval lies wholly above 12 %
    assert flips.interval is not None and flips.interval.low > 0.12
    record = flips.details["flips"]
    assert (record["right_to_wrong"], record["wrong_to_right"]) == (12, 12)
    assert record["mcnemar_p"] == pytest.approx(1.0)  # balanced: no lean either way
    assert "12 of 40 tasks flipped right to wrong, 12 wrong to right" in flips.message
    (table,) = flips.figures.tables
    assert table.title == "Answer flips vs the reference" and table.rows[0][3] == 12
    html = (tmp_path / "r.html").read_text()
    assert "Answer flips vs the reference" in html


def test_flips_are_reported_only_without_a_limit(qgate, fake, tmp_path):
    reference = fake("ref", answers=answers_for(range(0, 28)))
    subject = fake("sub", answers=answers_for(range(3, 28)))
    report = run_tasks(qgate, tmp_path, subject, reference)
    flips = {r.metric: r for r in report.subjects[0].results}["right_to_wrong"]
    assert flips.threshold is None and flips.verdict is Verdict.PASS
    assert flips.value == pytest.approx(3 / PER_TIER)
    assert flips.details["flips"]["mcnemar_p"] == pytest.approx(2 * 0.5**3)


def test_flips_without_any_signal_are_a_no_signal_skip_that_still_shows_them(qgate, fake, tmp_path):
    # the reference answers 2 of 40: no tier has signal, so nothing is judged, but the flips
    # are in the message and the table
    reference = fake("ref", answers=answers_for([0, 1]))
    subject = fake("sub", answers=answers_for([1, 2]))
    report = run_tasks(qgate, tmp_path, subject, reference, "      max_right_to_wrong: 0.0\n")
    results = {r.metric: r for r in report.subjects[0].results}
    flips = results["right_to_wrong"]
    assert flips.verdict is Verdict.SKIP and flips.skip_cause is SkipCause.NO_SIGNAL
    assert "1 of 40 tasks flipped right to wrong, 1 wrong to right" in flips.message
    assert flips.figures.tables and flips.details["flips"]["right_to_wrong"] == 1
    (gate,) = [r for r in report.subjects[0].results if r.check == "gate"]
    assert gate.verdict is Verdict.ERROR  # nothing judged: the gate cannot pass
