"""``perplexity``: the subject's perplexity rise over the reference, per dataset domain.

PPL is measured as llama-perplexity does (second half of each chunk). The relative delta
``PPL_subject / PPL_reference - 1`` gets a paired bootstrap interval over chunks. With several
datasets each domain is judged on its own too, so a calibration mismatch (an AWQ quant
calibrated on English, used on code) shows as one domain failing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qgate.check import Check, CheckContext
from qgate.figures import PPL_DELTA, Table
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.results import CheckResult, Comparison
from qgate.stats import state_evidence
from qgate_checks._common import pooled, select_domains


@dataclass
class PerplexityOptions:
    max_delta: float | None = option(
        0.01, "largest allowed relative PPL rise (0.01 = 1 %)", minimum=0
    )
    per_domain: bool = option(True, "also judge each dataset domain on its own")
    max_domain_delta: float | None = option(
        None, "largest allowed rise on any single domain (default: max_delta)", minimum=0
    )
    domains: list[str] | None = option(None, "only these dataset domains (default: all)")


class PerplexityCheck(Check[PerplexityOptions]):
    name = "perplexity"
    description = "relative perplexity rise vs the reference, with a paired bootstrap interval"
    Options = PerplexityOptions
    needs_reference = True
    sequential = True

    def run(self, ctx: CheckContext[PerplexityOptions]) -> list[CheckResult]:
        options = ctx.options
        scores = select_domains(ctx, options.domains)
        if not scores:
            return [ctx.skip(f"no dataset domain matches {options.domains}")]
        rows = []
        results = []
        targets = [pooled(scores)] + (scores if options.per_domain and len(scores) > 1 else [])
        for s in targets:
            ref_nll = s.per_chunk(-s.ref_logprob)
            sub_nll = s.per_chunk(-s.sub_logprob)
            ppl_ref = float(np.exp(ref_nll.mean()))
            ppl_sub = float(np.exp(sub_nll.mean()))
            delta = ppl_sub / ppl_ref - 1.0
            interval = ctx.bootstrap(s.n_chunks, _ppl_delta_of(sub_nll, ref_nll))
            overall = s.domain == "all" or len(scores) == 1
            metric = "ppl_delta" if overall else f"ppl_delta[{s.domain}]"
            threshold = (
                options.max_delta
                if overall or options.max_domain_delta is None
                else options.max_domain_delta
            )
            rows.append(
                [
                    s.domain,
                    s.n_chunks,
                    len(s.chunk),
                    round(ppl_ref, 4),
                    round(ppl_sub, 4),
                    f"{delta * 100:+.2f}%",
                    f"[{interval.low * 100:+.2f}%, {interval.high * 100:+.2f}%]"
                    if interval
                    else "n/a",
                ]
            )
            results.append(
                ctx.result(
                    metric,
                    delta,
                    threshold=threshold,
                    comparison=Comparison.LE,
                    interval=interval,
                    unit="%",
                    message=f"PPL {ppl_sub:.4f} vs reference {ppl_ref:.4f} on {s.domain} "
                    f"({s.n_chunks} chunks, {len(s.chunk)} tokens), delta {delta * 100:+.2f}%",
                    details={
                        "ppl_subject": ppl_sub,
                        "ppl_reference": ppl_ref,
                        "domain": s.domain,
                        "chunks": s.n_chunks,
                        "tokens": len(s.chunk),
                    },
                    headlines={PPL_DELTA.key: delta} if overall else None,
                )
            )
            state_evidence(results[-1], sample=s.n_chunks, sample_unit="chunks")
        columns = ["domain", "chunks", "tokens", "PPL reference", "PPL subject", "delta"]
        columns.append(f"{ctx.confidence * 100:g}% interval")
        results[0].figures.tables.append(Table("Perplexity by domain", columns, rows))
        return results


def _ppl_delta_of(sub_nll: np.ndarray, ref_nll: np.ndarray) -> Callable[[np.ndarray], float]:
    """The relative PPL rise over a resample of chunk indices (per-chunk mean NLLs given)."""
    return lambda idx: float(np.exp(sub_nll[idx].mean() - ref_nll[idx].mean()) - 1.0)


@hookimpl
def qgate_checks() -> list[Check]:
    return [PerplexityCheck()]
