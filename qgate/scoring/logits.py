"""From raw logits to :class:`~qgate.backend.TokenScores`, shared by every backend."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from qgate.backend import GenerationSettings, TokenScores
from qgate.errors import CheckError


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32, computed on a copy."""
    out = np.array(logits, dtype=np.float32, copy=True)
    out -= out.max(axis=1, keepdims=True)
    lse = np.log(np.exp(out).sum(axis=1, keepdims=True, dtype=np.float64)).astype(np.float32)
    out -= lse
    return out


def sample_tail(
    probabilities: np.ndarray, top_ids: np.ndarray, count: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` token ids per row, drawn from the distribution outside ``top_ids``.

    Systematic sampling: evenly spaced points of the tail's cumulative mass with one random
    offset per row, so each draw is marginally distributed as the tail itself and the mean of
    any function over the draws is an unbiased estimate of its tail expectation.
    """
    tail = probabilities.copy()
    np.put_along_axis(tail, top_ids.astype(np.int64), 0.0, axis=1)
    cdf = np.cumsum(tail, axis=1, dtype=np.float64)
    offsets = rng.random((probabilities.shape[0], 1))
    targets = (np.arange(count)[None, :] + offsets) / count * cdf[:, -1:]
    ids = np.stack(
        [np.searchsorted(cdf[row], targets[row], side="right") for row in range(len(cdf))]
    )
    return np.minimum(ids, probabilities.shape[1] - 1).astype(np.int32)


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

    Works on the raw logits and their log-sum-exp, never materialising the full log-softmax: a
    subject pass (``top_k=1``, a few hundred gathered ids) costs about three passes over the
    vocabulary per row, which matters at 262k entries.

    :raises CheckError: if any logit is NaN or +Inf (a broken quant must never pass).
    """
    rows = np.arange(logits.shape[0])
    k = min(top_k, logits.shape[1])
    top1 = logits.argmax(axis=1) if k == 1 else None
    # a subject pass needs its argmax anyway: the row maximum is then a lookup, not a pass
    row_max = logits[rows, top1] if top1 is not None else logits.max(axis=1)
    if not np.isfinite(row_max).all():
        bad = int(np.flatnonzero(~np.isfinite(row_max))[0])
        raise CheckError(
            f"the model produced non-finite logits (NaN or Inf) at position {start + bad - 1}"
        )
    shifted = np.subtract(logits, row_max[:, None], dtype=np.float32)  # the one full-size temporary
    np.exp(shifted, out=shifted)
    total = shifted.sum(axis=1, dtype=np.float64)
    lse = (row_max + np.log(total)).astype(np.float64)
    if not np.isfinite(lse).all():
        raise CheckError(f"the model produced non-finite logits (NaN) near position {start}")
    target_logprob = logits[rows, targets].astype(np.float64) - lse
    if top1 is not None:
        top_ids = top1[:, None].astype(np.int32)
    else:
        part = np.argpartition(-logits, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(logits, part, axis=1), axis=1, kind="stable")
        top_ids = np.take_along_axis(part, order, axis=1).astype(np.int32)
    top_logprobs = (
        np.take_along_axis(logits, top_ids.astype(np.int64), axis=1) - lse[:, None]
    ).astype(np.float32)
    gathered = None
    if gather is not None:
        gathered = (
            np.take_along_axis(logits, gather.astype(np.int64), axis=1) - lse[:, None]
        ).astype(np.float32)
    tail_ids = tail_logprobs = None
    if tail_samples > 0 and k < logits.shape[1]:
        probabilities = shifted / total[:, None].astype(np.float32)
        tail_ids = sample_tail(
            probabilities, top_ids, tail_samples, rng or np.random.default_rng(start)
        )
        tail_logprobs = (
            np.take_along_axis(logits, tail_ids.astype(np.int64), axis=1) - lse[:, None]
        ).astype(np.float32)
    return TokenScores(
        start=start,
        target_logprob=target_logprob,
        top_ids=top_ids,
        top_logprobs=top_logprobs,
        gathered_logprobs=gathered,
        tail_ids=tail_ids,
        tail_logprobs=tail_logprobs,
    )


def scored_positions(
    n_tokens: int, n_ctx: int, start: int, positions: Sequence[int] | None
) -> np.ndarray:
    """The positions a ``score`` call must report, validated the same way by every backend."""
    if n_tokens > n_ctx:
        raise CheckError(f"{n_tokens} tokens do not fit the context of {n_ctx}")
    scored = (
        np.asarray(positions, dtype=np.int64)
        if positions is not None
        else np.arange(start, n_tokens, dtype=np.int64)
    )
    if len(scored) == 0 or scored[0] < 1 or scored[-1] >= n_tokens or np.any(np.diff(scored) <= 0):
        raise CheckError(f"scored positions must be ascending within [1, {n_tokens - 1}]")
    return scored


def tail_rng(tokens: np.ndarray) -> np.random.Generator:
    """The generator for tail samples, seeded by the tokens: the same text, the same samples."""
    return np.random.default_rng(zlib.crc32(np.asarray(tokens, dtype=np.int64).tobytes()))


def merge_scores(
    parts: list[TokenScores], *, positions: np.ndarray | None, with_gathered: bool
) -> TokenScores:
    """One :class:`TokenScores` from the per-block results of a scoring pass, in order.

    :param positions: the scored positions when the caller asked for specific ones.
    :param with_gathered: whether the pass was asked for log-probabilities at given ids.
    """

    def concat(arrays: list[np.ndarray | None]) -> np.ndarray | None:
        present = [a for a in arrays if a is not None]
        return np.concatenate(present) if present and len(present) == len(arrays) else None

    gathered = concat([p.gathered_logprobs for p in parts]) if with_gathered else None
    if with_gathered and gathered is None:
        raise CheckError("the backend ignored the request for log-probabilities at given ids")
    return TokenScores(
        start=parts[0].start,
        target_logprob=np.concatenate([p.target_logprob for p in parts]),
        top_ids=np.concatenate([p.top_ids for p in parts]),
        top_logprobs=np.concatenate([p.top_logprobs for p in parts]),
        gathered_logprobs=gathered,
        tail_ids=concat([p.tail_ids for p in parts]),
        tail_logprobs=concat([p.tail_logprobs for p in parts]),
        positions=positions,
    )


def pick_token(logits: np.ndarray, settings: GenerationSettings, rng: np.random.Generator) -> int:
    """The next token: argmax at temperature 0, else seeded sampling with optional top-p."""
    if settings.temperature <= 0:
        return int(np.argmax(logits))
    scaled = logits / settings.temperature
    scaled -= scaled.max()
    probs = np.exp(scaled)
    probs /= probs.sum()
    if settings.top_p < 1.0:
        order = np.argsort(-probs)
        keep = order[: int(np.searchsorted(np.cumsum(probs[order]), settings.top_p)) + 1]
        mask = np.zeros_like(probs)
        mask[keep] = probs[keep]
        probs = mask / mask.sum()
    return int(rng.choice(len(probs), p=probs))
