"""The reference's long-context outputs: its token sequence, its scores there, its pass-key hits.

They are cached whole and verified on every read (``CheckContext.reference_outputs``), so a
second run of the same quant never loads the reference at the long context. With
``evaluation.cache_spot_check`` the cached pass is replayed whole, every position: the entry's
unit is the one sequence, and a replay of the very same request is bit-identical, whereas
scoring a subset of positions or a shorter prefix runs other kernels and moves log-probabilities
by up to ~1e-2 nats (Gemma 3 270M, F16), past any tolerance that would still catch a forgery.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict, replace

import numpy as np

from qgate.cache import Entry, backend_material
from qgate.cached_outputs import (
    SPOT_CHECK_TOLERANCE,
    Field,
    SpotCheck,
    check_arrays,
    disagreement,
    expected_top_k,
    tail_problem,
    top_problem,
)
from qgate.check import CheckContext
from qgate.errors import CheckError
from qgate_checks.long_context.options import LongContextOptions
from qgate_checks.long_context.passkey import Probe, probe_settings, run_probes
from qgate_checks.long_context.sequence import long_sequence

#: the cached values a spot-check compares with a fresh pass
SPOT_CHECKED = ("target_logprob", "top_ids", "top_logprobs", "tail_logprobs")


def reference_outputs(
    ctx: CheckContext[LongContextOptions], positions: np.ndarray, probes: list[Probe]
) -> dict[str, np.ndarray]:
    """The reference's outputs at the long context, from the verified cache or computed."""
    assert ctx.reference is not None
    options, settings = ctx.options, ctx.settings
    validate = functools.partial(
        long_reference_problem,
        context=options.context,
        positions=len(positions),
        probes=len(probes),
        top_k=expected_top_k(settings.top_k, ctx.reference.info.vocab_size),
        tail_samples=settings.tail_samples,
        vocab=ctx.reference.info.vocab_size,
    )
    entry = cache_entry(ctx, positions, probes)
    return ctx.reference_outputs(
        entry,
        lambda: compute(ctx, positions, probes),
        validate=validate,
        replay=lambda cached: replay(ctx, entry, cached, positions, probes),
    )


def cache_entry(
    ctx: CheckContext[LongContextOptions], positions: np.ndarray, probes: list[Probe]
) -> Entry:
    """Everything the reference's long-context outputs depend on."""
    assert ctx.reference is not None
    options, settings = ctx.options, ctx.settings
    at_long_context = replace(ctx.reference.options, n_ctx=options.context, kv_cache="f16")
    return Entry.of(
        "long-context-reference",
        model=ctx.reference.digest,
        corpora=options.corpora,
        positions=hashlib.sha256(positions.tobytes()).hexdigest(),
        probes=[(p.length, p.depth, p.key) for p in probes],
        probe_decoding=asdict(probe_settings()),
        top_k=settings.top_k,
        tail_samples=settings.tail_samples,
        **backend_material(ctx.reference.backend.name, at_long_context),
    )


def compute(
    ctx: CheckContext[LongContextOptions], positions: np.ndarray, probes: list[Probe]
) -> dict[str, np.ndarray]:
    """Score the reference at the long context (an f16 cache) and ask it the pass-key probes."""
    assert ctx.reference is not None
    options, settings = ctx.options, ctx.settings
    with ctx.reference.borrowed(n_ctx=options.context, kv_cache="f16") as reference:
        tokens = long_sequence(reference, options.corpora, options.context)
        scores = reference.score(
            tokens,
            start=int(positions[0]),
            positions=positions.tolist(),
            top_k=settings.top_k,
            tail_samples=settings.tail_samples,
        )
        hits = run_probes(reference, probes)
    rows = len(scores)
    arrays = {
        "tokens": np.asarray(tokens, dtype=np.int64),
        "hits": np.asarray(hits, dtype=bool),
        "target_logprob": scores.target_logprob,
        "top_ids": scores.top_ids,
        "top_logprobs": scores.top_logprobs,
        "tail_ids": scores.tail_ids
        if scores.tail_ids is not None
        else np.zeros((rows, 0), np.int32),
        "tail_logprobs": scores.tail_logprobs
        if scores.tail_logprobs is not None
        else np.zeros((rows, 0), np.float32),
    }
    if arrays["tail_ids"].shape[1] not in (0, settings.tail_samples):
        raise CheckError("the backend returned an unexpected number of tail samples")
    return arrays


def replay(
    ctx: CheckContext[LongContextOptions],
    entry: Entry,
    cached: dict[str, np.ndarray],
    positions: np.ndarray,
    probes: list[Probe],
) -> SpotCheck:
    """Replay the cached scoring pass whole and ask a few cached pass-key probes again."""
    assert ctx.reference is not None
    asked = ctx.spot_check_picks(entry, len(probes))
    record: dict[str, object] = {"positions": len(positions), "probes": asked}
    with ctx.reference.borrowed(n_ctx=ctx.options.context, kv_cache="f16") as reference:
        tokens = long_sequence(reference, ctx.options.corpora, ctx.options.context)
        if tokens != cached["tokens"].tolist():
            return SpotCheck("its token sequence is not the reference's tokenization", record)
        fresh = reference.score(
            tokens,
            start=int(positions[0]),
            positions=positions.tolist(),
            top_k=cached["top_ids"].shape[1],
            gather=np.concatenate([cached["top_ids"], cached["tail_ids"]], axis=1),
        )
        ctx.count("spot_check_passes")
        rows = {name: cached[name] for name in SPOT_CHECKED}
        problem, worst = disagreement(rows, fresh, SPOT_CHECK_TOLERANCE)
        record["max_abs_diff"] = worst
        if problem is None:
            hits = run_probes(reference, [probes[i] for i in asked])
            ctx.count("spot_check_generations", len(asked))
            if hits != [bool(cached["hits"][i]) for i in asked]:
                problem = "the reference answers the pass-key probes otherwise"
    return SpotCheck(problem, record)


def long_reference_problem(
    arrays: dict[str, np.ndarray],
    *,
    context: int,
    positions: int,
    probes: int,
    top_k: int,
    tail_samples: int,
    vocab: int | None = None,
) -> str | None:
    """Why a cached long-context entry cannot be what a pass with these settings stored."""
    fields = {
        "tokens": Field("int", (context,), "ids"),
        "hits": Field("bool", (probes,)),
        "target_logprob": Field("float", (positions,), "logprobs"),
        "top_ids": Field("int", (positions, top_k), "ids"),
        "top_logprobs": Field("float", (positions, top_k), "logprobs"),
        "tail_ids": Field("int", (positions, "tail"), "ids"),
        "tail_logprobs": Field("float", (positions, "tail"), "logprobs"),
    }
    problem, sizes = check_arrays(arrays, fields, vocab=vocab)
    return (
        problem or top_problem(arrays["top_logprobs"]) or tail_problem(sizes["tail"], tail_samples)
    )
