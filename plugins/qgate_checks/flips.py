"""Answer flips: the subject's item-by-item outcomes against the reference's on the same items.

Two quants can score the same accuracy while answering different items right: the accuracy
difference is the wrong-to-right flips minus the right-to-wrong ones, and it hides both. So each
item is a pair (reference right?, subject right?), and what is reported is the 2 x 2 table:
right-to-wrong flips ``b``, wrong-to-right flips ``c``, with

- the exact McNemar test: under "the quant changes nothing systematically" every discordant item
  is a fair coin, so ``b ~ Binomial(b + c, 1/2)``; its two-sided p-value says whether the flips
  lean one way;
- exact (Clopper-Pearson) intervals for the share of items that flip right to wrong, which a
  policy can bound, and for the other shares.

Pure functions of the outcomes (no scipy: the binomial tails are summed in log space), so they
are tested on hand-made tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from qgate.figures import Table
from qgate.results import Interval


def _log_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    logs = [_log_pmf(i, n, p) for i in range(k + 1)]
    top = max(logs)
    if top == -math.inf:
        return 0.0
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def _solve(function: Callable[[float], float], target: float, increasing: bool) -> float:
    """The p in [0, 1] where a monotone ``function(p)`` crosses ``target`` (bisection)."""
    low, high = 0.0, 1.0
    for _ in range(100):
        middle = (low + high) / 2
        value = function(middle)
        if (value < target) == increasing:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def clopper_pearson(k: int, n: int, confidence: float) -> Interval | None:
    """The exact interval of a binomial share ``k / n`` (None without items)."""
    if n <= 0:
        return None
    alpha = 1 - confidence
    # lower: the p at which seeing k or more has probability alpha / 2
    low = (
        0.0
        if k == 0
        else _solve(lambda p: 1 - binomial_cdf(k - 1, n, p), alpha / 2, increasing=True)
    )
    # upper: the p at which seeing k or fewer has probability alpha / 2
    high = 1.0 if k == n else _solve(lambda p: binomial_cdf(k, n, p), alpha / 2, increasing=False)
    return Interval(low, high, confidence)


def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """Two-sided exact McNemar p-value: 1 when nothing flipped, small when flips lean one way."""
    discordant = right_to_wrong + wrong_to_right
    if discordant == 0:
        return 1.0
    return min(1.0, 2 * binomial_cdf(min(right_to_wrong, wrong_to_right), discordant, 0.5))


@dataclass(frozen=True)
class Flips:
    """The paired outcomes of one set of items: how many stayed right, stayed wrong, or flipped."""

    items: int
    both_right: int
    right_to_wrong: int  #: the reference right, the subject wrong
    wrong_to_right: int  #: the reference wrong, the subject right
    both_wrong: int

    @classmethod
    def of(
        cls,
        reference_right: Sequence[bool] | np.ndarray,
        subject_right: Sequence[bool] | np.ndarray,
    ) -> Flips:
        ref = np.asarray(reference_right, dtype=bool)
        sub = np.asarray(subject_right, dtype=bool)
        if ref.shape != sub.shape:
            raise ValueError(f"{len(ref)} reference outcomes against {len(sub)} subject outcomes")
        return cls(
            items=int(ref.size),
            both_right=int((ref & sub).sum()),
            right_to_wrong=int((ref & ~sub).sum()),
            wrong_to_right=int((~ref & sub).sum()),
            both_wrong=int((~ref & ~sub).sum()),
        )

    @property
    def reference_right(self) -> int:
        return self.both_right + self.right_to_wrong

    @property
    def flipped(self) -> int:
        return self.right_to_wrong + self.wrong_to_right

    def share(self, count: int) -> float:
        return count / self.items if self.items else math.nan

    @property
    def right_to_wrong_share(self) -> float:
        """Right-to-wrong flips per item (Dutta et al.'s "flips" counts both directions)."""
        return self.share(self.right_to_wrong)

    @property
    def lost_share(self) -> float:
        """Of the items the reference got right, the share the subject got wrong."""
        right = self.reference_right
        return self.right_to_wrong / right if right else math.nan

    @property
    def p_value(self) -> float:
        return mcnemar_exact(self.right_to_wrong, self.wrong_to_right)

    def interval(self, count: int, confidence: float) -> Interval | None:
        return clopper_pearson(count, self.items, confidence)

    def record(self, confidence: float) -> dict[str, object]:
        """The table and its statistics, for a result's details (JSON)."""
        r2w = self.interval(self.right_to_wrong, confidence)
        w2r = self.interval(self.wrong_to_right, confidence)
        return {
            "items": self.items,
            "both_right": self.both_right,
            "right_to_wrong": self.right_to_wrong,
            "wrong_to_right": self.wrong_to_right,
            "both_wrong": self.both_wrong,
            "right_to_wrong_share": self.right_to_wrong_share,
            "right_to_wrong_interval": [r2w.low, r2w.high] if r2w else None,
            "wrong_to_right_share": self.share(self.wrong_to_right),
            "wrong_to_right_interval": [w2r.low, w2r.high] if w2r else None,
            "flipped_share": self.share(self.flipped),
            "lost_share": None if math.isnan(self.lost_share) else self.lost_share,
            "mcnemar_p": self.p_value,
            "confidence": confidence,
        }

    def row(self, label: str, confidence: float) -> list[object]:
        """One row of :func:`flip_table`."""
        r2w = self.interval(self.right_to_wrong, confidence)
        return [
            label,
            self.items,
            self.both_right,
            self.right_to_wrong,
            self.wrong_to_right,
            self.both_wrong,
            percent(self.right_to_wrong_share, r2w),
            f"{self.p_value:.3g}",
        ]

    def describe(self, what: str = "items") -> str:
        """``7 of 60 items flipped right to wrong, 2 wrong to right (McNemar p = 0.18)``."""
        return (
            f"{self.right_to_wrong} of {self.items} {what} flipped right to wrong, "
            f"{self.wrong_to_right} wrong to right (exact McNemar p = {self.p_value:.3g})"
        )


def percent(share: float, interval: Interval | None) -> str:
    """``11.7 % [4.8, 22.6]``."""
    if math.isnan(share):
        return "n/a"
    text = f"{share * 100:.1f} %"
    if interval is not None:
        text += f" [{interval.low * 100:.1f}, {interval.high * 100:.1f}]"
    return text


def flip_table(
    title: str, rows: list[tuple[str, Flips]], confidence: float, group: str = "group"
) -> Table:
    """Flips per group (a tier, a prompt set), with the right-to-wrong share's exact interval."""
    columns = [
        group,
        "items",
        "both right",
        "right to wrong",
        "wrong to right",
        "both wrong",
        f"right to wrong ({confidence * 100:g}% exact interval)",
        "McNemar p",
    ]
    return Table(title, columns, [flips.row(label, confidence) for label, flips in rows])
