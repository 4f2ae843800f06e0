"""Confidence intervals and verdicts.

Intervals come from a bootstrap over chunks (tokens inside a chunk are correlated, chunks are
not), paired: each resample takes the same chunks for subject and reference. Resampling is
seeded, so the same inputs always give the same interval and verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from qgate.results import Comparison, Interval, Severity, Verdict


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
