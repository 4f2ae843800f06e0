"""``long-context``: KV-cache and position damage over long sequences, per cache type.

A quantized KV cache hurts long contexts more than weight quantization does, and where most
layers use sliding-window attention (Gemma 3) a q4_0 cache hurts by the same amount at every
position. The damage is judged with the weight checks' own yardstick, against the reference
with an f16 cache, per position bucket (0-512, 512-1K, 1-2K, 2-4K, ...):

- ``ppl_delta``: the PPL rise over every scored text position (``perplexity``'s floor);
- ``max_bucket_ppl_delta``, ``max_bucket_kld``, ``max_bucket_kld_p99``: the worst bucket's PPL
  rise, mean and p99 KLD, with an interval that holds for all buckets at once;
- ``late_excess_kld``: mean KLD of the last bucket minus the first's (degrades late);
- ``retrieval_drop``: the share of the pass keys the reference retrieves that the subject loses,
  with a Wilson interval; over fewer than ``min_retrieval_trials`` keys it only warns.

A sequence is corpus text with labelled pass keys hidden at evenly spaced depths and the
questions at its end, scored in one forward pass (``passkey``). Every position's figures are
resampled in blocks; each verdict states its resolution (the interval half-width) against a
third of its floor, and while a verdict is undecided and coarser than that, another sequence is
measured, up to ``max_sequences`` (the policy's time budget). The reference's outputs are cached
per sequence, so a second run of the same quant never loads the reference at the long context.
"""

from __future__ import annotations

from qgate.check import Check
from qgate.hookspecs import hookimpl
from qgate_checks.long_context.check import LongContextCheck
from qgate_checks.long_context.options import LongContextOptions
from qgate_checks.long_context.sequence import bucket_edges, bucket_label, sample_positions

__all__ = [
    "LongContextCheck",
    "LongContextOptions",
    "bucket_edges",
    "bucket_label",
    "sample_positions",
]


@hookimpl
def qgate_checks() -> list[Check]:
    return [LongContextCheck()]
