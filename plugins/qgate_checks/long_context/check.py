"""The ``long-context`` check: sweep the subject's KV cache types over one long sequence."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from qgate.backend import KV_CACHE_BITS
from qgate.check import Check, CheckContext
from qgate.datasets import BUILTIN_CORPORA
from qgate.errors import CheckError, PolicyError, UnsupportedKVCache
from qgate.figures import Chart, Line, Table
from qgate.results import CheckResult, SkipCause
from qgate.scoring.kld import kld_estimate
from qgate_checks.long_context.options import LongContextOptions
from qgate_checks.long_context.passkey import Probe, retrieval_probes, run_probes
from qgate_checks.long_context.reference import reference_outputs
from qgate_checks.long_context.sequence import bucket_edges, bucket_label, sample_positions


@dataclass
class Plan:
    """What every KV cache type of the sweep is measured on: one sequence, the same positions."""

    edges: list[int]
    positions: np.ndarray
    buckets: np.ndarray  #: the bucket of each position
    probes: list[Probe]
    reference: dict[str, np.ndarray]  #: the reference's outputs (see ``reference.compute``)

    @property
    def n_buckets(self) -> int:
        return len(self.edges) - 1

    def label(self, bucket: int) -> str:
        return bucket_label(self.edges[bucket], self.edges[bucket + 1])

    def per_bucket(self, values: np.ndarray) -> np.ndarray:
        return np.array([values[self.buckets == b].mean() for b in range(self.n_buckets)])


@dataclass
class Sweep:
    """What the report shows for all KV cache types together."""

    kld: list[Line] = field(default_factory=list)
    ppl: list[Line] = field(default_factory=list)
    buckets: list[list[str | int | float | None]] = field(default_factory=list)
    passkeys: list[list[str | int | float | None]] = field(default_factory=list)


class LongContextCheck(Check[LongContextOptions]):
    name = "long-context"
    description = "per-position KLD and pass-key retrieval over long sequences, per KV cache type"
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
        plan = self.plan(ctx)
        results: list[CheckResult] = []
        sweep = Sweep()
        for kv in options.kv_cache:
            results += self.judge_cache(ctx, plan, kv, sweep)
        if sweep.kld:  # at least one KV cache type ran
            self.attach_figures(plan, sweep, results[0])
        return results

    @staticmethod
    def plan(ctx: CheckContext[LongContextOptions]) -> Plan:
        options = ctx.options
        edges = bucket_edges(options.context)
        positions, buckets = sample_positions(edges, options.positions_per_bucket)
        lengths = options.retrieval_lengths or [options.context - 16]
        probes = retrieval_probes(lengths, options.retrieval_depths, seed=ctx.settings.seed)
        return Plan(edges, positions, buckets, probes, reference_outputs(ctx, positions, probes))

    def judge_cache(
        self, ctx: CheckContext[LongContextOptions], plan: Plan, kv: str, sweep: Sweep
    ) -> list[CheckResult]:
        """Score the subject with KV cache ``kv`` at the plan's positions and judge it."""
        options, ref = ctx.options, plan.reference
        ctx.log(f"{ctx.subject.info.label}: long context {options.context} tokens, KV cache {kv}")
        try:
            with ctx.subject.borrowed(n_ctx=options.context, kv_cache=kv) as model:
                sub = model.score(
                    ref["tokens"].tolist(),
                    start=int(plan.positions[0]),
                    positions=plan.positions.tolist(),
                    top_k=1,  # the subject reports log-probabilities at the reference's ids
                    gather=np.concatenate([ref["top_ids"], ref["tail_ids"]], axis=1),
                )
                hits = run_probes(model, plan.probes)
        except UnsupportedKVCache as exc:  # e.g. a quantized cache on a transformers model
            # the backend keeps its cache unquantized: the risk measured here does not exist
            metric = f"late_excess_kld[{kv}]"
            return [ctx.skip(str(exc), metric=metric, cause=SkipCause.NOT_APPLICABLE)]
        if sub.gathered_logprobs is None:
            raise CheckError("the backend ignored the request for log-probabilities at given ids")
        k = ref["top_ids"].shape[1]
        at = sub.gathered_logprobs
        kld = kld_estimate(ref["top_logprobs"], at[:, :k], ref["tail_logprobs"], at[:, k:])
        ppl = np.exp(-plan.per_bucket(sub.target_logprob))
        self.record(plan, kv, kld, ppl, hits, sweep)
        return self.verdicts(ctx, plan, kv, kld, hits)

    @staticmethod
    def verdicts(
        ctx: CheckContext[LongContextOptions],
        plan: Plan,
        kv: str,
        kld: np.ndarray,
        hits: list[bool],
    ) -> list[CheckResult]:
        options = ctx.options
        per_bucket = plan.per_bucket(kld)
        first, last = kld[plan.buckets == 0], kld[plan.buckets == plan.n_buckets - 1]
        excess = float(last.mean() - first.mean())
        worst = int(np.argmax(per_bucket))
        in_worst = kld[plan.buckets == worst]
        ref_hits = [bool(h) for h in plan.reference["hits"]]
        drop = float(np.mean(ref_hits) - np.mean(hits))
        return [
            ctx.result(
                f"late_excess_kld[{kv}]",
                excess,
                threshold=options.max_late_excess_kld,
                interval=ctx.bootstrap_difference(first, last),
                message=f"KV {kv}: KLD {first.mean():.4f} in {plan.label(0)}, {last.mean():.4f} "
                f"in {plan.label(plan.n_buckets - 1)} (excess {excess:+.4f})",
            ),
            ctx.result(
                f"max_bucket_kld[{kv}]",
                float(per_bucket[worst]),
                threshold=options.max_bucket_kld,
                interval=ctx.bootstrap(len(in_worst), lambda idx: float(in_worst[idx].mean())),
                message=f"KV {kv}: worst bucket {plan.label(worst)} with mean KLD "
                f"{per_bucket[worst]:.4f} against the f16-cache reference",
            ),
            ctx.result(
                f"retrieval_drop[{kv}]",
                drop,
                threshold=options.max_retrieval_drop,
                unit="%",
                message=f"KV {kv}: pass key found {sum(hits)}/{len(hits)} times, reference "
                f"{sum(ref_hits)}/{len(ref_hits)}",
            ),
        ]

    @staticmethod
    def record(
        plan: Plan, kv: str, kld: np.ndarray, ppl: np.ndarray, hits: list[bool], sweep: Sweep
    ) -> None:
        """Add one KV cache type's curves and rows to the sweep's figures."""
        mids: list[float | str] = [(lo + hi) / 2 for lo, hi in pairwise(plan.edges)]
        per_bucket = plan.per_bucket(kld)
        sweep.kld.append(Line(f"KV {kv}", mids, [float(v) for v in per_bucket]))
        sweep.ppl.append(Line(f"KV {kv}", mids, [float(v) for v in ppl]))
        sweep.buckets += [
            [kv, plan.label(b), round(float(per_bucket[b]), 5), round(float(ppl[b]), 3)]
            for b in range(plan.n_buckets)
        ]
        ref_hits = [bool(h) for h in plan.reference["hits"]]
        sweep.passkeys += [
            [kv, p.length, f"{p.depth:.0%}", "yes" if h else "no", "yes" if r else "no"]
            for p, h, r in zip(plan.probes, hits, ref_hits, strict=True)
        ]

    @staticmethod
    def attach_figures(plan: Plan, sweep: Sweep, result: CheckResult) -> None:
        ppl_ref = np.exp(-plan.per_bucket(plan.reference["target_logprob"]))
        reference_line = Line("reference (f16)", sweep.ppl[0].x, [float(v) for v in ppl_ref])
        result.figures.charts += [
            Chart("KL divergence by position", "position (tokens)", "mean KLD (nats)", sweep.kld),
            Chart(
                "Perplexity by position",
                "position (tokens)",
                "PPL",
                [*sweep.ppl, reference_line],
            ),
        ]
        result.figures.tables += [
            Table("Per bucket", ["KV cache", "bucket", "mean KLD", "PPL"], sweep.buckets),
            Table(
                "Pass-key retrieval",
                ["KV cache", "length", "depth", "subject", "reference"],
                sweep.passkeys,
            ),
        ]
        result.details.update(
            {
                "context": plan.edges[-1],
                "buckets": [plan.label(b) for b in range(plan.n_buckets)],
            }
        )
