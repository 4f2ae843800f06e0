"""Judging: the strongest evidence that can tell the candidates apart decides (weights, else
behaviour, else metadata) and the verdict says which one did. The other kinds are reported as
supporting evidence: a failure there is a ``warn``, never a block.

What a result records here (``details["supporting"]``, ``details["inconclusive"]``,
``on_inconclusive``) is what :mod:`qgate.integrity` recomputes the verdicts from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from qgate.check import CheckContext
from qgate.results import CheckResult, Comparison, Interval, Severity, Verdict
from qgate.stats import inconclusive_verdict
from qgate_checks.identity.behaviour import BehaviourEvidence
from qgate_checks.identity.candidates import Candidate
from qgate_checks.identity.gathering import Evidence
from qgate_checks.identity.metadata import MetadataEvidence
from qgate_checks.identity.options import IdentityOptions
from qgate_checks.identity.tables import evidence_tables
from qgate_checks.identity.weights import WeightEvidence

EvidenceKind = Literal["weights", "behaviour", "metadata"]
#: the order in which evidence decides: the first one that can tell the candidates apart
PRECEDENCE: tuple[EvidenceKind, ...] = ("weights", "behaviour", "metadata")

Context = CheckContext[IdentityOptions]


def judge(ctx: Context, candidates: list[Candidate], evidence: Evidence) -> list[CheckResult]:
    """Every kind's results, the deciding one's as measured and the others' as supporting;
    the first result carries what decided, the timings and the report's tables."""
    decided_by = next((k for k in PRECEDENCE if evidence.decisive.get(k) == ""), None)
    results: list[CheckResult] = []
    for kind in PRECEDENCE:
        produced = _results_of(kind, ctx, candidates, evidence)
        if kind != decided_by:
            produced = [_supporting(r, decided_by) for r in produced]
        else:
            for r in produced:
                r.message += f" [deciding evidence: {kind}]"
        results.extend(produced)
    if decided_by is None:
        results.insert(0, _undecided(ctx, evidence))
    if not results:
        results.append(ctx.skip("no evidence was gathered"))
    first = results[0]
    first.details.update(_what_decided(candidates, evidence, decided_by))
    first.figures.tables += evidence_tables(candidates, evidence)
    return results


def _results_of(
    kind: EvidenceKind, ctx: Context, candidates: list[Candidate], evidence: Evidence
) -> list[CheckResult]:
    if kind == "weights":
        return weight_results(ctx, candidates, evidence.weights) if evidence.weights else []
    if kind == "behaviour":
        return behaviour_results(ctx, candidates, evidence.behaviour) if evidence.behaviour else []
    return metadata_results(ctx, candidates, evidence.metadata)


def _what_decided(
    candidates: list[Candidate], evidence: Evidence, decided_by: str | None
) -> dict[str, Any]:
    weights, behaviour = evidence.weights, evidence.behaviour
    return {
        "decided_by": decided_by,
        "claim": str(candidates[0].path),
        "not_from": [str(c.path) for c in candidates[1:]],
        "undecided": {k: v for k, v in evidence.decisive.items() if v},
        "seconds": {
            "weights": round(weights.seconds, 3) if weights else None,
            "behaviour": round(behaviour.seconds, 3) if behaviour else None,
        },
    }


def _undecided(ctx: Context, evidence: Evidence) -> CheckResult:
    """The result that says no evidence could tell the candidates apart: the policy's
    ``on_inconclusive`` (:func:`qgate.stats.inconclusive_verdict`)."""
    reasons = "; ".join(f"{k}: {evidence.decisive[k]}" for k in PRECEDENCE)
    severity = Severity(ctx.spec.severity)
    verdict = inconclusive_verdict(ctx.on_inconclusive, severity)
    return CheckResult(
        check=ctx.check_name,
        check_id=ctx.spec.key,
        metric="identity",
        verdict=verdict,
        message=f"no evidence can tell the candidates apart ({reasons}); "
        f"on_inconclusive: {ctx.on_inconclusive}",
        severity=severity,
        # no value to judge: the verdict is on_inconclusive's, and says so
        details={"inconclusive": True},
        on_inconclusive=ctx.on_inconclusive,
    )


def _supporting(result: CheckResult, decided_by: str | None) -> CheckResult:
    """A result of evidence that did not decide: reported, never blocking."""
    if result.verdict in (Verdict.FAIL, Verdict.ERROR):
        result.verdict = Verdict.WARN
    who = f"{decided_by} decided" if decided_by else "nothing decided"
    result.message = f"{result.message} [supporting evidence, {who}]"
    result.details["supporting"] = True
    return result


# -- weights ---------------------------------------------------------------------------------


