"""KL divergence from a compact reference: its top-k plus one bucket for the rest.

Storing the reference's full distribution costs ``vocab x 2`` bytes per token (llama.cpp's
``--kl-divergence-base`` file: 535 MB for 2,048 Gemma tokens). qgate keeps only the reference's
top-k log-probabilities and asks the subject for its log-probabilities at those same ids. The
remaining probability mass of each side is merged into one "rest" outcome. By the data-processing
inequality this coarse-grained KLD never exceeds the full one, and with k = 32 nearly all of the
reference's mass is in the kept ids, so the two agree closely (see benchmarks/).
"""

from __future__ import annotations

import numpy as np

_TINY = 1e-12


def kld_topk(ref_top_logprobs: np.ndarray, sub_logprobs_at_ref_top: np.ndarray) -> np.ndarray:
    """Per-position KL(reference || subject) over top-k + rest, in nats, float64 [n]."""
    log_p = ref_top_logprobs.astype(np.float64)
    log_q = sub_logprobs_at_ref_top.astype(np.float64)
    p = np.exp(log_p)
    q = np.exp(log_q)
    head = (p * (log_p - log_q)).sum(axis=1)
    p_rest = np.clip(1.0 - p.sum(axis=1), 0.0, 1.0)
    q_rest = np.clip(1.0 - q.sum(axis=1), _TINY, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = np.where(
            p_rest > _TINY, p_rest * (np.log(np.maximum(p_rest, _TINY)) - np.log(q_rest)), 0.0
        )
    return np.maximum(head + tail, 0.0)
