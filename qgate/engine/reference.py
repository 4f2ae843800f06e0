"""The reference's compact outputs on one dataset, as the shared scoring pass keeps them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qgate.backend import TokenScores


@dataclass
class ReferenceScores:
    """The reference's compact outputs on one dataset: all a subject is compared against."""

    domain: str
    tokens: np.ndarray  #: int32 [chunks, n_ctx]
    target_logprob: np.ndarray  #: float64 [chunks, scored]
    top_ids: np.ndarray  #: int32 [chunks, scored, k]
    top_logprobs: np.ndarray  #: float32 [chunks, scored, k]
    tail_ids: np.ndarray  #: int32 [chunks, scored, m]: samples from outside the top-k
    tail_logprobs: np.ndarray  #: float32 [chunks, scored, m]
    from_cache: bool = False

    FIELDS = ("tokens", "target_logprob", "top_ids", "top_logprobs", "tail_ids", "tail_logprobs")

    @property
    def done(self) -> int:
        """Chunks scored so far (``tokens`` holds every chunk of the budget)."""
        return len(self.target_logprob)

    @classmethod
    def unscored(cls, domain: str, tokens: np.ndarray) -> ReferenceScores:
        empty = np.zeros((0, 0), dtype=np.float64)
        return cls(domain, tokens, empty, empty, empty, empty, empty)

    def extend(self, scored: list[TokenScores]) -> None:
        """Append the scores of the next chunks, in order."""
        new = {
            "target_logprob": np.stack([s.target_logprob for s in scored]),
            "top_ids": np.stack([s.top_ids for s in scored]),
            "top_logprobs": np.stack([s.top_logprobs for s in scored]),
            "tail_ids": np.stack([_or_empty(s.tail_ids, np.int32, len(s)) for s in scored]),
            "tail_logprobs": np.stack(
                [_or_empty(s.tail_logprobs, np.float32, len(s)) for s in scored]
            ),
        }
        first = self.done == 0  # the unscored placeholders have no shape to extend
        for name, array in new.items():
            setattr(self, name, array if first else np.concatenate([getattr(self, name), array]))

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.FIELDS}

    def row(self, chunk: int) -> dict[str, np.ndarray]:
        """The stored values of one chunk (what a spot-check compares)."""
        return {name: getattr(self, name)[chunk] for name in self.FIELDS if name != "tokens"}

    def gather_ids(self, chunk: int) -> np.ndarray:
        """The ids a subject must report log-probabilities for: top-k, then tail samples."""
        return np.concatenate([self.top_ids[chunk], self.tail_ids[chunk]], axis=1)


def _or_empty(array: np.ndarray | None, dtype: type, rows: int) -> np.ndarray:
    """A backend that draws no tail samples yields [rows, 0]: the KLD falls back to its bound."""
    return array if array is not None else np.zeros((rows, 0), dtype=dtype)
