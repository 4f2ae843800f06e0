"""Helpers shared by the built-in scoring checks."""

from __future__ import annotations

import numpy as np

from qgate.check import CheckContext
from qgate.scoring.paired import PairedScores


def select_domains(ctx: CheckContext, domains: list[str] | None) -> list[PairedScores]:
    scores = ctx.paired_scores()
    if domains:
        scores = [s for s in scores if s.domain in domains]
    return scores


def pooled(scores: list[PairedScores]) -> PairedScores:
    """All domains as one sample; chunk ids renumbered so each stays its own resampling unit."""
    if len(scores) == 1:
        return scores[0]
    offsets = np.cumsum([0] + [s.n_chunks for s in scores[:-1]])
    return PairedScores(
        domain="all",
        chunk=np.concatenate([s.chunk + off for s, off in zip(scores, offsets, strict=True)]),
        ref_logprob=np.concatenate([s.ref_logprob for s in scores]),
        sub_logprob=np.concatenate([s.sub_logprob for s in scores]),
        kld=np.concatenate([s.kld for s in scores]),
        ref_top1=np.concatenate([s.ref_top1 for s in scores]),
        sub_top1=np.concatenate([s.sub_top1 for s in scores]),
    )


def token_rows(scores: PairedScores, chunks: np.ndarray) -> np.ndarray:
    """Indices of all tokens of the given chunks (with repeats), for per-token statistics."""
    starts = np.searchsorted(scores.chunk, np.arange(scores.n_chunks))
    ends = np.append(starts[1:], len(scores.chunk))
    return np.concatenate([np.arange(starts[c], ends[c]) for c in chunks])
