"""The ``long-context`` check's options: the sweep, the sample and its budget, and the floors.

The floors are the weight checks' own, in the same units: PPL delta (``perplexity``'s
``max_delta`` overall and ``max_domain_delta`` per subset, here per position bucket) and the
mean and p99 KLD (``kl-divergence``'s ``max_mean`` and ``max_p99``), all against the reference
with an f16 cache. A policy that sets other floors here says why in a comment.
"""

from __future__ import annotations

from dataclasses import dataclass

from qgate.options import option
from qgate.stats import TARGET_RESOLUTION


@dataclass
class LongContextOptions:
    context: int = option(4096, "longest sequence scored, in tokens", minimum=256)
    kv_cache: list[str] = option(
        default_factory=lambda: ["f16", "q8_0", "q4_0"], help="subject KV cache types to sweep"
    )
    corpora: list[str] = option(
        default_factory=lambda: ["en", "code", "pl", "ru", "ja", "ar", "hi"],
        help="shipped corpora the long text is made of, each at most once per sequence; "
        "sequence i starts with the i-th",
    )
    positions_per_bucket: int | None = option(
        None,
        "text positions scored per position bucket and sequence (default: every one)",
        minimum=4,
    )
    needles: int = option(
        20,
        "pass keys hidden per sequence at evenly spaced depths and asked for at its end (fewer "
        "when they would take more than a quarter of the context)",
        minimum=0,
    )
    max_sequences: int = option(
        2,
        "the time budget: at most this many long sequences per KV cache type (one forward pass "
        "of `context` tokens each); another is added only while a verdict is undecided and "
        "coarser than target_resolution",
        minimum=1,
        maximum=16,
    )
    target_resolution: float = option(
        TARGET_RESOLUTION,
        "interval half-width the sample aims for, as a share of each floor",
        minimum=0.01,
        maximum=1,
    )
    max_ppl_delta: float | None = option(
        0.01, "largest PPL rise over all scored positions (perplexity's max_delta)", minimum=0
    )
    max_bucket_ppl_delta: float | None = option(
        0.03,
        "largest PPL rise in any position bucket (perplexity's per-subset max_domain_delta)",
        minimum=0,
    )
    max_bucket_kld: float | None = option(
        0.02, "largest mean KLD of any position bucket, nats (kl-divergence's max_mean)", minimum=0
    )
    max_bucket_kld_p99: float | None = option(
        0.25, "largest p99 KLD of any position bucket, nats (kl-divergence's max_p99)", minimum=0
    )
    max_late_excess_kld: float | None = option(
        0.05, "largest (last bucket - first bucket) mean KLD, nats", minimum=0
    )
    max_retrieval_drop: float | None = option(
        0.34,
        "largest share of the pass keys the reference retrieves that the subject loses (0.34: "
        "one in three)",
        minimum=0,
        maximum=1,
    )
    min_retrieval_trials: int = option(
        20,
        "pass keys the reference must retrieve before a retrieval verdict may fail the gate; "
        "with fewer it only warns",
        minimum=1,
    )
