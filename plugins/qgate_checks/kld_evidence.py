"""What ``kl-divergence`` shows beside its statistics: the measurement's noise floor, and the
tokens where the subject and the reference disagree most, with their contexts.

The floor (``CheckContext.noise_floor``) is the reference against itself under settings that
should not matter; a limit below it asks for a resolution the measurement does not have, so
such a policy is refused with the floor in the message instead of being judged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qgate.check import CheckContext
from qgate.errors import PolicyError
from qgate.figures import Table
from qgate.results import Interval
from qgate.scoring.paired import NoiseFloor, PairedScores

#: a statistic of per-token KL divergences (mean, a quantile)
KLDStatistic = Callable[[np.ndarray], float]

#: option -> (what it limits, the statistic of the floor it must not lie below)
FLOORED_OPTIONS: dict[str, tuple[str, KLDStatistic]] = {
    "max_mean": ("mean KLD", lambda kld: float(kld.mean())),
    "max_median": ("median KLD", lambda kld: float(np.median(kld))),
    "max_p99": ("p99 KLD", lambda kld: float(np.quantile(kld, 0.99))),
    "max_p999": ("p99.9 KLD", lambda kld: float(np.quantile(kld, 0.999))),
}
#: each KLD metric and the floor statistic shown beside it
METRIC_FLOOR = {
    "kld_mean": "max_mean",
    "kld_median": "max_median",
    "kld_p99": "max_p99",
    "kld_p999": "max_p999",
}
#: tokens of context shown before a token where the models disagree
CONTEXT_TOKENS = 24
CONTEXT_CHARS = 80


@dataclass
class FloorView:
    """The noise floor over the domains a check reads: pooled, per domain, and the gaps."""

    pooled: NoiseFloor | None
    by_domain: dict[str, NoiseFloor]
    missing: dict[str, str]  #: domain -> why it has no floor

    @classmethod
    def of(cls, ctx: CheckContext, domains: list[str]) -> FloorView:
        found = ctx.noise_floor()
        by_domain = {d: f for d in domains if isinstance(f := found.get(d), NoiseFloor)}
        missing: dict[str, str] = {}
        for domain in domains:
            why = found.get(domain)
            if domain not in by_domain:
                missing[domain] = why if isinstance(why, str) else "not measured"
        floors = list(by_domain.values())
        return cls(NoiseFloor.pooled(floors) if floors else None, by_domain, missing)

    def statistic(self, option: str) -> float | None:
        if self.pooled is None:
            return None
        if option == "min_top1_agreement":
            return float(self.pooled.top1_same.mean())
        return FLOORED_OPTIONS[option][1](self.pooled.kld)

    def note(self, metric: str) -> str:
        """``noise floor 0 (the reference against itself)`` for a metric's message."""
        option = METRIC_FLOOR.get(
            metric, "min_top1_agreement" if metric == "top1_agreement" else ""
        )
        value = self.statistic(option) if option else None
        if value is None:
            return "noise floor not measured" if self.pooled is None else ""
        shown = f"{value:.2%}" if option == "min_top1_agreement" else f"{value:.3g}"
        return f"noise floor {shown} (the reference against itself)"

    def record(self, ctx: CheckContext) -> dict[str, object]:
        """The floor for a result's details (JSON)."""
        if self.pooled is None:
            return {"measured": False, "missing": dict(self.missing)}
        floor = self.pooled
        interval = mean_interval(ctx, floor)
        return {
            "measured": True,
            "method": floor.method,
            "chunks": floor.n_chunks,
            "tokens": floor.tokens,
            "mean": float(floor.kld.mean()),
            "mean_interval": [interval.low, interval.high] if interval else None,
            "p99": float(np.quantile(floor.kld, 0.99)),
            "p999": float(np.quantile(floor.kld, 0.999)),
            "max": float(floor.kld.max()),
            "top1_agreement": float(floor.top1_same.mean()),
            "max_abs_logprob_diff": float(floor.logprob_diff.max()),
            "missing": dict(self.missing),
        }


def mean_interval(ctx: CheckContext, floor: NoiseFloor) -> Interval | None:
    """Bootstrap interval of the floor's mean KLD over its chunks."""
    per_chunk = np.bincount(floor.chunk, weights=floor.kld) / np.maximum(
        np.bincount(floor.chunk), 1
    )
    present = per_chunk[np.bincount(floor.chunk) > 0]
    return ctx.bootstrap(len(present), lambda idx: float(present[idx].mean()))


