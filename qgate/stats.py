"""Confidence intervals and verdicts.

Intervals come from a bootstrap over chunks (tokens inside a chunk are correlated, chunks are
not), paired: each resample takes the same chunks for subject and reference. Resampling is
seeded, so the same inputs always give the same interval and verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from qgate.results import CheckResult, Comparison, Interval, Severity, Verdict


def bootstrap_interval(
    n_units: int,
    statistic: Callable[[np.ndarray], float],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval | None:
    """Percentile interval of ``statistic(indices)`` over resampled unit indices.

    ``statistic`` receives an int array of unit (chunk) indices drawn with replacement. With fewer
    than two units there is no interval.
    """
    if n_units < 2:
        return None
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_units, size=(resamples, n_units))
    values = np.array([statistic(row) for row in draws], dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return Interval(float(low), float(high), confidence)


def bootstrap_difference(
    first: np.ndarray,
    last: np.ndarray,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval | None:
    """Percentile interval of ``mean(last) - mean(first)``, each sample resampled on its own
    (two independent samples: a position bucket late in a sequence against an early one)."""
    if len(first) < 2 or len(last) < 2:
        return None
    rng = np.random.default_rng(seed)
    a = first[rng.integers(0, len(first), size=(resamples, len(first)))].mean(axis=1)
    b = last[rng.integers(0, len(last), size=(resamples, len(last)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(b - a, [alpha, 1 - alpha])
    return Interval(float(low), float(high), confidence)


def inconclusive_verdict(on_inconclusive: str, severity: Severity) -> Verdict:
    """What an undecided measurement gets: the policy's ``on_inconclusive``, where a ``fail``
    of a ``warn``-severity check is a ``warn``."""
    verdict = Verdict(on_inconclusive)
    return Verdict.WARN if verdict is Verdict.FAIL and severity is Severity.WARN else verdict


def decide(
    value: float | None,
    threshold: float | None,
    comparison: Comparison,
    *,
    interval: Interval | None = None,
    on_inconclusive: str = "warn",
    severity: Severity = Severity.FAIL,
) -> tuple[Verdict, str]:
    """The verdict for ``value`` against ``threshold``, and a word on how it was reached.

    With an interval: pass when the whole interval is on the good side, fail when the whole of it
    is on the bad side, and otherwise the policy's ``on_inconclusive``. A failure of a
    ``warn``-severity check is a ``warn``. A missing or non-finite value is an ``error``: a broken
    measurement must never pass.
    """
    if value is None or not math.isfinite(value):
        return Verdict.ERROR, "the measurement is not a finite number"
    if threshold is None:
        return Verdict.PASS, "no threshold set: reported only"
    if interval is not None:
        side = interval_side(interval, threshold, comparison)
        if side is True:
            verdict, how = Verdict.PASS, "the whole interval meets the threshold"
        elif side is False:
            verdict, how = Verdict.FAIL, "the whole interval misses the threshold"
        else:
            verdict = Verdict(on_inconclusive)
            how = f"inconclusive: the interval straddles the threshold (on_inconclusive: {on_inconclusive})"
    else:
        ok = comparison.holds(value, threshold)
        verdict, how = (
            (Verdict.PASS, "meets the threshold") if ok else (Verdict.FAIL, "misses the threshold")
        )
    if verdict is Verdict.FAIL and severity is Severity.WARN:
        verdict = Verdict.WARN
    return verdict, how


def interval_side(interval: Interval, threshold: float, comparison: Comparison) -> bool | None:
    """True when the whole interval meets the threshold, False when the whole of it misses,
    None when it straddles the threshold (inconclusive)."""
    worst = interval.high if comparison is Comparison.LE else interval.low
    best = interval.low if comparison is Comparison.LE else interval.high
    if comparison.holds(worst, threshold):
        return True
    if not comparison.holds(best, threshold):
        return False
    return None


# -- verdict power: intervals for proportions, simultaneous intervals, stated evidence ---------

#: the interval half-width a check aims for, as a share of its floor: a third by default, so a
#: true value a third of the floor away from it is decided (pass or fail) rather than straddled
TARGET_RESOLUTION = 1 / 3


def bonferroni(confidence: float, comparisons: int) -> float:
    """The confidence each of ``comparisons`` intervals needs for all of them to hold together
    at ``confidence`` (several looks at growing data, or the worst of several buckets)."""
    return 1 - (1 - confidence) / max(comparisons, 1)


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> Interval | None:
    """Wilson score interval of a binomial proportion (None without trials).

    Unlike the bootstrap it covers well with few trials and at 0 or all successes, where a
    percentile bootstrap collapses to a point."""
    if trials <= 0:
        return None
    z = _z(confidence)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials**2))
    return Interval(max(0.0, centre - half), min(1.0, centre + half), confidence)


def wilson_half_width(proportion: float, trials: int, confidence: float = 0.95) -> float:
    """The Wilson interval's half-width if ``proportion`` of ``trials`` succeeded: the resolution
    a binomial sample of that size has at a floor of ``proportion``."""
    if trials <= 0:
        return math.inf
    z = _z(confidence)
    n = trials
    return z / (n + z * z) * math.sqrt(n * proportion * (1 - proportion) + z * z / 4)


def trials_for_resolution(
    proportion: float, resolution: float, confidence: float = 0.95, *, limit: int = 100_000
) -> int:
    """The fewest trials whose Wilson half-width at ``proportion`` is at most ``resolution``."""
    n = 1
    while wilson_half_width(proportion, n, confidence) > resolution and n < limit:
        n += 1
    return n


def largest_of(intervals: list[Interval], level: float) -> Interval:
    """An interval for the largest of several quantities from one interval per quantity.

    If each of the quantities lies in its own interval, the largest of them lies between the
    largest lower end and the largest upper end: with intervals at ``bonferroni(level, k)`` this
    holds for all ``k`` at once at ``level``. So "every bucket meets the floor" passes only when
    every upper end does, and "some bucket misses it" fails only when one lower end does."""
    return Interval(max(i.low for i in intervals), max(i.high for i in intervals), level)


@dataclass(frozen=True)
class Evidence:
    """How finely a result's sample could judge it: the interval half-width it got (the
    smallest effect beyond the floor it could detect at its confidence), against a target."""

    resolution: float  #: the interval's half-width (for a proportion: the Wilson one at the floor)
    target: float  #: ``TARGET_RESOLUTION`` x the floor
    sample: int | None = None  #: how many resampled units (chunks, blocks, prompts, trials)
    sample_unit: str = ""

    @property
    def met(self) -> bool:
        return self.resolution <= self.target

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "target": self.target,
            "met": self.met,
            "sample": self.sample,
            "sample_unit": self.sample_unit,
        }

    def describe(self, unit: str = "") -> str:
        sample = f" over {self.sample} {self.sample_unit}" if self.sample is not None else ""
        verdict = "met" if self.met else "not met"
        return (
            f"resolution ±{_short(self.resolution, unit)}{sample} "
            f"(target ±{_short(self.target, unit)}, a third of the floor: {verdict})"
        )


def exact_evidence() -> dict[str, object]:
    """The ``details`` entry of a result read from a fact, not estimated from a sample (a header
    field, a count over a fixed probe set, a run setting): no sampling error, so no interval, and
    no resolution to size. A fail-severity result without an interval must carry it."""
    return {"evidence": {"exact": True}}


def rests_on_evidence(result: CheckResult) -> bool:
    """Whether a judged result's verdict may block a gate on its own: it has an interval, or it
    is exact (``exact_evidence``), or it is a zero-tolerance count (a limit of 0 differences:
    one observed difference proves the fault, and none over a fixed probe set is a fact about
    that set, so sampling error cannot move it). A result without a threshold judges nothing."""
    if result.threshold is None or result.interval is not None:
        return True
    if result.details.get("evidence", {}).get("exact"):
        return True
    value = result.value
    return (
        result.threshold == 0
        and result.comparison is Comparison.LE
        and value is not None
        and float(value).is_integer()
    )


def evidence_of(
    interval: Interval | None,
    threshold: float | None,
    *,
    resolution: float | None = None,
    sample: int | None = None,
    sample_unit: str = "",
    share: float = TARGET_RESOLUTION,
) -> Evidence | None:
    """The evidence statement of an interval judged against ``threshold`` (None when either is
    missing, or the floor is 0: a share of 0 is no target)."""
    if threshold is None or threshold == 0 or (interval is None and resolution is None):
        return None
    if resolution is None:
        assert interval is not None
        resolution = (interval.high - interval.low) / 2
    if not math.isfinite(resolution):
        return None
    return Evidence(resolution, share * abs(threshold), sample, sample_unit)


def state_evidence(
    result: CheckResult,
    *,
    sample: int | None = None,
    sample_unit: str = "",
    resolution: float | None = None,
) -> CheckResult:
    """Add the evidence statement to a judged result: ``details["evidence"]`` and a sentence in
    its message. A result without an interval or a threshold is returned unchanged."""
    stated = evidence_of(
        result.interval,
        result.threshold,
        resolution=resolution,
        sample=sample,
        sample_unit=sample_unit,
    )
    if stated is not None:
        result.details["evidence"] = stated.to_dict()
        result.message = f"{result.message}; {stated.describe(result.unit)}"
    return result


def _short(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:.2g} %" if abs(value) < 0.1 else f"{value * 100:.1f} %"
    return f"{value:.2g}"
