"""The scoring skeleton every backend shares: from a token sequence to its :class:`TokenScores`.

``LoadedModel.score`` is the same procedure in every backend: validate the scored positions,
seed the tail sampler from the tokens, reduce the logits of each batch of scored rows to
per-position statistics, and join the batches in order. Only how the logits are produced differs
(llama.cpp's batch API, one transformers forward pass, exllamav2's cached forward), and where
they are reduced (numpy on the host, or torch on the device). :func:`score_sequence` is that
procedure once; a backend hands it a :data:`LogitsSource` and, for logits that are not numpy
arrays, a :data:`Summarizer`. :class:`BatchScoredModel` wires it into ``LoadedModel.score`` so
a backend only writes :meth:`BatchScoredModel.scored_logits`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from qgate.backend import LoadedModel, TokenScores
from qgate.errors import InternalError
from qgate.scoring.logits import merge_scores, scored_positions, summarize_logits, tail_rng

#: one batch of logits rows: the scored positions (ascending) and the logits predicting the token
#: at each of them (row ``i`` comes from position ``positions[i] - 1``), in any array type the
#: summarizer takes
LogitsBatch = tuple[np.ndarray, Any]

#: given the scored positions, yields the batches of one forward pass at a time; every batch of a
#: group is reduced before the next group is asked for, so a backend may reuse the logits buffer
LogitsSource = Callable[[np.ndarray], Iterable[Sequence[LogitsBatch]]]

#: how the batches of one group are reduced: ``map``, or a thread pool's ``map``
BatchMap = Callable[[Callable[[LogitsBatch], TokenScores], Sequence[LogitsBatch]], Iterable[Any]]


#: reduces one batch of logits to :class:`TokenScores`, called as
#: ``summarize(logits, tokens, positions, top_k=, gather=, tail_samples=, rng=)`` where
#: ``tokens`` is the whole sequence and ``positions`` the positions the rows score
#: (:func:`summarize_array` for numpy arrays)
Summarizer = Callable[..., TokenScores]


def summarize_array(
    logits: np.ndarray, tokens: np.ndarray, positions: np.ndarray, **request: Any
) -> TokenScores:
    """The :data:`Summarizer` for numpy logits: :func:`~qgate.scoring.logits.summarize_logits`
    of the tokens at ``positions``, reported from the first of them."""
    return summarize_logits(logits, tokens[positions], start=int(positions[0]), **request)


def score_sequence(
    tokens: Sequence[int],
    *,
    n_ctx: int,
    start: int,
    top_k: int,
    logits: LogitsSource,
    gather: np.ndarray | None = None,
    tail_samples: int = 0,
    positions: Sequence[int] | None = None,
    summarize: Summarizer = summarize_array,
    map_batches: BatchMap = map,
) -> TokenScores:
    """``LoadedModel.score`` for a backend that produces logits batch by batch.

    The arguments but ``n_ctx``, ``logits``, ``summarize`` and ``map_batches`` are
    ``LoadedModel.score``'s.

    :param logits: yields the logits of the scored rows, one forward pass (a group of batches)
        at a time; together the batches must cover every scored position once, in order.
    :param summarize: reduces one batch; numpy arrays by default, torch tensors with the torch
        backends' reducer.
    :param map_batches: reduces the batches of one group; a thread pool's ``map`` reduces them in
        parallel (only without tail samples: those come from one random stream, in order).
    :raises CheckError: for positions that cannot be scored, and for non-finite logits.
    """
    scored = scored_positions(len(tokens), n_ctx, start, positions)
    token_array = np.asarray(tokens, dtype=np.int64)
    rng = tail_rng(token_array)

    def reduce(batch: LogitsBatch) -> TokenScores:
        at, values = batch
        rows = np.searchsorted(scored, at)
        return summarize(
            values,
            token_array,
            at,
            top_k=top_k,
            gather=None if gather is None else gather[rows],
            tail_samples=tail_samples,
            rng=rng,
        )

    parts: list[TokenScores] = []
    for group in logits(scored):
        # consumed here, before the source runs its next forward pass over the same buffer
        parts.extend(map_batches(reduce, group))
    covered = sum(len(part) for part in parts)
    if covered != len(scored):
        raise InternalError(
            f"the backend produced logits for {covered} of {len(scored)} scored positions"
        )
    return merge_scores(
        parts,
        positions=scored if positions is not None else None,
        with_gathered=gather is not None,
    )


class BatchScoredModel(LoadedModel):
    """A :class:`LoadedModel` whose ``score`` is :func:`score_sequence`.

    A backend implements :meth:`scored_logits` and, when its logits are not numpy arrays or are
    reduced in parallel, overrides :meth:`summarizer` or :meth:`batch_map`.
    """

    def score(
        self, tokens: Sequence[int], *, start: int, top_k: int, **request: Any
    ) -> TokenScores:
        """``LoadedModel.score``; ``request`` holds its optional ``gather``, ``tail_samples``
        and ``positions``."""
        return score_sequence(
            tokens,
            n_ctx=self.n_ctx,
            start=start,
            top_k=top_k,
            logits=lambda scored: self.scored_logits(tokens, scored),
            summarize=self.summarizer(),
            map_batches=self.batch_map(int(request.get("tail_samples", 0))),
            **request,
        )

    @abstractmethod
    def scored_logits(
        self, tokens: Sequence[int], scored: np.ndarray
    ) -> Iterable[Sequence[LogitsBatch]]:
        """The logits predicting ``tokens`` at the ``scored`` positions (validated, ascending):
        a :data:`LogitsSource` for this sequence. Compute the output layer only where needed."""

    def summarizer(self) -> Summarizer:
        """How a batch of this backend's logits is reduced: numpy arrays by default."""
        return summarize_array

    def batch_map(self, tail_samples: int) -> BatchMap:
        """How the batches of one forward pass are reduced: in order, on this thread."""
        return map
