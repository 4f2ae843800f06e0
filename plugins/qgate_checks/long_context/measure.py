"""What one KV cache type measures on the long sequences: per text position and per pass key."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qgate.backend import LoadedModel
from qgate.errors import CheckError
from qgate.scoring.kld import kld_estimate
from qgate_checks.long_context.passkey import retrieved
from qgate_checks.long_context.sequence import BLOCK


@dataclass
class Measured:
    """Subject vs reference, pooled over the sequences measured so far."""

    positions: np.ndarray  #: int [n]: the text positions (a position may repeat across sequences)
    block: np.ndarray  #: int [n]: the bootstrap unit of each position (see ``BLOCK``)
    kld: np.ndarray  #: float [n]: KL(reference || subject), nats
    ref_logprob: np.ndarray  #: float [n]: the reference's log-probability of the actual token
    sub_logprob: np.ndarray  #: float [n]: the subject's
    ref_hits: np.ndarray  #: bool [keys]: pass keys the reference retrieves
    sub_hits: np.ndarray  #: bool [keys]: pass keys the subject retrieves
    depths: np.ndarray  #: float [keys]: share of the text before each key
    sequences: int = 1


def pool(parts: list[Measured]) -> Measured:
    """Several sequences' measurements as one sample; blocks stay apart across sequences."""
    offsets = np.cumsum([0] + [int(p.block.max()) + 1 if len(p.block) else 0 for p in parts])
    return Measured(
        positions=np.concatenate([p.positions for p in parts]),
        block=np.concatenate([p.block + off for p, off in zip(parts, offsets, strict=False)]),
        kld=np.concatenate([p.kld for p in parts]),
        ref_logprob=np.concatenate([p.ref_logprob for p in parts]),
        sub_logprob=np.concatenate([p.sub_logprob for p in parts]),
        ref_hits=np.concatenate([p.ref_hits for p in parts]),
        sub_hits=np.concatenate([p.sub_hits for p in parts]),
        depths=np.concatenate([p.depths for p in parts]),
        sequences=sum(p.sequences for p in parts),
    )


def score_subject(model: LoadedModel, ref: dict[str, np.ndarray]) -> Measured:
    """Score ``model`` on the reference's sequence at its positions and compare."""
    positions = ref["positions"]
    scores = model.score(
        ref["tokens"].tolist(),
        start=int(positions[0]),
        positions=positions.tolist(),
        top_k=1,  # the subject reports log-probabilities at the reference's ids
        gather=np.concatenate([ref["top_ids"], ref["tail_ids"]], axis=1),
    )
    if scores.gathered_logprobs is None:
        raise CheckError("the backend ignored the request for log-probabilities at given ids")
    k = ref["top_ids"].shape[1]
    at = scores.gathered_logprobs
    kld = kld_estimate(ref["top_logprobs"], at[:, :k], ref["tail_logprobs"], at[:, k:])
    text = ref["text"]
    return Measured(
        positions=positions[text],
        block=blocks(positions[text]),
        kld=kld[text],
        ref_logprob=ref["target_logprob"][text].astype(np.float64),
        sub_logprob=scores.target_logprob[text].astype(np.float64),
        ref_hits=reference_hits(ref),
        sub_hits=retrieved(ref["keys"], ref["tokens"], positions, scores.top_ids[:, 0]),
        depths=ref["depths"],
    )


def reference_hits(ref: dict[str, np.ndarray]) -> np.ndarray:
    return retrieved(ref["keys"], ref["tokens"], ref["positions"], ref["top_ids"][:, 0])


def blocks(positions: np.ndarray) -> np.ndarray:
    """Bootstrap units: the scored positions that share a ``BLOCK``-token window."""
    _, block = np.unique(positions // BLOCK, return_inverse=True)
    return block.astype(np.int64)
