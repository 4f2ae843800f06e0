"""Subject and reference scores side by side: what the scoring checks read.

:meth:`qgate.check.CheckContext.paired_scores` returns one :class:`PairedScores` per dataset
domain, one row per scored token, the same arrays for every check of a subject.
:meth:`qgate.check.CheckContext.noise_floor` returns one :class:`NoiseFloor` per domain: the
reference against itself, the smallest KL divergence the measurement can resolve.
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
    #: int [n]: where each scored token sits in its chunk (None where the producer kept no
    #: positions, as for several domains pooled into one sample)
    position: np.ndarray | None = None
    #: int [chunks, n_ctx]: the token ids of every chunk, so a row's context can be shown:
    #: row ``i`` scores ``tokens[chunk[i], position[i]]`` given the tokens before it
    tokens: np.ndarray | None = None

    @property
    def n_chunks(self) -> int:
        return int(self.chunk.max()) + 1 if len(self.chunk) else 0

    def per_chunk(self, values: np.ndarray) -> np.ndarray:
        """Mean of ``values`` within each chunk (chunks are the bootstrap's resampling unit)."""
        return np.bincount(self.chunk, weights=values) / np.bincount(self.chunk)

    def context(self, row: int, width: int) -> tuple[list[int], int]:
        """The ids of up to ``width`` tokens before row ``row``'s token, and that token's id.

        :raises ValueError: when these scores keep no token ids or positions.
        """
        if self.tokens is None or self.position is None:
            raise ValueError(f"the scores of {self.domain!r} keep no token ids to show")
        chunk, position = int(self.chunk[row]), int(self.position[row])
        ids = self.tokens[chunk]
        return [int(t) for t in ids[max(0, position - width) : position]], int(ids[position])


@dataclass
class NoiseFloor:
    """The reference against itself on a few chunks of one dataset, under settings that should
    not change a single number: how far apart two honest passes of the same model land.

    A KL limit below this floor asks the measurement for a resolution it does not have.
    """

    domain: str
    #: how the second pass differed from the first (recorded with the numbers)
    method: str
    chunk: np.ndarray  #: int [m]: the chunk of each compared token (the bootstrap's unit)
    kld: np.ndarray  #: float64 [m]: KL(first pass || second pass) per compared token
    logprob_diff: np.ndarray  #: float64 [m]: |difference| of the actual token's log-probability
    top1_same: np.ndarray  #: bool [m]: whether both passes rank the same token first

    @property
    def tokens(self) -> int:
        return int(self.kld.size)

    @property
    def n_chunks(self) -> int:
        return int(np.unique(self.chunk).size)

    @classmethod
    def pooled(cls, floors: list[NoiseFloor]) -> NoiseFloor:
        """Several domains' floors as one sample, each chunk its own resampling unit."""
        offsets = np.cumsum([0] + [int(f.chunk.max()) + 1 if f.tokens else 0 for f in floors])
        return cls(
            domain="all" if len(floors) != 1 else floors[0].domain,
            method="; ".join(sorted({f.method for f in floors})),
            chunk=np.concatenate([f.chunk + o for f, o in zip(floors, offsets, strict=False)]),
            kld=np.concatenate([f.kld for f in floors]),
            logprob_diff=np.concatenate([f.logprob_diff for f in floors]),
            top1_same=np.concatenate([f.top1_same for f in floors]),
        )
