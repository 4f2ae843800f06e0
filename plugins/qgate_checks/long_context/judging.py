"""The verdicts of one KV cache type, each with its evidence statement, and whether its sample
is settled (every judged metric decided, or as fine as the target resolution).

Every verdict here rests on an interval: the PPL and KLD figures on a block bootstrap (the worst
bucket's through ``largest_of`` over Bonferroni-split per-bucket intervals), pass-key retrieval
on a Wilson interval over the keys the reference retrieves. A retrieval verdict over fewer keys
than ``min_retrieval_trials`` only warns: it cannot fail the gate alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qgate.check import CheckContext
from qgate.results import CheckResult, Comparison, Interval, Severity, SkipCause, Verdict
from qgate.stats import (
    interval_side,
    largest_of,
    state_evidence,
    trials_for_resolution,
    wilson_half_width,
    wilson_interval,
)
from qgate_checks.long_context.measure import Measured
from qgate_checks.long_context.options import LongContextOptions
from qgate_checks.long_context.statistics import Bucket, late_excess, over_blocks, ppl_delta


@dataclass
class Judged:
    """One KV cache type's results so far, and what more evidence would decide."""

    results: list[CheckResult]
    undecided: list[str] = field(default_factory=list)  #: metrics a longer sample could settle

    @property
    def settled(self) -> bool:
        return not self.undecided


def judge(
    ctx: CheckContext[LongContextOptions],
    kv: str,
    data: Measured,
    per_bucket: list[Bucket],
    confidence: float,
) -> Judged:
    """Every metric with a floor (the worst bucket's mean KLD is reported even without one)."""
    options = ctx.options
    judged = Judged([])
    where = f"{len(data.kld)} text positions of {data.sequences} sequence(s)"
    if options.max_ppl_delta is not None:
        rows = np.arange(len(data.kld))
        interval, units = over_blocks(ctx, data, rows, lambda r: ppl_delta(data, r), confidence)
        value = ppl_delta(data, rows)
        ppl_ref, ppl_sub = np.exp(-data.ref_logprob.mean()), np.exp(-data.sub_logprob.mean())
        message = f"KV {kv}: PPL {ppl_sub:.4f} vs reference {ppl_ref:.4f} over {where}"
        message += f", delta {value * 100:+.2f}%"
        sample = (units, "blocks")
        add(
            ctx, judged, f"ppl_delta[{kv}]", value, options.max_ppl_delta, interval, message, sample
        )
    worst_of = [
        ("max_bucket_ppl_delta", options.max_bucket_ppl_delta, "PPL delta", "ppl_delta"),
        ("max_bucket_kld", options.max_bucket_kld, "mean KLD", "kld"),
        ("max_bucket_kld_p99", options.max_bucket_kld_p99, "p99 KLD", "p99"),
    ]
    for metric, threshold, what, name in worst_of:
        if threshold is not None or (metric == "max_bucket_kld" and not judged.results):
            worst_bucket(ctx, judged, kv, per_bucket, (metric, threshold, what, name), confidence)
    if options.max_late_excess_kld is not None and len(per_bucket) > 1:
        first, last = per_bucket[0], per_bucket[-1]
        value, interval = late_excess(ctx, data, first, last, confidence)
        message = f"KV {kv}: KLD {first.kld:.4f} in {first.label}, {last.kld:.4f} in "
        message += f"{last.label} (excess {value:+.4f})"
        sample = (min(first.units, last.units), "blocks")
        floor = options.max_late_excess_kld
        add(ctx, judged, f"late_excess_kld[{kv}]", value, floor, interval, message, sample)
    if options.max_retrieval_drop is not None and options.needles > 0:
        retrieval(ctx, judged, kv, data, confidence)
    return judged


