"""From raw logits to :class:`~qgate.backend.TokenScores`, shared by every backend."""

from __future__ import annotations

import numpy as np

from qgate.backend import TokenScores
from qgate.errors import CheckError


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32, computed on a copy."""
    out = np.array(logits, dtype=np.float32, copy=True)
    out -= out.max(axis=1, keepdims=True)
    lse = np.log(np.exp(out).sum(axis=1, keepdims=True, dtype=np.float64)).astype(np.float32)
    out -= lse
    return out


def sample_tail(
    logp: np.ndarray, top_ids: np.ndarray, count: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` token ids per row, drawn from the distribution outside ``top_ids``.

    Systematic sampling: evenly spaced points of the tail's cumulative mass with one random
    offset per row, so each draw is marginally distributed as the tail itself and the mean of
    any function over the draws is an unbiased estimate of its tail expectation.
    """
    tail = np.exp(logp, dtype=np.float64)
    np.put_along_axis(tail, top_ids.astype(np.int64), 0.0, axis=1)
    cdf = np.cumsum(tail, axis=1)
    offsets = rng.random((logp.shape[0], 1))
    targets = (np.arange(count)[None, :] + offsets) / count * cdf[:, -1:]
    ids = np.stack(
        [np.searchsorted(cdf[row], targets[row], side="right") for row in range(len(cdf))]
    )
    return np.minimum(ids, logp.shape[1] - 1).astype(np.int32)


def summarize_logits(
    logits: np.ndarray,
    targets: np.ndarray,
    *,
    start: int,
    top_k: int,
    gather: np.ndarray | None = None,
    tail_samples: int = 0,
    rng: np.random.Generator | None = None,
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
    tail_ids = tail_logprobs = None
    if tail_samples > 0 and k < logp.shape[1]:
        tail_ids = sample_tail(logp, top_ids, tail_samples, rng or np.random.default_rng(start))
        tail_logprobs = np.take_along_axis(logp, tail_ids.astype(np.int64), axis=1).astype(
            np.float32
        )
    return TokenScores(
        start=start,
        target_logprob=target_logprob,
        top_ids=top_ids,
        top_logprobs=top_logprobs,
        gathered_logprobs=gathered,
        tail_ids=tail_ids,
        tail_logprobs=tail_logprobs,
    )
