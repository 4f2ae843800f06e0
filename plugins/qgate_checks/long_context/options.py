"""The ``long-context`` check's options: the sweep, the sample, and the floors."""

from __future__ import annotations

from dataclasses import dataclass

from qgate.options import option


@dataclass
class LongContextOptions:
    context: int = option(4096, "longest sequence scored, in tokens", minimum=256)
    kv_cache: list[str] = option(
        default_factory=lambda: ["f16", "q8_0", "q4_0"], help="subject KV cache types to sweep"
    )
    positions_per_bucket: int = option(48, "positions scored per position bucket", minimum=4)
    corpora: list[str] = option(
        default_factory=lambda: ["en", "code", "pl", "ru", "ja", "ar", "hi"],
        help="shipped corpora concatenated into the long sequence, each at most once",
    )
    max_late_excess_kld: float | None = option(
        0.05, "largest (last bucket - first bucket) mean KLD, nats", minimum=0
    )
    max_bucket_kld: float | None = option(0.1, "largest mean KLD of any bucket, nats", minimum=0)
    retrieval_depths: list[float] = option(
        default_factory=lambda: [0.1, 0.5, 0.9],
        help="where the pass key sits, as a share of the text",
    )
    retrieval_lengths: list[int] | None = option(
        None, "filler lengths in tokens (default: the context)"
    )
    max_retrieval_drop: float | None = option(
        0.34,
        "largest drop of pass-key accuracy vs the reference (0.34: one miss in three)",
        minimum=0,
        maximum=1,
    )