def add(
    ctx: CheckContext[LongContextOptions],
    judged: Judged,
    metric: str,
    value: float,
    threshold: float | None,
    interval: Interval | None,
    message: str,
    sample: tuple[int, str],
    resolution: float | None = None,
) -> CheckResult:
    """Judge one metric, state its evidence, and note it when more data could decide it."""
    unit = "%" if "ppl" in metric or "retrieval" in metric else ""
    result = ctx.result(
        metric, value, threshold=threshold, interval=interval, unit=unit, message=message
    )
    state_evidence(result, sample=sample[0], sample_unit=sample[1], resolution=resolution)
    if interval is None and threshold is not None:
        warn_only(result, "too few position blocks for an interval")
    judged.results.append(result)
    met = bool(result.details.get("evidence", {}).get("met"))
    decided = (
        interval is not None
        and threshold is not None
        and interval_side(interval, threshold, Comparison.LE) is not None
    )
    if threshold is not None and not decided and not met:
        judged.undecided.append(metric)
    return result


def worst_bucket(
    ctx: CheckContext[LongContextOptions],
    judged: Judged,
    kv: str,
    per_bucket: list[Bucket],
    spec: tuple[str, float | None, str, str],
    confidence: float,
) -> None:
    """The largest of a per-bucket figure, with the simultaneous interval of all buckets."""
    metric, threshold, what, name = spec
    values = [getattr(b, name) for b in per_bucket]
    intervals = [getattr(b, f"{name}_interval") for b in per_bucket]
    worst = int(np.argmax(values))
    interval = None if None in intervals else largest_of(intervals, confidence)
    shown = ", ".join(
        f"{b.label} {v * 100:+.2f}%" if name == "ppl_delta" else f"{b.label} {v:.4f}"
        for b, v in zip(per_bucket, values, strict=True)
    )
    message = f"KV {kv}: worst bucket {per_bucket[worst].label}, {what} against the f16-cache "
    message += f"reference ({shown})"
    units = min(b.units for b in per_bucket)
    sample = (units, "blocks")
    add(ctx, judged, f"{metric}[{kv}]", values[worst], threshold, interval, message, sample)


def retrieval(
    ctx: CheckContext[LongContextOptions],
    judged: Judged,
    kv: str,
    data: Measured,
    confidence: float,
) -> None:
    """The share of the reference's retrieved pass keys the subject loses (Wilson interval)."""
    options = ctx.options
    metric, floor = f"retrieval_drop[{kv}]", options.max_retrieval_drop
    assert floor is not None
    hidden, found = len(data.ref_hits), int(data.ref_hits.sum())
    if hidden == 0:
        reason = f"a context of {options.context} tokens leaves no room for a pass key"
        judged.results.append(ctx.skip(reason, metric))
        return
    if found == 0:
        reason = f"the reference retrieves none of the {hidden} pass keys: no signal"
        judged.results.append(ctx.skip(reason, metric, cause=SkipCause.NO_SIGNAL))
        return
    lost = int((data.ref_hits & ~data.sub_hits).sum())
    gained = int((~data.ref_hits & data.sub_hits).sum())
    message = f"KV {kv}: lost {lost} of the {found} pass keys the reference retrieves "
    message += f"({hidden} hidden in {data.sequences} sequence(s)); retrieved {gained} it missed"
    interval = wilson_interval(lost, found, confidence)
    resolution = wilson_half_width(floor, found, confidence)  # at the floor, where it decides
    sample = (found, "keys")
    result = add(ctx, judged, metric, lost / found, floor, interval, message, sample, resolution)
    evidence = result.details.get("evidence")
    if evidence and not evidence["met"]:
        evidence["sample_needed"] = trials_for_resolution(floor, evidence["target"], confidence)
    if found < options.min_retrieval_trials:
        warn_only(result, f"fewer than {options.min_retrieval_trials} keys retrieved")
        if metric not in judged.undecided and result.verdict is not Verdict.PASS:
            judged.undecided.append(metric)


def warn_only(result: CheckResult, why: str) -> None:
    """A verdict whose evidence may not block the gate: a warn at worst, and it says so."""
    if result.severity is Severity.FAIL:
        result.severity = Severity.WARN
        if result.verdict is Verdict.FAIL:
            result.verdict = Verdict.WARN
    result.message += f" [warn only: {why}]"
    result.details["warn_only"] = why
