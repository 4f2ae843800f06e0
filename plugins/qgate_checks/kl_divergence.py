"""``kl-divergence``: how far the subject's next-token distributions are from the reference's.

The sharper measure used by llama.cpp's maintainers: mean, median and tail (p99, p99.9) of the
per-token KL divergence, and the top-1 agreement ("same top p"). Every statistic is in the
report's table per domain; each one with a floor in the policy also becomes a judged result with
a bootstrap interval over chunks, and the tail (p99, p99.9) is always a result, reported only
where the policy sets no limit.

Beside every statistic stands the measurement's noise floor (the reference against itself, see
``kld_evidence``); a limit below it is refused as a policy error. The report also lists the
tokens where the subject departs most from the reference, with the text before each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qgate.check import Check, CheckContext, describe
from qgate.figures import KLD_MEAN, Table
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.results import CheckResult, Comparison
from qgate.scoring.paired import PairedScores
from qgate.stats import state_evidence
from qgate_checks._common import pooled, select_domains, token_rows
from qgate_checks.kld_evidence import (
    FloorView,
    disagreement_table,
    floor_table,
    refuse_limits_below_floor,
)


@dataclass
class KLDivergenceOptions:
    max_mean: float | None = option(0.02, "largest mean KLD (nats)", minimum=0)
    max_median: float | None = option(None, "largest median KLD (nats)", minimum=0)
    max_p99: float | None = option(None, "largest 99th-percentile KLD (nats)", minimum=0)
    max_p999: float | None = option(None, "largest 99.9th-percentile KLD (nats)", minimum=0)
    min_top1_agreement: float | None = option(
        None,
        "smallest share of positions where both models rank the same token first",
        minimum=0,
        maximum=1,
    )
    domains: list[str] | None = option(None, "only these dataset domains (default: all)")
    top_tokens: int = option(
        8,
        "tokens where the subject departs most, shown in the report with their contexts",
        minimum=0,
    )


Statistic = Callable[[PairedScores, np.ndarray], float]

#: reported on every run, judged only where the policy sets a limit
TAILS = ("kld_p99", "kld_p999")

STATISTICS: list[tuple[str, str, Statistic, Comparison]] = [
    ("kld_mean", "max_mean", lambda s, rows: float(s.kld[rows].mean()), Comparison.LE),
    ("kld_median", "max_median", lambda s, rows: float(np.median(s.kld[rows])), Comparison.LE),
    ("kld_p99", "max_p99", lambda s, rows: float(np.quantile(s.kld[rows], 0.99)), Comparison.LE),
    ("kld_p999", "max_p999", lambda s, rows: float(np.quantile(s.kld[rows], 0.999)), Comparison.LE),
    (
        "top1_agreement",
        "min_top1_agreement",
        lambda s, rows: float((s.ref_top1[rows] == s.sub_top1[rows]).mean()),
        Comparison.GE,
    ),
]


class KLDivergenceCheck(Check[KLDivergenceOptions]):
    name = "kl-divergence"
    description = "KL divergence (mean, median, p99, p99.9) and top-1 agreement vs the reference"
    Options = KLDivergenceOptions
    needs_reference = True
    sequential = True

    def run(self, ctx: CheckContext[KLDivergenceOptions]) -> list[CheckResult]:
        options = ctx.options
        domains = select_domains(ctx, options.domains)
        if not domains:
            return [ctx.skip(f"no dataset domain matches {options.domains}")]
        floor = FloorView.of(ctx, [s.domain for s in domains])
        refuse_limits_below_floor(ctx, floor)
        scores = pooled(domains)
        everything = np.arange(len(scores.kld))
        results = []
        thresholded = [row for row in STATISTICS if getattr(options, row[1]) is not None]
        judged = thresholded or STATISTICS[:1]  # nothing to judge: report the mean
        # the tail is always reported beside the judged statistics: p99.9 is what quant
        # publishers rank by, and a reported-only result passes whatever its value
        judged += [row for row in STATISTICS if row[0] in TAILS and row not in judged]
        floor_record = floor.record(ctx)
        for metric, option_name, statistic, comparison in judged:
            value = statistic(scores, everything)
            interval = ctx.bootstrap(scores.n_chunks, _over_chunks(statistic, scores))
            unit = "%" if metric == "top1_agreement" else ""
            threshold = getattr(options, option_name)
            message = describe(metric, value, threshold, comparison, interval, unit)
            note = floor.note(metric)
            results.append(
                ctx.result(
                    metric,
                    value,
                    threshold=threshold,
                    comparison=comparison,
                    interval=interval,
                    unit=unit,
                    message=f"{message}; {note}" if note else message,
                    details={"noise_floor": floor_record},
                )
            )
        # the mean is the ladder's quality figure, judged or not
        results[0].headlines[KLD_MEAN.key] = float(scores.kld.mean())
        table_rows = []
        for s in domains:
            rows = np.arange(len(s.kld))
            table_rows.append(
                [s.domain, len(s.kld)]
                + [
                    f"{f(s, rows) * 100:.2f}%" if m == "top1_agreement" else round(f(s, rows), 5)
                    for m, _, f, _ in STATISTICS
                ]
            )
        columns = ["domain", "tokens", "mean", "median", "p99", "p99.9", "top-1 agreement"]
        tables = results[0].figures.tables
        tables.append(Table("KL divergence by domain (nats)", columns, table_rows))
        tables.append(floor_table(ctx, floor))
        departures = disagreement_table(ctx, domains, options.top_tokens)
        if departures is not None:
            tables.append(departures)
        return [state_evidence(r, sample=scores.n_chunks, sample_unit="chunks") for r in results]


def _over_chunks(statistic: Statistic, scores: PairedScores) -> Callable[[np.ndarray], float]:
    """``statistic`` over the tokens of a resample of chunk indices."""
    return lambda chunks: statistic(scores, token_rows(scores, chunks))


@hookimpl
def qgate_checks() -> list[Check]:
    return [KLDivergenceCheck()]
