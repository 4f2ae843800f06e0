"""The long sequence a long-context check scores, and the positions it samples from it."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from qgate.backend import LoadedModel
from qgate.datasets import load_dataset
from qgate.errors import CheckError
from qgate.policy.model import DatasetSpec


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
    """Evenly spaced scored positions per bucket, and the bucket of each."""
    positions, buckets = [], []
    for b, (lo, hi) in enumerate(pairwise(edges)):
        picked = np.unique(
            np.linspace(max(lo, 1), hi - 1, num=min(per_bucket, hi - max(lo, 1))).astype(np.int64)
        )
        positions.append(picked)
        buckets.append(np.full(len(picked), b))
    return np.concatenate(positions), np.concatenate(buckets)


def long_sequence(model: LoadedModel, corpora: list[str], length: int) -> list[int]:
    """BOS + shipped corpora concatenated (each once), cut to ``length`` tokens.

    Corpora are added one at a time until there are enough tokens: tokenizing text that would
    be cut off anyway costs seconds on byte-level tokenizers.
    """
    text = ""
    tokens: list[int] = []
    for name in corpora:
        text += ("\n\n" if text else "") + load_dataset(DatasetSpec(name=name)).text
        tokens = model.tokenize(text, add_bos=True)
        if len(tokens) >= length:
            break
    tokens = tokens[:length]
    if len(tokens) < length:
        raise CheckError(
            f"the corpora {corpora} give {len(tokens)} tokens, fewer than the context {length}"
        )
    return tokens