def weight_results(
    ctx: Context, candidates: list[Candidate], weights: WeightEvidence
) -> list[CheckResult]:
    options = ctx.options
    cos = weights.cos(1)[weights.matrices]
    if not len(cos):  # nothing was compared: no weight result (see weights_decisive)
        return []
    share = weights.match_share()
    results = [
        _share_result(
            ctx,
            "weight_match_share",
            share,
            options.min_match_share,
            f"weights: {share:.0%} of {len(cos)} weight matrices have cosine >= "
            f"{options.min_cosine} to the claim (median cosine {np.median(cos):.4f}, "
            f"median rel. error {np.median(weights.rel(1)[weights.matrices]):.4f}; "
            f"{len(weights.tensors)} tensors, {weights.elements:,} values compared)",
            {"median_cosine": float(np.median(cos)), "min_cosine": float(cos.min())},
        )
    ]
    per_other = []
    for k in range(2, len(candidates) + 1):
        closer, ratio, telling = weights.closer(k)
        if closer is not None:
            per_other.append((closer, ratio, telling, candidates[k - 1]))
    if per_other:
        closer, ratio, telling, worst = min(per_other, key=lambda row: row[0])
        results.append(
            _share_result(
                ctx,
                "weight_closer_share",
                closer,
                options.min_closer_share,
                f"weights: closer to the claim than to {worst.path.name} on {closer:.0%} of "
                f"{telling} tensors that tell them apart (median error ratio claim/not_from "
                f"{ratio:.3f})",
                {"median_error_ratio": ratio, "telling_tensors": telling},
            )
        )
    return results


# -- behaviour -------------------------------------------------------------------------------


def behaviour_results(
    ctx: Context, candidates: list[Candidate], behaviour: BehaviourEvidence
) -> list[CheckResult]:
    claim = behaviour.mean(0)
    if claim is None:
        return []
    where = f"{behaviour.prompts} chat prompts, {behaviour.tokens} tokens"
    if len(candidates) == 1:
        return [
            _kld_result(
                ctx,
                "behaviour_kld",
                claim,
                ctx.options.max_kld,
                _prompt_interval(ctx, behaviour, lambda idx: behaviour.mean(0, idx)),
                f"behaviour: mean KLD to the claim {claim:.4f} nats ({where})",
            )
        ]
    ratio = behaviour.ratio()
    if ratio is None:
        return []
    nearest = min(
        (mean, candidates[k].path.name)
        for k in range(1, len(candidates))
        if (mean := behaviour.mean(k)) is not None
    )
    return [
        _kld_result(
            ctx,
            "behaviour_kld_ratio",
            ratio,
            ctx.options.max_kld_ratio,
            _prompt_interval(ctx, behaviour, behaviour.ratio),
            f"behaviour: mean KLD to the claim {claim:.4f} vs {nearest[0]:.4f} to "
            f"{nearest[1]} (ratio {ratio:.3f}; {where})",
            {"kld_claim": claim, "kld_nearest_not_from": nearest[0]},
        )
    ]


def _kld_result(
    ctx: Context,
    metric: str,
    value: float,
    maximum: float,
    interval: Interval | None,
    message: str,
    details: dict[str, Any] | None = None,
) -> CheckResult:
    """A mean KL divergence (or a ratio of them) that must stay at most ``maximum``."""
    return ctx.result(
        metric,
        value,
        threshold=maximum,
        comparison=Comparison.LE,
        interval=interval,
        message=message,
        details=details,
    )


def _prompt_interval(
    ctx: Context,
    behaviour: BehaviourEvidence,
    statistic: Callable[[np.ndarray], float | None],
) -> Interval | None:
    """A bootstrap interval over the prompts, at the policy's settings."""

    def finite(idx: np.ndarray) -> float:
        value = statistic(idx)
        return math.nan if value is None else value

    found = ctx.bootstrap(behaviour.prompts, finite)
    if found is None or not (math.isfinite(found.low) and math.isfinite(found.high)):
        return None
    return found


# -- metadata --------------------------------------------------------------------------------


def metadata_results(
    ctx: Context, candidates: list[Candidate], metadata: MetadataEvidence
) -> list[CheckResult]:
    options = ctx.options
    share = metadata.match_share(0)
    if share is None:
        return []
    differing = [k for k, same in metadata.matches[0].items() if same is False]
    results = [
        _share_result(
            ctx,
            "metadata_match_share",
            share,
            options.min_metadata_match,
            f"metadata: {metadata.match_count(0)} fields equal the claim's"
            + (f" (differ: {', '.join(differing)})" if differing else ""),
        )
    ]
    rows = []
    for k in range(1, len(candidates)):
        closer, telling = metadata.closer_share(k)
        if closer is not None:
            rows.append((closer, telling, candidates[k].path.name))
    if rows:
        closer, telling, name = min(rows)
        results.append(
            _share_result(
                ctx,
                "metadata_closer_share",
                closer,
                options.min_closer_share,
                f"metadata: equals the claim on {closer:.0%} of the {telling} fields where the "
                f"claim and {name} differ",
            )
        )
    return results


def _share_result(
    ctx: Context,
    metric: str,
    share: float,
    minimum: float,
    message: str,
    details: dict[str, Any] | None = None,
) -> CheckResult:
    """A share (of weight matrices, telling tensors, metadata fields) that must reach
    ``minimum``."""
    return ctx.result(
        metric,
        share,
        threshold=minimum,
        comparison=Comparison.GE,
        unit="%",
        message=message,
        details=details,
    )
