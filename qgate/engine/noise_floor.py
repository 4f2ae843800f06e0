"""The measurement's own noise floor: the reference against itself.

Two passes of the same model over the same tokens should give the same numbers, but kernels pick
other reduction orders for other shapes (batch sizes, thread counts, GPU atomics), so a limit on
the KL divergence means something only above what two honest passes already disagree by.

Whenever the reference is scored live, the first :data:`FLOOR_CHUNKS` chunks of each dataset are
scored again, the way a subject is (its top-1 and the log-probabilities at the reference's
cached top-k and tail ids, no tail samples of its own), asking for every other scored position
only: another request shape and half the output rows per forward pass, none of which should
change a single value. The per-token KL divergence between the cached pass and this one is the
floor. It is stored in the reference cache next to the reference's scores (its own entry kind,
:data:`KIND`, verified on every read like any entry), so a run that reads the reference's scores
from the cache reads the floor too and never loads the reference for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qgate.backend import LoadedModel
from qgate.cache import Entry
from qgate.cached_outputs import Field, check_arrays
from qgate.datasets import scored_start
from qgate.engine.reference import ReferenceScores
from qgate.scoring.kld import kld_estimate
from qgate.scoring.paired import NoiseFloor

#: the cache entry kind of a floor
KIND = "noise-floor"
#: chunks per dataset scored a second time: two give a bootstrap interval on a single dataset
FLOOR_CHUNKS = 2
#: what the second pass changes (recorded in the entry and shown with the floor); a new method
#: gets a new id, so floors measured another way are never read as this one
METHOD = "live pass shaped like a subject's, every other scored position"
METHOD_ID = "subject-shape-alternate-rows-v1"


def floor_chunks(budget: int) -> int:
    """Chunks a floor re-scores out of a dataset's ``budget``."""
    return min(FLOOR_CHUNKS, budget)


def floor_entry(scores_entry: Entry, chunks: int) -> Entry:
    """The floor's cache entry: everything the reference's scores depend on, and the method."""
    material = {k: v for k, v in scores_entry.material.items() if k not in ("kind", "format")}
    return Entry.of(KIND, **material, method=METHOD_ID, floor_chunks=chunks)


def alternate_rows(scored: int) -> np.ndarray:
    """The scored rows a floor pass asks for: every other one, from the first."""
    return np.arange(0, scored, 2)


def measure(model: LoadedModel, scores: ReferenceScores, chunks: int) -> dict[str, np.ndarray]:
    """Score the first ``chunks`` chunks of ``scores`` again with ``model`` (the reference) and
    compare, token by token. Arrays ``[chunks, rows]``, as the cache stores them."""
    k = scores.top_ids.shape[2]
    kld, diff, same = [], [], []
    for chunk in range(chunks):
        row = scores.tokens[chunk]
        start = scored_start(len(row))
        rows = alternate_rows(len(row) - start)
        fresh = model.score(
            row.tolist(),
            start=start,
            top_k=1,
            gather=scores.gather_ids(chunk)[rows],
            tail_samples=0,
            positions=(start + rows).tolist(),
        )
        gathered = fresh.gathered_logprobs
        if gathered is None:
            raise ValueError("the backend ignored the request for log-probabilities at given ids")
        kld.append(
            kld_estimate(
                scores.top_logprobs[chunk][rows],
                gathered[:, :k],
                scores.tail_logprobs[chunk][rows],
                gathered[:, k:],
            )
        )
        diff.append(np.abs(fresh.target_logprob - scores.target_logprob[chunk][rows]))
        same.append(fresh.top_ids[:, 0] == scores.top_ids[chunk][rows, 0])
    return {
        "kld": np.stack(kld).astype(np.float64),
        "logprob_diff": np.stack(diff).astype(np.float64),
        "top1_same": np.stack(same).astype(bool),
    }


def floor_problem(arrays: Any, *, chunks: int, n_ctx: int) -> str | None:
    """Why cached floor arrays cannot be what :func:`measure` stored (or None)."""
    rows = len(alternate_rows(n_ctx - scored_start(n_ctx)))
    fields = {
        "kld": Field("float", (chunks, rows)),
        "logprob_diff": Field("float", (chunks, rows)),
        "top1_same": Field("bool", (chunks, rows)),
    }
    problem, _ = check_arrays(arrays, fields)
    if problem:
        return problem
    for name in ("kld", "logprob_diff"):
        if not np.isfinite(arrays[name]).all():
            return f"{name} holds non-finite values"
    if float(arrays["logprob_diff"].min()) < 0:
        return "logprob_diff holds negative differences"
    return None


def as_floor(domain: str, arrays: dict[str, np.ndarray]) -> NoiseFloor:
    """Stored arrays as the :class:`NoiseFloor` checks read."""
    chunks, rows = arrays["kld"].shape
    return NoiseFloor(
        domain=domain,
        method=METHOD,
        chunk=np.repeat(np.arange(chunks), rows),
        kld=arrays["kld"].reshape(-1),
        logprob_diff=arrays["logprob_diff"].reshape(-1),
        top1_same=arrays["top1_same"].reshape(-1),
    )
