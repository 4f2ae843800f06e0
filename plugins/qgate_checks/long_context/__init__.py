"""``long-context``: KV-cache and position damage over long sequences, per cache type.

A quantized KV cache hurts long contexts more than weight quantization does: output starts well
and degrades past ~4K tokens, and Q8 is the comfortable cache floor. But where most layers use
sliding-window attention (Gemma 3) a q4_0 cache can hurt by the same amount at every position. So
each cache type of the sweep gets three verdicts:

- ``late_excess_kld``: mean KLD of the last position bucket minus the first's (degrades late);
- ``max_bucket_kld``: the worst bucket's mean KLD against the f16-cache reference (damaged
  everywhere, which the excess alone would pass);
- ``retrieval_drop``: a pass key hidden at several depths of a long filler text, asked for at
  the end; the reference's accuracy minus the subject's.

Long sequences are built from the shipped corpora, each corpus at most once per sequence. Only a
sample of positions per bucket is scored (logits are computed nowhere else), the reference at f16.
The reference's outputs (the token sequence, its scores and its pass-key answers) are cached
together, so a second run of the same quant never loads the reference at the long context.
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
