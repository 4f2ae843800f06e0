"""From raw logits to :class:`~qgate.backend.TokenScores`, shared by every backend."""

from __future__ import annotations

import functools
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from qgate.backend import Generation, GenerationSettings, TokenScores
from qgate.errors import CheckError


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32, computed on a copy."""
    out = np.array(logits, dtype=np.float32, copy=True)
    out -= out.max(axis=1, keepdims=True)
    lse = np.log(np.exp(out).sum(axis=1, keepdims=True, dtype=np.float64)).astype(np.float32)
    out -= lse
    return out


#: columns per block of the vocabulary: top-k and tail sampling work block-wise, so only the
#: blocks that matter are searched (262k entries = 1,024 blocks)
BLOCK = 256


def _blocks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` [rows, n] as whole blocks [rows, n // BLOCK, BLOCK] (a view) and the rest."""
    full = values.shape[1] // BLOCK * BLOCK
    return values[:, :full].reshape(len(values), -1, BLOCK), values[:, full:]


def top_k_ids(logits: np.ndarray, k: int) -> np.ndarray:
    """The ids of each row's ``k`` largest logits, largest first, as int32 [rows, k].

    Only the ``k`` blocks with the largest maxima can hold the top ``k`` (each top entry lies in
    a block whose maximum is at least the k-th value, and at most ``k`` blocks have one), so the
    partition runs on those blocks and the remainder columns instead of the whole vocabulary.
    """
    rows = len(logits)
    whole, rest = _blocks(logits)
    if k >= whole.shape[1] // 4:  # a small vocabulary: partition it directly
        candidates = np.broadcast_to(np.arange(logits.shape[1]), logits.shape)
    else:
        maxima = whole.max(axis=2)
        best = np.argpartition(maxima, maxima.shape[1] - k, axis=1)[:, -k:]
        candidates = (best[:, :, None] * BLOCK + np.arange(BLOCK)).reshape(rows, -1)
        if rest.shape[1]:
            tail = np.arange(logits.shape[1] - rest.shape[1], logits.shape[1])
            candidates = np.concatenate([candidates, np.broadcast_to(tail, (rows, len(tail)))], 1)
    values = np.take_along_axis(logits, candidates, axis=1)
    pick = np.argpartition(values, values.shape[1] - k, axis=1)[:, -k:]
    ids = np.take_along_axis(candidates, pick, axis=1)
    order = np.argsort(-np.take_along_axis(values, pick, axis=1), axis=1, kind="stable")
    return np.take_along_axis(ids, order, axis=1).astype(np.int32)


