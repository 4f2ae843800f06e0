"""Checking cached reference outputs before they are trusted.

A cache entry is read back only when its arrays could be what a pass with this run's settings
stored (:func:`scores_problem`, and a check's own validator built from :mod:`qgate.cache`'s
``check_arrays``), and, with ``evaluation.cache_spot_check``, only when the real reference,
asked again, agrees with a few cached items (:func:`disagreement` within
:data:`SPOT_CHECK_TOLERANCE`; a :class:`SpotCheck` says what was asked and why it disagreed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from qgate.backend import Generation, TokenScores
from qgate.datasets import scored_start

#: a log-probability is <= 0; float32 rounding can leave a true 0 a hair above it
LOGPROB_SLACK = 1e-3

#: how far a re-scored cached value may be from the stored one, in nats (absolute). A spot-check
#: replays the very request that produced the entry (a whole chunk, the same positions), which on
#: llama.cpp's CPU backend is bit-identical; the tolerance is for backends whose reductions are
#: not deterministic (threads, GPU atomics), a few 1e-5. Asking the same model for fewer output
#: rows already moves values by up to ~5e-4, and another model's outputs, even the Q8_0 of the
#: same weights, differ by 0.2-0.5 nats somewhere in every chunk (Gemma 3 270M): 1e-3 sits between.
SPOT_CHECK_TOLERANCE = 1e-3


@dataclass
class SpotCheck:
    """What re-deriving cached reference outputs with the real reference found: why they
    disagree (None: they agree), and what was re-derived, for the run's record."""

    problem: str | None
    record: dict[str, Any] = field(default_factory=dict)
    #: which cached item disagreed (``of chunk 3``), for the reason the entry is discarded
    where: str = ""


def expected_top_k(top_k: int, vocab: int | None) -> int:
    """How many top ids a reference pass keeps: ``top_k``, or the whole of a smaller vocabulary."""
    return min(top_k, vocab) if vocab else top_k


def scores_problem(
    arrays: Mapping[str, np.ndarray],
    *,
    n_ctx: int,
    chunks: int,
    top_k: int,
    tail_samples: int,
    vocab: int | None = None,
) -> str | None:
    """Why cached reference scores cannot be what a pass with these settings stored (or None).

    Token ids at or above ``vocab`` (the reference's vocabulary, when its header says) would make
    every comparison an error: such an entry is discarded instead.
    """
    scored = n_ctx - scored_start(n_ctx)
    fields = {
        "tokens": Field("int", ("chunks", n_ctx), "ids"),
        "target_logprob": Field("float", ("done", scored), "logprobs"),
        "top_ids": Field("int", ("done", scored, top_k), "ids"),
        "top_logprobs": Field("float", ("done", scored, top_k), "logprobs"),
        "tail_ids": Field("int", ("done", scored, "tail"), "ids"),
        "tail_logprobs": Field("float", ("done", scored, "tail"), "logprobs"),
    }
    problem, sizes = check_arrays(arrays, fields, vocab=vocab)
    if problem:
        return problem
    if not 1 <= sizes["done"] <= sizes["chunks"] <= chunks:
        return f"it holds {sizes['done']} scored of {sizes['chunks']} chunks (budget {chunks})"
    return top_problem(arrays["top_logprobs"]) or tail_problem(sizes["tail"], tail_samples)


def top_problem(top_logprobs: np.ndarray) -> str | None:
    """A top-k is sorted, most likely first."""
    if top_logprobs.shape[-1] > 1 and np.any(np.diff(top_logprobs, axis=-1) > SPOT_CHECK_TOLERANCE):
        return "its top-k log-probabilities are not in descending order"
    return None


def tail_problem(tail: int, tail_samples: int) -> str | None:
    """A pass draws ``tail_samples`` tail ids per position, or none (a backend that cannot)."""
    if tail not in (0, tail_samples):
        return f"it holds {tail} tail samples per position, not {tail_samples}"
    return None


