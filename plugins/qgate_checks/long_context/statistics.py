"""Per-bucket statistics of one KV cache type, each with a block-bootstrap interval.

The unit of resampling is a block of scored positions (``sequence.BLOCK`` tokens of one
sequence). Intervals of the per-bucket figures are at ``bonferroni(confidence, buckets)``, so the
interval for the worst bucket built from them (``qgate.stats.largest_of``) holds at
``confidence`` for all buckets at once: a bucket picked as the worst of five is not more likely
to fail by chance than a single figure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from qgate.check import CheckContext
from qgate.results import Interval
from qgate.stats import bonferroni, bootstrap_difference, bootstrap_interval
from qgate_checks.long_context.measure import Measured
from qgate_checks.long_context.sequence import bucket_label

Statistic = Callable[[np.ndarray], float]


@dataclass
class Bucket:
    """One position bucket's figures; intervals at the per-bucket (Bonferroni) confidence."""

    label: str
    mid: float  #: the bucket's middle position, where the report's curves put it
    rows: np.ndarray  #: indices into the measured text positions
    units: int  #: bootstrap blocks
    kld: float
    kld_interval: Interval | None
    p99: float
    p99_interval: Interval | None
    ppl_reference: float
    ppl_subject: float
    ppl_delta: float
    ppl_delta_interval: Interval | None


def ppl_delta(data: Measured, rows: np.ndarray) -> float:
    """PPL_subject / PPL_reference - 1 over ``rows`` (paired: the same positions)."""
    return float(np.exp(data.ref_logprob[rows].mean() - data.sub_logprob[rows].mean()) - 1.0)


def kld_p99(data: Measured, rows: np.ndarray) -> float:
    return float(np.quantile(data.kld[rows], 0.99))


def kld_mean(data: Measured, rows: np.ndarray) -> float:
    return float(data.kld[rows].mean())


def over_blocks(
    ctx: CheckContext, data: Measured, rows: np.ndarray, statistic: Statistic, confidence: float
) -> tuple[Interval | None, int]:
    """Interval of ``statistic(rows)`` with whole blocks resampled, and the number of blocks."""
    members = block_members(data.block[rows])
    interval = bootstrap_interval(
        len(members),
        lambda idx: statistic(rows[np.concatenate([members[i] for i in idx])]),
        resamples=ctx.settings.bootstrap,
        confidence=confidence,
        seed=ctx.settings.seed,
    )
    return interval, len(members)


def block_members(block: np.ndarray) -> list[np.ndarray]:
    """For each distinct block id, the indices (into ``block``) of its positions."""
    _, inverse = np.unique(block, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.cumsum(np.bincount(inverse))[:-1])


def buckets(ctx: CheckContext, data: Measured, edges: list[int], confidence: float) -> list[Bucket]:
    """Every bucket that holds measured positions, judged at a Bonferroni share of
    ``confidence``."""
    spans = [
        (lo, hi, np.flatnonzero((data.positions >= lo) & (data.positions < hi)))
        for lo, hi in pairwise(edges)
    ]
    spans = [(lo, hi, rows) for lo, hi, rows in spans if len(rows)]
    each = bonferroni(confidence, len(spans))
    found = []
    for lo, hi, rows in spans:
        kld_interval, units = over_blocks(ctx, data, rows, lambda r: kld_mean(data, r), each)
        p99_interval, _ = over_blocks(ctx, data, rows, lambda r: kld_p99(data, r), each)
        delta_interval, _ = over_blocks(ctx, data, rows, lambda r: ppl_delta(data, r), each)
        found.append(
            Bucket(
                label=bucket_label(lo, hi),
                mid=(lo + hi) / 2,
                rows=rows,
                units=units,
                kld=kld_mean(data, rows),
                kld_interval=kld_interval,
                p99=kld_p99(data, rows),
                p99_interval=p99_interval,
                ppl_reference=float(np.exp(-data.ref_logprob[rows].mean())),
                ppl_subject=float(np.exp(-data.sub_logprob[rows].mean())),
                ppl_delta=ppl_delta(data, rows),
                ppl_delta_interval=delta_interval,
            )
        )
    return found


def late_excess(
    ctx: CheckContext, data: Measured, first: Bucket, last: Bucket, confidence: float
) -> tuple[float, Interval | None]:
    """Mean KLD of the last bucket minus the first's, resampling each one's blocks on its own."""

    def block_means(bucket: Bucket) -> np.ndarray:
        members = block_members(data.block[bucket.rows])
        return np.array([data.kld[bucket.rows[m]].mean() for m in members])

    value = last.kld - first.kld
    interval = bootstrap_difference(
        block_means(first),
        block_means(last),
        resamples=ctx.settings.bootstrap,
        confidence=confidence,
        seed=ctx.settings.seed,
    )
    return value, interval