def sample_tail(
    weights: np.ndarray, top_ids: np.ndarray, count: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` token ids per row, drawn from the distribution outside ``top_ids``.

    Systematic sampling: evenly spaced points of the tail's cumulative mass with one random
    offset per row, so each draw is marginally distributed as the tail itself and the mean of
    any function over the draws is an unbiased estimate of its tail expectation.

    :param weights: probabilities [rows, vocab], or anything proportional to them per row
        (unnormalised exponentials do); **overwritten** with zeros at ``top_ids``.
    """
    rows, n = weights.shape
    np.put_along_axis(weights, top_ids.astype(np.int64), 0.0, axis=1)
    # the cumulative mass block by block, then within the blocks the samples land in only
    whole, rest = _blocks(weights)
    mass = whole.sum(axis=2, dtype=np.float64)
    if rest.shape[1]:
        mass = np.concatenate([mass, rest.sum(axis=1, dtype=np.float64)[:, None]], axis=1)
    cdf = np.cumsum(mass, axis=1)
    offsets = rng.random((rows, 1))
    targets = (np.arange(count)[None, :] + offsets) / count * cdf[:, -1:]
    block = np.stack([np.searchsorted(cdf[r], targets[r], side="right") for r in range(rows)])
    block = np.minimum(block, cdf.shape[1] - 1)
    below = np.where(block > 0, np.take_along_axis(cdf, np.maximum(block - 1, 0), axis=1), 0.0)
    columns = block[:, :, None] * BLOCK + np.arange(BLOCK)  # [rows, count, BLOCK]
    inside = np.take_along_axis(
        weights, np.minimum(columns, n - 1).reshape(rows, -1), axis=1
    ).reshape(columns.shape)
    within = np.cumsum(np.where(columns < n, inside, 0.0), axis=2, dtype=np.float64)
    offset = (within <= (targets - below)[:, :, None]).sum(axis=2)
    return np.minimum(block * BLOCK + np.minimum(offset, BLOCK - 1), n - 1).astype(np.int32)


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
    vocabulary per row, which matters at 262k entries; a reference pass finds its top-k and
    draws its tail samples block-wise (:func:`top_k_ids`, :func:`sample_tail`).

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
    shifted = _scratch(logits.shape)  # the one full-size temporary, reused across calls
    np.subtract(logits, row_max[:, None], out=shifted)
    exp_in_place(shifted)
    total = shifted.sum(axis=1, dtype=np.float64)
    lse = (row_max + np.log(total)).astype(np.float64)
    if not np.isfinite(lse).all():
        raise CheckError(f"the model produced non-finite logits (NaN) near position {start}")
    target_logprob = logits[rows, targets].astype(np.float64) - lse
    top_ids = top1[:, None].astype(np.int32) if top1 is not None else top_k_ids(logits, k)
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
        # the exponentials are proportional to the probabilities: sampling needs no division
        tail_ids = sample_tail(shifted, top_ids, tail_samples, rng or np.random.default_rng(start))
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


def exp_in_place(values: np.ndarray) -> None:
    """``values = exp(values)`` for float32: the one vocabulary-wide transcendental per row.

    Through torch's vectorised exp when torch is installed (the hf extra): several times faster
    than numpy's float32 exp, and this exp is most of qgate's time outside the model itself
    (benchmarks/README.md has the measurements). Both agree to float32 rounding; the price is
    torch's import, in resident memory, which a GGUF-only install does not pay.
    """
    torch = _torch()
    if torch is None:
        np.exp(values, out=values)
    else:
        tensor = torch.from_numpy(values)
        torch.exp(tensor, out=tensor)


@functools.cache
def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


_scratch_space = threading.local()


def _scratch(shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array of ``shape`` whose memory is reused by the next call in this thread.

    A fresh 64 x 262k array per block costs more in page faults than the exponentials in it.
    """
    size = int(np.prod(shape))
    buffer = getattr(_scratch_space, "buffer", None)
    if buffer is None or buffer.size < size:
        buffer = _scratch_space.buffer = np.empty(size, dtype=np.float32)
    return buffer[:size].reshape(shape)


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


def generation_budget(prompt_tokens: int, n_ctx: int, settings: GenerationSettings) -> int:
    """Tokens a generation may add after a prompt of ``prompt_tokens`` in a context of ``n_ctx``.

    :raises CheckError: if the prompt leaves no room (checked before anything is decoded).
    """
    if prompt_tokens >= n_ctx:
        raise CheckError(f"the prompt has {prompt_tokens} tokens, more than the context of {n_ctx}")
    return min(settings.max_tokens, n_ctx - prompt_tokens)


def generate_tokens(
    logits: np.ndarray,
    step: Callable[[int], np.ndarray],
    *,
    settings: GenerationSettings,
    budget: int,
    is_eos: Callable[[int], bool],
    text_of: Callable[[list[int]], str],
    prompt_tokens: int,
    started: float,
) -> Generation:
    """The sampling loop every backend shares, from the logits after the prompt.

    Picks a token from each logits row (:func:`pick_token`), stops at an end-of-generation token,
    a stop string (cut off) or ``budget`` tokens.

    :param budget: see :func:`generation_budget`.
    :param step: feeds one token to the model and returns the next logits row.
    :param text_of: the text of the tokens so far; called once after each new token.
    :param started: ``time.perf_counter()`` when the call began, for the reported seconds.
    :raises CheckError: on NaN or Inf logits.
    """
    rng = np.random.default_rng(settings.seed)
    out: list[int] = []
    text = ""
    finish: Literal["stop", "length", "eos"] = "length"
    while len(out) < budget:
        if not np.isfinite(logits).all():
            raise CheckError("the model produced non-finite logits (NaN or Inf) while generating")
        token = pick_token(logits, settings, rng)
        if is_eos(token):
            finish = "eos"
            break
        out.append(token)
        text = text_of(out)
        stop = next((s for s in settings.stop if s and s in text), None)
        if stop is not None:
            finish = "stop"
            text = text[: text.index(stop)]
            break
        logits = step(token)
    return Generation(
        text=text,
        tokens=out,
        finish_reason=finish,
        prompt_tokens=prompt_tokens,
        seconds=time.perf_counter() - started,
    )
