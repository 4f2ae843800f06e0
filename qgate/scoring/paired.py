"""Subject and reference scores side by side: what the scoring checks read.

:meth:`qgate.check.CheckContext.paired_scores` returns one :class:`PairedScores` per dataset
domain, one row per scored token, the same arrays for every check of a subject.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PairedScores:
    """Subject and reference on the same tokens of one dataset, one row per scored token."""

    domain: str
    chunk: np.ndarray  #: int [n]: the chunk each token belongs to
    ref_logprob: np.ndarray  #: float64 [n]
    sub_logprob: np.ndarray  #: float64 [n]
    kld: np.ndarray  #: float64 [n]: KL(reference || subject) per token
    ref_top1: np.ndarray  #: int [n]
    sub_top1: np.ndarray  #: int [n]

    @property
    def n_chunks(self) -> int:
        return int(self.chunk.max()) + 1 if len(self.chunk) else 0

    def per_chunk(self, values: np.ndarray) -> np.ndarray:
        """Mean of ``values`` within each chunk (chunks are the bootstrap's resampling unit)."""
        return np.bincount(self.chunk, weights=values) / np.bincount(self.chunk)