def refuse_limits_below_floor(ctx: CheckContext, floor: FloorView) -> None:
    """A limit the measurement cannot resolve is a policy error, not a verdict.

    :raises PolicyError: naming the option, its limit and the measured floor.
    """
    if floor.pooled is None:
        return
    where = f"checks[{ctx.spec.key}].options"
    for option, (what, _) in FLOORED_OPTIONS.items():
        limit = getattr(ctx.options, option, None)
        value = floor.statistic(option)
        if limit is not None and value is not None and limit < value:
            raise PolicyError(
                f"{option} = {limit:g} lies below the measurement's own noise floor: the "
                f"reference against itself already has a {what} of {value:.4g} nats "
                f"({floor.pooled.tokens} tokens, {floor.pooled.method}), so this limit is below "
                "what the measurement can resolve; set it above the floor",
                key_path=f"{where}.{option}",
            )
    limit = getattr(ctx.options, "min_top1_agreement", None)
    agreement = floor.statistic("min_top1_agreement")
    if limit is not None and agreement is not None and limit > agreement:
        raise PolicyError(
            f"min_top1_agreement = {limit:g} lies above the measurement's own noise floor: the "
            f"reference against itself agrees on only {agreement:.2%} of top-1 tokens, so this "
            "limit is beyond what the measurement can resolve; set it below that",
            key_path=f"{where}.min_top1_agreement",
        )


def floor_table(ctx: CheckContext, floor: FloorView) -> Table:
    """The floor per domain and pooled, in nats."""
    columns = [
        "domain",
        "chunks",
        "tokens",
        f"mean ({ctx.confidence * 100:g}% interval)",
        "p99",
        "p99.9",
        "max",
        "top-1 agreement",
        "max |d log p|",
    ]
    rows: list[list[object]] = []
    named = list(floor.by_domain.items())
    if floor.pooled is not None and len(named) > 1:
        named.append(("all", floor.pooled))
    for domain, f in named:
        interval = mean_interval(ctx, f)
        shown = f"{f.kld.mean():.3g}"
        if interval is not None:
            shown += f" [{interval.low:.3g}, {interval.high:.3g}]"
        rows.append(
            [
                domain,
                f.n_chunks,
                f.tokens,
                shown,
                f"{np.quantile(f.kld, 0.99):.3g}",
                f"{np.quantile(f.kld, 0.999):.3g}",
                f"{f.kld.max():.3g}",
                f"{f.top1_same.mean():.2%}",
                f"{f.logprob_diff.max():.3g}",
            ]
        )
    rows += [[domain, "", "", why, "", "", "", "", ""] for domain, why in floor.missing.items()]
    method = floor.pooled.method if floor.pooled is not None else "not measured"
    return Table(f"Noise floor: the reference against itself ({method})", columns, rows)


def disagreement_table(ctx: CheckContext, domains: list[PairedScores], count: int) -> Table | None:
    """The ``count`` tokens with the largest KL divergence over ``domains``, with the text
    before each, the actual next token and each model's most likely one (None when the scores
    keep no token ids)."""
    if count <= 0 or any(s.tokens is None or s.position is None for s in domains):
        return None
    ranked = sorted(
        ((float(s.kld[row]), d, int(row)) for d, s in enumerate(domains) for row in _top(s, count)),
        reverse=True,
    )[:count]
    rows = []
    for kld, d, row in ranked:
        scores = domains[d]
        before, actual = scores.context(row, CONTEXT_TOKENS)
        rows.append(
            [
                scores.domain,
                int(scores.chunk[row]),
                int(scores.position[row]),  # type: ignore[index]
                round(kld, 4),
                _shown(ctx.detokenize(before))[-CONTEXT_CHARS:],
                _shown(ctx.detokenize([actual])),
                _shown(ctx.detokenize([int(scores.ref_top1[row])])),
                _shown(ctx.detokenize([int(scores.sub_top1[row])])),
                f"{scores.ref_logprob[row]:.2f} / {scores.sub_logprob[row]:.2f}",
            ]
        )
    columns = [
        "domain",
        "chunk",
        "position",
        "KLD (nats)",
        "context",
        "next token",
        "reference top-1",
        "subject top-1",
        "log p(next): reference / subject",
    ]
    return Table(f"The {len(rows)} tokens where the subject departs most", columns, rows)


def _top(scores: PairedScores, count: int) -> np.ndarray:
    """Rows of the ``count`` largest KL divergences of one domain."""
    count = min(count, len(scores.kld))
    return np.argpartition(-scores.kld, count - 1)[:count] if count else np.array([], dtype=int)


def _shown(text: str) -> str:
    """Token text on one table line: line breaks and tabs made visible."""
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
