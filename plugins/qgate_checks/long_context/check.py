"""The ``long-context`` check: sweep the subject's KV cache types over long sequences, adding a
sequence while a verdict is undecided and coarser than the target, within ``max_sequences``."""

from __future__ import annotations

import numpy as np

from qgate.backend import KV_CACHE_BITS
from qgate.check import Check, CheckContext
from qgate.datasets import BUILTIN_CORPORA
from qgate.errors import PolicyError, UnsupportedKVCache
from qgate.results import CheckResult, SkipCause
from qgate.stats import bonferroni
from qgate_checks.long_context.judging import Judged, judge
from qgate_checks.long_context.measure import Measured, pool, score_subject
from qgate_checks.long_context.options import LongContextOptions
from qgate_checks.long_context.reference import reference_outputs
from qgate_checks.long_context.report import Sweep
from qgate_checks.long_context.sequence import bucket_edges
from qgate_checks.long_context.statistics import buckets


class LongContextCheck(Check[LongContextOptions]):
    name = "long-context"
    description = (
        "per-bucket PPL delta, mean and p99 KLD, and pass-key retrieval over long sequences, "
        "per KV cache type"
    )
    Options = LongContextOptions
    needs_reference = True

    def run(self, ctx: CheckContext[LongContextOptions]) -> list[CheckResult]:
        options = ctx.options
        unknown = [kv for kv in options.kv_cache if kv not in KV_CACHE_BITS]
        unknown += [c for c in options.corpora if c not in BUILTIN_CORPORA]
        if unknown:
            raise PolicyError(
                f"unknown KV cache types or corpora: {unknown}",
                key_path=f"checks[{ctx.spec.key}].options",
            )
        edges = bucket_edges(options.context)
        # every look at a growing sample is judged at a share of the confidence (Bonferroni), so
        # adding sequences while undecided does not raise the chance of a wrong verdict
        confidence = bonferroni(ctx.confidence, options.max_sequences)
        references: dict[int, dict[str, np.ndarray]] = {}
        results: list[CheckResult] = []
        sweep = Sweep()
        for kv in options.kv_cache:
            results += self.sweep_cache(ctx, kv, edges, references, confidence, sweep)
        if sweep.kld:  # at least one KV cache type ran
            sweep.attach(results[0], edges, confidence)
        return results

    def sweep_cache(
        self,
        ctx: CheckContext[LongContextOptions],
        kv: str,
        edges: list[int],
        references: dict[int, dict[str, np.ndarray]],
        confidence: float,
        sweep: Sweep,
    ) -> list[CheckResult]:
        """Measure KV cache ``kv`` on one sequence after another until its verdicts settle."""
        options = ctx.options
        label = ctx.subject.info.label
        parts: list[Measured] = []
        judged = Judged([])
        for sequence in range(options.max_sequences):
            if sequence not in references:
                references[sequence] = reference_outputs(ctx, sequence)
            ctx.log(
                f"{label}: long context {options.context} tokens, KV cache {kv}, "
                f"sequence {sequence + 1} of at most {options.max_sequences}"
            )
            try:
                with ctx.subject.borrowed(n_ctx=options.context, kv_cache=kv) as model:
                    parts.append(score_subject(model, references[sequence]))
            except UnsupportedKVCache as exc:  # e.g. a quantized cache on a transformers model
                # the backend keeps its cache unquantized: the risk measured here does not exist
                metric = f"late_excess_kld[{kv}]"
                return [ctx.skip(str(exc), metric=metric, cause=SkipCause.NOT_APPLICABLE)]
            data = pool(parts)
            per_bucket = buckets(ctx, data, edges, confidence)
            judged = judge(ctx, kv, data, per_bucket, confidence)
            if judged.settled:
                break
            ctx.log(f"{label}: KV {kv} undecided after {sequence + 1}: {judged.undecided}")
        ctx.count("long_context_sequences", len(parts))
        sweep.record(kv, per_bucket, data)
        return judged.results
