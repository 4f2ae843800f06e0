"""From raw logits to :class:`~qgate.backend.TokenScores`, shared by every backend."""

from __future__ import annotations

import numpy as np

from qgate.backend import TokenScores
from qgate.errors import CheckError


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32, computed in place on a copy."""
    out = np.array(logits, dtype=np.float32, copy=True)
    out -= out.max(axis=1, keepdims=True)
    lse = np.log(np.exp(out).sum(axis=1, keepdims=True, dtype=np.float64)).astype(np.float32)
    out -= lse
    return out


def summarize_logits(
    logits: np.ndarray,
    targets: np.ndarray,
    *,
    start: int,
    top_k: int,
    gather: np.ndarray | None = None,
) -> TokenScores:
    """Reduce ``logits`` [n, vocab] for ``targets`` [n] to per-position statistics.

    :raises CheckError: if any logit is NaN or infinite (a broken quant must never pass).
    """
    if not np.isfinite(logits).all():
        bad = int(np.flatnonzero(~np.isfinite(logits).all(axis=1))[0])
        raise CheckError(
            f"the model produced non-finite logits (NaN or Inf) at position {start + bad - 1}"
        )
    logp = log_softmax(logits)
    rows = np.arange(logp.shape[0])
    target_logprob = logp[rows, targets].astype(np.float64)
    k = min(top_k, logp.shape[1])
    part = np.argpartition(-logp, k - 1, axis=1)[:, :k]
    part_vals = np.take_along_axis(logp, part, axis=1)
    order = np.argsort(-part_vals, axis=1, kind="stable")
    top_ids = np.take_along_axis(part, order, axis=1).astype(np.int32)
    top_logprobs = np.take_along_axis(part_vals, order, axis=1).astype(np.float32)
    gathered = None
    if gather is not None:
        gathered = np.take_along_axis(logp, gather.astype(np.int64), axis=1).astype(np.float32)
    return TokenScores(
        start=start,
        target_logprob=target_logprob,
        top_ids=top_ids,
        top_logprobs=top_logprobs,
        gathered_logprobs=gathered,
    )
