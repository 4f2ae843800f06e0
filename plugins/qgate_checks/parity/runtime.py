"""``runtime-parity``: is the runtime, not the quantization, behind what was measured?

Two results:

- ``ppl_improvement``: how far the subject's perplexity falls *below* the reference's, from the
  shared scoring pass (free after ``perplexity``). Quantization adds noise; it does not make a
  model predict text much better than its own full-precision weights. A subject 95 % below its
  reference is a runtime that sees future tokens (a broken causal mask, a batch that leaks), or
  a reference run on other text: it must not pass, whatever its KL divergence says.
- ``runtime_floor_kld``: where the subject runs in another runtime than the reference and that
  runtime can run the reference's full-precision weights (the reference itself, when the
  subject's backend loads it; else ``full_precision``, such as an F16 GGUF of a Hugging Face
  reference), those weights are measured against the reference (:mod:`.floor`), and the quant's
  damage is reported over that floor. A floor beyond ``max_floor_kld`` is an error that says the
  runtime disagrees with the reference at full precision: the quant's failure is not its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from qgate.check import Check, CheckContext
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.results import CheckResult, Comparison, Verdict
from qgate_checks._common import pooled
from qgate_checks.parity.floor import FloorScores, measure_floor


@dataclass
class RuntimeParityOptions:
    max_ppl_improvement: float = option(
        0.10,
        "largest plausible fall of the subject's perplexity below the reference's (0.1 = 10 %)",
        minimum=0,
    )
    full_precision: str | None = option(
        None,
        "the reference's full-precision weights in the subject's format (an F16 GGUF of a "
        "Hugging Face reference), for the runtime floor; default: the reference itself, where "
        "the subject's backend loads it",
    )
    floor_datasets: list[str] = option(["en"], "shipped corpora the runtime floor is measured on")
    floor_chunks: int = option(2, "chunks of each of them", minimum=1)
    max_floor_kld: float = option(
        0.02,
        "mean KLD of the full-precision weights in the subject's runtime above which the "
        "runtime, not the quant, disagrees with the reference",
        minimum=0,
    )


class RuntimeParityCheck(Check[RuntimeParityOptions]):
    name = "runtime-parity"
    description = (
        "implausibly low perplexity; the subject's runtime at full precision vs the reference"
    )
    Options = RuntimeParityOptions
    needs_reference = True

    def run(self, ctx: CheckContext[RuntimeParityOptions]) -> list[CheckResult]:
        floor_path, why = floor_source(ctx)
        results = [plausibility(ctx, "" if floor_path else why)]
        if floor_path is not None:
            scores = measure_floor(
                ctx, floor_path, ctx.options.floor_datasets, ctx.options.floor_chunks
            )
            results.append(floor_result(ctx, scores, floor_path, why))
        return results


def floor_source(ctx: CheckContext[RuntimeParityOptions]) -> tuple[Path | None, str]:
    """The full-precision weights to run in the subject's runtime, and why those (or why none)."""
    assert ctx.reference is not None
    ours, theirs = ctx.subject.backend, ctx.reference.backend
    if ctx.options.full_precision:
        return Path(ctx.options.full_precision), "options.full_precision"
    if ours.name == theirs.name:
        return None, f"the subject and the reference run in one runtime ({ours.name}): no floor"
    try:
        loads_reference = ours.runs_full_precision(ctx.reference.path)
    except Exception:  # a backend that cannot tell must not fail the check: "cannot run it"
        loads_reference = False
    if loads_reference:
        return ctx.reference.path, f"the {ours.name} backend loads the reference itself"
    return None, (
        f"runtime floor not measured: the {ours.name} backend cannot load the {theirs.name} "
        "reference; give options.full_precision (its weights in the subject's format) to measure "
        f"how far {ours.name} alone moves them"
    )


def plausibility(ctx: CheckContext[RuntimeParityOptions], note: str) -> CheckResult:
    """How far below the reference's the subject's perplexity falls."""
    scores = pooled(ctx.paired_scores())
    ref_nll, sub_nll = scores.per_chunk(-scores.ref_logprob), scores.per_chunk(-scores.sub_logprob)
    improvement = float(1.0 - np.exp(sub_nll.mean() - ref_nll.mean()))
    interval = ctx.bootstrap(
        scores.n_chunks, lambda idx: float(1.0 - np.exp(sub_nll[idx].mean() - ref_nll[idx].mean()))
    )
    side = "below" if improvement >= 0 else "above"
    message = f"the subject's perplexity is {abs(improvement) * 100:.2f} % {side} the reference's"
    if improvement > ctx.options.max_ppl_improvement:
        message += (
            ": implausible for a quantization of it (a runtime that sees future tokens, a broken "
            "attention mask, or a reference run on other text)"
        )
    if note:
        message += f"; {note}"
    return ctx.result(
        "ppl_improvement",
        improvement,
        threshold=ctx.options.max_ppl_improvement,
        comparison=Comparison.LE,
        interval=interval,
        unit="%",
        message=message,
    )


def floor_result(
    ctx: CheckContext[RuntimeParityOptions], scores: FloorScores, floor_path: Path, why: str
) -> CheckResult:
    """The floor's mean KLD against its limit; an error when the runtime alone exceeds it."""
    floor = scores.per_chunk(scores.floor_kld)
    subject = scores.per_chunk(scores.subject_kld)
    floor_mean, subject_mean = float(floor.mean()), float(subject.mean())
    interval = ctx.bootstrap(scores.n_chunks, lambda idx: float(floor[idx].mean()))
    runtime = ctx.subject.backend.name
    message = (
        f"the reference's full-precision weights ({floor_path.name}, {why}) through {runtime}: "
        f"mean KLD {floor_mean:.4g} against the reference; the quant's damage over this floor: "
        f"mean KLD {subject_mean - floor_mean:+.4g} ({subject_mean:.4g} in all)"
    )
    result = ctx.result(
        "runtime_floor_kld",
        floor_mean,
        threshold=ctx.options.max_floor_kld,
        comparison=Comparison.LE,
        interval=interval,
        message=message,
        details={
            "floor_model": str(floor_path),
            "floor_kld_mean": floor_mean,
            "subject_kld_mean": subject_mean,
            "kld_over_floor": subject_mean - floor_mean,
            "tokens": len(scores.chunk),
        },
    )
    if result.verdict in (Verdict.FAIL, Verdict.WARN) and (
        interval is None or interval.low > ctx.options.max_floor_kld
    ):
        # an error carries no value or threshold: read back, a value against a limit would
        # recompute to a failure (qgate.integrity), and this is not the quant's failure
        return replace(
            result,
            verdict=Verdict.ERROR,
            value=None,
            threshold=None,
            comparison=None,
            interval=None,
            message=(
                f"the runtime disagrees with the reference at full precision: {result.message}; "
                "the quant's failures against this reference are not its quantization's"
            ),
        )
    return result


@hookimpl
def qgate_checks() -> list[Check]:
    return [RuntimeParityCheck()]
