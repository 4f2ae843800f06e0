"""Position buckets, the long text a sequence is made of, and which of its positions are scored."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from qgate.backend import LoadedModel
from qgate.datasets import load_dataset
from qgate.errors import CheckError
from qgate.policy.model import DatasetSpec

#: consecutive scored positions resampled together by the bootstrap. Per-position KLD and
#: log-probability differences are nearly independent beyond a few tokens (Gemma 3 270M at 4K,
#: q4_0 cache: lag-1 autocorrelation 0.10, lag-4 0.02), so blocks of 16 keep the intervals honest.
BLOCK = 16


def bucket_edges(context: int) -> list[int]:
    """0-512, 512-1K, 1-2K, 2-4K, ... up to ``context`` (halves below 1K: 0-128, 128-256)."""
    edges = [0, min(512, context // 2)]
    while edges[-1] * 2 < context:
        edges.append(edges[-1] * 2)
    edges.append(context)
    return edges


def bucket_label(lo: int, hi: int) -> str:
    def k(n: int) -> str:
        return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)

    return f"{k(lo)}-{k(hi)}"


def sample_positions(edges: list[int], per_bucket: int) -> tuple[np.ndarray, np.ndarray]:
    """Evenly spaced positions per bucket, and the bucket of each."""
    every = np.arange(1, edges[-1])
    positions = pick_positions(every, edges, per_bucket)
    return positions, np.searchsorted(edges, positions, side="right") - 1


def pick_positions(candidates: np.ndarray, edges: list[int], per_bucket: int | None) -> np.ndarray:
    """``per_bucket`` evenly spaced ``candidates`` in each bucket (None: all of them)."""
    if per_bucket is None:
        return candidates
    picked = []
    for lo, hi in pairwise(edges):
        inside = candidates[(candidates >= lo) & (candidates < hi)]
        if len(inside) > per_bucket:
            inside = inside[np.linspace(0, len(inside) - 1, num=per_bucket).astype(np.int64)]
        picked.append(inside)
    return np.unique(np.concatenate(picked))


def text_tokens(model: LoadedModel, corpora: list[str], length: int) -> list[int]:
    """``length`` tokens of the shipped corpora concatenated in order (each once), no BOS.

    Corpora are added one at a time until there are enough tokens: tokenizing text that would
    be cut off anyway costs seconds on byte-level tokenizers.
    """
    text = ""
    tokens: list[int] = []
    for name in corpora:
        text += ("\n\n" if text else "") + load_dataset(DatasetSpec(name=name)).text
        tokens = model.tokenize(text, add_bos=False)
        if len(tokens) >= length:
            break
    if len(tokens) < length:
        raise CheckError(
            f"the corpora {corpora} give {len(tokens)} tokens, fewer than the {length} needed"
        )
    return tokens[:length]


def rotated(corpora: list[str], sequence: int) -> list[str]:
    """The corpora of sequence ``sequence``: the same list, starting at its ``sequence``-th."""
    start = sequence % len(corpora)
    return corpora[start:] + corpora[:start]
