"""Logits held in a torch tensor, reduced to :class:`~qgate.backend.TokenScores`.

The torch backends' :class:`~qgate.scoring.sequence.Summarizer` (hf, awq, exl2). The reduction
runs where the logits are (the GPU) and only per-row figures and a few hundred gathered values
cross to the host: copying 256 rows of a 150k-entry vocabulary to the CPU per chunk would cost
more than the forward pass. Only a reference pass (run once, then cached) copies probabilities
to the host, block by block, to draw its tail samples with the shared numpy sampler.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qgate.backend import TokenScores
from qgate.errors import CheckError
from qgate.scoring.logits import sample_tail

#: rows per host-side block of a reference pass (bounds the float32 copies of the vocabulary)
ROWS_PER_BLOCK = 64


def summarize_tensor(
    logits: Any,
    tokens: np.ndarray,
    scored: np.ndarray,
    *,
    top_k: int,
    gather: np.ndarray | None,
    tail_samples: int,
    rng: np.random.Generator,
) -> TokenScores:
    """:func:`~qgate.scoring.logits.summarize_logits` for a torch tensor, with its numerics.

    Exponentials in float32 summed in float64, log-probabilities as logit minus log-sum-exp:
    the figures agree with the numpy reducer to float32 rounding (tests/test_hf.py compares
    them), and a subject and its reference, both reduced here, agree exactly when identical.

    :param logits: torch tensor [len(scored), vocab]; row i predicts ``tokens[scored[i]]``.
    :param tokens: the whole sequence's token ids.
    :param scored: the positions these rows score, ascending.
    :param gather: ids [len(scored), m] whose log-probabilities to report, or None.
    :param tail_samples: tail samples per row (a reference pass), drawn with ``rng``.
    :raises CheckError: if any logit is NaN or +Inf.
    """
    import torch

    x = logits.float()
    device = x.device
    row_max = x.max(dim=1).values
    finite = torch.isfinite(row_max)
    if not bool(finite.all()):
        bad = int(torch.nonzero(~finite)[0, 0])
        raise CheckError(
            f"the model produced non-finite logits (NaN or Inf) at position {int(scored[bad]) - 1}"
        )
    total = torch.exp(x - row_max[:, None]).sum(dim=1, dtype=torch.float64)
    lse = row_max.double() + torch.log(total)
    if not bool(torch.isfinite(lse).all()):
        raise CheckError(f"the model produced non-finite logits (NaN) near position {scored[0]}")

    def logprobs_at(ids: Any) -> np.ndarray:
        return (x.gather(1, ids).double() - lse[:, None]).float().cpu().numpy()

    targets = torch.as_tensor(tokens[scored], dtype=torch.long, device=device)
    k = min(top_k, x.shape[1])
    top_ids = torch.topk(x, k, dim=1).indices
    top_ids_host = top_ids.to(torch.int32).cpu().numpy()
    gathered = None
    if gather is not None:
        gathered = logprobs_at(torch.as_tensor(np.asarray(gather, dtype=np.int64), device=device))
    tail_ids = tail_logprobs = None
    if tail_samples > 0 and k < x.shape[1]:
        blocks = []
        for start in range(0, len(scored), ROWS_PER_BLOCK):
            rows = slice(start, start + ROWS_PER_BLOCK)
            probabilities = torch.exp(x[rows] - lse[rows, None].float()).cpu().numpy()
            blocks.append(sample_tail(probabilities, top_ids_host[rows], tail_samples, rng))
        tail_ids = np.concatenate(blocks)
        tail_logprobs = logprobs_at(torch.as_tensor(tail_ids, dtype=torch.long, device=device))
    return TokenScores(
        start=int(scored[0]),
        target_logprob=(x.gather(1, targets[:, None])[:, 0].double() - lse).cpu().numpy(),
        top_ids=top_ids_host,
        top_logprobs=logprobs_at(top_ids),
        gathered_logprobs=gathered,
        tail_ids=tail_ids,
        tail_logprobs=tail_logprobs,
    )