def disagreement(
    cached: Mapping[str, np.ndarray], fresh: TokenScores, tolerance: float
) -> tuple[str | None, float]:
    """How a fresh pass over cached positions disagrees with the cached values (None: it does
    not), and the largest absolute difference seen.

    The fresh pass keeps its own top-k and gathers log-probabilities at the cached top-k and
    tail ids. Agreement means: the same log-probability of each actual next token, the same
    sorted top-k values, the cached ids carrying those values, the cached tail values, and the
    same most likely token wherever the top two are not tied within ``tolerance``.
    """
    gathered = fresh.gathered_logprobs
    if gathered is None:
        return "the backend ignored the request for log-probabilities at given ids", np.inf
    k = cached["top_ids"].shape[-1]
    pairs = {
        "target log-probabilities": (fresh.target_logprob, cached["target_logprob"]),
        "top-k log-probabilities": (fresh.top_logprobs, cached["top_logprobs"]),
        "log-probabilities at the cached top-k ids": (gathered[:, :k], cached["top_logprobs"]),
        "log-probabilities at the cached tail ids": (gathered[:, k:], cached["tail_logprobs"]),
    }
    worst = 0.0
    for what, (new, old) in pairs.items():
        if new.shape != old.shape:
            return f"{what} have the shape {old.shape}, a fresh pass {new.shape}", np.inf
        if new.size:
            diff = float(np.max(np.abs(new.astype(np.float64) - old.astype(np.float64))))
            worst = max(worst, diff)
            if not diff <= tolerance:  # NaN disagrees too
                return f"{what} differ by up to {diff:.3g} nats (tolerance {tolerance:g})", worst
    tops = fresh.top_logprobs
    gap = tops[:, 0] - tops[:, 1] if tops.shape[1] > 1 else np.full(len(tops), np.inf)
    flipped = (fresh.top_ids[:, 0] != cached["top_ids"][:, 0]) & (gap > tolerance)
    if flipped.any():
        return (
            f"the most likely token differs at {int(flipped.sum())} of {len(flipped)} positions",
            worst,
        )
    return None, worst


@dataclass(frozen=True)
class Field:
    """What one array of an entry must look like.

    ``kind`` is ``int``, ``float`` or ``bool`` (the width is the backend's business). ``shape`` holds fixed sizes (int), named sizes (str: every array naming it must agree) and
    ``None`` for any size. ``values``: ``ids`` are token ids in ``[0, vocab)``; ``logprobs`` are
    finite and <= 0 (up to float rounding).
    """

    kind: str
    shape: tuple[int | str | None, ...]
    values: str = "any"


_KINDS = {"int": "iu", "float": "f", "bool": "b"}


def check_arrays(
    arrays: Mapping[str, np.ndarray], fields: Mapping[str, Field], *, vocab: int | None = None
) -> tuple[str | None, dict[str, int]]:
    """The first way ``arrays`` break ``fields`` (or None), and the named sizes found."""
    if set(arrays) != set(fields):
        return f"it holds the arrays {sorted(arrays)}, not {sorted(fields)}", {}
    sizes: dict[str, int] = {}
    for name, want in fields.items():
        array = arrays[name]
        problem = _shape_problem(name, array, want, sizes) or _value_problem(
            name, array, want, vocab
        )
        if problem:
            return problem, sizes
    return None, sizes


def _shape_problem(name: str, array: np.ndarray, want: Field, sizes: dict[str, int]) -> str:
    if array.dtype.kind not in _KINDS[want.kind]:
        return f"{name} is {array.dtype}, not {want.kind}"
    if array.ndim != len(want.shape):
        return f"{name} has {array.ndim} dimensions, not {len(want.shape)}"
    for axis, (size, expected) in enumerate(zip(array.shape, want.shape, strict=True)):
        if isinstance(expected, str):
            expected = sizes.setdefault(expected, int(size))
        if expected is not None and size != expected:
            return f"{name} has {size} entries on axis {axis}, not {expected}"
    return ""


def _value_problem(name: str, array: np.ndarray, want: Field, vocab: int | None) -> str:
    if array.size == 0 or want.values == "any":
        return ""
    if want.values == "ids":
        low, high = int(array.min()), int(array.max())
        if low < 0 or (vocab is not None and high >= vocab):
            return f"{name} holds token ids outside [0, {vocab}): {low}..{high}"
    if want.values == "logprobs":
        if not np.isfinite(array).all():
            return f"{name} holds non-finite log-probabilities"
        if float(array.max()) > LOGPROB_SLACK:
            return f"{name} holds log-probabilities above 0 ({float(array.max()):.3g})"
    return ""


def check_generations(document: Any, count: int) -> str | None:
    """Why ``document`` is not a list of ``count`` stored generations (or None)."""

    if not isinstance(document, list) or len(document) != count:
        return f"it holds no list of {count} generations"
    names = set(asdict(Generation("", [], "stop")))
    for index, item in enumerate(document):
        if not isinstance(item, dict) or set(item) != names:
            return f"generation {index} has the fields {sorted(item) if isinstance(item, dict) else '?'}"
        if not _is_text(item["text"]) or item["finish_reason"] not in ("stop", "length", "eos"):
            return f"generation {index} has no valid text or finish reason"
        tokens = item["tokens"]
        if not isinstance(tokens, list) or not all(_is_int(t) and t >= 0 for t in tokens):
            return f"generation {index} has token ids that are not non-negative integers"
        if not _is_int(item["prompt_tokens"]) or not isinstance(item["seconds"], (int, float)):
            return f"generation {index} has no valid prompt length or time"
    return None


def _is_text(value: Any) -> bool:
    """A string a model could have produced: decoded text never holds a lone surrogate."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
